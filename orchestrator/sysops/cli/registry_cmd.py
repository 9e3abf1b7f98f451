"""`sysops plugin push` and `sysops plugin pull`: plugin images to and from an OCI registry, pinned by digest.

`push` publishes the image of a plugin's serving revision and prints the reference to install it by
(`REGISTRY/sysops-plugins/<installation>-<plugin>@sha256:...`); `pull` fetches an image by that reference
into the local engine, refusing it when its digest is not the one given, and shows the plugin it holds
(read from the image, which is not run). `sysops plugin install oci://REF` runs it (docs/registry.md).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Annotated

import typer

from sysops.cli.output import write_result
from sysops.cli.plugin_cmd import control_client, progress
from sysops.core.names import check_plugin_name
from sysops.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from sysops.store import InstanceRecord

REGISTRY_VARIABLE = "SYSOPS_REGISTRY"


def push(
    name: Annotated[str, typer.Argument(help="Plugin name (its serving revision's image is pushed)")],
    registry: Annotated[
        str, typer.Option("--registry", help=f"Registry host[:port][/path] (default: ${REGISTRY_VARIABLE})")
    ] = "",
) -> None:
    """Push the image of a plugin's serving revision to a registry; print its reference by digest."""
    from sysops.distribution.oci import push_plugin_image, push_signatures_beside
    from sysops.runtime.factory import docker_driver
    from sysops.settings import Settings

    check_plugin_name(name)
    registry = registry or os.environ.get(REGISTRY_VARIABLE, "")
    if not registry:
        raise UsageError("no registry given", hint=f"pass --registry HOST:PORT or set {REGISTRY_VARIABLE}")
    status = control_client().status(name)
    if not status.image:
        raise NotFoundError(f"plugin {name} has no serving revision", hint=f"`sysops plugin up {name}` first")
    pushed = push_plugin_image(docker_driver(), status.image, name, status.version, registry, progress)
    push_signatures_beside(Settings().home, pushed, progress)
    progress(f"pushed {name} {status.version} as {pushed.repository}:{pushed.tag}")
    write_result(pushed.by_digest + "\n")


def pull(
    reference: Annotated[str, typer.Argument(metavar="REF", help="REGISTRY/REPO[:TAG]@sha256:<digest>")],
) -> None:
    """Pull a plugin image by digest (refused when the registry serves another digest) and show its plugin."""
    from sysops.distribution.oci import parse_ref, pull_verified
    from sysops.runtime.factory import docker_driver

    pulled = pull_verified(docker_driver(), parse_ref(reference), progress)
    progress(f"pulled {pulled.manifest.name} {pulled.manifest.version} ({pulled.image_id})")
    write_result(f"{pulled.ref.by_digest}\n")


def install_oci_ref(spec: str, *, tier: str = "community", index: str = "") -> InstanceRecord:
    """`sysops plugin install oci://REF` (cli/install_cmd.py): pull and verify by digest, then have the current
    context's host or server run `REPO@sha256:...` (distribution/oci.py install_from_oci), and record the install."""
    from sysops.distribution.oci import install_from_oci
    from sysops.settings import Settings

    started = time.monotonic()
    client = control_client()
    instance = install_from_oci(
        Settings().home,
        spec,
        progress,
        client.up_image,
        installation_id=str(client.view("server")["installation_id"]),  # the host's or server's: its repository
        registry=os.environ.get(REGISTRY_VARIABLE, ""),
        tier=tier,
        index=index,
    )
    progress(
        f"{instance.plugin} {instance.version} ready (revision {instance.revision}, {time.monotonic() - started:.1f}s)"
    )
    return instance

"""`sysops plugin sign NAME|IMAGE [--key K]` and `sysops plugin verify NAME|IMAGE`: signatures by hand.

Builds sign what they build; these sign an image built elsewhere (or with another key) and show whether the
trust policy would admit an image, with the same checks the trust gate makes before a roll (core/trust_gate.py).
The manifest signed is the plugin.yaml inside the image. An image in a registry gets its signatures pushed
beside it (`sha256-<hex>.sig`); every signature also goes to this installation's cache.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from sysops.cli.output import emit
from sysops.cli.plugin_cmd import Output, OutputOption, orchestrator_for_cli
from sysops.core.names import is_plugin_name
from sysops.errors import NotFoundError
from sysops.settings import Settings

if TYPE_CHECKING:
    from sysops.runtime.docker.driver import DockerDriver

TargetArgument = Annotated[str, typer.Argument(help="A plugin's name (its serving image) or an image reference.")]


def _local_image(target: str) -> tuple[DockerDriver, str, str]:
    """The local engine's driver, the image a NAME serves from (or the reference itself), and its image id."""
    from sysops.runtime.factory import docker_driver

    image = target
    if is_plugin_name(target):
        image = orchestrator_for_cli().status(target).image
        if not image:
            raise NotFoundError(f"plugin {target} has no serving image", hint="`sysops plugin up` it first")
    driver = docker_driver()
    image_id = driver.image_id(image)
    if image_id is None:
        raise NotFoundError(f"image {image} is not in the local engine", hint="`sysops plugin pull REF` first")
    return driver, image, image_id


def sign_command(
    target: TargetArgument,
    key: Annotated[str, typer.Option("--key", help="Own key to sign with (default: the build key, `local`).")] = "",
) -> None:
    """Sign an image and the plugin.yaml inside it with an own key."""
    from sysops.distribution.oci import read_manifest
    from sysops.trust.keys import key_id, load_private_key, signing_key
    from sysops.trust.signature_store import cache_signature, cached_signatures, push_signatures, split_reference
    from sysops.trust.signing import sign

    home = Settings().home
    driver, image, image_digest = _local_image(target)
    private_key, signer = (load_private_key(home, key), "") if key else signing_key(home)
    signer = signer or key_id(private_key.public_key())
    signature = sign(private_key, signer, read_manifest(driver, image), image_digest)
    cache_signature(home, image_digest, signature)
    where = "the cache"
    if split_reference(image) is not None:
        where += " and " + push_signatures(image, image_digest, cached_signatures(home, image_digest))
    typer.echo(f"signed {image} ({image_digest}) with key {signer}: {where}")


def verify_command(target: TargetArgument, output: OutputOption = Output.TEXT) -> None:
    """Check an image's signatures and the trust policy of its plugin's tier (exit code 9 when refused)."""
    from sysops.core.policy import apply_policy, load_policy
    from sysops.core.rollout import RollTarget
    from sysops.core.trust_gate import check_trust
    from sysops.distribution.oci import read_manifest

    home = Settings().home
    driver, image, image_id = _local_image(target)
    manifest = apply_policy(read_manifest(driver, image), load_policy(home), f"{image}: plugin.yaml")
    verdict = check_trust(home, RollTarget(manifest, image, image_id, "", image))
    row = {
        "plugin": verdict.plugin,
        "image_digest": verdict.image_digest,
        "tier": verdict.tier,
        "signed": verdict.signed,
        "signer": f"{verdict.signer_key_id} ({verdict.signer_name})" if verdict.signed else "",
        "verdict": "admitted",
    }
    emit(row if output.is_data else [row], output, list(row))

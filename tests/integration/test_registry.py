"""Plugin images through a real registry on loopback: push, pull by digest, run by digest, moved tags refused.

One installation publishes a plugin (`plugin up`, `plugin push`); its images are then removed, and another
installation pulls the image by digest and runs `REPO@sha256:...`. A tag moved to another image, a digest
the registry does not have and references without a digest are refused with one line and their exit codes.
Every image that names the registry is removed at the end; the registry process is the session fixture's.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest

from tests.integration.conftest import Sysops, plugin_code, write_plugin
from tests.registry_fixture import (
    LoopbackRegistry,
    registry_fixture,  # noqa: F401  (defines the fixture `registry`)
)

pytestmark = pytest.mark.integration

PLUGIN = "regdemo"
ANSWER = "served-by-digest"


@dataclass(frozen=True)
class Published:
    """What the publishing installation pushed: the reference by digest, split."""

    ref: str  # REPO@sha256:...
    repository: str
    digest: str
    tag: str  # the version tag push gave it
    publisher_key: Path  # the public half of the key the publisher's build signed with


def images_of_registry(engine: docker.DockerClient, host: str) -> list[str]:
    """Ids of local images tagged or pulled from the loopback registry."""
    found = []
    for image in engine.images.list():
        names = [*(image.attrs.get("RepoTags") or []), *(image.attrs.get("RepoDigests") or [])]
        if any(name.startswith(f"{host}/") for name in names):
            found.append(str(image.id))
    return found


@pytest.fixture(scope="module")
def published(
    sysops: Sysops, registry: LoopbackRegistry, engine: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Published]:
    plugin_dir = write_plugin(
        tmp_path_factory.mktemp("registry") / PLUGIN,
        name=PLUGIN,
        code=plugin_code(PLUGIN, command="regping", answer=ANSWER),
    )
    sysops.ok("plugin", "up", str(plugin_dir))
    result = sysops.run("plugin", "push", PLUGIN, "--registry", registry.host)
    assert result.returncode == 0, result.stderr
    ref = result.stdout.strip()
    repository, digest = ref.split("@")
    assert repository == f"{registry.host}/sysops-plugins/{sysops.installation_id}-{PLUGIN}"
    path = repository.split("/", 1)[1]
    assert registry.manifest_digest(path, "1.0.0") == digest  # the registry's own word
    image_id = engine.images.get(ref).id
    assert "signature(s) as" in result.stderr
    assert registry.manifest_digest(path, f"sha256-{image_id[7:]}.sig")  # the signatures beside the image
    # the publisher's images go (labels), and with them every tag of the image: the engine has it no more
    sysops.ok("plugin", "down", PLUGIN, "--purge")
    assert not images_of_registry(engine, registry.host)
    yield Published(ref, repository, digest, "1.0.0", sysops.home / "keys" / "local.pub")
    for image_id in images_of_registry(engine, registry.host):
        engine.images.remove(image_id, force=True)


def install_by_digest(consumer: Sysops, spec: str) -> subprocess.CompletedProcess[str]:
    """`plugin install oci://...`'s OCI path (cli/registry_cmd.py install_oci_ref) in the consumer's SYSOPS_HOME."""
    script = (
        "import sys\n"
        "from sysops.cli.registry_cmd import install_oci_ref\n"
        "from sysops.errors import SysopsError\n"
        "try:\n"
        "    install_oci_ref(sys.argv[1])\n"
        "except SysopsError as error:\n"
        "    sys.stderr.write(f'error: {error}\\n')\n"
        "    sys.exit(int(error.exit_code))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script, spec], env=consumer.env, capture_output=True, text=True, timeout=240
    )


def test_pushed_image_is_pulled_by_digest_and_runs_by_digest(
    published: Published, fresh_sysops: Sysops, engine: docker.DockerClient
) -> None:
    assert fresh_sysops.ok("plugin", "pull", published.ref).strip() == published.ref
    assert published.ref in (engine.images.get(published.ref).attrs.get("RepoDigests") or [])

    # community tier: the publisher's signature, fetched from beside the image, is by a key not trusted here
    result = install_by_digest(fresh_sysops, f"oci://{published.ref}")
    assert result.returncode == 9, result.stderr
    assert "unknown signer key" in result.stderr and "Traceback" not in result.stderr
    assert (
        not (fresh_sysops.home / "installs.json").exists()
        or PLUGIN not in (json.loads((fresh_sysops.home / "installs.json").read_text())["installs"])
    )
    assert PLUGIN not in fresh_sysops.ok("plugin", "ls")

    fresh_sysops.ok("key", "trust", str(published.publisher_key), "--tier", "community", "--name", "publisher")
    result = install_by_digest(fresh_sysops, f"oci://{published.ref}")
    assert result.returncode == 0, result.stderr
    assert "1 signature(s) beside" in result.stderr
    assert fresh_sysops.ok("regping") == f"{ANSWER}\n"
    status = json.loads(fresh_sysops.ok("plugin", "status", PLUGIN, "--output", "json"))
    # the installation's own repository (the host runs no other), tagged with the pinned digest, of that image
    own_tag = f"sysops-plugins/{fresh_sysops.installation_id}-{PLUGIN}:1.0.0-{published.digest[7:19]}"
    assert status["image"] == own_tag
    assert status["image_digest"] == engine.images.get(published.ref).id
    assert published.ref in (engine.images.get(own_tag).attrs.get("RepoDigests") or [])
    assert status["source"] == f"oci://{published.ref}"
    record = json.loads((fresh_sysops.home / "installs.json").read_text())["installs"][PLUGIN]
    assert (record["kind"], record["image"], record["tier"]) == ("oci", published.ref, "community")
    fresh_sysops.ok("plugin", "down", PLUGIN, "--purge")
    with pytest.raises(docker.errors.ImageNotFound):  # purge removed the installation's tag
        engine.images.get(own_tag)
    engine.images.remove(published.ref, force=True)  # the pulled reference stays until removed (docs/registry.md)


def test_a_moved_tag_is_refused_naming_both_digests(
    published: Published, fresh_sysops: Sysops, engine: docker.DockerClient, registry: LoopbackRegistry
) -> None:
    base = os.environ.get("SYSOPS_BASE_IMAGE", "sysops/plugin-base:0.1.0")
    dockerfile = f"FROM {base}\nLABEL sysops.test.moved-tag=1\n".encode()
    other, _ = engine.images.build(fileobj=io.BytesIO(dockerfile), network_mode="none", rm=True, pull=False)
    moved = f"{published.repository}:{published.tag}"
    try:
        other.tag(published.repository, published.tag)
        engine.images.push(published.repository, tag=published.tag)
        served = registry.manifest_digest(published.repository.split("/", 1)[1], published.tag)
        assert served != published.digest
        engine.images.remove(moved, force=True)

        pinned_tag = f"{moved}@{published.digest}"
        result = fresh_sysops.run("plugin", "pull", pinned_tag)
        assert result.returncode == 6, result.stderr
        assert f"expected {published.digest}, found {served}" in result.stderr
        assert "Traceback" not in result.stderr
        with pytest.raises(docker.errors.ImageNotFound):  # the image the tag serves now was not kept
            engine.images.get(moved)

        result = install_by_digest(fresh_sysops, f"oci://{pinned_tag}")
        assert result.returncode == 6, result.stderr
        assert f"expected {published.digest}, found {served}" in result.stderr
        assert not (fresh_sysops.home / "installs.json").exists()
        assert "regdemo" not in fresh_sysops.ok("plugin", "ls")

        # the image the tag serves now, pinned by its own digest, is no plugin: refused, and never run
        result = fresh_sysops.run("plugin", "pull", f"{published.repository}@{served}")
        assert result.returncode == 4, result.stderr
        assert "/plugin/plugin.yaml: no such file" in result.stderr and "Traceback" not in result.stderr
        assert not engine.containers.list(all=True, filters={"ancestor": other.id})  # read from a removed container

        # the digest itself still names the published image
        assert fresh_sysops.ok("plugin", "pull", published.ref).strip() == published.ref
    finally:
        for image_id in [other.id, *images_of_registry(engine, registry.host)]:
            with contextlib.suppress(docker.errors.ImageNotFound):
                engine.images.remove(image_id, force=True)


def test_a_digest_the_registry_lacks_and_bad_references(published: Published, fresh_sysops: Sysops) -> None:
    absent = f"{published.repository}@sha256:{'0' * 64}"
    result = fresh_sysops.run("plugin", "pull", absent)
    assert result.returncode == 8, result.stderr
    assert absent in result.stderr and "no such image" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3 and "Traceback" not in result.stderr

    for bad, words in (
        (f"{published.repository}:{published.tag}", "has no digest"),
        ("just-a-name@sha256:" + "1" * 64, "not an image reference"),
        (f"{published.repository}@sha256:XYZ", "not an image reference"),
    ):
        result = fresh_sysops.run("plugin", "pull", bad)
        assert result.returncode == 2, (bad, result.stderr)
        assert words in result.stderr and "Traceback" not in result.stderr


def test_push_needs_a_registry_and_a_serving_plugin(fresh_sysops: Sysops, tmp_path: Path) -> None:
    result = fresh_sysops.run("plugin", "push", PLUGIN, env={"SYSOPS_REGISTRY": ""})
    assert result.returncode == 2 and "no registry given" in result.stderr
    result = fresh_sysops.run("plugin", "push", "Bad Name!", "--registry", "127.0.0.1:1")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_an_unsigned_image_installed_from_a_registry_is_community_and_refused(
    sysops: Sysops,
    fresh_sysops: Sysops,
    registry: LoopbackRegistry,
    engine: docker.DockerClient,
    tmp_path: Path,
) -> None:
    name = "regplain"
    plugin_dir = write_plugin(tmp_path / name, name=name, code=plugin_code(name, command="plainping"))
    sysops.ok("plugin", "up", str(plugin_dir))
    try:
        image_id = json.loads(sysops.ok("plugin", "status", name, "--output", "json"))["image_digest"]
        for cached in (sysops.home / "cache" / "signatures").glob(f"{image_id[7:]}*"):
            cached.unlink()  # the publisher's signature stays home: nothing is pushed beside the image
        result = sysops.run("plugin", "push", name, "--registry", registry.host)
        assert result.returncode == 0, result.stderr
        assert "signature(s) as" not in result.stderr
        ref = result.stdout.strip()

        # the tier of the roll is the install's (community), not that of a plugin never installed (private)
        result = install_by_digest(fresh_sysops, f"oci://{ref}")
        assert result.returncode == 9, result.stderr
        assert "unsigned" in result.stderr and "community" in result.stderr
        assert name not in fresh_sysops.ok("plugin", "ls")
        assert (
            not (fresh_sysops.home / "installs.json").exists()
            or name not in (json.loads((fresh_sysops.home / "installs.json").read_text())["installs"])
        )
    finally:
        fresh_sysops.run("plugin", "down", name, "--purge")  # had it started, its container would hold the image
        sysops.ok("plugin", "down", name, "--purge")
        for image in images_of_registry(engine, registry.host):
            with contextlib.suppress(docker.errors.ImageNotFound):
                engine.images.remove(image, force=True)

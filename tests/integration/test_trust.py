"""Signed plugins on the real Docker engine: a build signs its image with the installation's key, the trust gate
admits it, and refuses (exit code 9, saying which) a tampered image, a tampered manifest, an unknown signer, and
an unsigned image where the tier requires a signature, while a private plugin may run unsigned.

Rolls go through the orchestrator's `up_image`, the path a server takes for an image a client built: the
image is built (and signed) first, then signatures are tampered with, then the roll is asked for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from sysops.core.manifest import Manifest, load_manifest
from sysops.core.orchestrator import Orchestrator
from sysops.core.policy import apply_policy, load_policy
from sysops.core.rollout import RollTarget
from sysops.core.trust_gate import check_trust
from sysops.distribution.installs import InstallRecord, remove_install, save_install
from sysops.errors import ExitCode, PolicyDeniedError
from sysops.imaging.plugin_image import plugin_build
from sysops.runtime.docker.driver import DockerDriver
from sysops.settings import Settings
from sysops.trust.keys import generate_key, keys_dir, load_private_key, trust_key
from sysops.trust.signature_store import cache_path, cached_signatures, fetch_signatures, publish_signatures
from sysops.trust.signing import sign
from sysops.trust.verdicts import load_verdict

from tests.integration.conftest import Sysops, plugin_code, remove_installation, write_plugin
from tests.registry_fixture import (
    LoopbackRegistry,
    registry_fixture,  # noqa: F401  (defines the fixture `registry`)
)

pytestmark = pytest.mark.integration
NAME = "trusty"


@dataclasses.dataclass
class Built:
    tag: str
    image_id: str
    fingerprint: str
    manifest: Manifest
    directory: Path


@dataclasses.dataclass
class Installation:
    settings: Settings
    orchestrator: Orchestrator
    root: Path

    @property
    def home(self) -> Path:
        return self.settings.home

    def build(self, answer: str = "pong", registry: str = "") -> Built:
        """Build (and so sign) a plugin whose `ping` answers `answer` (tagged in `registry` when given)."""
        directory = self.root / f"src-{answer}"
        if not directory.exists():
            write_plugin(directory, name=NAME, code=plugin_code(NAME, answer=answer))
        manifest = load_manifest(directory)
        with plugin_build(
            self.orchestrator.driver,  # type: ignore[arg-type]
            directory,
            manifest,
            base_image=self.settings.base_image,
            installation_id=self.settings.installation_id,
            cache_dir=self.settings.cache_dir,
            progress=lambda line: None,
            registry=registry,
        ) as build:
            built = build.build()
        return Built(build.tag, built.id, build.fingerprint, manifest, directory)

    def roll(self, built: Built, manifest: Manifest | None = None) -> None:
        self.orchestrator.up_image(manifest or built.manifest, built.tag, built.fingerprint, str(built.directory))

    def refused(self, built: Built, manifest: Manifest | None = None) -> str:
        with pytest.raises(PolicyDeniedError) as refusal:
            self.roll(built, manifest)
        assert refusal.value.exit_code == ExitCode.POLICY_DENIED
        assert self.orchestrator.store.active_instances(NAME) == []
        return str(refusal.value)


@pytest.fixture
def installation(engine: docker.DockerClient, tmp_path: Path) -> Iterator[Installation]:
    settings = Settings(home=tmp_path / "home", ready_timeout=30.0, drain_timeout=2.0)
    orchestrator = Orchestrator(settings, DockerDriver())
    try:
        yield Installation(settings, orchestrator, tmp_path)
    finally:
        orchestrator.close()
        remove_installation(engine, settings.installation_id)


def test_a_build_is_signed_with_the_local_key_and_runs(installation: Installation) -> None:
    built = installation.build()
    key_dir = keys_dir(installation.home)
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((key_dir / "local.key").stat().st_mode) == 0o600
    [signature] = cached_signatures(installation.home, built.image_id)
    assert signature.payload.image_digest == built.image_id
    installation.roll(built)
    assert len(installation.orchestrator.store.active_instances(NAME)) == 1
    verdict = load_verdict(installation.home, built.image_id)
    assert verdict is not None and verdict.signed and verdict.signer_name == "local" and verdict.tier == "private"


def test_a_signature_moved_to_another_image_is_a_tampered_image(installation: Installation) -> None:
    genuine, other = installation.build("pong"), installation.build("evil")
    assert genuine.image_id != other.image_id
    moved = cache_path(installation.home, genuine.image_id).read_bytes()
    cache_path(installation.home, other.image_id).write_bytes(moved)
    message = installation.refused(other)
    assert f"plugin {NAME} 1.0.0 refused: tampered image" in message
    assert genuine.image_id in message and other.image_id in message


def test_a_manifest_other_than_the_signed_one_is_a_tampered_manifest(installation: Installation) -> None:
    built = installation.build()
    widened = built.manifest.model_copy(update={"permissions": ["system.execute"]})
    message = installation.refused(built, widened)
    assert "tampered manifest" in message and "(local, own)" in message


def test_a_signature_by_an_unknown_key_is_refused_until_the_key_is_trusted(
    installation: Installation, tmp_path: Path
) -> None:
    stranger_home = tmp_path / "stranger"
    stranger = generate_key(stranger_home, "stranger")
    built = installation.build()
    forged = sign(load_private_key(stranger_home, "stranger"), stranger.key_id, built.manifest, built.image_id)
    cache_path(installation.home, built.image_id).write_text(
        json.dumps({"signatures": [forged.as_dict()]}), encoding="utf-8"
    )
    message = installation.refused(built)
    assert f"unknown signer key '{stranger.key_id}'" in message
    built = installation.build()  # the refusal removed the image: a new one, signed by the local key again
    forged = sign(load_private_key(stranger_home, "stranger"), stranger.key_id, built.manifest, built.image_id)
    cache_path(installation.home, built.image_id).write_text(
        json.dumps({"signatures": [forged.as_dict()]}), encoding="utf-8"
    )
    trust_key(installation.home, stranger.public_key, "stranger", "community")
    installation.roll(built)  # private accepts community keys
    verdict = load_verdict(installation.home, built.image_id)
    assert verdict is not None and verdict.signer_key_id == stranger.key_id


def test_unsigned_is_allowed_for_private_and_refused_where_the_tier_requires_a_signature(
    installation: Installation,
) -> None:
    built = installation.build()
    cache_path(installation.home, built.image_id).unlink()
    record = InstallRecord(NAME, "trusty==1.0.0", "pip", "1.0.0", "community", str(built.directory))
    save_install(installation.home, record)
    message = installation.refused(built)
    assert message.startswith(f"plugin {NAME} 1.0.0 refused: unsigned, tier community requires a signature")

    built = installation.build()  # signed by the local key again: an own key is not a community key
    assert "is not trusted for tier community" in installation.refused(built)

    remove_install(installation.home, NAME)  # private again
    built = installation.build()
    cache_path(installation.home, built.image_id).unlink()
    installation.roll(built)
    verdict = load_verdict(installation.home, built.image_id)
    assert verdict is not None and not verdict.signed and verdict.tier == "private"


def test_the_policy_file_can_require_signatures_for_private(installation: Installation) -> None:
    policy = installation.settings.ensure_home() / "policy.yaml"
    policy.write_text("trust:\n  private: {require_signature: true, signers: [official]}\n")
    built = installation.build()
    assert "is not trusted for tier private" in installation.refused(built)
    built = installation.build()
    cache_path(installation.home, built.image_id).unlink()
    assert "unsigned, tier private requires a signature" in installation.refused(built)


def test_key_commands(tmp_path: Path) -> None:
    env = {**os.environ, "SYSOPS_HOME": str(tmp_path / "home")}
    cli = Sysops(home=tmp_path / "home", env=env)
    generated = cli.ok("key", "generate", "release")
    assert generated.startswith("key release ")
    public = keys_dir(cli.home) / "release.pub"
    other = generate_key(tmp_path / "other", "partner")
    (tmp_path / "partner.pub").write_bytes((keys_dir(tmp_path / "other") / "partner.pub").read_bytes())
    assert "for tier official" in cli.ok("key", "trust", str(tmp_path / "partner.pub"), "--tier", "official")
    listed = {row["name"]: row for row in json.loads(cli.ok("key", "ls", "--output", "json"))}
    assert listed["release"]["own"] and listed["partner"] == {
        **listed["partner"],
        "tier": "official",
        "own": False,
        "key_id": other.key_id,
    }
    assert public.is_file()
    bad = cli.run("key", "trust", str(tmp_path / "partner.pub"), "--tier", "gold")
    assert bad.returncode == ExitCode.USAGE and "tier 'gold' is not one of" in bad.stderr
    assert "Traceback" not in bad.stderr
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("not a key")
    bad = cli.run("key", "trust", str(garbage), "--tier", "community")
    assert bad.returncode == ExitCode.USAGE and "not a PEM public key" in bad.stderr


def test_signatures_beside_the_image_in_a_registry_are_verified_without_the_cache(
    installation: Installation, registry: LoopbackRegistry, engine: docker.DockerClient
) -> None:
    """What a server in a cluster does: no engine, no cache; the image digest and its signatures come from the
    registry (the `.sig` artifact the build pushed), and a manifest other than the signed one is refused."""
    built = installation.build(registry=registry.host)
    try:
        engine.images.push(built.tag)
        repository, _, _ = built.tag.partition("/")[2].rpartition(":")
        assert registry.manifest_digest(repository, f"sha256-{built.image_id.removeprefix('sha256:')}.sig")
        shutil.rmtree(installation.home / "cache" / "signatures")
        admitted = apply_policy(built.manifest, load_policy(installation.home), "x")
        target = RollTarget(admitted, built.tag, built.tag, "", "x")  # no image id: as on Kubernetes
        verdict = check_trust(installation.home, target)
        assert verdict.signed and verdict.image_digest == built.image_id and verdict.signer_name == "local"
        widened = dataclasses.replace(target, manifest=target.manifest.model_copy(update={"description": "evil"}))
        with pytest.raises(PolicyDeniedError, match="tampered manifest"):
            check_trust(installation.home, widened)
        assert fetch_signatures(installation.home, built.tag, built.image_id) == 1  # what a pull keeps
        assert cached_signatures(installation.home, built.image_id)[0].payload.image_digest == built.image_id
        assert publish_signatures(installation.home, built.tag, built.image_id) == (
            f"{registry.host}/{repository}:sha256-{built.image_id.removeprefix('sha256:')}.sig"
        )
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            engine.images.remove(built.tag)


def test_plugin_verify_and_sign_through_the_cli(fresh_sysops: Sysops, tmp_path: Path) -> None:
    directory = write_plugin(tmp_path / "cli-plugin", name=NAME, code=plugin_code(NAME))
    fresh_sysops.ok("plugin", "up", str(directory))
    verified = json.loads(fresh_sysops.ok("plugin", "verify", NAME, "--output", "json"))
    assert verified["signed"] and verified["tier"] == "private" and "(local)" in verified["signer"]
    fresh_sysops.ok("key", "generate", "release")
    signed = fresh_sysops.ok("plugin", "sign", NAME, "--key", "release")
    assert signed.startswith("signed ") and "the cache" in signed
    image_id = verified["image_digest"]
    assert len(cached_signatures(fresh_sysops.home, image_id)) == 2
    cache_path(fresh_sysops.home, image_id).unlink()
    save_install(fresh_sysops.home, InstallRecord(NAME, "trusty", "pip", "1.0.0", "community", str(directory)))
    refused = fresh_sysops.run("plugin", "verify", NAME)
    assert refused.returncode == ExitCode.POLICY_DENIED
    assert "unsigned, tier community requires a signature" in refused.stderr and "Traceback" not in refused.stderr
    missing = fresh_sysops.run("plugin", "sign", NAME, "--key", "nobody")
    assert missing.returncode == ExitCode.NOT_FOUND and "no own key 'nobody'" in missing.stderr

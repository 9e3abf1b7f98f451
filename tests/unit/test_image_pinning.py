"""Rolls on a runtime that pulls by reference run the manifest digest the trust gate verified, never a tag.

Against the real loopback registry (tests/registry_fixture.py; manifests and blobs put with its HTTP API, no
engine): a tag resolves to `REPO@sha256:<digest of the bytes served>`; the gate reads the config of THAT
manifest, so a tag moved after the roll began changes neither what is verified nor what runs (the fake driver
stands for Kubernetes: its image id is the reference); a registry that serves other bytes for a digest is
refused; an unreachable registry refuses only where the tier requires a signature. And the server accepts the
digest forms of its own repository only (server/service.py check_own_image).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sysops.core.manifest import Manifest, parse_manifest
from sysops.core.orchestrator import Orchestrator
from sysops.core.policy import apply_policy, load_policy
from sysops.core.rollout import RollTarget
from sysops.core.trust_gate import check_trust, image_digest_of, pinned_image
from sysops.errors import EngineUnavailableError, PolicyDeniedError, UsageError
from sysops.runtime.fake import FakeDriver
from sysops.server.service import check_own_image
from sysops.settings import Settings
from sysops.trust.keys import signing_key
from sysops.trust.signature_store import (
    cache_signature,
    config_digest,
    pinned_reference,
    registry_manifest,
    split_reference,
)
from sysops.trust.signing import sign

from tests.registry_fixture import (
    LoopbackRegistry,
    registry_fixture,  # noqa: F401  (defines the fixture `registry`)
)
from tests.unit.conftest import EchoV1

INSTALL = "abc123"
OWN = f"sysops-plugins/{INSTALL}-hello"
DIGEST = "sha256:" + "c" * 64
IMAGE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


# --- the server accepts its own repository by tag, by digest, or both; nothing else


def test_check_own_image_accepts_the_digest_forms_of_its_own_repository() -> None:
    for image in (
        f"{OWN}@{DIGEST}",
        f"{OWN}:1.0@{DIGEST}",
        f"reg.local:5000/{OWN}@{DIGEST}",
        f"reg.local:5000/{OWN}:1.0-x@{DIGEST}",
    ):
        check_own_image(image, INSTALL, "hello", registry="reg.local:5000")


def test_check_own_image_refuses_every_other_repository_and_bad_digests() -> None:
    for image in (
        f"evil.example/{OWN}@{DIGEST}",  # another registry, even by digest
        f"reg.local:5000/sysops-plugins/{INSTALL}-other@{DIGEST}",  # another plugin
        f"reg.local:5000/sysops-plugins/other-hello@{DIGEST}",  # another installation
        f"reg.local:5000/{OWN}@sha256:{'c' * 63}",  # not a digest
        f"reg.local:5000/{OWN}@sha256:{'C' * 64}",
        f"reg.local:5000/{OWN}@sha512:{'c' * 128}",
        f"reg.local:5000/{OWN}@",
        f"reg.local:5000/{OWN}:1@",
        f"reg.local:5000/{OWN}@{DIGEST}@{DIGEST}",
        f"reg.local:5000/{OWN}@{DIGEST}/../x",
        f"reg.local:5000/{OWN}",  # neither tag nor digest
        f"@{DIGEST}",
    ):
        with pytest.raises(UsageError, match="not a plugin image of this server"):
            check_own_image(image, INSTALL, "hello", registry="reg.local:5000")


def test_split_reference_of_a_tag_and_a_digest_names_the_repository() -> None:
    assert split_reference(f"127.0.0.1:5000/{OWN}:1.0@{DIGEST}") == ("127.0.0.1:5000", OWN, DIGEST)


# --- a real registry: tags that move


def put_image(registry: LoopbackRegistry, repository: str, tag: str, config: dict[str, str]) -> str:
    """Put an image manifest whose config blob is `config` under `repository:tag`; return the manifest digest."""
    config_bytes = json.dumps(config).encode()
    config_digest = f"sha256:{hashlib.sha256(config_bytes).hexdigest()}"
    start = urllib.request.Request(f"{registry.url}/v2/{repository}/blobs/uploads/", method="POST")
    with urllib.request.urlopen(start, timeout=10) as response:
        location = response.headers["Location"]
    separator = "&" if "?" in location else "?"
    upload = urllib.request.Request(
        f"{location}{separator}digest={config_digest}",
        data=config_bytes,
        method="PUT",
        headers={"Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(upload, timeout=10):
        pass
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": IMAGE_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config_bytes),
            },
            "layers": [],
        }
    ).encode()
    put = urllib.request.Request(
        f"{registry.url}/v2/{repository}/manifests/{tag}",
        data=body,
        method="PUT",
        headers={"Content-Type": IMAGE_MANIFEST},
    )
    with urllib.request.urlopen(put, timeout=10):
        pass
    return f"sha256:{hashlib.sha256(body).hexdigest()}"


def manifest_of(version: str = "1.0.0") -> Manifest:
    return parse_manifest(
        {"name": "echo", "version": version, "entrypoint": "x:Y", "limits": {"cpu_percent": 10, "memory_mb": 64}},
        "plugin.yaml",
    )


def config_of(image: str) -> str:
    found = config_digest(image)
    assert found is not None
    return found


def test_a_tag_is_pinned_to_the_digest_it_names_now_and_a_moved_tag_does_not_move_the_pin(
    registry: LoopbackRegistry,
) -> None:
    repository = "sysops-plugins/pin-test-a"
    first = put_image(registry, repository, "1.0", {"architecture": "amd64", "one": "1"})
    tag = f"{registry.host}/{repository}:1.0"
    pinned = pinned_reference(tag)
    assert pinned == f"{registry.host}/{repository}@{first}"
    config = config_of(pinned)
    assert pinned_reference(pinned) == pinned  # by digest already: as given
    assert pinned_reference(f"{registry.host}/{repository}:1.0@{first}") == f"{registry.host}/{repository}:1.0@{first}"
    second = put_image(registry, repository, "1.0", {"architecture": "amd64", "two": "2"})
    assert second != first
    assert pinned_reference(tag) == f"{registry.host}/{repository}@{second}"
    assert config_of(pinned) == config != config_of(tag)  # the pin still names the first
    assert pinned_reference(f"{OWN}:1") is None  # no registry: nothing to resolve (a node-loaded image)


def test_the_gate_verifies_the_config_of_the_pinned_manifest_not_of_the_tag(
    registry: LoopbackRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signed image rolled by digest stays admitted after its tag moves to an unsigned one; the tag itself
    (what the gate read before pinning) is refused: the gate reads the config of what runs."""
    monkeypatch.delenv("SYSOPS_POLICY", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    (home / "policy.yaml").write_text("trust:\n  private: {require_signature: true, signers: [private]}\n")
    repository = "sysops-plugins/pin-test-gate"
    put_image(registry, repository, "1.0", {"signed": "yes"})
    tag = f"{registry.host}/{repository}:1.0"
    pinned = pinned_image(home, manifest_of(), tag)
    signed_config = config_of(pinned)
    private_key, key_id = signing_key(home)
    cache_signature(home, signed_config, sign(private_key, key_id, manifest_of(), signed_config))
    put_image(registry, repository, "1.0", {"signed": "no"})  # the tag moves between check and pull
    admitted = apply_policy(manifest_of(), load_policy(home), "plugin.yaml")
    target = RollTarget(admitted, tag, pinned, "", "test")
    assert image_digest_of(target) == signed_config
    verdict = check_trust(home, target)
    assert verdict.signed and verdict.image_digest == signed_config
    with pytest.raises(PolicyDeniedError, match="unsigned"):
        check_trust(home, RollTarget(admitted, tag, tag, "", "test"))


def test_up_image_on_a_runtime_that_pulls_by_reference_runs_and_records_the_pinned_digest(
    registry: LoopbackRegistry, settings: Settings
) -> None:
    """The fake driver names images by reference, as Kubernetes does: the instance and the revision get
    `REPO@sha256:...`, and a rollback to that revision after the tag moved runs the same digest."""
    repository = "sysops-plugins/pin-test-up"
    first = put_image(registry, repository, "1.0", {"version": "1"})
    tag = f"{registry.host}/{repository}:1.0"
    pinned = f"{registry.host}/{repository}@{first}"
    driver = FakeDriver()
    driver.add_image(tag, EchoV1)
    driver.add_image(pinned, EchoV1)
    driver.add_image("echo-v1", EchoV1)
    orchestrator = Orchestrator(settings, driver)
    try:
        instance, changed = orchestrator.up_image(manifest_of(), tag, "fp1", "/src/echo")
        assert changed and (instance.image, instance.image_id) == (tag, pinned)
        assert [spec.image for spec in driver.started_specs] == [pinned]
        [revision] = orchestrator.history("echo")
        assert revision.image_id == pinned
        put_image(registry, repository, "1.0", {"version": "moved"})
        orchestrator.up_image(manifest_of("1.0.1"), "echo-v1", "fp2", "/src/echo")
        back = orchestrator.rollback("echo")
        assert back.image_id == pinned and driver.started_specs[-1].image == pinned
    finally:
        for handle in list(driver.instances):
            driver.remove(handle)
        orchestrator.close()


@contextlib.contextmanager
def lying_registry(body: bytes) -> Iterator[str]:
    """A registry on loopback that serves `body` for every manifest, whatever digest is asked for."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", IMAGE_MANIFEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):  # a client that read enough closes early
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_registry_serving_other_bytes_for_a_digest_is_refused() -> None:
    body = json.dumps({"schemaVersion": 2, "config": {"digest": DIGEST}, "layers": []}).encode()
    with lying_registry(body) as host:
        assert registry_manifest(f"{host}/{OWN}:1") is not None  # a tag: any bytes, their own digest
        with pytest.raises(PolicyDeniedError, match="not the image asked for"):
            registry_manifest(f"{host}/{OWN}@sha256:{'d' * 64}")
        real = f"sha256:{hashlib.sha256(body).hexdigest()}"
        assert config_digest(f"{host}/{OWN}@{real}") == DIGEST


def test_a_manifest_larger_than_a_registry_allows_is_refused_unread() -> None:
    with (
        lying_registry(b"{" + b" " * (4 << 20)) as host,
        pytest.raises(EngineUnavailableError, match="is over 4194304 bytes"),
    ):
        registry_manifest(f"{host}/{OWN}:1")


def test_an_unreachable_registry_refuses_only_where_a_signature_is_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SYSOPS_POLICY", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    with lying_registry(b"") as host:
        pass  # closed again: nothing listens on that port now
    tag = f"{host}/{OWN}:1"
    assert pinned_image(home, manifest_of(), tag) == tag  # private allows unsigned: the tag runs, logged
    (home / "policy.yaml").write_text("trust:\n  private: {require_signature: true, signers: [private]}\n")
    with pytest.raises(EngineUnavailableError, match=f"registry {host}"):
        pinned_image(home, manifest_of(), tag)
    assert pinned_image(home, manifest_of(), "sha256:" + "e" * 64) == "sha256:" + "e" * 64  # an engine's id

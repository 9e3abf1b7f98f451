"""Keys, signatures and trust decisions without an engine: what each refusal says, and hostile key and
signature files refused in one line."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from sysops.core.manifest import Manifest, parse_manifest
from sysops.core.policy import apply_policy, load_policy
from sysops.core.rollout import RollTarget
from sysops.core.trust_gate import check_trust
from sysops.distribution.installs import InstallRecord, save_install
from sysops.errors import EngineUnavailableError, PolicyDeniedError, UsageError
from sysops.trust.keys import (
    TRUSTED_KEYS_ENV,
    generate_key,
    key_id,
    keyring,
    keys_dir,
    load_private_key,
    raw_public_bytes,
    read_public_key,
    signing_key,
    trust_key,
)
from sysops.trust.policy import TierTrust, TrustPolicy
from sysops.trust.signature_store import cache_signature, cached_signatures, split_reference
from sysops.trust.signing import Signature, manifest_digest, sign, signature_holds
from sysops.trust.verification import decide

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def manifest(**extra: object) -> Manifest:
    return parse_manifest({"name": "demo", "version": "1.2.0", "entrypoint": "demo.plugin:P", **extra}, "plugin.yaml")


def test_generate_makes_private_files_and_an_id_of_16_hex(tmp_path: Path) -> None:
    key = generate_key(tmp_path, "release")
    assert len(key.key_id) == 16 and key.key_id == key_id(key.public_key)
    assert stat.S_IMODE(keys_dir(tmp_path).stat().st_mode) == 0o700
    assert stat.S_IMODE((keys_dir(tmp_path) / "release.key").stat().st_mode) == 0o600
    with pytest.raises(UsageError, match="exists already"):
        generate_key(tmp_path, "release")
    with pytest.raises(UsageError, match="not valid"):
        generate_key(tmp_path, "../evil")


def test_the_local_key_is_made_on_first_use(tmp_path: Path) -> None:
    private, signer = signing_key(tmp_path)
    assert signer == key_id(private.public_key())
    assert keyring(tmp_path)[signer].own and keyring(tmp_path)[signer].name == "local"


def test_signature_covers_image_and_declared_manifest(tmp_path: Path) -> None:
    private, signer = signing_key(tmp_path)
    declared = manifest()
    signature = sign(private, signer, declared, DIGEST)
    assert signature.payload.manifest_digest == manifest_digest(declared)
    assert json.loads(signature.payload.canonical()) == {
        "plugin": "demo",
        "version": "1.2.0",
        "image_digest": DIGEST,
        "manifest_digest": manifest_digest(declared),
    }
    assert signature_holds(signature, private.public_key())
    forged = Signature(
        signature.payload.__class__("demo", "1.2.0", OTHER, signature.payload.manifest_digest),
        signature.key_id,
        signature.signature,
        signature.manifest_json,
    )
    assert not signature_holds(forged, private.public_key())


def decision_for(signatures: list[Signature], keys_home: Path, tier: str = "private", rolled: bool = True) -> str:
    rule = TrustPolicy().for_tier(tier)
    decision = decide(signatures, DIGEST, keyring(keys_home), tier, rule, lambda signature: rolled)
    return "admitted" if decision.admitted else decision.reason


def test_each_refusal_says_which(tmp_path: Path) -> None:
    private, signer = signing_key(tmp_path)
    good = sign(private, signer, manifest(), DIGEST)
    assert decision_for([good], tmp_path) == "admitted"
    assert decision_for([], tmp_path) == "admitted"  # private may be unsigned
    assert decision_for([], tmp_path, "community") == "unsigned, tier community requires a signature"
    assert decision_for([], tmp_path, "nonsense") == "unsigned, tier nonsense requires a signature"  # as official
    assert decision_for([sign(private, signer, manifest(), OTHER)], tmp_path).startswith("tampered image")
    assert decision_for([good], tmp_path, rolled=False).startswith("tampered manifest")
    stranger = generate_key(tmp_path / "other", "stranger")
    foreign = sign(load_private_key(tmp_path / "other", "stranger"), stranger.key_id, manifest(), DIGEST)
    assert decision_for([foreign], tmp_path) == f"unknown signer key {stranger.key_id!r}"
    assert decision_for([good], tmp_path, "community").endswith("is not trusted for tier community")
    trust_key(tmp_path, stranger.public_key, "stranger", "community")
    assert decision_for([foreign], tmp_path, "community") == "admitted"
    assert decision_for([foreign], tmp_path, "official").endswith("is not trusted for tier official")
    bad_bytes = Signature(good.payload, good.key_id, base64.b64encode(b"x" * 64).decode(), good.manifest_json)
    assert decision_for([bad_bytes], tmp_path).startswith("tampered signature")
    assert decision_for([bad_bytes, good], tmp_path) == "admitted"  # any valid signature admits


def test_a_tier_may_accept_a_key_by_name(tmp_path: Path) -> None:
    partner = generate_key(tmp_path / "p", "partner")
    trust_key(tmp_path, partner.public_key, "partner", "community")
    rule = TierTrust(require_signature=True, signers=["official"], keys=["partner"])
    assert rule.accepts(keyring(tmp_path)[partner.key_id])


def test_trusted_keys_from_the_servers_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ci = generate_key(tmp_path / "ci", "ci")
    path = tmp_path / "trusted-keys.json"
    raw = base64.b64encode(raw_public_bytes(ci.public_key)).decode()
    path.write_text(json.dumps({"keys": {"ci": {"tier": "community", "public_key": raw}}}))
    monkeypatch.setenv(TRUSTED_KEYS_ENV, str(path))
    assert keyring(tmp_path / "server")[ci.key_id].tier == "community"
    for hostile in ("[]", '{"keys": {"ci": {"tier": "god", "public_key": "x"}}}', "{", '{"keys": {"../x": {}}}'):
        path.write_text(hostile)
        with pytest.raises(UsageError, match=str(path)):
            keyring(tmp_path / "server")


def test_hostile_signature_cache_is_refused_in_one_line(tmp_path: Path) -> None:
    private, signer = signing_key(tmp_path)
    cache_signature(tmp_path, DIGEST, sign(private, signer, manifest(), DIGEST))
    assert len(cached_signatures(tmp_path, DIGEST)) == 1
    cache_signature(tmp_path, DIGEST, sign(private, signer, manifest(), DIGEST))  # same key: replaced
    assert len(cached_signatures(tmp_path, DIGEST)) == 1
    path = tmp_path / "cache" / "signatures" / f"{'a' * 64}.json"
    for hostile in ('{"signatures": [{"payload": 1}]}', "[" * 100_000, '{"signatures": 3}'):
        path.write_text(hostile)
        with pytest.raises(UsageError, match="not a signatures file"):
            cached_signatures(tmp_path, DIGEST)
    with pytest.raises(UsageError, match="not an image digest"):
        cached_signatures(tmp_path, "sha256:../../etc")


def test_split_reference() -> None:
    assert split_reference("127.0.0.1:5000/sysops-plugins/x-y:1.0-abc") == (
        "127.0.0.1:5000",
        "sysops-plugins/x-y",
        "1.0-abc",
    )
    assert split_reference("reg.example/a/b@sha256:" + "c" * 64) == ("reg.example", "a/b", "sha256:" + "c" * 64)
    assert split_reference("sysops-plugins/x-y:1.0") is None


def test_policy_file_trust_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYSOPS_POLICY", raising=False)
    (tmp_path / "policy.yaml").write_text("trust:\n  community: {require_signature: false, signers: [official]}\n")
    policy = load_policy(tmp_path)
    assert not policy.trust.community.require_signature and policy.trust.private == TrustPolicy().private
    (tmp_path / "policy.yaml").write_text("trust:\n  community: {require_signature: true, signers: [gold]}\n")
    with pytest.raises(PolicyDeniedError, match=r"trust\.community\.signers"):
        load_policy(tmp_path)


def test_an_unreachable_registry_refuses_only_where_a_signature_is_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SYSOPS_POLICY", raising=False)
    image = "127.0.0.1:1/sysops-plugins/x-demo:1.2.0-abc"  # nothing listens on port 1
    target = RollTarget(apply_policy(manifest(), load_policy(tmp_path), "x"), image, image, "", "x")
    verdict = check_trust(tmp_path, target)  # private: logged, counted as unsigned
    assert not verdict.signed and verdict.tier == "private"
    save_install(tmp_path, InstallRecord("demo", "demo", "pip", "1.2.0", "community", ""))
    with pytest.raises(EngineUnavailableError, match=r"registry 127\.0\.0\.1:1"):
        check_trust(tmp_path, target)


@pytest.mark.parametrize(
    ("file", "text", "what_to_do"),
    [
        ("trusted.json", "{bad", "`sysops key trust`"),
        ("trusted.json", "[]", "`sysops key trust`"),
        ("trusted.json", '{"keys": {"a": {"tier": "root"}}}', "`sysops key trust`"),
        ("ci.key", "garbage", "`sysops key generate`"),
    ],
)
def test_a_damaged_key_file_is_named_with_what_to_do(tmp_path: Path, file: str, text: str, what_to_do: str) -> None:
    generate_key(tmp_path, "ci")
    (keys_dir(tmp_path) / file).write_text(text)
    with pytest.raises(UsageError) as caught:
        keyring(tmp_path) if file == "trusted.json" else load_private_key(tmp_path, "ci")
    message = str(caught.value)
    assert file in message and what_to_do in message and "\n" not in message


def test_a_build_that_finds_the_local_key_while_another_writes_it_signs_with_the_whole_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two first builds at once (two `plugin up` in a fresh installation): the second found `local.key` created
    but still empty and failed with "not a PEM private key" (CI). Now it appears whole or not at all."""
    writing, release = threading.Event(), threading.Event()
    real_fdopen = os.fdopen

    class SlowHandle:  # the first build's key file, written only once the second build has looked for it
        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def __enter__(self) -> SlowHandle:
            return self

        def __exit__(self, *exc_info: object) -> None:
            self.handle.close()

        def write(self, data: bytes) -> int:
            writing.set()
            release.wait(10)
            return int(self.handle.write(data))

    def fdopen(descriptor: int, *args: Any, **kwargs: Any) -> Any:
        handle = real_fdopen(descriptor, *args, **kwargs)
        return SlowHandle(handle) if threading.current_thread().name == "first-build" else handle

    monkeypatch.setattr(os, "fdopen", fdopen)
    monkeypatch.delenv("SYSOPS_SIGNING_KEY", raising=False)
    first: dict[str, object] = {}
    thread = threading.Thread(target=lambda: first.update(key=signing_key(tmp_path)[1]), name="first-build")
    thread.start()
    assert writing.wait(10)
    try:
        _, second = signing_key(tmp_path)
    finally:
        release.set()
        thread.join(10)
    assert first["key"] == second
    assert key_id(read_public_key(tmp_path / "keys" / "local.pub")) == second
    assert not [path.name for path in (tmp_path / "keys").iterdir() if path.name.endswith(".tmp")]

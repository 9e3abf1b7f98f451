"""What a plugin signature says and how it is made and checked: ed25519 over image digest and manifest digest.

The signed payload is canonical JSON (sorted keys, no spaces) of {plugin, version, image_digest,
manifest_digest}: the image is named by its config digest (the local image id `sha256:...`, identical after a
push and a pull), the manifest by the SHA-256 of `model_dump_json(exclude_unset=True)` of plugin.yaml as
loaded before any policy. A signature record carries that payload, the signer's key id, the signature, and
the signed manifest's JSON itself, so a verifier without the plugin directory (a server in a cluster) can
compare the manifest it is asked to run with the one that was signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sysops.core.manifest import Manifest

_PAYLOAD_FIELDS = ("plugin", "version", "image_digest", "manifest_digest")


class MalformedSignature(ValueError):
    """A signature record that is not one (wrong fields or types)."""


@dataclass(frozen=True)
class Payload:
    """What a signature covers."""

    plugin: str
    version: str
    image_digest: str
    manifest_digest: str

    def canonical(self) -> bytes:
        """The bytes that are signed."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Signature:
    """A payload, who signed it, the signature, and the signed manifest's JSON."""

    payload: Payload
    key_id: str
    signature: str  # base64 of the 64-byte ed25519 signature
    manifest_json: str

    def as_dict(self) -> dict[str, Any]:
        """The record as stored (cache file, registry artifact)."""
        return {**asdict(self), "payload": asdict(self.payload)}

    @classmethod
    def from_dict(cls, data: Any) -> Signature:
        """Read a stored record; MalformedSignature when it is not one."""
        if not isinstance(data, dict) or set(data) != {"payload", "key_id", "signature", "manifest_json"}:
            raise MalformedSignature("expected payload, key_id, signature, manifest_json")
        payload = data["payload"]
        if not isinstance(payload, dict) or set(payload) != set(_PAYLOAD_FIELDS):
            raise MalformedSignature(f"payload: expected {', '.join(_PAYLOAD_FIELDS)}")
        values = [payload[field] for field in _PAYLOAD_FIELDS] + [data["key_id"], data["signature"]]
        if not all(isinstance(value, str) for value in [*values, data["manifest_json"]]):
            raise MalformedSignature("every field is a string")
        return cls(Payload(**payload), data["key_id"], data["signature"], data["manifest_json"])


def declared_manifest_json(manifest: Manifest) -> str:
    """The manifest as declared (keys it leaves out stay out: policy fills them later), as JSON."""
    return manifest.model_dump_json(exclude_unset=True)


def digest_of_text(text: str) -> str:
    """SHA-256 hex of a text."""
    return hashlib.sha256(text.encode()).hexdigest()


def manifest_digest(manifest: Manifest) -> str:
    """The signed digest of a manifest as loaded before policy (`load_manifest(dir)`), hex."""
    return digest_of_text(declared_manifest_json(manifest))


def sign(private_key: Ed25519PrivateKey, signer_id: str, manifest: Manifest, image_digest: str) -> Signature:
    """Sign `manifest` (as declared) and the image with config digest `image_digest`."""
    manifest_json = declared_manifest_json(manifest)
    payload = Payload(manifest.name, manifest.version, image_digest, digest_of_text(manifest_json))
    signature = base64.b64encode(private_key.sign(payload.canonical())).decode()
    return Signature(payload, signer_id, signature, manifest_json)


def signature_holds(signature: Signature, public_key: Ed25519PublicKey) -> bool:
    """Whether `signature` is `public_key`'s signature over its payload."""
    try:
        public_key.verify(base64.b64decode(signature.signature, validate=True), signature.payload.canonical())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def manifest_matches(signature: Signature) -> bool:
    """Whether the manifest JSON a record carries is the one its payload's digest names."""
    return digest_of_text(signature.manifest_json) == signature.payload.manifest_digest

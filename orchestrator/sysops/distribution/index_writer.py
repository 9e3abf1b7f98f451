"""Write a plugin index: a TUF repository whose one target is `index.json`, signed with python-tuf's Metadata API.

Index authors (`sysops index publish DIR`) and the tests use it. An index directory holds::

    DIR/index.json                  the index document the author edits (format: distribution/index_client.py)
    DIR/keys/<role>.pem             ed25519 private keys of root, targets, snapshot, timestamp (0700 / 0600)
    DIR/repository/                 what is served: clients are given its URL (`sysops index add NAME URL`)
        metadata/root.json          the root to hand to users (`index add ... --root root.json`), also N.root.json
        metadata/N.targets.json     targets: index.json's length and sha256 (consistent snapshots: versioned)
        metadata/N.snapshot.json    snapshot: the version of targets
        metadata/timestamp.json     timestamp: the version of snapshot; the shortest expiry (freshness)
        targets/<sha256>.index.json the signed index document, named by its hash

`add_version` lists a plugin's version in DIR/index.json from its plugin.yaml (name, version, description,
compatibility, stage) with the spec to install it by. `create` makes the keys and the first version of every
role; `publish` checks DIR/index.json with the client's own parser, then signs a new targets, snapshot and
timestamp (each version one higher, so a client that saw a newer one refuses an older one: rollback
protection) with fresh expiry dates (a client refuses expired metadata: freeze protection).
`resign_timestamp` renews only the timestamp, what a periodic job does so that an unchanged index does not
expire. Keys never leave DIR/keys; the root key can be moved offline between root changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from packaging.version import Version

# Both packages re-export these names without __all__: documented public API that mypy's strict mode flags.
from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]
from tuf.api.metadata import (  # type: ignore[attr-defined]
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from sysops.core.manifest import Manifest
from sysops.distribution.index_client import FORMAT, INDEX_TARGET, parse_index_document
from sysops.distribution.index_registry import IndexConfig
from sysops.errors import UsageError
from sysops.private_paths import ensure_private_dir, write_private_file

ROLES = ("root", "targets", "snapshot", "timestamp")
_PRETTY = JSONSerializer(compact=False)
#: How the author's own document is named when it is checked with the clients' parser.
_SOURCE = IndexConfig(name="source", url="file:///", tier="private")


@dataclass(frozen=True)
class Expiry:
    """How long each role's metadata stays valid from the moment it is signed."""

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=90)
    snapshot: timedelta = timedelta(days=7)
    timestamp: timedelta = timedelta(days=1)


def _expires(lifetime: timedelta, now: datetime | None) -> datetime:
    return ((now or datetime.now(UTC)) + lifetime).replace(microsecond=0)


class IndexRepository:
    """The index directory of one author: its keys, its source index.json and the repository it serves."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.keys_dir = directory / "keys"
        self.repository_dir = directory / "repository"
        self.metadata_dir = self.repository_dir / "metadata"
        self.targets_dir = self.repository_dir / "targets"
        self.source_file = directory / INDEX_TARGET

    @property
    def root_file(self) -> Path:
        """The current root metadata: what users pass to `sysops index add ... --root`."""
        return self.metadata_dir / "root.json"

    def exists(self) -> bool:
        """True when the repository was created (its timestamp is there)."""
        return (self.metadata_dir / "timestamp.json").is_file()

    @classmethod
    def create(cls, directory: Path, *, expiry: Expiry = Expiry(), now: datetime | None = None) -> IndexRepository:
        """Make the keys (ed25519, one per role) and version 1 of every role, with an empty targets."""
        repository = cls(directory)
        if repository.exists():
            raise UsageError(f"{directory}: already holds an index repository", hint="publish to it instead")
        directory.mkdir(parents=True, exist_ok=True)
        ensure_private_dir(repository.keys_dir)
        repository.metadata_dir.mkdir(parents=True, exist_ok=True)
        repository.targets_dir.mkdir(parents=True, exist_ok=True)
        root = Metadata(Root(expires=_expires(expiry.root, now), consistent_snapshot=True))
        for role in ROLES:
            signer = CryptoSigner.generate_ed25519()
            write_private_file(repository.keys_dir / f"{role}.pem", signer.private_bytes.decode("ascii"))
            root.signed.add_key(signer.public_key, role)
        repository.write(root)
        repository.write(Metadata(Targets(expires=_expires(expiry.targets, now))))
        repository.write(Metadata(Snapshot(expires=_expires(expiry.snapshot, now))))
        repository.write(Metadata(Timestamp(expires=_expires(expiry.timestamp, now))))
        return repository

    def signer(self, role: str) -> CryptoSigner:
        """The signer of `role`, from DIR/keys/<role>.pem."""
        path = self.keys_dir / f"{role}.pem"
        try:
            key = load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as error:
            raise UsageError(f"{path}: the {role} key cannot be read ({error})") from None
        return CryptoSigner(key)

    def load(self, role: str) -> Metadata[Any]:
        """The current metadata of a top-level role, as last written."""
        path = self.metadata_dir / f"{role}.json"
        try:
            return Metadata.from_file(str(path))
        except (OSError, ValueError) as error:
            raise UsageError(f"{path}: cannot be read as TUF metadata ({error})") from None

    def write(self, metadata: Metadata[Any]) -> None:
        """Sign `metadata` with its role's key and write it: `N.<role>.json` (not for timestamp) and `<role>.json`."""
        role = metadata.signed.type
        metadata.signatures.clear()
        metadata.sign(self.signer(role))
        names = (
            [f"{role}.json"] if role == Timestamp.type else [f"{metadata.signed.version}.{role}.json", f"{role}.json"]
        )
        for name in names:
            metadata.to_file(str(self.metadata_dir / name), serializer=_PRETTY)
            os.chmod(self.metadata_dir / name, 0o644)  # public, served as is

    def read_source(self) -> bytes:
        """DIR/index.json, checked with the parser clients use (a UsageError naming the file when it is wrong)."""
        try:
            data = self.source_file.read_bytes()
        except OSError as error:
            raise UsageError(
                f"{self.source_file}: cannot be read ({error.strerror})",
                hint="write the index document there (see docs/indexes.md)",
            ) from None
        try:
            parse_index_document(data, _SOURCE)
        except ValueError as error:
            raise UsageError(f"{self.source_file}: {error}") from None
        return data

    def add_version(self, manifest: Manifest, spec: str, image_digest: str = "") -> None:
        """List one more version of a plugin in DIR/index.json (created when absent), from its manifest.

        A version already listed is refused: a published version never changes (clients may have it).
        The document is checked with the clients' parser before it is written.
        """
        document: dict[str, Any] = {"format": FORMAT, "plugins": []}
        if self.source_file.exists():
            document = json.loads(self.read_source())
        plugin = next((item for item in document["plugins"] if item.get("name") == manifest.name), None)
        if plugin is None:
            plugin = {"name": manifest.name, "description": manifest.description, "versions": []}
            document["plugins"].append(plugin)
        if any(Version(item["version"]) == Version(manifest.version) for item in plugin["versions"]):
            raise UsageError(
                f"{self.source_file}: {manifest.name} {manifest.version} is already listed",
                hint="a published version never changes; release a new version",
            )
        entry: dict[str, Any] = {
            "version": manifest.version,
            "spec": spec,
            "compatibility": manifest.compatibility.model_dump(),
            "stage": manifest.stage,
            "description": manifest.description,
        }
        if image_digest:
            entry["image_digest"] = image_digest
        plugin["versions"].append(entry)
        data = (json.dumps(document, indent=2) + "\n").encode()
        try:
            parse_index_document(data, _SOURCE)
        except ValueError as error:
            raise UsageError(f"{manifest.name} {manifest.version} cannot be listed: {error}") from None
        self.directory.mkdir(parents=True, exist_ok=True)
        self.source_file.write_bytes(data)

    def publish(self, data: bytes, *, expiry: Expiry = Expiry(), now: datetime | None = None) -> int:
        """Sign `data` as the new index.json: new targets, snapshot and timestamp; the targets version."""
        digest = hashlib.sha256(data).hexdigest()
        (self.targets_dir / f"{digest}.{INDEX_TARGET}").write_bytes(data)
        targets = self.load(Targets.type)
        targets.signed.targets = {INDEX_TARGET: TargetFile.from_data(INDEX_TARGET, data, ["sha256"])}
        targets.signed.version += 1
        targets.signed.expires = _expires(expiry.targets, now)
        self.write(targets)
        snapshot = self.load(Snapshot.type)
        snapshot.signed.meta[f"{Targets.type}.json"] = MetaFile(version=targets.signed.version)
        snapshot.signed.version += 1
        snapshot.signed.expires = _expires(expiry.snapshot, now)
        self.write(snapshot)
        self.resign_timestamp(expiry=expiry, now=now)
        return int(targets.signed.version)

    def resign_timestamp(self, *, expiry: Expiry = Expiry(), now: datetime | None = None) -> int:
        """A new timestamp for the current snapshot with a fresh expiry; its version."""
        snapshot = self.load(Snapshot.type)
        timestamp = self.load(Timestamp.type)
        timestamp.signed.snapshot_meta = MetaFile(version=snapshot.signed.version)
        timestamp.signed.version += 1
        timestamp.signed.expires = _expires(expiry.timestamp, now)
        self.write(timestamp)
        return int(timestamp.signed.version)

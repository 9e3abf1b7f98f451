"""Signing keys of this installation and the public keys it trusts, each with the tier it is trusted for.

A plugin signature is only worth the key behind it, so keys live apart from everything else: ed25519 private
keys this installation generated are PEM files in `$SYSOPS_HOME/keys/<name>.key`, private (0600, in a 0700
directory) from the moment they exist, beside their public halves `<name>.pub`. The installation's own key
`local` is created on the first build. Public keys of others are trusted explicitly (`sysops key trust FILE
--tier T`) and kept in `$SYSOPS_HOME/keys/trusted.json` with their tier; a server in a cluster also reads the
file named by `$SYSOPS_TRUSTED_KEYS` (the chart's ConfigMap of `trust.keys`), in the same format. A key is
known by its id: the first 16 hex digits of the SHA-256 of its raw 32 public bytes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast, get_args

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sysops.errors import NotFoundError, UsageError
from sysops.private_paths import create_private_file, ensure_private_dir, write_private_file

KeyTier = Literal["official", "community", "private"]
KEY_TIERS: tuple[str, ...] = get_args(KeyTier)
#: The installation's own key, made on the first build and used to sign what it builds.
LOCAL_KEY = "local"
#: Environment: the name of the own key builds sign with (default `local`).
SIGNING_KEY_ENV = "SYSOPS_SIGNING_KEY"
#: Environment: a trusted-keys file read besides `$SYSOPS_HOME/keys/trusted.json` (a server's ConfigMap).
TRUSTED_KEYS_ENV = "SYSOPS_TRUSTED_KEYS"
TRUSTED_FILE = "trusted.json"
#: What to do about a damaged key file (the errors name the file).
DAMAGED_PRIVATE_KEY_HINT = "restore it from a backup, or `sysops key generate` a new key and sign again with it"
DAMAGED_TRUSTED_HINT = (
    "restore it, or remove it and `sysops key trust` each key again (a server's file comes from the chart's trust.keys)"
)
KEY_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
_MAX_KEY_FILE_BYTES = 16 * 1024


@dataclass(frozen=True)
class TrustedKey:
    """A public key sysops verifies with: its name, tier, id, and whether this installation holds its private key."""

    name: str
    tier: KeyTier
    key_id: str
    public_key: Ed25519PublicKey
    own: bool = False

    @property
    def shown(self) -> str:
        """How messages name the key."""
        return f"{self.key_id} ({self.name}, {'own' if self.own else self.tier})"


def keys_dir(home: Path) -> Path:
    """Where the keys of the installation at `home` live."""
    return home / "keys"


def raw_public_bytes(public_key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of an ed25519 public key."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the SHA-256 of the raw public key."""
    return hashlib.sha256(raw_public_bytes(public_key)).hexdigest()[:16]


def public_pem(public_key: Ed25519PublicKey) -> str:
    """The public key as a PEM (SubjectPublicKeyInfo) text, as `key generate` writes and `key trust` reads."""
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def check_key_name(name: str) -> str:
    """Return `name` if it is a key name, else raise a UsageError naming it."""
    if not KEY_NAME.fullmatch(name):
        raise UsageError(
            f"key name {name[:80]!r} is not valid",
            hint="lowercase letters, digits, '.', '_' and '-', starting with a letter or digit, at most 63",
        )
    return name


def generate_key(home: Path, name: str) -> TrustedKey:
    """Create the own key `name` (private file 0600 from creation); refuse an existing one.

    The key is written to a private file of its own and linked into place whole: a concurrent build that finds
    `<name>.key` reads all of it (it read an empty file while the first build was still writing, and failed).
    """
    check_key_name(name)
    directory = ensure_private_dir(keys_dir(ensure_private_dir(home)))
    private_path = directory / f"{name}.key"
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    written = directory / f".{name}.key.{os.getpid()}.{threading.get_ident()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(written)
    with os.fdopen(create_private_file(written), "wb") as handle:
        handle.write(pem)
    try:
        os.link(written, private_path, follow_symlinks=False)
    except FileExistsError:
        raise UsageError(f"key {name!r} exists already ({private_path})", hint="choose another name") from None
    finally:
        os.unlink(written)
    write_private_file(directory / f"{name}.pub", public_pem(private_key.public_key()))
    return TrustedKey(name, "private", key_id(private_key.public_key()), private_key.public_key(), own=True)


def load_private_key(home: Path, name: str) -> Ed25519PrivateKey:
    """The own private key `name`, or NotFoundError / UsageError naming its file."""
    path = keys_dir(home) / f"{check_key_name(name)}.key"
    try:
        data = _read_small(path)
    except FileNotFoundError:
        raise NotFoundError(f"no own key {name!r} ({path})", hint="`sysops key generate NAME` makes one") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise UsageError(f"{path}: not a PEM private key without password", hint=DAMAGED_PRIVATE_KEY_HINT) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{path}: not an ed25519 private key", hint=DAMAGED_PRIVATE_KEY_HINT)
    return key


def signing_key(home: Path) -> tuple[Ed25519PrivateKey, str]:
    """The private key builds sign with and its id: `$SYSOPS_SIGNING_KEY`, else `local` (created if missing)."""
    name = os.environ.get(SIGNING_KEY_ENV) or LOCAL_KEY
    if name == LOCAL_KEY and not (keys_dir(home) / f"{LOCAL_KEY}.key").exists():
        with contextlib.suppress(UsageError):  # made by a concurrent build meanwhile
            generate_key(home, LOCAL_KEY)
    private_key = load_private_key(home, name)
    public_path = keys_dir(home) / f"{name}.pub"
    if name == LOCAL_KEY and not public_path.exists():  # linked by a concurrent build that has not written it yet
        write_private_file(public_path, public_pem(private_key.public_key()))
    return private_key, key_id(private_key.public_key())


def read_public_key(path: Path) -> Ed25519PublicKey:
    """A PEM ed25519 public key from a file, or a UsageError naming the file."""
    try:
        data = _read_small(path)
    except OSError as exc:
        reason = exc.strerror or exc
        raise UsageError(f"{path}: cannot read the key file: {reason}", hint="check the path and its mode") from None
    return parse_public_key(data, str(path))


def parse_public_key(data: bytes, where: str) -> Ed25519PublicKey:
    """Parse a PEM ed25519 public key; a UsageError names `where` when it is not one."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise UsageError(f"{where}: not a PEM public key", hint="`sysops key generate` writes NAME.pub") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"{where}: not an ed25519 public key")
    return key


def trust_key(home: Path, public_key: Ed25519PublicKey, name: str, tier: str) -> TrustedKey:
    """Trust `public_key` under `name` for `tier` (replacing a trusted key of that name)."""
    check_key_name(name)
    if tier not in KEY_TIERS:
        raise UsageError(f"tier {tier[:40]!r} is not one of {', '.join(KEY_TIERS)}")
    path = keys_dir(home) / TRUSTED_FILE
    entries = _trusted_entries(path)
    entries[name] = {"tier": tier, "public_key": base64.b64encode(raw_public_bytes(public_key)).decode()}
    ensure_private_dir(keys_dir(ensure_private_dir(home)))
    write_private_file(path, json.dumps({"keys": entries}, indent=2, sort_keys=True) + "\n")
    return TrustedKey(name, cast(KeyTier, tier), key_id(public_key), public_key)


def keyring(home: Path) -> dict[str, TrustedKey]:
    """Every key verification accepts as known, by key id: own keys, trusted keys, and `$SYSOPS_TRUSTED_KEYS`'s."""
    found: dict[str, TrustedKey] = {}
    sources = [keys_dir(home) / TRUSTED_FILE]
    if os.environ.get(TRUSTED_KEYS_ENV):
        sources.append(Path(os.environ[TRUSTED_KEYS_ENV]))
    for source in sources:
        for name, entry in _trusted_entries(source).items():
            public_key = Ed25519PublicKey.from_public_bytes(base64.b64decode(entry["public_key"]))
            trusted = TrustedKey(name, cast(KeyTier, entry["tier"]), key_id(public_key), public_key)
            found[trusted.key_id] = trusted
    directory = keys_dir(home)
    for public_path in sorted(directory.glob("*.pub")) if directory.is_dir() else []:
        if (directory / f"{public_path.stem}.key").exists():
            public_key = read_public_key(public_path)
            own = TrustedKey(public_path.stem, "private", key_id(public_key), public_key, own=True)
            found[own.key_id] = own
    return found


def _trusted_entries(path: Path) -> dict[str, dict[str, str]]:
    """The entries of a trusted-keys file ({"keys": {name: {tier, public_key}}}); none when it is missing."""
    try:
        document = json.loads(_read_small(path))
    except FileNotFoundError:
        return {}
    except OSError as exc:
        reason = exc.strerror or exc
        raise UsageError(f"{path}: cannot read the trusted keys: {reason}", hint="check its mode") from None
    except ValueError:
        raise UsageError(f"{path}: not a trusted-keys file (not JSON)", hint=DAMAGED_TRUSTED_HINT) from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, dict):
        raise UsageError(
            f'{path}: not a trusted-keys file (expected {{"keys": {{NAME: {{tier, public_key}}}}}})',
            hint=DAMAGED_TRUSTED_HINT,
        )
    for name, entry in entries.items():
        valid = (
            isinstance(name, str)
            and KEY_NAME.fullmatch(name)
            and isinstance(entry, dict)
            and entry.get("tier") in KEY_TIERS
            and isinstance(entry.get("public_key"), str)
            and _is_raw_key(entry["public_key"])
        )
        if not valid:
            raise UsageError(
                f"{path}: trusted key {str(name)[:80]!r}: expected {{tier, public_key (base64, 32 bytes)}}",
                hint=DAMAGED_TRUSTED_HINT,
            )
    return entries


def _is_raw_key(text: str) -> bool:
    try:
        return len(base64.b64decode(text, validate=True)) == 32
    except ValueError:
        return False


def _read_small(path: Path) -> bytes:
    with open(path, "rb") as handle:
        data = handle.read(_MAX_KEY_FILE_BYTES + 1)
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise UsageError(f"{path}: larger than {_MAX_KEY_FILE_BYTES // 1024} KiB: not a key file")
    return data

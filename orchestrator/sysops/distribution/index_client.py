"""Read plugin indexes through TUF: which plugins an index lists, in which versions, from where, at which tier.

An index is a TUF repository (python-tuf, see docs/indexes.md): its signed metadata (root, targets,
snapshot, timestamp) protect one target, `index.json`, against tampering, expiry (a freeze: a mirror
serving stale metadata), rollback to older versions and unknown signers. Every read here goes through
python-tuf's ngclient `Updater`, bootstrapped from the root trusted at `sysops index add` and caching
metadata and targets in `$SYSOPS_HOME/indexes/<name>/`. Anything TUF refuses becomes one line naming the
index (`IndexUntrustedError`, exit 9); an index that cannot be reached or refuses access becomes
`IndexUnavailableError` (exit 5). A private index gets its token as `Authorization: Bearer` (a fetcher
that sends it only to the index's own origin, only over https or loopback, never across a redirect).

The interface the install commands use::

    find(home, name, specifier="", *, include_experimental=False) -> IndexEntry | None
        # the newest version of plugin `name` matching the PEP 440 `specifier` ("" = any) that fits
        # this sysops, from the FIRST configured index listing `name` (indexes are never mixed for one
        # name: no dependency confusion); experimental versions only when asked; None when no index has it
    versions(home, name) -> list[IndexEntry]   # every version of `name` in that first index, oldest first
    search(home, term) -> list[IndexEntry]     # newest version of each plugin whose name or description
                                               # contains `term` (case-insensitive), in every index

    @dataclass(frozen=True)
    class IndexEntry:
        index: str                  # name of the configured index it came from
        tier: str                   # official | community | private: the tier the operator gave the index
                                    # at `index add` (an index cannot raise or lower it)
        name: str                   # plugin name (DNS-1123 label)
        version: str                # PEP 440 / semantic version
        spec: str                   # what to install: a pip requirement ("hello-plugin==1.2.0",
                                    # "hello @ git+https://...@v1") or an OCI ref by digest
                                    # ("oci://REGISTRY/REPO@sha256:<hex>" or "REGISTRY/REPO@sha256:<hex>")
        image_digest: str           # config digest of the signed image ("sha256:<hex>"), "" when none
        compatibility: dict[str, str]  # e.g. {"sysops": ">=0.1,<1.0", "python": ">=3.11"}
        stage: str                  # stable | experimental | deprecated
        description: str

The `index.json` document (`parse_index_document` checks it; a signed but malformed document is refused
whole, naming the index and the plugin)::

    {"format": 1, "plugins": [{"name": "hello", "description": "...", "versions": [
        {"version": "1.0.0", "spec": "hello-plugin==1.0.0", "image_digest": "sha256:...",
         "compatibility": {"sysops": ">=0.1"}, "stage": "stable", "description": "...", "tier": "community"}]}]}
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import urllib3
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from tuf.api import exceptions
from tuf.api.metadata import Metadata
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from sysops import __version__ as sysops_version
from sysops.distribution.index_registry import DNS_LABEL, IndexConfig, index_dir, load_indexes
from sysops.errors import ExitCode, SysopsError, UsageError
from sysops.private_paths import ensure_private_dir, write_private_file
from sysops.safe_text import escape_controls
from sysops.trust.signature_store import is_loopback_name

INDEX_TARGET = "index.json"
TRUSTED_ROOT_FILE = "trusted-root.json"
#: The largest index.json accepted (checked against its signed length before downloading it).
MAX_INDEX_BYTES = 16 * 1024 * 1024
#: The largest root metadata file accepted at `index add`.
MAX_ROOT_BYTES = 512_000
FORMAT = 1
STAGES = ("stable", "experimental", "deprecated")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_OCI_REF = re.compile(r"^(oci://)?[A-Za-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+@sha256:[0-9a-f]{64}$")
_TIMEOUT_SECONDS = 30.0


class IndexUntrustedError(SysopsError):
    """An index's metadata or index.json was refused: expired, rolled back, badly signed, or malformed."""

    exit_code = ExitCode.POLICY_DENIED


class IndexUnavailableError(SysopsError):
    """An index cannot be reached, refuses access (token), or its local cache cannot be written."""

    exit_code = ExitCode.ENGINE_UNAVAILABLE


@dataclass(frozen=True)
class IndexEntry:
    """One version of one plugin as an index lists it (see the module docstring)."""

    index: str
    tier: str
    name: str
    version: str
    spec: str
    image_digest: str = ""
    compatibility: dict[str, str] = field(default_factory=dict)
    stage: str = "stable"
    description: str = ""

    @property
    def is_oci(self) -> bool:
        """True when `spec` is an OCI reference by digest, False for a pip requirement."""
        return "@sha256:" in self.spec and _OCI_REF.match(self.spec) is not None

    def fits_this_sysops(self) -> bool:
        """True when this sysops's version is in the entry's `compatibility.sysops` range (or it has none)."""
        wanted = self.compatibility.get("sysops", "")
        return not wanted or SpecifierSet(wanted).contains(sysops_version, prereleases=True)

    def as_row(self) -> dict[str, str]:
        """The entry as the CLI prints it."""
        return {
            "name": self.name,
            "version": self.version,
            "index": self.index,
            "tier": self.tier,
            "stage": self.stage,
            "spec": self.spec,
            "description": self.description,
        }


# -- index.json ----------------------------------------------------------------------------------------------


def _text(item: dict[str, Any], key: str, where: str, *, required: bool = False) -> str:
    value = item.get(key, "")
    if not isinstance(value, str) or (required and not value):
        raise ValueError(f"{where}: '{key}' must be a {'non-empty ' if required else ''}string")
    if "\t" in value or escape_controls(value, one_line=True) != value:  # C0/C1, bidi overrides, separators
        raise ValueError(f"{where}: '{key}' contains control characters")
    return value


def _check_spec(spec: str, where: str) -> str:
    if "@sha256:" in spec and _OCI_REF.match(spec):
        return spec
    try:
        Requirement(spec)
    except InvalidRequirement:
        raise ValueError(f"{where}: spec {spec[:80]!r} is neither a pip requirement nor an OCI ref by digest") from None
    return spec


def _compatibility(item: dict[str, Any], where: str) -> dict[str, str]:
    value = item.get("compatibility", {})
    if not isinstance(value, dict):
        raise ValueError(f"{where}: 'compatibility' must be an object")
    ranges: dict[str, str] = {}
    for key, wanted in value.items():
        if key not in ("sysops", "python", "sdk") or not isinstance(wanted, str):
            raise ValueError(f"{where}: compatibility key {str(key)[:40]!r} unknown or not a string range")
        try:
            SpecifierSet(wanted)
        except InvalidSpecifier:
            raise ValueError(f"{where}: compatibility.{key} {wanted[:40]!r} is not a version range") from None
        ranges[key] = wanted
    return ranges


def _version_entry(item: Any, plugin: str, description: str, index: IndexConfig) -> IndexEntry:
    where = f"plugin {plugin!r}"
    if not isinstance(item, dict):
        raise ValueError(f"{where}: each version must be an object")
    version = _text(item, "version", where, required=True)
    try:
        Version(version)
    except InvalidVersion:
        raise ValueError(f"{where}: version {version[:40]!r} is not a valid version") from None
    where = f"plugin {plugin!r} {version}"
    stage = _text(item, "stage", where) or "stable"
    if stage not in STAGES:
        raise ValueError(f"{where}: stage {stage[:40]!r} is not one of {', '.join(STAGES)}")
    digest = _text(item, "image_digest", where)
    if digest and not _DIGEST.match(digest):
        raise ValueError(f"{where}: image_digest must be sha256:<64 hex digits>")
    _text(item, "tier", where)  # informational: the operator's tier for the index is the one that counts
    return IndexEntry(
        index=index.name,
        tier=index.tier,
        name=plugin,
        version=version,
        spec=_check_spec(_text(item, "spec", where, required=True), where),
        image_digest=digest,
        compatibility=_compatibility(item, where),
        stage=stage,
        description=_text(item, "description", where) or description,
    )


def parse_index_document(data: bytes, index: IndexConfig) -> list[IndexEntry]:
    """Every entry of an index.json, plugins in document order and each plugin's versions oldest first.

    Raises ValueError with one line naming what is wrong (the caller names the index).
    """
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"not UTF-8 JSON ({error})") from None
    except RecursionError:
        raise ValueError("not UTF-8 JSON (nested too deeply)") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f'not an index document of format {FORMAT} (an object with "format": {FORMAT})')
    plugins = document.get("plugins")
    if not isinstance(plugins, list):
        raise ValueError("'plugins' must be a list")
    entries: list[IndexEntry] = []
    seen: set[str] = set()
    for plugin in plugins:
        if not isinstance(plugin, dict):
            raise ValueError("each plugin must be an object")
        name = _text(plugin, "name", "a plugin", required=True)
        if not DNS_LABEL.match(name) or name in seen:
            raise ValueError(f"plugin name {name[:70]!r} is not a DNS-1123 label or is listed twice")
        seen.add(name)
        description = _text(plugin, "description", f"plugin {name!r}")
        items = plugin.get("versions")
        if not isinstance(items, list) or not items:
            raise ValueError(f"plugin {name!r}: 'versions' must be a non-empty list")
        versions = [_version_entry(item, name, description, index) for item in items]
        if len({Version(entry.version) for entry in versions}) != len(versions):
            raise ValueError(f"plugin {name!r}: a version is listed twice")
        entries += sorted(versions, key=lambda entry: Version(entry.version))
    return entries


# -- fetching through TUF ------------------------------------------------------------------------------------


def read_token(index: IndexConfig) -> str:
    """The bearer token of a private index from its token file ("" for none). The file must be ours, 0600."""
    if not index.token_file:
        return ""
    path = Path(index.token_file)
    try:
        info = os.stat(path)
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO) or info.st_uid != os.geteuid():
            raise UsageError(
                f"index {index.name!r}: token file {path} is readable by others or not yours",
                hint=f"chmod 600 {path}",
            )
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"index {index.name!r}: token file {path} cannot be read ({error})") from None
    if not token or any(ord(char) < 33 or ord(char) > 126 for char in token):
        raise UsageError(f"index {index.name!r}: token file {path} is empty or holds more than one printable token")
    return token


def check_token_transport(index: IndexConfig) -> None:
    """Refuse a token for an index served over plain http other than loopback (it would travel in clear)."""
    parts = urlsplit(index.url)
    if index.token_file and parts.scheme == "http" and not is_loopback_name(parts.hostname or ""):
        raise UsageError(
            f"index {index.name!r}: a token is sent only over https (or to a loopback address), not to {index.url}"
        )


class IndexFetcher(FetcherInterface):
    """Downloads the metadata and targets of one index: http(s) through urllib3, or file:// paths.

    The bearer token goes only to the index's own origin (scheme, host and port); redirects are not
    followed (a 3xx is an error), so the token never travels anywhere else.
    """

    def __init__(self, index: IndexConfig) -> None:
        check_token_transport(index)
        self._token = read_token(index)
        origin = urlsplit(index.url)
        self._origin = (origin.scheme, origin.netloc)
        self._pool = urllib3.PoolManager()

    def _fetch(self, url: str) -> Iterator[bytes]:
        parts = urlsplit(url)
        if parts.scheme == "file":
            return self._read_file(Path(unquote(parts.path)))
        headers = {"User-Agent": f"sysops/{sysops_version}"}
        if self._token and (parts.scheme, parts.netloc) == self._origin:
            headers["Authorization"] = f"Bearer {self._token}"
        response = self._pool.request(
            "GET",
            url,
            headers=headers,
            preload_content=False,
            redirect=False,
            retries=False,
            timeout=urllib3.Timeout(_TIMEOUT_SECONDS),
        )
        if response.status >= 300:
            response.release_conn()
            raise exceptions.DownloadHTTPError(f"HTTP {response.status} for {url}", response.status)
        return self._chunks(response)

    @staticmethod
    def _chunks(response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
        try:
            yield from response.stream(65536)
        finally:
            response.release_conn()

    @staticmethod
    def _read_file(path: Path) -> Iterator[bytes]:
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise exceptions.DownloadHTTPError(f"{path} not found", 404) from None
        with handle:
            while chunk := handle.read(65536):
                yield chunk


def _refusal(index: IndexConfig, error: Exception) -> SysopsError:
    """One line naming the index for anything python-tuf (or the network) refused."""
    where = f"index {index.name!r} ({index.url})"
    if isinstance(error, exceptions.ExpiredMetadataError):
        return IndexUntrustedError(
            f"{where} refused: its metadata expired ({error}): a frozen mirror or an index not re-signed",
            hint="ask its maintainer to publish it again (`sysops index publish`)",
        )
    if isinstance(error, exceptions.BadVersionNumberError):
        return IndexUntrustedError(
            f"{where} refused: metadata rolled back to an older version ({error})",
            hint="the index or a mirror serves stale metadata; do not trust it until its maintainer fixes it",
        )
    if isinstance(error, exceptions.UnsignedMetadataError):
        return IndexUntrustedError(f"{where} refused: metadata not signed by the keys its root trusts ({error})")
    if isinstance(error, exceptions.LengthOrHashMismatchError):
        return IndexUntrustedError(f"{where} refused: {INDEX_TARGET} does not match its signed length or hash")
    if isinstance(error, exceptions.RepositoryError):
        return IndexUntrustedError(f"{where} refused: {error}")
    if isinstance(error, exceptions.DownloadHTTPError) and error.status_code in (401, 403):
        return IndexUnavailableError(
            f"{where} refused access (HTTP {error.status_code})",
            hint="a private index needs its token: `sysops index add ... --token-file FILE`",
        )
    if isinstance(error, exceptions.DownloadError):
        cause = error.__cause__ or error
        return IndexUnavailableError(f"{where} cannot be read: {type(cause).__name__}: {str(cause)[:200]}")
    return IndexUnavailableError(f"{where}: its cache in the sysops home cannot be written ({error})")


def _updater(home: Path, index: IndexConfig, trusted_root: bytes) -> Updater:
    directory = index_dir(home, index.name)
    metadata = ensure_private_dir(directory / "metadata")
    targets = ensure_private_dir(directory / "targets")
    return Updater(
        metadata_dir=str(metadata),
        metadata_base_url=f"{index.url}/metadata/",
        target_dir=str(targets),
        target_base_url=f"{index.url}/targets/",
        fetcher=IndexFetcher(index),
        bootstrap=trusted_root,
    )


def _download_index(home: Path, index: IndexConfig, trusted_root: bytes) -> bytes:
    """index.json of `index`, verified by TUF (refreshed metadata, then the cached or downloaded target)."""
    try:
        with _locked(index_dir(home, index.name)):
            return _verified_index(home, index, trusted_root)
    except (exceptions.RepositoryError, exceptions.DownloadError, OSError) as error:
        raise _refusal(index, error) from None


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One sysops at a time reads an index through its caches (python-tuf's Updater is single-instance)."""
    ensure_private_dir(directory)
    descriptor = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _verified_index(home: Path, index: IndexConfig, trusted_root: bytes) -> bytes:
    """Refresh the metadata (root, timestamp, snapshot, targets, in that order) and return index.json."""
    updater = _updater(home, index, trusted_root)
    updater.refresh()
    info = updater.get_targetinfo(INDEX_TARGET)
    if info is None:
        raise IndexUntrustedError(f"index {index.name!r} ({index.url}) refused: its targets list no {INDEX_TARGET}")
    if info.length > MAX_INDEX_BYTES:
        raise IndexUntrustedError(
            f"index {index.name!r} ({index.url}) refused: {INDEX_TARGET} is {info.length} bytes, "
            f"more than {MAX_INDEX_BYTES}"
        )
    path = updater.find_cached_target(info) or updater.download_target(info)
    return Path(path).read_bytes()


def trusted_root(home: Path, index: IndexConfig) -> bytes:
    """The root metadata trusted for `index` at `index add`."""
    path = index_dir(home, index.name) / TRUSTED_ROOT_FILE
    hint = f"`sysops index remove {index.name}` and add it again with --root"
    try:
        root = path.read_bytes()
    except OSError as error:
        raise IndexUntrustedError(
            f"index {index.name!r}: its trusted root {path} cannot be read ({error.strerror})", hint=hint
        ) from None
    if not _is_root_metadata(root):
        raise IndexUntrustedError(f"index {index.name!r}: its trusted root {path} is not TUF root metadata", hint=hint)
    return root


def _is_root_metadata(data: bytes) -> bool:
    """Whether `data` parses as TUF metadata of the root role (signatures are checked by the Updater)."""
    try:
        return Metadata.from_bytes(data).signed.type == "root"
    except exceptions.RepositoryError:
        return False


def index_entries(home: Path, index: IndexConfig) -> list[IndexEntry]:
    """Every entry of one configured index, verified by TUF and checked (see parse_index_document)."""
    data = _download_index(home, index, trusted_root(home, index))
    try:
        return parse_index_document(data, index)
    except ValueError as error:
        raise IndexUntrustedError(f"index {index.name!r} ({index.url}) refused: {INDEX_TARGET}: {error}") from None


def bootstrap_index(home: Path, index: IndexConfig, root_file: Path) -> list[IndexEntry]:
    """Trust `root_file` for `index` and read the index once through it (what `index add` does).

    The root is stored as `trusted-root.json` in the index's private directory only when the index
    answered with metadata that verify against it; on any failure the directory is removed again.
    """
    try:
        with root_file.open("rb") as handle:
            root = handle.read(MAX_ROOT_BYTES + 1)
    except OSError as error:
        raise UsageError(f"root metadata {root_file} cannot be read ({error.strerror})") from None
    if len(root) > MAX_ROOT_BYTES:
        raise UsageError(f"root metadata {root_file} is larger than {MAX_ROOT_BYTES} bytes")
    if not _is_root_metadata(root):
        raise UsageError(
            f"{root_file} is not TUF root metadata", hint="ask the index's maintainer for its metadata/root.json"
        )
    directory = index_dir(home, index.name)
    ensure_private_dir(directory.parent)
    if directory.exists():
        shutil.rmtree(directory)
    ensure_private_dir(directory)
    try:
        data = _download_index(home, index, root)
        entries = parse_index_document(data, index)
    except ValueError as error:
        _forget(directory)
        raise IndexUntrustedError(f"index {index.name!r} ({index.url}) refused: {INDEX_TARGET}: {error}") from None
    except BaseException:
        _forget(directory)
        raise
    write_private_file(directory / TRUSTED_ROOT_FILE, root.decode("utf-8", errors="strict"))
    return entries


def _forget(directory: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(directory)


# -- what the commands ask -----------------------------------------------------------------------------------


def _matches(entry: IndexEntry, specifier: SpecifierSet, include_experimental: bool) -> bool:
    if entry.stage == "experimental" and not include_experimental:
        return False
    return specifier.contains(entry.version, prereleases=True) and entry.fits_this_sysops()


def _specifier(specifier: str | SpecifierSet) -> SpecifierSet:
    if isinstance(specifier, SpecifierSet):
        return specifier
    try:
        return SpecifierSet(specifier)
    except InvalidSpecifier:
        raise UsageError(f"version range {specifier!r} is not valid", hint="use e.g. '>=1.0,<2'") from None


def versions(home: Path, name: str, *, index_name: str = "") -> list[IndexEntry]:
    """Every version of plugin `name`, oldest first, from the first configured index that lists it (only from
    the index named `index_name` when given: an upgrade stays with the index, and tier, it was installed from)."""
    for index in load_indexes(home):
        if index_name and index.name != index_name:
            continue
        listed = [entry for entry in index_entries(home, index) if entry.name == name]
        if listed:
            return listed
    return []


def find(
    home: Path,
    name: str,
    specifier: str | SpecifierSet = "",
    *,
    include_experimental: bool = False,
    index_name: str = "",
) -> IndexEntry | None:
    """The newest version of `name` matching `specifier` that fits this sysops (see the module docstring), from
    the index named `index_name` only when given."""
    wanted = _specifier(specifier)
    listed = versions(home, name, index_name=index_name)
    candidates = [entry for entry in listed if _matches(entry, wanted, include_experimental)]
    return max(candidates, key=lambda entry: Version(entry.version), default=None)


def search(home: Path, term: str) -> list[IndexEntry]:
    """The newest version of every plugin whose name or description contains `term`, index by index."""
    needle = term.casefold()
    found: list[IndexEntry] = []
    for index in load_indexes(home):
        newest: dict[str, IndexEntry] = {}
        for entry in index_entries(home, index):
            if needle in entry.name.casefold() or needle in entry.description.casefold():
                newest[entry.name] = entry  # entries come oldest first
        found += newest.values()
    return found

"""The record of which plugins were installed from where, and so which trust tier each belongs to.

`sysops plugin install` remembers each plugin's source (the spec given, its kind, the version installed,
the plugin directory it was built from, and for OCI installs the image by digest) in
`$SYSOPS_HOME/installs.json`, a private file (0600) replaced atomically. `plugin upgrade`, `uninstall` and
`ls --outdated` read it back, and the trust gate asks `tier_of` which policy tier applies to a plugin:
a plugin that was never installed (brought up from a local directory) is `private`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

from sysops.errors import UsageError
from sysops.private_paths import ensure_private_dir, write_private_file

InstallKind = Literal["pip", "git", "path", "editable", "oci", "index"]
INSTALL_KINDS: tuple[str, ...] = get_args(InstallKind)
TIERS = ("official", "community", "private")
INSTALLS_FILE = "installs.json"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class InstallRecord:
    """Where one installed plugin came from and what was installed."""

    name: str
    spec: str
    kind: InstallKind
    version: str
    tier: str
    directory: str  # the plugin directory built from ("" for oci)
    image: str = ""  # oci: repo@sha256:<manifest digest>
    index: str = ""  # the index it came from, for kind "index"


def installs_path(home: Path) -> Path:
    """The file holding the install records of the installation at `home`."""
    return home / INSTALLS_FILE


def load_installs(home: Path) -> dict[str, InstallRecord]:
    """Every install record by plugin name; empty when nothing was installed. A damaged file is refused."""
    path = installs_path(home)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise UsageError(f"{path}: cannot be read ({error.strerror})", hint="check its owner and mode") from None
    try:
        document = json.loads(text)
        entries = document["installs"]
        if not isinstance(entries, dict):
            raise TypeError("installs is not an object")
        return {name: _record_from(name, entry) for name, entry in entries.items()}
    except (ValueError, KeyError, TypeError) as error:
        raise UsageError(
            f"{path}: not a valid install record file ({error})",
            hint="restore it from a backup, or remove it and install the plugins again",
        ) from None


def save_install(home: Path, record: InstallRecord) -> None:
    """Add or replace the record of `record.name`."""
    records = load_installs(home)
    records[record.name] = record
    _write(home, records)


def remove_install(home: Path, name: str) -> None:
    """Forget the install record of `name` (nothing happens when there is none)."""
    records = load_installs(home)
    if records.pop(name, None) is not None:
        _write(home, records)


def tier_of(home: Path, plugin: str) -> str:
    """The trust tier of `plugin`: its install record's tier, or `private` when it was not installed."""
    record = load_installs(home).get(plugin)
    return record.tier if record is not None else "private"


def installed_elsewhere(record: InstallRecord, fetched: str) -> UsageError:
    """The refusal of an install whose plugin.yaml names `record`'s plugin, fetched from another source
    (`fetched` says what: "package", "directory", "image of REPOSITORY"): it would take over that plugin's
    record and tier, code, data and secrets."""
    return UsageError(
        f"plugin {record.name} is installed already from {record.spec!r} ({record.kind}, tier {record.tier}); "
        f"what was fetched is another {fetched} of that name",
        hint=f"`sysops plugin uninstall {record.name}` first if it is to replace that plugin",
    )


def _record_from(name: str, entry: Any) -> InstallRecord:
    if not isinstance(entry, dict):
        raise TypeError(f"the entry of {name!r} is not an object")
    fields = {field.name for field in dataclasses.fields(InstallRecord)}
    unknown = set(entry) - fields
    if unknown:
        raise KeyError(f"unknown field(s) {sorted(unknown)} in the entry of {name!r}")
    if not all(isinstance(value, str) for value in entry.values()):
        raise TypeError(f"the entry of {name!r} has a value that is not a string")
    if entry.get("name") != name:
        raise KeyError(f"the entry of {name!r} names {entry.get('name')!r}")
    if entry.get("kind") not in INSTALL_KINDS:
        raise KeyError(f"the entry of {name!r} has an unknown kind {entry.get('kind')!r}")
    if entry.get("tier") not in TIERS:
        raise KeyError(f"the entry of {name!r} has an unknown tier {entry.get('tier')!r}")
    if entry["kind"] in ("pip", "index"):  # upgrade asks pip for this requirement again
        _check_requirement(name, entry.get("spec", ""))
    entry["kind"] = cast(InstallKind, entry["kind"])
    return InstallRecord(**entry)


def _check_requirement(name: str, spec: str) -> None:
    """ValueError (one line) unless the spec of a pip or index record is a pip requirement."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        Requirement(spec)
    except InvalidRequirement:
        raise ValueError(f"the entry of {name!r} has a spec that is no pip requirement: {spec!r}") from None


def _write(home: Path, records: dict[str, InstallRecord]) -> None:
    ensure_private_dir(home)
    document = {
        "format": _FORMAT_VERSION,
        "installs": {name: dataclasses.asdict(record) for name, record in sorted(records.items())},
    }
    write_private_file(installs_path(home), json.dumps(document, indent=2, sort_keys=True) + "\n")

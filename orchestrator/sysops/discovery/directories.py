"""Scan plugin directories: each directory and its subdirectories, one level deep, for a plugin.yaml.

The directories come from the installation's configuration (`plugin_dirs`) and `SYSOPS_PLUGIN_PATH`; their
contents are anybody's, so the scan is bounded and never recursive: it reads at most
`MAX_ENTRIES_PER_DIRECTORY` entries of a directory (saying so when there were more), follows a symbolic
link to a subdirectory but never descends further, and turns every error (a missing or unreadable
directory, a symbolic link loop) into a skipped entry instead of a crash. Hidden entries and `__pycache__`
are passed over in silence; any other subdirectory without a plugin.yaml is listed as skipped.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from sysops.core.manifest import MANIFEST_FILE
from sysops.discovery.results import Location, Scan, Skipped

#: Most entries read from one directory; the rest are left out and the skipped list says so.
MAX_ENTRIES_PER_DIRECTORY = 1000
#: Most plugin directories scanned (plugin_dirs and SYSOPS_PLUGIN_PATH together).
MAX_DIRECTORIES = 256
_PASSED_OVER = frozenset({"__pycache__"})


def _reason(error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        return "no such directory"
    return f"cannot read: {error.strerror or error}"


def _location(path: Path, source: str) -> Location:
    return Location(path=path, origin=f"directory {path}", source=source)


def _subdirectories(directory: Path, scan: Scan) -> list[Path]:
    """The subdirectories of `directory` (links to directories included), at most the entry bound read."""
    found: list[Path] = []
    with os.scandir(directory) as entries:
        for count, entry in enumerate(entries):
            if count >= MAX_ENTRIES_PER_DIRECTORY:
                scan.skipped.append(
                    Skipped(
                        str(directory),
                        f"more than {MAX_ENTRIES_PER_DIRECTORY} entries: only the first {MAX_ENTRIES_PER_DIRECTORY} "
                        "were scanned",
                    )
                )
                break
            if entry.name.startswith(".") or entry.name in _PASSED_OVER:
                continue
            try:
                if entry.is_dir():
                    found.append(directory / entry.name)
            except OSError as exc:  # a symbolic link loop, or a link into a directory we may not read
                scan.skipped.append(Skipped(str(directory / entry.name), _reason(exc)))
    return sorted(found)


def scan_directory(directory: Path, source: str) -> Scan:
    """The plugin directories in `directory` (itself and its subdirectories), and what was skipped there."""
    scan = Scan()
    try:
        if not stat.S_ISDIR(os.stat(directory).st_mode):
            scan.skipped.append(Skipped(str(directory), "not a directory"))
            return scan
        if (directory / MANIFEST_FILE).is_file():
            scan.locations.append(_location(directory, source))
        subdirectories = _subdirectories(directory, scan)
    except OSError as exc:
        scan.skipped.append(Skipped(str(directory), _reason(exc)))
        return scan
    for subdirectory in subdirectories:
        try:
            has_manifest = (subdirectory / MANIFEST_FILE).is_file()
        except OSError as exc:
            scan.skipped.append(Skipped(str(subdirectory), _reason(exc)))
            continue
        if has_manifest:
            scan.locations.append(_location(subdirectory, source))
        else:
            scan.skipped.append(Skipped(str(subdirectory), f"no {MANIFEST_FILE}"))
    return scan


def scan_directories(directories: Sequence[tuple[Path, str]]) -> Scan:
    """Scan each (directory, source) in order, at most `MAX_DIRECTORIES` of them."""
    scan = Scan()
    for index, (directory, source) in enumerate(directories):
        if index >= MAX_DIRECTORIES:
            scan.skipped.append(
                Skipped(source, f"more than {MAX_DIRECTORIES} plugin directories: only the first were scanned")
            )
            break
        found = scan_directory(directory, source)
        scan.locations.extend(found.locations)
        scan.skipped.extend(found.skipped)
    return scan

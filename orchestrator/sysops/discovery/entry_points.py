"""Find plugins in installed Python packages that declare an entry point in group `sysops.plugins`.

A distribution declares `[sysops.plugins] NAME = package[.module][:attribute]` (in pyproject:
`[project.entry-points."sysops.plugins"]`). The entry point names the package that carries the plugin
directory: the directory of the named module or package, or the nearest one above it up to the top-level
package, that holds a plugin.yaml is the plugin directory (it is built like any other: the manifest's
`entrypoint` is relative to it). No plugin code is imported to find it: the top-level package is located
through the distribution's files (`Distribution.locate_file`) or `importlib.util.find_spec` of the
top-level name (which searches the path and imports nothing), and the rest of the dotted name is
followed on the filesystem. At most `MAX_ENTRY_POINTS` entry points are read.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from sysops.core.manifest import MANIFEST_FILE
from sysops.discovery.results import Location, Scan, Skipped

#: The entry-point group a plugin distribution declares.
ENTRY_POINT_GROUP = "sysops.plugins"
#: Most entry points read; the rest are left out and the skipped list says so.
MAX_ENTRY_POINTS = 1000


class _NotLocated(Exception):
    """The entry point's package directory cannot be found; the message says why (one line)."""


def _top_level_directories(top: str, distribution: importlib.metadata.Distribution | None) -> list[Path]:
    """The directories of the top-level package `top`: the distribution's own first, else the import path's."""
    if distribution is not None:
        located = Path(str(distribution.locate_file(top)))
        if located.is_dir():
            return [located]
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: searches sys.path, imports nothing
    except (ImportError, ValueError) as exc:
        raise _NotLocated(f"package {top!r} cannot be located: {exc}") from None
    if spec is None:
        raise _NotLocated(f"package {top!r} is not installed on the Python path")
    if not spec.submodule_search_locations:
        raise _NotLocated(f"{top!r} is a module, not a package: plugin.yaml goes in a package directory")
    return [Path(location) for location in spec.submodule_search_locations]


def _plugin_directory(root: Path, inner: list[str]) -> Path | None:
    """The directory of the named module below `root`, or the nearest above it up to `root`, with a plugin.yaml."""
    directory = root
    for part in inner:
        if not (directory / part).is_dir():
            break  # a module file (or nothing): its directory is the one reached so far
        directory = directory / part
    while True:
        if (directory / MANIFEST_FILE).is_file():
            return directory
        if directory == root:
            return None
        directory = directory.parent


def locate(module: str, distribution: importlib.metadata.Distribution | None) -> Path:
    """The plugin directory of an entry point naming `module`; raise _NotLocated with the reason."""
    parts = module.split(".")
    if not all(part.isidentifier() for part in parts):
        raise _NotLocated(f"{module!r} is not a module name")
    roots = _top_level_directories(parts[0], distribution)
    for root in roots:
        found = _plugin_directory(root, parts[1:])
        if found is not None:
            return found
    raise _NotLocated(f"no {MANIFEST_FILE} in the directory of {module!r} or above it in {roots[0]}")


def _module(entry_point: importlib.metadata.EntryPoint) -> str:
    try:
        return entry_point.module
    except AttributeError:  # the value does not have the 'module:attribute' shape
        raise _NotLocated(f"{entry_point.value!r} is not a module name") from None


def _describe(entry_point: importlib.metadata.EntryPoint) -> tuple[str, str]:
    """(where, origin) of an entry point: 'entry point NAME of DIST VERSION', 'package DIST'."""
    distribution = entry_point.dist
    if distribution is None:
        return f"entry point {entry_point.name} ({entry_point.value})", f"package {entry_point.value}"
    name = distribution.metadata["Name"] or entry_point.module
    return f"entry point {entry_point.name} of {name} {distribution.version}", f"package {name}"


def scan_entry_points() -> Scan:
    """The plugin directories of installed distributions' `sysops.plugins` entry points, and what was skipped."""
    scan = Scan()
    try:
        entry_points = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception as exc:  # a broken distribution's metadata must not hide every other plugin source
        scan.skipped.append(Skipped(f"entry points {ENTRY_POINT_GROUP}", f"cannot read installed packages: {exc}"))
        return scan
    if len(entry_points) > MAX_ENTRY_POINTS:
        scan.skipped.append(
            Skipped(
                f"entry points {ENTRY_POINT_GROUP}",
                f"{len(entry_points)} entry points: only the first {MAX_ENTRY_POINTS} were read",
            )
        )
    for entry_point in entry_points[:MAX_ENTRY_POINTS]:
        where, origin = _describe(entry_point)
        try:
            path = locate(_module(entry_point), entry_point.dist)
        except _NotLocated as exc:
            scan.skipped.append(Skipped(where, str(exc)))
        except OSError as exc:
            scan.skipped.append(Skipped(where, f"cannot read: {exc.strerror or exc}"))
        else:
            scan.locations.append(Location(path=path, origin=origin, source=where))
    return scan

"""Discovery as a whole: scan the configured directories and the installed packages, validate each plugin.yaml.

Sources in order (the first of two plugins with one name and version is kept): `SYSOPS_PLUGIN_PATH`, then
`plugin_dirs` of the installation's configuration file, then `sysops.plugins` entry points, then the
packages `sysops plugin install` put in `$SYSOPS_HOME/packages`. Every
plugin.yaml is validated with `load_manifest`; an invalid one is skipped with its error line. Nothing a
plugin ships is imported or run.
"""

from __future__ import annotations

from pathlib import Path

from packaging.version import Version

from sysops.core.installation_config import (
    PLUGIN_DIRS_KEY,
    PLUGIN_PATH_VARIABLE,
    plugin_path_dirs,
    read_installation_config,
)
from sysops.core.manifest import load_manifest
from sysops.core.names import shown
from sysops.discovery.directories import scan_directories
from sysops.discovery.entry_points import ENTRY_POINT_GROUP, scan_entry_points
from sysops.discovery.installed_packages import scan_installed_packages
from sysops.discovery.results import DiscoveredPlugin, Discovery, Scan, Skipped
from sysops.errors import ManifestError, NotFoundError

DISCOVER_HINT = (
    "`sysops plugin discover` lists the plugins found in plugin_dirs of the installation's config.yaml, "
    f"{PLUGIN_PATH_VARIABLE} and installed packages with a {ENTRY_POINT_GROUP} entry point"
)


def _directories() -> list[tuple[Path, str]]:
    config = read_installation_config()
    from_file = f"{PLUGIN_DIRS_KEY} of {config.path}"
    return [(path, PLUGIN_PATH_VARIABLE) for path in plugin_path_dirs()] + [
        (path, from_file) for path in config.plugin_dirs
    ]


def _validated(scans: list[Scan]) -> Discovery:
    discovery = Discovery()
    first: dict[tuple[str, str], DiscoveredPlugin] = {}
    for scan in scans:
        discovery.skipped.extend(scan.skipped)
        for location in scan.locations:
            try:
                manifest = load_manifest(location.path)
            except ManifestError as exc:
                discovery.skipped.append(Skipped(str(location.path), str(exc)))
                continue
            kept = first.get((manifest.name, manifest.version))
            if kept is not None:
                discovery.skipped.append(
                    Skipped(
                        str(location.path),
                        f"duplicate: {manifest.name} {manifest.version} is also in {kept.path} ({kept.source}), "
                        "found first and used",
                    )
                )
                continue
            plugin = DiscoveredPlugin(
                name=manifest.name,
                version=manifest.version,
                path=location.path,
                origin=location.origin,
                source=location.source,
                manifest=manifest,
            )
            first[(manifest.name, manifest.version)] = plugin
            discovery.found.append(plugin)
    discovery.found.sort(key=lambda plugin: (plugin.name, Version(plugin.version)))
    return discovery


def discover() -> Discovery:
    """Every plugin in the configured directories and installed packages, and what was skipped and why.

    Raises ConfigFileError (exit 4) when the installation's configuration file is bad.
    """
    return _validated([scan_directories(_directories()), scan_entry_points(), scan_installed_packages()])


def find_discovered(name: str, discovery: Discovery | None = None) -> Path:
    """The directory of the newest discovered version of plugin `name`; NotFoundError (exit 8) if none."""
    matches = [plugin for plugin in (discovery or discover()).found if plugin.name == name]
    if not matches:
        raise NotFoundError(f"no discovered plugin named {shown(name)}", hint=DISCOVER_HINT)
    return max(matches, key=lambda plugin: Version(plugin.version)).path

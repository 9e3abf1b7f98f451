"""Plugin packages installed by sysops: one `pip install --target` directory per distribution.

`sysops plugin install` puts each pip-installed plugin distribution in its own directory
`$SYSOPS_HOME/packages/<distribution>` (never on sysops' own Python path: nothing of it is imported).
A distribution declares its plugin with a `sysops.plugins` entry point and ships plugin.yaml as package
data; the plugin directory is the directory of the plugin.yaml listed in the distribution's files that
holds the entry point's module (the deepest such one). Discovery scans these directories too, so
`plugin up NAME` finds installed packages.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from packaging.utils import canonicalize_name

from sysops.core.manifest import MANIFEST_FILE
from sysops.errors import ManifestError

PACKAGES_DIR = "packages"
ENTRY_POINT_GROUP = "sysops.plugins"
_DISTRIBUTION_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,198}[a-z0-9])?")


@dataclass(frozen=True)
class InstalledPackage:
    """One distribution in a package directory, and the plugin directory it ships."""

    distribution: str  # canonical name
    version: str
    plugin_dir: Path


def packages_root(home: Path) -> Path:
    """The directory holding one directory per installed plugin distribution."""
    return home / PACKAGES_DIR


def package_dirs(home: Path) -> list[Path]:
    """The installed package directories (staging directories, named with a leading dot, left out)."""
    root = packages_root(home)
    if not root.is_dir():
        return []
    return sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))


def package_dir_of(home: Path, plugin_dir: Path) -> Path | None:
    """The package directory `plugin_dir` lies in, or None when it is not inside an installed package."""
    root = packages_root(home)
    try:
        relative = plugin_dir.relative_to(root)
    except ValueError:
        return None
    return root / relative.parts[0] if relative.parts and not relative.parts[0].startswith(".") else None


def inspect_package(package_dir: Path) -> InstalledPackage:
    """The distribution in `package_dir` and its plugin directory; ManifestError (exit 4) naming the
    directory when it holds no distribution, several, or one without a `sysops.plugins` entry point or
    plugin.yaml."""
    distributions = list(importlib.metadata.distributions(path=[str(package_dir)]))
    if len(distributions) != 1:
        raise ManifestError(
            f"{package_dir}: expected one installed distribution, found {len(distributions)}",
            hint="a plugin package is installed with its dependencies left out (pip install --no-deps)",
        )
    distribution = distributions[0]
    name = canonicalize_name(distribution.metadata["Name"] or "")
    if not _DISTRIBUTION_NAME.fullmatch(name):
        raise ManifestError(
            f"{package_dir}: distribution name {name!r} is not a valid package name",
            hint="a distribution is named with letters, digits and - _ . (PEP 508)",
        )
    entry_points = [point for point in distribution.entry_points if point.group == ENTRY_POINT_GROUP]
    if len(entry_points) != 1:
        raise ManifestError(
            f"distribution {name} {distribution.version} declares {len(entry_points)} {ENTRY_POINT_GROUP} "
            "entry points, expected one",
            hint=f'declare [project.entry-points."{ENTRY_POINT_GROUP}"] NAME = "package" in its pyproject.toml',
        )
    module = PurePosixPath(*entry_points[0].value.split(":")[0].strip().split("."))
    manifests = [PurePosixPath(str(file)) for file in distribution.files or () if file.name == MANIFEST_FILE]
    holding = [path.parent for path in manifests if module == path.parent or path.parent in module.parents]
    if not holding:
        raise ManifestError(
            f"distribution {name} {distribution.version} ships no {MANIFEST_FILE} in the package of its entry "
            f"point {entry_points[0].value!r}",
            hint=f"ship {MANIFEST_FILE} as package data beside the package's __init__.py",
        )
    deepest = max(holding, key=lambda path: len(path.parts))
    plugin_dir = (package_dir / deepest).resolve()
    if not plugin_dir.is_relative_to(package_dir.resolve()):  # an absolute RECORD path, a symlinked package
        raise ManifestError(
            f"distribution {name} {distribution.version}: its plugin directory {str(deepest)[:200]!r} lies "
            f"outside its package directory",
            hint=f"ship {MANIFEST_FILE} inside the package, as a relative path in the wheel",
        )
    return InstalledPackage(name, distribution.version, plugin_dir)

"""Turn what `sysops plugin install SPEC` was given into a plugin directory to build.

A SPEC is one of: a pip requirement (`name`, `name==1.2`, from pip's configured index or `--index-url`),
`git+URL@ref` (fetched and built by pip), a local path (a bare plugin directory with plugin.yaml is used
in place; a Python project or a wheel file is installed by pip), `-e PATH` (a plugin directory used in
place and watched), or an OCI reference (`oci://...` or `REGISTRY/REPO@sha256:...`, see
distribution/oci.py). pip installs a distribution with `--no-deps --target` into a private staging
directory under `$SYSOPS_HOME/packages`; once its plugin.yaml is read (nothing of the package is imported
or run by sysops; a source tree is built by its own build backend, which must be installed beside sysops:
`--no-build-isolation` keeps the fetch offline apart from the index) it replaces
`$SYSOPS_HOME/packages/<distribution>`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from packaging.requirements import InvalidRequirement, Requirement

from sysops.core.manifest import MANIFEST_FILE, Manifest, load_manifest
from sysops.distribution.installs import installed_elsewhere, load_installs
from sysops.distribution.packages import inspect_package, package_dir_of, packages_root
from sysops.errors import BuildError, ManifestError, NotFoundError, UsageError
from sysops.private_paths import ensure_private_dir

SpecKind = Literal["pip", "git", "path", "editable", "oci", "index"]
PROJECT_FILES = ("pyproject.toml", "setup.py")
_OCI_DIGEST = re.compile(r"^[A-Za-z0-9.\-:_/]+@sha256:[0-9a-f]{64}$")
PIP_TIMEOUT_SECONDS = 600
#: Age after which a staging or set-aside package directory is taken for the leftover of an interrupted install.
LEFTOVER_SECONDS = 86400.0


def classify(spec: str, *, editable: bool = False) -> SpecKind:
    """Which kind of source `spec` names (an index name is told apart later, by asking the indexes)."""
    if editable:
        return "editable"
    if spec.startswith("oci://") or _OCI_DIGEST.match(spec):
        return "oci"
    if spec.startswith("git+"):
        return "git"
    # A bare name is a requirement even where the working directory holds that name (as for pip): in a
    # directory others can write (/tmp), `install hello` must not build their ./hello as a private plugin.
    if spec.startswith((".", "/", "~")) or os.sep in spec or (spec.endswith(".whl") and Path(spec).is_file()):
        return "path"
    return "pip"


def requirement_of(spec: str) -> Requirement:
    """`spec` as a pip requirement; UsageError (exit 2) naming it when it is not one."""
    try:
        return Requirement(spec)
    except InvalidRequirement as error:
        raise UsageError(
            f"{spec!r} is not a pip requirement, a git+URL, a path or an OCI reference ({error})",
            hint="e.g. `sysops plugin install NAME==1.0`, `git+https://host/repo@v1`, `./dir` or `-e ./dir`",
        ) from None


@dataclass(frozen=True)
class Fetched:
    """A plugin fetched for building: its directory and manifest, and the staging directory to commit or drop."""

    plugin_dir: Path
    manifest: Manifest
    distribution: str = ""  # the pip distribution ("" for a directory used in place)
    distribution_version: str = ""
    staging: Path | None = None

    def place(self, home: Path) -> Placed:
        """Move a staged package to `$SYSOPS_HOME/packages/<distribution>`, the older one set aside until the
        caller keeps or restores it (a plugin is always rolled from one directory, so it is built from there)."""
        if self.staging is None:
            return Placed(self)
        final = packages_root(home) / self.distribution
        previous = None
        if final.exists():
            previous = final.with_name(f".previous-{uuid.uuid4().hex[:12]}")
            os.replace(final, previous)
        os.replace(self.staging, final)
        plugin_dir = final / self.plugin_dir.relative_to(self.staging.resolve())
        placed = Fetched(plugin_dir, self.manifest, self.distribution, self.distribution_version)
        return Placed(placed, final, previous)

    def discard(self) -> None:
        """Remove a staged package that is not kept."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)


@dataclass(frozen=True)
class Placed:
    """A fetched plugin in its final place: the package directory it now fills (None for a directory used in
    place) and the package it replaced, set aside (None when there was none)."""

    fetched: Fetched
    package: Path | None = None
    previous: Path | None = None

    def keep(self) -> None:
        """The new package stays: remove the one it replaced."""
        if self.previous is not None:
            shutil.rmtree(self.previous, ignore_errors=True)

    def restore(self) -> None:
        """The new package goes: put back the one it replaced (or leave no package when there was none)."""
        if self.package is None:
            return
        shutil.rmtree(self.package, ignore_errors=True)
        if self.previous is not None:
            os.replace(self.previous, self.package)


def plugin_dir_in_place(path: Path) -> Path:
    """A local plugin directory used as it is (PATH or `-e PATH`): PATH itself, or the one directory below
    it (`PATH/*`, `PATH/src/*`) holding plugin.yaml; ManifestError (exit 4) naming PATH otherwise."""
    root = path.expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ManifestError(f"{path}: a file, not a plugin directory or a wheel (.whl)")
    if not root.is_dir():
        raise NotFoundError(f"{path}: no such directory", hint="give the directory that holds plugin.yaml")
    if (root / MANIFEST_FILE).is_file():
        return root
    found = sorted({*root.glob(f"*/{MANIFEST_FILE}"), *root.glob(f"src/*/{MANIFEST_FILE}")})
    if len(found) != 1:
        raise ManifestError(
            f"{path}: {'no' if not found else 'more than one'} {MANIFEST_FILE} in it or in a package directory below",
            hint="give the plugin directory itself",
        )
    return found[0].parent


def fetch_local(path: Path) -> Fetched:
    """A bare local plugin directory, used in place."""
    directory = plugin_dir_in_place(path)
    return Fetched(directory, load_manifest(directory))


def is_project(path: Path) -> bool:
    """Whether a local path is something pip installs (a Python project or a wheel) rather than a plugin dir."""
    resolved = path.expanduser()
    if resolved.is_file():
        return resolved.suffix == ".whl"
    return not (resolved / MANIFEST_FILE).is_file() and any((resolved / name).is_file() for name in PROJECT_FILES)


def fetch_with_pip(
    home: Path, spec: str, *, index_url: str = "", pre: bool = False, from_source: bool = False
) -> Fetched:
    """pip-install `spec` (no dependencies) into a staging directory and read its plugin; the caller commits
    or discards it. BuildError or NotFoundError naming the spec when pip fails."""
    root = ensure_private_dir(packages_root(ensure_private_dir(home)))
    remove_leftovers(root)
    staging = root / f".staging-{uuid.uuid4().hex[:12]}"
    ensure_private_dir(staging)
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-input", "--disable-pip-version-check",
               "--quiet", "--no-compile", "--target", str(staging)]  # fmt: skip
    if index_url:
        command += ["--index-url", index_url]
    if pre:
        command.append("--pre")
    if from_source:
        command.append("--no-build-isolation")
    command.append(spec)
    try:
        completed = subprocess.run(command, capture_output=True, text=True, check=False, timeout=PIP_TIMEOUT_SECONDS)
        if completed.returncode != 0:
            raise _pip_failure(spec, completed.stderr)
        package = inspect_package(staging)
        return Fetched(package.plugin_dir, load_manifest(package.plugin_dir), package.distribution, package.version,
                       staging)  # fmt: skip
    except subprocess.TimeoutExpired:
        shutil.rmtree(staging, ignore_errors=True)
        raise BuildError(f"pip did not fetch {spec} within {PIP_TIMEOUT_SECONDS}s") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def refuse_another_source(home: Path, fetched: Fetched) -> None:
    """Refuse (UsageError) a fetched plugin whose name is installed already from another package or directory.

    A package chooses its plugin's name in its plugin.yaml: installing it must not take over an installed
    plugin of that name (its record and tier, its data and secrets), unreviewed when it asks nothing more.
    The same package (distribution) or the same directory again is a reinstall.
    """
    record = load_installs(home).get(fetched.manifest.name)
    if record is None or not record.directory:
        return
    installed = package_dir_of(home, Path(record.directory))
    same = (
        installed.name == fetched.distribution
        if installed is not None and fetched.distribution
        else Path(record.directory) == fetched.plugin_dir
    )
    if not same:
        raise installed_elsewhere(record, "package" if fetched.distribution else "directory")


def remove_leftovers(root: Path, *, older_than: float = LEFTOVER_SECONDS) -> None:
    """Remove staging and set-aside package directories an interrupted install left (older than a day, so
    another install in progress keeps its own)."""
    deadline = time.time() - older_than
    for leftover in [*root.glob(".staging-*"), *root.glob(".previous-*")]:
        with contextlib.suppress(OSError):
            if leftover.is_dir() and not leftover.is_symlink() and leftover.stat().st_mtime < deadline:
                shutil.rmtree(leftover, ignore_errors=True)


def _pip_failure(spec: str, stderr: str) -> BuildError | NotFoundError:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    git_errors = [line for line in lines if line.startswith("fatal:")][:1]  # git's first says what is wrong
    pip_errors = [line for line in lines if line.startswith("ERROR:")]
    errors = git_errors or pip_errors or [line for line in lines if not line.startswith("note:")] or ["pip failed"]
    reason = errors[-1].removeprefix("ERROR: ")
    if "No matching distribution" in stderr or "Could not find a version" in stderr:
        return NotFoundError(f"cannot install {spec}: {reason}", hint="check the name, the version and --index-url")
    return BuildError(f"cannot install {spec}: {reason}")

"""Choose what `sysops plugin upgrade NAME` (and `plugin ls --outdated`) moves an installed plugin to.

The newest version the plugin's source offers above the installed one: pip (the same requirement with
`>INSTALLED`, from pip's configured index or `--index-url`), the git ref again (a moved branch or tag), or
the index the plugin came from. The candidate's own plugin.yaml decides: an `experimental` stage is
skipped (the next older candidate is tried) unless `--pre`; `deprecated` is taken with a warning; a
version listed in its `breaking_versions` above the installed one is not crossed without
`--allow-breaking`. Nothing is built here: the caller brings up the chosen candidate and commits it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import InvalidVersion, Version

from sysops.distribution.index_client import find
from sysops.distribution.index_registry import load_indexes
from sysops.distribution.installs import InstallRecord
from sysops.distribution.packages import inspect_package, package_dir_of
from sysops.distribution.sources import Fetched, fetch_local, fetch_with_pip, requirement_of
from sysops.errors import ManifestError, NotFoundError, UsageError

#: Experimental candidates skipped before giving up (each is fetched to read its plugin.yaml).
MAX_SKIPPED = 10


@dataclass
class UpgradeChoice:
    """The candidate to bring up (None: nothing newer to take), and what was skipped or deserves a warning."""

    fetched: Fetched | None
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        return Version("0")


def crossed_breaking_versions(installed: str, candidate: Fetched) -> list[str]:
    """The candidate's breaking versions above `installed` and up to its own version."""
    low, high = _version(installed), _version(candidate.manifest.version)
    return [line for line in candidate.manifest.breaking_versions if low < _version(line) <= high]


def choose_upgrade(
    home: Path, record: InstallRecord, *, pre: bool = False, allow_breaking: bool = False, index_url: str = ""
) -> UpgradeChoice:
    """The upgrade of `record` (its staging directory, if any, left for the caller to commit or discard).

    UsageError (exit 2) when the candidate crosses a breaking version without `allow_breaking`, or when the
    plugin's source cannot be upgraded (an OCI reference is pinned by digest)."""
    if record.kind == "oci":
        raise UsageError(
            f"{record.name} was installed from {record.image or record.spec}, pinned by digest",
            hint="install the new reference: `sysops plugin install REGISTRY/REPO@sha256:...`",
        )
    if record.kind in ("path", "editable") and package_dir_of(home, Path(record.directory)) is None:
        fetched = fetch_local(Path(record.directory))
        changed = fetched.manifest.version != record.version
        return _checked(record, UpgradeChoice(fetched if changed else None), allow_breaking)
    choice = UpgradeChoice(None)
    excluded: list[str] = []
    next_candidate = _candidates(home, record, pre=pre, index_url=index_url)
    for _attempt in range(MAX_SKIPPED + 1):
        candidate = next_candidate(excluded)
        if candidate is None:
            return choice
        if candidate.manifest.stage == "experimental" and not pre:
            candidate.discard()
            excluded.append(candidate.distribution_version or candidate.manifest.version)
            choice.skipped.append(f"{candidate.manifest.version} (experimental; --pre takes it)")
            continue
        choice.fetched = candidate
        return _checked(record, choice, allow_breaking)
    return choice


def _checked(record: InstallRecord, choice: UpgradeChoice, allow_breaking: bool) -> UpgradeChoice:
    candidate = choice.fetched
    if candidate is None:
        return choice
    if candidate.manifest.name != record.name:  # the record holds its tier; another name would be uninstalled
        candidate.discard()
        raise ManifestError(
            f"the new version of {record.name} {candidate.manifest.version} is plugin "
            f"{candidate.manifest.name!r}, not {record.name}: refused",
            hint="install it as a plugin of its own (`sysops plugin install`) if you trust it",
        )
    crossed = crossed_breaking_versions(record.version, candidate)
    if crossed and not allow_breaking:
        candidate.discard()
        raise UsageError(
            f"upgrading {record.name} from {record.version} to {candidate.manifest.version} crosses breaking "
            f"version {', '.join(crossed)}",
            hint="read its release notes, then `sysops plugin upgrade NAME --allow-breaking`",
        )
    if candidate.manifest.stage == "deprecated":
        choice.warnings.append(f"{record.name} {candidate.manifest.version} is deprecated")
    return choice


def _candidates(
    home: Path, record: InstallRecord, *, pre: bool, index_url: str
) -> Callable[[list[str]], Fetched | None]:
    """A function giving the newest candidate above the installed version, leaving out `excluded` versions."""
    if record.kind == "index":
        if record.index not in {index.name for index in load_indexes(home)}:
            raise NotFoundError(
                f"{record.name} was installed from index {record.index!r}, which is no longer configured",
                hint=f"`sysops index add {record.index} ...` again, or `sysops plugin install` it from another source",
            )

        def from_index(excluded: list[str]) -> Fetched | None:
            specifier = ",".join([f">{record.version}", *(f"!={version}" for version in excluded)])
            # Only the index it came from: another index listing the name must not upgrade it under this tier.
            found = find(home, record.name, specifier, include_experimental=pre, index_name=record.index)
            if found is None:
                return None
            if found.is_oci:
                raise UsageError(
                    f"{record.name} {found.version} in index {found.index} is an image: {found.spec}",
                    hint=f"`sysops plugin install {found.spec}`",
                )
            return fetch_with_pip(home, found.spec, index_url=index_url, pre=pre, from_source=False)

        return from_index
    if record.kind in ("git", "path"):

        def again(excluded: list[str]) -> Fetched | None:
            if excluded:
                return None
            fetched = fetch_with_pip(home, record.spec, pre=pre, from_source=True)
            if fetched.manifest.version == record.version:
                fetched.discard()
                return None
            return fetched

        return again
    name = requirement_of(record.spec).name
    package_dir = package_dir_of(home, Path(record.directory))
    installed = inspect_package(package_dir).version if package_dir is not None else record.version

    def from_pip(excluded: list[str]) -> Fetched | None:
        specifier = ",".join([f">{installed}", *(f"!={version}" for version in excluded)])
        try:
            return fetch_with_pip(home, f"{name}{specifier}", index_url=index_url, pre=pre)
        except NotFoundError:
            return None

    return from_pip


@dataclass(frozen=True)
class Outdated:
    """One installed plugin with a newer version available."""

    name: str
    installed: str
    latest: str
    kind: str
    note: str


def outdated(home: Path, records: list[InstallRecord], *, pre: bool = False) -> list[Outdated]:
    """The installed plugins (of pip, git and index sources) whose source offers a newer version; a version
    crossing a breaking one is listed with a note. Candidates are fetched to read their plugin.yaml and
    dropped."""
    rows: list[Outdated] = []
    for record in records:
        if record.kind not in ("pip", "git", "index"):
            continue
        try:
            choice = choose_upgrade(home, record, pre=pre, allow_breaking=True)
        except NotFoundError:
            continue
        if choice.fetched is None:
            continue
        choice.fetched.discard()
        crossed = crossed_breaking_versions(record.version, choice.fetched)
        notes = [f"breaking {', '.join(crossed)}"] if crossed else []
        rows.append(Outdated(record.name, record.version, choice.fetched.manifest.version, record.kind,
                             "; ".join(notes + choice.warnings)))  # fmt: skip
    return rows

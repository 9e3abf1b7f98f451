"""What `sysops plugin up PATH|NAME` brings up, and in which order: the plugin and the plugins it requires.

The CLI plans (core/dependencies.py `plan`) over every version the installation knows: the given directory
(the root), the plugins discovery finds (sysops.discovery: configured directories and installed packages) and
the revisions the host or server already built (Query kind `catalog`). Each `start` step then runs in order,
each waiting for ready before the next: a directory is built and rolled (under its side-by-side key
`NAME--vMAJOR` when the plan says so); a revision of a plugin that is down is started again (rollback to it),
under the key the plan chose, which may not be the key it was built under (a 2.0.0 built as `a--v2` starts
under `a` when the plain name is free).
The host checks each step again (it refuses an Up whose requirements are not running), so a plan made from a
stale catalog cannot start a plugin beside missing requirements.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sysops.core.catalog import entry_candidates
from sysops.core.dependencies import Candidate, Step, candidate_from_manifest, plan
from sysops.core.manifest import Manifest
from sysops.core.names import is_plugin_name

if TYPE_CHECKING:
    from sysops.cli.remote import RemoteClient
    from sysops.store import InstanceRecord


def plugin_directory(target: str) -> Path:
    """The directory `plugin up TARGET` means: TARGET itself when it is a directory or not a plugin name (the
    manifest loader then says what is wrong with it), else the newest discovered plugin named TARGET
    (NotFoundError, exit 8, naming `sysops plugin discover`, when none is)."""
    path = Path(target)
    if not is_plugin_name(target) or _is_directory(path):
        return path.resolve()
    from sysops.discovery import find_discovered

    return find_discovered(target).resolve()


def _is_directory(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # unreadable: taken as a name
        return False


@dataclass(frozen=True)
class Origins:
    """Where each known candidate comes from: a directory to build, or a store key's revision to start again."""

    directories: dict[Candidate, Path]
    revisions: dict[Candidate, tuple[str, int]]


def _known(root: Candidate, root_dir: Path, entries: list[dict[str, object]]) -> tuple[list[Candidate], Origins]:
    """Known candidates, the root first, then discovered directories, then built revisions (the first of two
    with the same name and version wins)."""
    from sysops.discovery import discover

    directories: dict[Candidate, Path] = {root: root_dir}
    for found in discover().found if root.requires else ():  # nothing to look for: a bad config stays out of it
        directories.setdefault(candidate_from_manifest(found.manifest, f"directory {found.path}"), found.path)
    revisions: dict[Candidate, tuple[str, int]] = {}
    for entry in entries:
        known, _ = entry_candidates([entry])
        for revision in known:
            number = int(revision.origin.removeprefix("revision "))
            revisions.setdefault(revision, (str(entry["key"]), number))
    return [*directories, *revisions], Origins(directories, revisions)


def plan_up(client: RemoteClient, root_dir: Path, manifest: Manifest) -> tuple[list[Step], Origins]:
    """The steps that bring up the plugin of `root_dir` with everything it requires (DependencyError, exit 7,
    naming the chain, when that cannot be done: nothing has started then)."""
    root = candidate_from_manifest(manifest, f"directory {root_dir}")
    entries = client.catalog()
    _, running = entry_candidates(entries)
    known, origins = _known(root, root_dir, entries)
    return plan(root, known, running), origins


def describe(step: Step, origins: Origins) -> str:
    """One line of the printed plan: `a 1.0.0 start (directory /p/a)`, `b 2.0.0 keep (running as b)`."""
    candidate = step.candidate
    key = f" as {step.key}" if step.key != candidate.name else ""
    where = candidate.origin
    if step.action == "start" and candidate in origins.revisions:
        source_key, number = origins.revisions[candidate]
        where = f"revision {number} of {source_key}"
    return f"{candidate.name} {candidate.version}{key}: {step.action} ({where})"


def run_steps(
    client: RemoteClient, steps: list[Step], origins: Origins, progress: Callable[[str], None]
) -> tuple[InstanceRecord, bool]:
    """Start each `start` step in order, each ready before the next (said on `progress`, but the last); return
    the last (the root's) result."""
    starts = [step for step in steps if step.action == "start"]
    result: tuple[InstanceRecord, bool] | None = None
    for step in starts:
        candidate = step.candidate
        key = "" if step.key == candidate.name else step.key
        directory = origins.directories.get(candidate)
        if directory is not None:
            result = client.up(directory, key=key)
        else:
            source_key, number = origins.revisions[candidate]
            result = (client.rollback(source_key, number, key=step.key), True)  # under the key the plan chose
        instance = result[0]
        if step is not starts[-1]:
            progress(f"{instance.plugin} {instance.version} ready (revision {instance.revision})")
    assert result is not None, "a plan always starts its root"
    return result

"""The installation's catalog: every plugin version the store knows, for dependency planning and the doctor.

One entry per store key (a plugin's name, or `NAME--vMAJOR` for a side-by-side version): what runs under it
now and every revision built for it, with the manifest's `types`, `requires`, `conflicts` and `compatibility`.
A key whose plugin was taken down keeps its revisions (`plugin down` without `--purge`), so it stays in the
catalog as not running: planning may start one of its revisions again. The control API serves it as the
`catalog` Query kind (server/service.py); the CLI (cli/plugin_cmd.py `up`) and the doctor read it.

It also turns what the store runs, and the entries the CLI received, into the resolver's candidates
(core/dependencies.py): a running key is a candidate "running as KEY", each revision one "revision N".

Entry shape (JSON): {key, name, version, running, revision, types, requires, conflicts,
compatibility: {sysops, python, sdk}, revisions: [{revision, version, requires, conflicts, compatibility}]}.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from packaging.version import Version

from sysops.core.dependencies import Candidate, parse_requirement, plugin_name_of
from sysops.core.manifest import SIDE_BY_SIDE_MARK, Manifest, parse_manifest
from sysops.store import RevisionRecord, Store

#: compatibility keys every entry carries (the manifest's defaults when a stored manifest lacks one).
_COMPATIBILITY_DEFAULTS = {"sysops": ">=0.1", "python": ">=3.11", "sdk": ">=0.1"}


def is_side_by_side(key: str) -> bool:
    """Say whether a store key is a side-by-side version (its commands are not routed)."""
    return SIDE_BY_SIDE_MARK in key


def parse_stored_manifest(data: Mapping[str, Any], where: str) -> Manifest:
    """A manifest as the store keeps it: one running under a side-by-side key carries that key as its name
    (which a plugin.yaml may not), so it is checked under its plugin name and given the key back."""
    key = str(data.get("name", ""))
    manifest = parse_manifest({**data, "name": plugin_name_of(key)}, where)
    return manifest.model_copy(update={"name": key}) if key != manifest.name else manifest


def dependency_fields(manifest: dict[str, Any]) -> dict[str, Any]:
    """requires, conflicts and compatibility of a stored manifest, as the catalog shows them."""
    compatibility = {**_COMPATIBILITY_DEFAULTS, **(manifest.get("compatibility") or {})}
    return {
        "requires": [str(line) for line in manifest.get("requires") or []],
        "conflicts": [str(line) for line in manifest.get("conflicts") or []],
        "compatibility": {key: str(compatibility[key]) for key in _COMPATIBILITY_DEFAULTS},
    }


def _revision_entry(revision: RevisionRecord) -> dict[str, Any]:
    return {"revision": revision.revision, "version": revision.version, **dependency_fields(revision.manifest)}


def catalog_entries(store: Store) -> list[dict[str, Any]]:
    """The catalog of the store, one entry per key, sorted by key."""
    plugins = {plugin.name: plugin for plugin in store.plugins()}
    with_revisions = [str(row[0]) for row in store.db.execute("SELECT DISTINCT plugin FROM revisions").fetchall()]
    entries = []
    for key in sorted(set(plugins) | set(with_revisions)):
        revisions = store.revisions(key)
        active = store.active_instances(key)
        record = plugins.get(key)
        manifest = record.manifest if record is not None else (revisions[-1].manifest if revisions else {})
        version = active[0].version if active else str(manifest.get("version", ""))
        revision = active[0].revision if active else (revisions[-1].revision if revisions else 0)
        entries.append(
            {
                "key": key,
                "name": plugin_name_of(key),
                "version": version,
                "running": bool(active),
                "revision": revision,
                "types": [str(kind) for kind in manifest.get("types") or ["command"]],
                **dependency_fields(manifest),
                "revisions": [_revision_entry(r) for r in revisions],
            }
        )
    return entries


def candidate(fields: Mapping[str, Any], origin: str, running_key: str = "") -> Candidate:
    """The resolver's candidate for a manifest or catalog entry (`name` may be a side-by-side key)."""
    return Candidate(
        name=plugin_name_of(str(fields["name"])),
        version=Version(str(fields["version"])),
        requires=tuple(parse_requirement(str(line)) for line in fields.get("requires") or []),
        conflicts=tuple(parse_requirement(str(line)) for line in fields.get("conflicts") or []),
        origin=origin,
        running_key=running_key,
    )


def running_candidates(store: Store, *, besides: str = "") -> list[Candidate]:
    """A candidate per key with an active instance, but `besides` (the key about to be rolled); a record without
    a version (none is stored so by sysops) is left out."""
    return [
        candidate({"name": plugin.name, **plugin.manifest}, f"running as {plugin.name}", plugin.name)
        for plugin in store.plugins()
        if plugin.name != besides and plugin.manifest.get("version") and store.active_instances(plugin.name)
    ]


def entry_candidates(entries: Sequence[Mapping[str, Any]]) -> tuple[list[Candidate], list[Candidate]]:
    """(known, running) candidates of catalog entries: each revision of each key is known; each running key
    is running (its current version)."""
    known: list[Candidate] = []
    running: list[Candidate] = []
    for entry in entries:
        name = str(entry["name"])
        for revision in entry.get("revisions") or []:
            known.append(candidate({"name": name, **revision}, f"revision {revision['revision']}"))
        if entry.get("running"):
            running.append(candidate(entry, f"running as {entry['key']}", str(entry["key"])))
    return known, running

"""The installation's catalog: every plugin version the store knows, for dependency planning and the doctor.

One entry per store key (a plugin's name, or `NAME--vMAJOR` for a side-by-side version): what runs under it
now and every revision built for it, with the manifest's `types`, `requires`, `conflicts` and `compatibility`.
A key whose plugin was taken down keeps its revisions (`plugin down` without `--purge`), so it stays in the
catalog as not running: planning may start one of its revisions again. The control API serves it as the
`catalog` Query kind (server/service.py); the CLI (cli/plugin_cmd.py `up`) and the doctor read it.

Entry shape (JSON): {key, name, version, running, revision, types, requires, conflicts,
compatibility: {sysops, python, sdk}, revisions: [{revision, version, requires, conflicts, compatibility}]}.
"""

from __future__ import annotations

from typing import Any

from sysops.core.manifest import SIDE_BY_SIDE_MARK
from sysops.store import RevisionRecord, Store

#: compatibility keys every entry carries (the manifest's defaults when a stored manifest lacks one).
_COMPATIBILITY_DEFAULTS = {"sysops": ">=0.1", "python": ">=3.11", "sdk": ">=0.1"}


def base_name(key: str) -> str:
    """The plugin name a store key runs: `a--v1` -> `a`, `a` -> `a`."""
    return key.split(SIDE_BY_SIDE_MARK, 1)[0]


def side_by_side_key(name: str, major: int) -> str:
    """The store key a side-by-side major version of `name` runs under (`a`, 1 -> `a--v1`)."""
    return f"{name}{SIDE_BY_SIDE_MARK}v{major}"


def is_side_by_side(key: str) -> bool:
    """Say whether a store key is a side-by-side version (its commands are not routed)."""
    return SIDE_BY_SIDE_MARK in key


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
                "name": base_name(key),
                "version": version,
                "running": bool(active),
                "revision": revision,
                "types": [str(kind) for kind in manifest.get("types") or ["command"]],
                **dependency_fields(manifest),
                "revisions": [_revision_entry(r) for r in revisions],
            }
        )
    return entries

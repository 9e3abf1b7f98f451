"""The `plugins` host service: what runs beside the calling plugin, so it can check its dependencies itself.

The ADR's sketch has a plugin ask `is_plugin_available(name)` and `check_dependencies()` (sysops_sdk
`Plugin`); the host answers from the store, the same truth it routes by:

    available  name, spec=""  -> {"available": bool}  a plugin of that name (under any key: its plain name or a
                                            side-by-side NAME--vMAJOR) is active (ready, serving) with a
                                            version in the PEP 440 range `spec` ("" = any version)
    check      -              -> {"unmet": [str]}     the calling plugin's unmet requirements and conflicts beside what
                                            runs now, one readable line each (core/dependencies.unmet)

Neither needs a permission grant (permissions.py OPEN_METHODS): they say only which plugins run and in which
versions, which `sysops plugin ls` shows any caller, and a plugin needs them to degrade gracefully.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from sysops.core.catalog import candidate, running_candidates
from sysops.core.dependencies import plugin_name_of, unmet
from sysops.core.names import is_plugin_name, shown
from sysops.services.call import Caller, ServiceCallError
from sysops.services.limits import check_arguments, text_argument
from sysops.store import Store

#: Longest version range accepted by `available`.
_SPEC_LIMIT = 200


class PluginsService:
    """Answers `plugins.available` and `plugins.check` from the store of the calling thread."""

    def __init__(self, store: Callable[[], Store]) -> None:
        self._store = store

    def handle(self, caller: Caller, method: str, arguments: dict[str, Any]) -> Any:
        """Run `plugins.<method>` for `caller` (the dispatcher checked that the method exists)."""
        if method == "available":
            check_arguments(arguments, ("name", "spec"), "plugins.available")
            name = text_argument(arguments, "name", 63)
            return {"available": self.available(name, text_argument(arguments, "spec", _SPEC_LIMIT, default=""))}
        check_arguments(arguments, (), "plugins.check")
        return {"unmet": self.check(caller.plugin)}

    def available(self, name: str, spec: str) -> bool:
        """Whether a plugin named `name` serves with a version in `spec`."""
        if not is_plugin_name(name):
            raise ServiceCallError("invalid_argument", f"plugins.available: {shown(name)} is not a plugin name")
        try:
            wanted = SpecifierSet(spec)
        except InvalidSpecifier:
            raise ServiceCallError(
                "invalid_argument", f"plugins.available: invalid version range {shown(spec)}"
            ) from None
        return any(
            plugin_name_of(running.running_key) == name
            and wanted.contains(Version(str(running.version)), prereleases=True)
            for running in running_candidates(self._store())
        )

    def check(self, key: str) -> list[str]:
        """The unmet requirements and conflicts of the plugin running under `key`, beside the others running."""
        store = self._store()
        record = store.plugin(key)
        if record is None:
            return []
        mine = candidate(record.manifest, f"running as {key}", key)
        return unmet(mine, running_candidates(store, besides=key))

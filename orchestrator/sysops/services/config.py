"""The `config` host service: a plugin's configuration, from the operator, checked against the plugin's schema.

The plugin declares its keys in the manifest's `config:` (type, default, help, required, choices). Values
come, lowest first, from the schema's defaults, the policy's `plugins.NAME.config` (locally the policy
file, in a cluster the Helm values' ConfigMap) and `sysops plugin config NAME set KEY VALUE` (kept in the
store, table service_config). A value is checked when it is set and again when it is read, since the
schema or the policy may change after it was set: an invalid one is refused naming plugin, key, where
the value came from and what is allowed.

A configuration plugin also reads its section of the system configuration (method `section`, answered by
services/system_config.py from the installation's config file, defaults merged in).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from sysops.core.manifest import ConfigOption
from sysops.core.names import shown
from sysops.core.policy import Policy, config_values_for
from sysops.services.call import Caller, ServiceCallError
from sysops.services.database import ServiceDatabase
from sysops.services.limits import STATE_VALUE_BYTES, check_arguments, json_text, text_argument

if TYPE_CHECKING:
    from sysops.services.system_config import SystemConfig

#: Tables holding rows per plugin (deleted by `plugin down --purge`, HostServices.forget_plugin).
PLUGIN_TABLES = ("service_config",)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS service_config (
    plugin TEXT NOT NULL,
    key TEXT NOT NULL,
    value_json TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (plugin, key)
);
"""

Source = Literal["default", "policy", "set"]
#: Longest value `plugin config set` stores (as JSON).
CONFIG_VALUE_BYTES = STATE_VALUE_BYTES


class ConfigService:
    """Configuration values per plugin: schema defaults < policy < values set by the operator."""

    def __init__(
        self,
        database: ServiceDatabase,
        manifest: Callable[[str], dict[str, Any] | None],
        policy: Callable[[], Policy],
        system: SystemConfig | None = None,
    ) -> None:
        self.database = database
        self._manifest = manifest
        self._policy = policy
        self._system = system
        database.ensure_schema(_SCHEMA)

    def handle(self, caller: Caller, method: str, arguments: dict[str, Any]) -> Any:
        """Run one `config` method for the calling plugin."""
        if method == "all":
            check_arguments(arguments, (), "config.all")
            return {"values": self.values(caller.plugin)}
        if method == "section":
            check_arguments(arguments, (), "config.section")
            return self.section(caller.plugin)
        check_arguments(arguments, ("key",), "config.get")
        key = text_argument(arguments, "key", 64)
        value = self.resolved(caller.plugin, only=key).get(key, (None, "default"))[0]
        return {"found": value is not None, "value": value}

    def section(self, plugin: str) -> dict[str, Any]:
        """{"section", "values"}: the system configuration section `plugin` owns, defaults merged in."""
        from sysops.core.installation_config import ConfigFileError

        if self._system is None:
            raise ServiceCallError("unavailable", "this host reads no system configuration")
        try:
            return self._system.section(plugin)
        except ConfigFileError as error:
            raise ServiceCallError("invalid_argument", error.message) from None

    def schema(self, plugin: str) -> dict[str, ConfigOption]:
        """The keys `plugin` declares (NotFound when sysops does not know the plugin)."""
        manifest = self._manifest(plugin)
        if manifest is None:
            raise ServiceCallError("not_found", f"no plugin {shown(plugin)} (`sysops plugin ls` lists the plugins)")
        declared = manifest.get("config") or {}
        try:
            return {key: ConfigOption.model_validate(option) for key, option in declared.items()}
        except ValidationError as exc:  # a store written by another sysops version
            raise ServiceCallError("invalid_argument", f"plugin '{plugin}': unreadable config schema: {exc}") from None

    def resolved(self, plugin: str, *, only: str | None = None) -> dict[str, tuple[Any, Source]]:
        """Each declared key's (or just key `only`'s) value and where it came from, checked against the schema."""
        schema = self.schema(plugin)
        if only is not None:
            schema = {key: option for key, option in schema.items() if key == only}
        from_policy = config_values_for(self._policy(), plugin)
        stored = self._stored(plugin)
        result: dict[str, tuple[Any, Source]] = {}
        for key, option in schema.items():
            value: Any
            source: Source
            if key in stored:
                value, source = stored[key], "set"
            elif key in from_policy:
                value, source = from_policy[key], "policy"
            else:
                value, source = option.default, "default"
            if value is None and option.required:
                raise ServiceCallError(
                    "invalid_argument",
                    f"plugin '{plugin}' config key '{key}' is required and has no value "
                    f"(set it: sysops plugin config {plugin} set {key} VALUE, "
                    f"or under plugins.{plugin}.config in the policy)",
                )
            if value is not None:
                self._check(plugin, key, option, value, source)
            result[key] = (value, source)
        return result

    def values(self, plugin: str) -> dict[str, Any]:
        """The plugin's configuration: every declared key with its value (None when it has none)."""
        return {key: value for key, (value, _) in self.resolved(plugin).items()}

    def show(self, plugin: str) -> list[dict[str, Any]]:
        """Rows {key, value, source, help} for `sysops plugin config NAME`, by key."""
        schema = self.schema(plugin)
        return [
            {"key": key, "value": value, "source": source, "help": schema[key].help}
            for key, (value, source) in sorted(self.resolved(plugin).items())
        ]

    def set_value(self, plugin: str, key: str, raw: str) -> Any:
        """Store `raw` (JSON if it parses, else the string) for `key` after checking it; return the value."""
        schema = self.schema(plugin)
        option = schema.get(key)
        if option is None:
            declared = ", ".join(sorted(schema)) or "none"
            raise ServiceCallError(
                "invalid_argument", f"plugin '{plugin}' declares no config key {shown(key)} (its keys: {declared})"
            )
        value = parse_value(raw, option)
        self._check(plugin, key, option, value, "set")
        text = json_text(value)
        if len(text.encode()) > CONFIG_VALUE_BYTES:
            raise ServiceCallError(
                "invalid_argument", f"plugin '{plugin}' config key '{key}': value above {CONFIG_VALUE_BYTES} bytes"
            )
        with self.database.transaction() as db:
            db.execute(
                "INSERT INTO service_config (plugin, key, value_json, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(plugin, key) DO UPDATE SET value_json=excluded.value_json, updated=excluded.updated",
                (plugin, key, text, time.time()),
            )
        return value

    def unset_value(self, plugin: str, key: str) -> bool:
        """Forget the value set for `key` (the policy's or the default applies again); say whether there was one."""
        with self.database.transaction() as db:
            return db.execute("DELETE FROM service_config WHERE plugin=? AND key=?", (plugin, key)).rowcount > 0

    def _stored(self, plugin: str) -> dict[str, Any]:
        rows = self.database.db.execute(
            "SELECT key, value_json FROM service_config WHERE plugin=?", (plugin,)
        ).fetchall()
        return {key: json.loads(text) for key, text in rows}

    @staticmethod
    def _check(plugin: str, key: str, option: ConfigOption, value: Any, source: Source) -> None:
        problem = option.problem(value)
        if problem is not None:
            origin = {"set": "set by `plugin config set`", "policy": "from the policy", "default": "the default"}[
                source
            ]
            raise ServiceCallError("invalid_argument", f"plugin '{plugin}' config key '{key}' ({origin}) {problem}")


def parse_value(raw: str, option: ConfigOption) -> Any:
    """`raw` as JSON if it parses, else as the string; a `str` key always takes the text as given."""
    if option.type == "str":
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw

"""The host services' front door: check what a calling plugin was granted, then hand the call to its service.

The transport (services/transport.py) identifies the caller and calls `HostServices.call`; nothing reaches
a service before the permission check here, so a plugin's code cannot get past it. Grants are the
operator's policy (core/policy.py, re-read when its file changes) applied to what the plugin's manifest
asks (the store's plugins table): a permission not asked is never granted. Refusals name the missing
grant and where to add it. The same check answers `sysops plugin permissions` and the routing path's
question of whether a `@requires_permission` command may run (`command_refusal`).

Thread-safe: the gRPC server calls from many threads; each thread has its own SQLite connection
(services/database.py) and the policy cache is behind a lock.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sysops.core.dependencies import plugin_name_of
from sysops.core.names import shown
from sysops.core.policy import Policy, grants_for, load_policy, policy_path
from sysops.errors import PolicyDeniedError
from sysops.services.alerts import AlertService
from sysops.services.bus import HOST_PUBLISHER
from sysops.services.call import ANSWERED_FROM_MEMORY, NOT_CACHED, Caller, ErrorCode, ServiceCallError
from sysops.services.config import ConfigService
from sysops.services.database import ServiceDatabase
from sysops.services.limits import check_arguments, check_payload, check_topic
from sysops.services.logs import LogService
from sysops.services.metrics import MetricsService
from sysops.services.permissions import (
    SERVICES,
    SUBSCRIBE_PERMISSION,
    PermissionReport,
    methods_of,
    permission_for,
    permission_report,
)
from sysops.services.plugins_service import PluginsService
from sysops.services.secrets_service import SecretsService
from sysops.services.state import StateService
from sysops.services.system_config import SystemConfig
from sysops.settings import Settings

__all__ = ["Caller", "ErrorCode", "HostServices", "Publish", "ServiceCallError"]

#: The event bus's publish(topic, payload, publisher) -> event id.
Publish = Callable[[str, Any, str], int]
#: The `service` label of calls to a service that does not exist (the plugin chose the name: one label for all).
UNKNOWN_SERVICE = "unknown"


def plugin_publisher(plugin: str) -> str:
    """The publisher name of a plugin's events: `plugin:NAME`, so no plugin (one named `sysops` or
    `operator`, say) can pass for the host or the operator."""
    return f"plugin:{plugin}"


#: Set by the Helm chart only (the server's own Service; SYSOPS_NAMESPACE is set by servers outside the
#: cluster too, whose policy is a local file): there the policy file is the chart's `policy` value.
CHART_ENV = "SYSOPS_SERVER_SERVICE"


_PolicyKey = tuple[str, int, int, int] | None
#: How long a grant found by a full permission check is taken as still true (`HostServices._granted_lately`).
RECHECK_SECONDS = 0.25


class HostServices:
    """Every host service of one installation, behind the permission check."""

    def __init__(self, settings: Settings, store_path: Path, publish: Publish | None = None) -> None:
        self.settings = settings
        self.database = ServiceDatabase(store_path)
        self._publish = publish
        self._policy_lock = threading.Lock()
        self._policy: tuple[_PolicyKey, Policy] | None = None
        self._policy_paths: dict[str | None, Path] = {}
        # plugin -> ((policy file state, stored manifest text), report): a call checks without parsing either
        self._reports: dict[str, tuple[tuple[_PolicyKey, str], PermissionReport]] = {}
        #: plugin -> (when a full check last ran, what it granted)
        self._checked: dict[str, tuple[float, tuple[str, ...]]] = {}
        self.state = StateService(self.database)
        self.system_config = SystemConfig(settings, lambda: self.database.store.plugins())
        self.config = ConfigService(self.database, self.manifest, self.policy, self.system_config)
        self.metrics = MetricsService()
        self.alerts = AlertService(self.database, self.publish_host_event)
        self.logs = LogService(self.database)
        self.secrets = SecretsService(self.manifest, self.policy, self.policy_location)
        self.plugins = PluginsService(lambda: self.database.store)

    def set_publish(self, publish: Publish | None) -> None:
        """Connect the event bus (the bus is built after the services; None disconnects it)."""
        self._publish = publish

    def close(self) -> None:
        """Close the services' database connections."""
        self.database.close()

    # policy and manifests
    def policy_file(self) -> Path:
        """The policy file in effect (it may not exist: then nothing is granted)."""
        named = os.environ.get("SYSOPS_POLICY")
        path = self._policy_paths.get(named)
        if path is None:
            path = self._policy_paths[named] = policy_path(self.settings.home)
        return path

    def policy(self) -> Policy:
        """The operator's policy, loaded again only when its file changed (PolicyDeniedError when it is invalid)."""
        return self._keyed_policy()[1]

    def _keyed_policy(self) -> tuple[_PolicyKey, Policy]:
        path = self.policy_file()
        try:
            info = os.stat(path)
            key: _PolicyKey = (str(path), info.st_mtime_ns, info.st_size, info.st_ino)
        except OSError:
            key = None
        with self._policy_lock:
            if self._policy is not None and self._policy[0] == key:
                return self._policy
        loaded = (key, load_policy(self.settings.home))
        with self._policy_lock:
            self._policy = loaded
        return loaded

    def policy_location(self, key: str) -> str:
        """Where the operator sets policy key `plugins.KEY`: the file, and the Helm value when the chart made it."""
        where = f"plugins.{key} in {self.policy_file()}"
        if os.environ.get(CHART_ENV):  # that file is a ConfigMap made from the chart's values
            where += f": the Helm value policy.plugins.{key}"
        return where

    def manifest(self, plugin: str) -> dict[str, Any] | None:
        """The manifest of `plugin` as the store keeps it (the last `plugin up`), or None if unknown."""
        record = self.database.store.plugin(plugin)
        return record.manifest if record is not None else None

    def permission_report(self, plugin: str) -> PermissionReport:
        """What `plugin` asks, what the policy grants of it and what it refuses (`sysops plugin permissions`); a
        side-by-side version (`NAME--vMAJOR`) has the grants of its plugin NAME.

        Computed again only when the policy file or the plugin's stored manifest changed (the check runs
        before every call, so it reads the manifest's text and compares, without parsing it).
        """
        policy_key, policy = self._keyed_policy()
        row = self.database.db.execute("SELECT manifest_json FROM plugins WHERE name=?", (plugin,)).fetchone()
        key = (policy_key, row[0] if row else "")
        cached = self._reports.get(plugin)
        if cached is not None and cached[0] == key:
            report = cached[1]
        else:
            manifest = json.loads(row[0]) if row else {}
            grants = grants_for(policy, plugin_name_of(plugin))
            report = permission_report(list(manifest.get("permissions", [])), grants)
            self._reports[plugin] = (key, report)
        self._checked[plugin] = (time.monotonic(), report.granted)
        return report

    def _granted_lately(self, plugin: str, permission: str) -> bool:
        """Whether `permission` was granted to `plugin` at a check less than RECHECK_SECONDS ago.

        The hot path of every service call: the full check reads the manifest and stats the policy file,
        which under load cost more than the call itself. Only a grant is taken from here: a refusal is
        always checked afresh, so a grant the operator adds works at once, and one removed stops working
        within RECHECK_SECONDS."""
        return permission in (self._recent_grants(plugin) or ())

    def _recent_grants(self, plugin: str) -> tuple[str, ...] | None:
        """What `plugin` was granted at a check less than RECHECK_SECONDS ago, or None if none was that recent."""
        checked = self._checked.get(plugin)
        return checked[1] if checked is not None and time.monotonic() - checked[0] < RECHECK_SECONDS else None

    def granted(self, plugin: str) -> frozenset[str]:
        """The permissions `plugin` holds (asked and granted)."""
        return frozenset(self.permission_report(plugin).granted)

    def granted_lately(self, plugin: str) -> tuple[str, ...]:
        """The permissions `plugin` held at a check less than RECHECK_SECONDS ago (checked now if none was).

        What a routed call tells the plugin it was granted: a grant added or removed shows within
        RECHECK_SECONDS, as for host service calls (`_granted_lately`)."""
        recent = self._recent_grants(plugin)
        return recent if recent is not None else self.permission_report(plugin).granted

    def refusal(self, plugin: str, permission: str, needed_for: str) -> str | None:
        """Why `plugin` may not use `permission` (for `needed_for`), naming where to grant it; None if it may."""
        if self._granted_lately(plugin, permission):
            return None
        report = self.permission_report(plugin)
        if permission in report.granted:
            return None
        head = f"plugin '{plugin}' needs permission '{permission}' for {needed_for}"
        if permission not in report.asked:
            return f"{head}, which its manifest does not ask for (add it to permissions: in plugin.yaml)"
        where = self.policy_location(f"{plugin_name_of(plugin)}.grants")
        return f"{head}, which policy does not grant (add it under {where})"

    def command_refusal(self, plugin: str, command_spec_permissions: Sequence[str], command: str) -> str | None:
        """Why the host refuses `command` of `plugin` (a `@requires_permission` not granted), or None to run it."""
        for permission in command_spec_permissions:
            refusal = self.refusal(plugin, permission, f"command '{command}'")
            if refusal is not None:
                return refusal
        return None

    def subscription_refusal(self, plugin: str) -> str | None:
        """Why the host does not subscribe `plugin` to its Describe `subscriptions` (no events.subscribe), or None."""
        return self.refusal(plugin, SUBSCRIBE_PERMISSION, "its event subscriptions")

    def forget_plugin(self, plugin: str) -> None:
        """Forget everything the host services keep of `plugin` (`plugin down --purge`): its state, the config
        values set for it, its alerts, its log records and its metric series."""
        from sysops.services import alerts, config, logs, state

        self.database.forget_plugin(
            plugin, state.PLUGIN_TABLES + config.PLUGIN_TABLES + alerts.PLUGIN_TABLES + logs.PLUGIN_TABLES
        )
        self.state.cache.written(plugin)
        self.metrics.forget_plugin(plugin)
        self._reports.pop(plugin, None)
        self._checked.pop(plugin, None)

    # calls
    def call(self, caller: Caller, service: str, method: str, arguments: dict[str, Any]) -> Any:
        """Run `service.method` for `caller` if it holds the permission; raise ServiceCallError otherwise."""
        counted = service if service in SERVICES else UNKNOWN_SERVICE  # a made-up name is no new series
        try:
            result = self._call(caller, service, method, arguments)
        except ServiceCallError as error:
            self.metrics.record_service_call(caller.plugin, counted, error.code)
            raise
        self.metrics.record_service_call(caller.plugin, counted, "ok")
        return result

    def cached_call(self, caller: Caller, service: str, method: str, arguments: dict[str, Any]) -> Any:
        """The result of a call that needs neither the database nor the policy file, or NOT_CACHED (then `call`
        runs it): a `state.get` of a cached value by a plugin granted its permission at a check less than
        RECHECK_SECONDS ago. Checked and counted as `call` does; a refusal is always left to `call`."""
        permission = permission_for(service, method)
        granted = bool(permission) and self._granted_lately(caller.plugin, permission or "")
        if (service, method) not in ANSWERED_FROM_MEMORY or not granted:
            return NOT_CACHED
        try:
            result = self.state.cached_get(caller.plugin, arguments)
        except ServiceCallError as error:
            self.metrics.record_service_call(caller.plugin, service, error.code)
            raise
        if result is None:
            return NOT_CACHED
        self.metrics.record_service_call(caller.plugin, service, "ok")
        return result

    def _call(self, caller: Caller, service: str, method: str, arguments: dict[str, Any]) -> Any:
        permission = permission_for(service, method)
        if permission is None:
            raise _unknown(service, method)
        if not isinstance(arguments, dict):
            raise ServiceCallError("invalid_argument", f"{service}.{method}: arguments must be a JSON object")
        try:
            return self._checked_call(caller, permission, service, method, arguments)
        except PolicyDeniedError as error:  # the policy file became invalid: grant nothing, serve nothing
            raise ServiceCallError("unavailable", f"the host cannot read its policy: {error.message}") from None

    def _checked_call(
        self, caller: Caller, permission: str, service: str, method: str, arguments: dict[str, Any]
    ) -> Any:
        refusal = self.refusal(caller.plugin, permission, f"{service}.{method}") if permission else None
        if refusal is not None:
            raise ServiceCallError("permission_denied", refusal)
        if service == "events":
            return self._publish_event(caller, arguments)
        handler = {
            "state": self.state.handle,
            "config": self.config.handle,
            "metrics": self.metrics.handle,
            "alerts": self.alerts.handle,
            "logs": self.logs.handle,
            "secrets": self.secrets.handle,
            "plugins": self.plugins.handle,
        }[service]
        return handler(caller, method, arguments)

    def _publish_event(self, caller: Caller, arguments: dict[str, Any]) -> dict[str, int]:
        check_arguments(arguments, ("topic", "payload"), "events.publish")
        topic = check_topic(arguments.get("topic"))
        payload = arguments.get("payload")
        check_payload(payload)
        if self._publish is None:
            raise ServiceCallError("unavailable", "the event bus is not running in this host")
        return {"id": self._publish(topic, payload, plugin_publisher(caller.plugin))}

    def publish_host_event(self, topic: str, payload: Any) -> int | None:
        """Publish a host event (`sysops.*`), or do nothing when no bus is connected; the event's id or None."""
        if self._publish is None:
            return None
        return self._publish(topic, payload, HOST_PUBLISHER)


def _unknown(service: str, method: str) -> ServiceCallError:
    methods = methods_of(service)
    if not methods:
        return ServiceCallError("not_found", f"unknown host service {shown(service)} (services: {', '.join(SERVICES)})")
    return ServiceCallError(
        "not_found", f"host service '{service}' has no method {shown(method)} (methods: {', '.join(methods)})"
    )

"""Test helpers for plugin authors: run a plugin's commands in-process, without a container.

Most authors use the pytest fixture `plugin` (sysops_sdk.pytest_plugin, a `PluginUnderTest`), which builds on
these helpers in-process and drives the real container with `--sysops-mode=container`. Directly:

harness = PluginHarness(MyPlugin, services={"metrics": FakeMetrics()})
assert harness.invoke("greet", name="World").text == "Hello, World!"

`FakeHost` is the host's services in memory, behind the same typed clients a plugin gets in a container:

host = FakeHost(config={"threshold": 90})
harness = PluginHarness(MonitoringPlugin, services=host.services())
harness.invoke("check")
assert host.metric_value("cpu_percent") == 42.0 and host.published[0].topic == "monitoring.checked"
harness.deliver("deploy.finished", {"service": "web"})   # runs the plugin's @on_event handlers
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sysops_sdk._errors import PermissionDeniedError, ServiceCallError, ServiceUnavailableError
from sysops_sdk._events import Event
from sysops_sdk._plugin import Plugin
from sysops_sdk._server import InvocationOutcome, PluginRuntime, PluginServer
from sysops_sdk.services import SERVICE_CLIENTS

#: A real plugin server run in-process (the orchestrator's fake runtime driver serves plugins with it).
__all__ = [
    "FakeHost",
    "InvocationResult",
    "PluginHarness",
    "PluginRuntime",
    "PluginServer",
    "PluginUnderTest",
    "RecordedCall",
]


@dataclass
class InvocationResult:
    """What a command printed and returned, as the CLI would see it."""

    lines: list[str] = field(default_factory=list)
    text: str = ""
    data: Any = None
    exit_code: int = 0
    error: str = ""


class PluginUnderTest(Protocol):
    """The `plugin` fixture: the plugin under test, in-process or in its real container, behind one interface.

    `invoke` gives what the CLI would: in container mode `text` is everything the command printed (a stream's
    lines joined) and `lines` its lines, so assert on `text` for a text result, `lines` for a stream and
    `data` for a dict or list result; those assertions hold in both modes.
    """

    #: "inprocess" or "container".
    mode: str
    #: The plugin's name (plugin.yaml).
    name: str
    #: The host services: a FakeHost in-process; in container mode the real host, whose `config` can be set.
    host: Any

    def invoke(self, command: str, *arguments: Any, **options: Any) -> InvocationResult:
        """Run a command: positional arguments in order, options by Python name (`dry_run=True`)."""

    def publish(self, topic: str, payload: Any = None) -> None:
        """Publish an event to the plugin's `@on_event` handlers (returns once they ran, in-process)."""

    def metric(self, name: str, **labels: str) -> float | None:
        """The value the plugin last reported for metric `name` with `labels` (None: never reported)."""


class PluginHarness:
    """An initialized plugin whose commands can be invoked by name with keyword arguments."""

    def __init__(self, plugin_class: type[Plugin], services: Mapping[str, Any] | None = None) -> None:
        plugin = plugin_class(services=services)
        plugin.initialize()
        self.runtime = PluginRuntime(plugin)
        self._delivered = 0

    @property
    def plugin(self) -> Plugin:
        """The plugin instance under test."""
        return self.runtime.plugin

    def command_names(self) -> list[str]:
        """Names of all commands the plugin contributes."""
        return sorted(self.runtime.commands)

    def invoke(self, command: str, **arguments: Any) -> InvocationResult:
        """Run `command` with typed arguments and collect its output."""
        result = InvocationResult()
        for item in self.runtime.run(command, arguments):
            if isinstance(item, InvocationOutcome):
                result.text, result.exit_code, result.error = item.text, item.exit_code, item.error
                result.data = json.loads(item.data_json) if item.data_json else None
            else:
                result.lines.append(item)
        return result

    def deliver(self, topic: str, payload: Any = None, publisher: str = "operator") -> None:
        """Run the plugin's `@on_event` handlers for one event, as the host would deliver it.

        Raises AssertionError naming the handler that failed.
        """
        self._delivered += 1
        event = Event(id=self._delivered, topic=topic, payload=payload, publisher=publisher, time=time.time())
        if failure := self.runtime.deliver(event):
            raise AssertionError(failure)

    def close(self) -> None:
        """Run the plugin's cleanup()."""
        self.runtime.plugin.cleanup()


#: Calls a FakeHost only records (for assertions): they answer null on the real host too.
_RECORDED_ONLY = {("metrics", "counter"), ("metrics", "gauge"), ("metrics", "histogram"), ("logs", "write")}


@dataclass(frozen=True)
class RecordedCall:
    """One call a plugin made of a FakeHost service (metrics, logs and events are kept as these)."""

    service: str
    method: str
    arguments: dict[str, Any]


class FakeHost:
    """The host's services in memory, for a plugin's unit tests: `Plugin(services=FakeHost().services())`.

    It answers the same service calls as the real host (docs/services.md) with the same results; what the
    plugin reported is kept for assertions: `state`, `alerts`, `metrics`, `published`, `logs`, `calls`.
    Permissions and limits are not checked.
    """

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
        section: Mapping[str, Any] | None = None,
        plugins: Mapping[str, str] | None = None,
        unmet: Sequence[str] = (),
    ) -> None:
        self.config: dict[str, Any] = dict(config or {})
        #: An integration plugin's secrets by name (a name not here is refused, as the host refuses it).
        self.secrets: dict[str, str] = dict(secrets or {})
        #: A configuration plugin's section of the system configuration.
        self.section: dict[str, Any] = dict(section or {})
        #: The plugins running beside this one, name -> version (`plugins.available`).
        self.plugins: dict[str, str] = dict(plugins or {})
        #: What `plugins.check` answers: the plugin's unmet requirements, one line each.
        self.unmet: list[str] = list(unmet)
        self.state: dict[str, tuple[Any, int]] = {}
        self.alerts: dict[str, dict[str, Any]] = {}
        self.calls: list[RecordedCall] = []
        self._next_id = 0
        self._last_version = 0  # one counter for all keys, never reused (as the host's store)

    def services(self) -> dict[str, Any]:
        """Every service name `get_service` knows, each a typed client of this fake host."""
        return {name: client(self) for name, client in SERVICE_CLIENTS.items()}

    def _calls_of(self, service: str) -> list[RecordedCall]:
        return [call for call in self.calls if call.service == service]

    @property
    def metrics(self) -> list[RecordedCall]:
        """Every metric update, in order (method counter/gauge/histogram, arguments as sent)."""
        return self._calls_of("metrics")

    @property
    def published(self) -> list[Event]:
        """The events the plugin published, in order."""
        return [
            Event(
                id=index + 1, topic=call.arguments["topic"], payload=call.arguments["payload"], publisher="", time=0.0
            )
            for index, call in enumerate(self._calls_of("events"))
        ]

    @property
    def logs(self) -> list[RecordedCall]:
        """The log records the plugin wrote, in order (arguments level, message, fields)."""
        return self._calls_of("logs")

    def metric_value(self, name: str, **labels: str) -> float | None:
        """A counter's total, or a gauge's or histogram's last value, for `name` with exactly `labels`."""
        value: float | None = None
        for call in self.metrics:
            if call.arguments["name"] == name and call.arguments.get("labels", {}) == labels:
                amount = float(call.arguments.get("amount", call.arguments.get("value", 0)))
                value = (value or 0.0) + amount if call.method == "counter" else amount
        return value

    def call(self, service: str, method: str, arguments: Mapping[str, Any] | None = None) -> Any:
        """Answer one service call as the host would (arguments pass through JSON, as on the wire)."""
        try:
            wire: dict[str, Any] = json.loads(json.dumps(dict(arguments or {})))
        except (TypeError, ValueError) as exc:
            raise ServiceCallError(
                f"host service {service!r} method {method!r}: arguments are not JSON: {exc}"
            ) from None
        handler = getattr(self, f"_{service}_{method}", None) if service in SERVICE_CLIENTS else None
        if handler is None and (service, method) not in _RECORDED_ONLY:
            raise ServiceUnavailableError(f"the sysops host has no service {service!r} method {method!r}")
        self.calls.append(RecordedCall(service, method, wire))
        if handler is None:
            return None
        try:
            return handler(**wire)
        except TypeError as exc:
            raise ServiceCallError(f"host refused service {service!r} method {method!r}: {exc}") from None

    def _state_get(self, key: str) -> dict[str, Any]:
        value, version = self.state.get(key, (None, 0))
        return {"found": key in self.state, "value": value, "version": version}

    def _state_list(self, prefix: str = "") -> dict[str, Any]:
        return {"keys": sorted(key for key in self.state if key.startswith(prefix))}

    def _state_set(self, key: str, value: Any) -> dict[str, Any]:
        self._last_version += 1
        self.state[key] = (value, self._last_version)
        return {"version": self._last_version}

    def _state_delete(self, key: str) -> dict[str, Any]:
        return {"deleted": self.state.pop(key, None) is not None}

    def _state_cas(self, key: str, expected_version: int, value: Any) -> dict[str, Any]:
        current = self.state.get(key, (None, 0))[1]
        if current != expected_version:
            return {"ok": False, "version": current}
        return {"ok": True, **self._state_set(key, value)}

    def _config_get(self, key: str) -> dict[str, Any]:
        return {"found": key in self.config, "value": self.config.get(key)}

    def _config_all(self) -> dict[str, Any]:
        return {"values": dict(self.config)}

    def _config_section(self) -> dict[str, Any]:
        return {"values": dict(self.section)}

    def _secrets_get(self, name: str) -> dict[str, Any]:
        if name not in self.secrets:
            raise PermissionDeniedError(f"secret {name!r} is not given to this plugin (FakeHost(secrets=...))")
        return {"value": self.secrets[name]}

    def _plugins_available(self, name: str, spec: str = "") -> dict[str, Any]:
        version = self.plugins.get(name)
        if version is None or not spec:
            return {"available": version is not None}
        try:
            from packaging.specifiers import SpecifierSet
        except ImportError:  # the SDK itself does not depend on it; a plugin's tests may not have it
            raise ServiceCallError("FakeHost needs the 'packaging' distribution to check a version range") from None
        return {"available": SpecifierSet(spec).contains(version, prereleases=True)}

    def _plugins_check(self) -> dict[str, Any]:
        return {"unmet": list(self.unmet)}

    def _alerts_raise(self, name: str, severity: str, message: str) -> dict[str, Any]:
        if severity not in ("info", "warning", "critical"):
            raise ServiceCallError(f"alert {name!r}: severity {severity!r} is not info, warning or critical")
        self._next_id += 1
        self.alerts[name] = {"id": self._next_id, "name": name, "severity": severity, "message": message}
        return {"id": self._next_id}

    def _alerts_resolve(self, name: str) -> dict[str, Any]:
        return {"resolved": self.alerts.pop(name, None) is not None}

    def _alerts_list(self) -> dict[str, Any]:
        return {"alerts": list(self.alerts.values())}

    def _events_publish(self, topic: str, payload: Any) -> dict[str, Any]:
        return {"id": len(self._calls_of("events"))}

"""Typed clients of the host services a plugin gets from `Plugin.get_service(name)`.

Each client turns Python calls into the host's service calls (service, method, JSON arguments) exactly as
docs/services.md lists them, and the JSON results back into Python values. They work over any HostCaller:
the real connection to the host, or `sysops_sdk.testing.FakeHost` in a plugin's unit tests.

    state = self.get_service("state")
    version = state.set("last-run", {"ok": True})
    self.get_service("metrics").counter("runs_total", help="Runs").labels(result="ok").inc()

Errors: PermissionDeniedError (policy does not grant the permission), HostUnavailableError (the host did
not answer in time), ServiceUnavailableError (unknown service or method), ServiceCallError (bad arguments or
a limit reached).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Self

from sysops_sdk._host_client import HostCaller

__all__ = [
    "SERVICE_CLIENTS",
    "AlertsClient",
    "ConfigClient",
    "Counter",
    "EventsClient",
    "Gauge",
    "Histogram",
    "LogsClient",
    "MetricsClient",
    "PluginsClient",
    "SecretsClient",
    "StateClient",
]


class StateClient:
    """The plugin's own key-value store, kept by the host across restarts, reloads and rollbacks."""

    def __init__(self, host: HostCaller) -> None:
        self._host = host

    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under `key`, or `default` when there is none."""
        reply = self._host.call("state", "get", {"key": key})
        return reply["value"] if reply["found"] else default

    def get_versioned(self, key: str) -> tuple[Any, int]:
        """The value under `key` and its version (for compare_and_set); (None, 0) when there is none."""
        reply = self._host.call("state", "get", {"key": key})
        return (reply["value"], int(reply["version"])) if reply["found"] else (None, 0)

    def set(self, key: str, value: Any) -> int:
        """Store the JSON-able `value` under `key`; return its new version."""
        return int(self._host.call("state", "set", {"key": key, "value": value})["version"])

    def delete(self, key: str) -> bool:
        """Remove `key`; say whether it existed."""
        return bool(self._host.call("state", "delete", {"key": key})["deleted"])

    def list(self, prefix: str = "") -> builtins.list[str]:
        """The keys starting with `prefix`, sorted."""
        return [str(key) for key in self._host.call("state", "list", {"prefix": prefix})["keys"]]

    def compare_and_set(self, key: str, value: Any, expected_version: int) -> bool:
        """Store `value` only if `key` is still at `expected_version` (0: must not exist); say whether it was."""
        arguments = {"key": key, "expected_version": expected_version, "value": value}
        return bool(self._host.call("state", "cas", arguments)["ok"])


class ConfigClient:
    """The plugin's configuration: defaults from its manifest's schema, overridden by the operator."""

    def __init__(self, host: HostCaller) -> None:
        self._host = host

    def get(self, key: str, default: Any = None) -> Any:
        """The value of `key`, or `default` when it has none."""
        reply = self._host.call("config", "get", {"key": key})
        return reply["value"] if reply["found"] else default

    def all(self) -> dict[str, Any]:
        """Every key with a value."""
        return dict(self._host.call("config", "all")["values"])

    def section(self) -> dict[str, Any]:
        """A configuration plugin's own section of the system configuration (values with defaults)."""
        return dict(self._host.call("config", "section")["values"])


@dataclass(frozen=True)
class _Metric:
    """One metric (and label values) of a MetricsClient; each update is one host call."""

    host: HostCaller
    name: str
    help: str = ""
    label_values: Mapping[str, str] = field(default_factory=dict)

    def labels(self, **values: str) -> Self:
        """The same metric with these label values added (e.g. `.labels(status="ok").inc()`)."""
        return replace(self, label_values={**self.label_values, **{k: str(v) for k, v in values.items()}})

    def _send(self, kind: str, **arguments: Any) -> None:
        common = {"name": self.name, "help": self.help, "labels": dict(self.label_values)}
        self.host.call("metrics", kind, {**common, **arguments})


class Counter(_Metric):
    """A count that only goes up."""

    def inc(self, amount: float = 1) -> None:
        """Add `amount` (at least 0)."""
        self._send("counter", amount=amount)


class Gauge(_Metric):
    """A value that goes up and down."""

    def set(self, value: float) -> None:
        """Set the gauge to `value`."""
        self._send("gauge", value=value)


@dataclass(frozen=True)
class Histogram(_Metric):
    """A distribution of observed values, counted in buckets."""

    buckets: tuple[float, ...] | None = None

    def observe(self, value: float) -> None:
        """Record one observation."""
        self._send("histogram", value=value, buckets=list(self.buckets) if self.buckets is not None else None)


class MetricsClient:
    """Counters, gauges and histograms the host exposes in the Prometheus text format."""

    def __init__(self, host: HostCaller) -> None:
        self._host = host

    def counter(self, name: str, help: str = "", labels: Mapping[str, str] | None = None) -> Counter:
        """The counter `name` with fixed `labels` values (more per call with `.labels(...)`)."""
        return Counter(self._host, name, help, dict(labels or {}))

    def gauge(self, name: str, help: str = "", labels: Mapping[str, str] | None = None) -> Gauge:
        """The gauge `name` with fixed `labels` values."""
        return Gauge(self._host, name, help, dict(labels or {}))

    def histogram(
        self,
        name: str,
        help: str = "",
        labels: Mapping[str, str] | None = None,
        buckets: Sequence[float] | None = None,
    ) -> Histogram:
        """The histogram `name` with fixed `labels` values and upper bucket bounds (host default without)."""
        return Histogram(self._host, name, help, dict(labels or {}), tuple(buckets) if buckets is not None else None)


class AlertsClient:
    """Alerts this plugin raises and resolves; the host lists them and publishes them on `sysops.alerts`."""

    def __init__(self, host: HostCaller) -> None:
        self._host = host

    def raise_alert(self, name: str, message: str, severity: str = "warning") -> int:
        """Raise (or update) alert `name` with severity info, warning or critical; return its id."""
        arguments = {"name": name, "severity": severity, "message": message}
        return int(self._host.call("alerts", "raise", arguments)["id"])

    def resolve(self, name: str) -> bool:
        """Resolve alert `name`; say whether it was raised."""
        return bool(self._host.call("alerts", "resolve", {"name": name})["resolved"])

    def list(self) -> builtins.list[dict[str, Any]]:
        """This plugin's alerts."""
        return [dict(alert) for alert in self._host.call("alerts", "list")["alerts"]]


class EventsClient:
    """Publishing on the host's event bus (subscribing is `@on_event`)."""

    def __init__(self, host: HostCaller) -> None:
        self._host = host

    def publish(self, topic: str, payload: Any) -> int:
        """Publish the JSON-able `payload` on `topic`; return the event's id."""
        return int(self._host.call("events", "publish", {"topic": topic, "payload": payload})["id"])


class LogsClient:
    """Structured log records the host stores with the plugin's identity (shown by `sysops plugin logs`)."""

    def __init__(self, host: HostCaller) -> None:
        self._host = host

    def _write(self, level: str, message: str, fields: dict[str, Any]) -> None:
        self._host.call("logs", "write", {"level": level, "message": message, "fields": fields})

    def debug(self, message: str, **fields: Any) -> None:
        """Record a debug message with structured `fields`."""
        self._write("debug", message, fields)

    def info(self, message: str, **fields: Any) -> None:
        """Record an informational message with structured `fields`."""
        self._write("info", message, fields)

    def warning(self, message: str, **fields: Any) -> None:
        """Record a warning with structured `fields`."""
        self._write("warning", message, fields)

    def error(self, message: str, **fields: Any) -> None:
        """Record an error with structured `fields`."""
        self._write("error", message, fields)


class SecretsClient:
    """An integration plugin's secrets, read by the host from where the operator's policy says, when asked."""

    def __init__(self, host: HostCaller) -> None:
        self._host = host

    def get(self, name: str) -> str:
        """The secret `name` (one the manifest's `secrets:` lists) as text."""
        return str(self._host.call("secrets", "get", {"name": name})["value"])


class PluginsClient:
    """Which plugins run beside this one (no permission needed): what `is_plugin_available` and
    `check_dependencies` ask."""

    def __init__(self, host: HostCaller) -> None:
        self._host = host

    def available(self, name: str, spec: str = "") -> bool:
        """Whether plugin `name` runs, ready, with a version in the PEP 440 range `spec` ("" = any)."""
        return bool(self._host.call("plugins", "available", {"name": name, "spec": spec})["available"])

    def check(self) -> builtins.list[str]:
        """This plugin's unmet requirements and conflicts beside what runs now, one line each (empty: all met)."""
        return [str(line) for line in self._host.call("plugins", "check", {})["unmet"]]


#: The client of each service name `Plugin.get_service` knows ("alerting" is the ADR's name for alerts).
SERVICE_CLIENTS: dict[str, Callable[[HostCaller], object]] = {
    "state": StateClient,
    "config": ConfigClient,
    "metrics": MetricsClient,
    "alerts": AlertsClient,
    "alerting": AlertsClient,
    "events": EventsClient,
    "logs": LogsClient,
    "secrets": SecretsClient,
    "plugins": PluginsClient,
}

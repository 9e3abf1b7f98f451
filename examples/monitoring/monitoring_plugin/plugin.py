"""ADR-006's MonitoringPlugin: checks reported through the host's metrics, alerts above a configured threshold.

`initialize()` takes its services exactly as the ADR's sketch does (`get_service("metrics")`,
`get_service("alerting")`), and `cleanup()` resolves the alerts this instance raised. Every check sets a
gauge, counts itself, keeps its last value in the plugin's state and raises (or resolves) an alert; the
handler of the host's `sysops.lifecycle` topic counts restarts and failures of every plugin. The host
exposes the metrics (`sysops metrics`), lists the alerts (`sysops alerts`) and refuses any call whose
permission the operator's policy did not grant.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sysops_sdk import Event, Plugin, argument, on_event, option, plugin_command

#: Lifecycle kinds (sysops.lifecycle payload "kind") counted as restarts, and those counted as failures.
RESTART_KINDS = frozenset({"restarted"})
FAILURE_KINDS = frozenset({"failed", "oom-killed", "unresponsive"})
#: State keys of the checks: one per check name.
CHECK_PREFIX = "checks/"


def alert_name(check: str) -> str:
    """The alert a check raises (one per check, so a check resolves only its own)."""
    return f"check-{check}"


class MonitoringPlugin(Plugin):
    name = "monitoring"
    version = "1.0.0"
    description = "Checks that set gauges, count, and raise alerts above a threshold"

    def initialize(self) -> None:
        self.metrics = self.get_service("metrics")
        self.alerting = self.get_service("alerting")
        self.config = self.get_service("config")
        self.state = self.get_service("state")
        self.check_value = self.metrics.gauge("monitor_check_value", help="Last value of each check")
        self.checks = self.metrics.counter("monitor_checks_total", help="Checks recorded")
        self.restarts = self.metrics.counter(
            "monitor_plugin_restarts_total", help="Restarts of each plugin (label target)"
        )
        self.failures = self.metrics.counter(
            "monitor_plugin_failures_total", help="Failures of each plugin (label target) by kind"
        )
        #: Alerts this instance raised and has not resolved: cleanup() resolves them.
        self.raised: set[str] = set()

    def cleanup(self) -> None:
        for name in sorted(self.raised):
            self.alerting.resolve(name)
        self.raised.clear()

    def snapshot(self) -> dict[str, Any]:
        return {"raised": sorted(self.raised)}

    def restore(self, state: dict[str, Any]) -> None:
        self.raised = set(state.get("raised", []))

    @plugin_command("monitor check")
    @argument("check", help="Name of the check, e.g. disk-root")
    @option("--value", help="The value measured (alerts above the configured threshold)")
    def check(self, check: str, value: float) -> dict[str, Any]:
        """Record one measurement: set its gauge, count it, and raise or resolve its alert."""
        threshold = float(self.config.get("threshold"))
        previous = self.state.get(CHECK_PREFIX + check)
        self.check_value.labels(check=check).set(value)
        self.checks.labels(check=check).inc()
        alerting = value > threshold
        if alerting:
            severity = str(self.config.get("severity"))
            message = f"check {check!r} is at {value:g}, above the threshold {threshold:g}"
            self.alerting.raise_alert(alert_name(check), message, severity=severity)
            self.raised.add(alert_name(check))
        elif alert_name(check) in self.raised or (previous and previous["alerting"]):
            self.alerting.resolve(alert_name(check))
            self.raised.discard(alert_name(check))
        record = {
            "check": check,
            "value": value,
            "threshold": threshold,
            "alerting": alerting,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self.state.set(CHECK_PREFIX + check, record)
        return record

    @plugin_command("monitor status", read_only=True)
    def status(self) -> dict[str, Any]:
        """Show the last value of every check and this plugin's open alerts."""
        checks = [self.state.get(key) for key in self.state.list(CHECK_PREFIX)]
        return {"checks": checks, "alerts": self.alerting.list()}

    @on_event("sysops.lifecycle")
    def count_lifecycle(self, event: Event) -> None:
        """Count the restarts and failures of every plugin, from the host's lifecycle events."""
        payload = event.payload
        kind, plugin = str(payload.get("kind", "")), str(payload.get("plugin", ""))
        if kind in RESTART_KINDS:
            self.restarts.labels(target=plugin).inc()
        elif kind in FAILURE_KINDS:
            self.failures.labels(target=plugin, kind=kind).inc()

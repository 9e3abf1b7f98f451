"""The ADR's examples (examples/monitoring, examples/deploy), their manifests and examples/policy.yaml.

The plugins run in-process through `sysops_sdk.testing.PluginHarness`, their `get_service` clients over the
SDK's in-memory FakeHost for what the plugins do, then over the host's own services (services/dispatch.py,
tmp SYSOPS_HOME, the examples' manifests in the store, SYSOPS_POLICY=examples/policy.yaml) for what the
operator sees in docs/examples.md: what the policy grants and refuses, the refusal of deploy-service, the
metrics as exposed, alerts, state kept across instances.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from sysops.core.manifest import load_manifest
from sysops.services.dispatch import Caller, HostServices
from sysops.services.dispatch import ServiceCallError as HostServiceCallError
from sysops.settings import Settings
from sysops.store import Store
from sysops_sdk import PermissionDeniedError, Plugin, ServiceCallError
from sysops_sdk.services import SERVICE_CLIENTS
from sysops_sdk.testing import FakeHost, PluginHarness

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
for example in ("monitoring", "deploy"):
    if str(EXAMPLES / example) not in sys.path:
        sys.path.insert(0, str(EXAMPLES / example))

from deploy_plugin.plugin import FINISHED_TOPIC, DeployPlugin  # noqa: E402
from monitoring_plugin.plugin import MonitoringPlugin  # noqa: E402


class RacedHost(FakeHost):
    """The SDK's in-memory host, where "another replica" may write a key just before a compare-and-set."""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config=config)
        #: How many of the next compare-and-sets lose to another replica that writes the key first.
        self.lose_next_cas = 0

    def _state_cas(self, key: str, expected_version: int, value: Any) -> dict[str, Any]:
        if self.lose_next_cas:
            self.lose_next_cas -= 1
            other, _ = self.state.get(key, ({"number": 0, "version": "other"}, 0))
            self._state_set(key, {**other, "number": other["number"] + 1})
        return super()._state_cas(key, expected_version, value)


class RealHost:
    """The host's own services (services/dispatch.py) over a tmp SYSOPS_HOME, answering as `plugin` would be
    answered through its socket: a refusal becomes the SDK exception the plugin would see."""

    def __init__(self, services: HostServices, plugin: str) -> None:
        self.services = services
        self.caller = Caller(plugin, f"{plugin}-1", 1)

    def call(self, service: str, method: str, arguments: Mapping[str, Any] | None = None) -> Any:
        try:
            return self.services.call(self.caller, service, method, dict(arguments or {}))
        except HostServiceCallError as error:
            refused = PermissionDeniedError if error.code == "permission_denied" else ServiceCallError
            raise refused(f"host refused service {service!r} method {method!r}: {error}") from None


def harness_on(plugin_class: type[Plugin], host: FakeHost | RealHost) -> PluginHarness:
    """A harness whose plugin gets its services from `host`, as the plugin server gives them in a container."""
    return PluginHarness(plugin_class, services={name: client(host) for name, client in SERVICE_CLIENTS.items()})


MONITORING_CONFIG = {"threshold": 90.0, "severity": "warning"}


@pytest.fixture
def fake_host() -> RacedHost:
    return RacedHost(config=MONITORING_CONFIG)


@pytest.fixture
def monitoring(fake_host: RacedHost) -> PluginHarness:
    return harness_on(MonitoringPlugin, fake_host)


@pytest.fixture
def deploy(fake_host: RacedHost) -> PluginHarness:
    return harness_on(DeployPlugin, fake_host)


def test_a_check_below_the_threshold_sets_its_gauge_counts_and_raises_nothing(
    monitoring: PluginHarness, fake_host: RacedHost
) -> None:
    result = monitoring.invoke("monitor check", check="disk-root", value=42.0)
    assert result.exit_code == 0, result.error
    assert result.data["alerting"] is False
    assert fake_host.metric_value("monitor_check_value", check="disk-root") == 42.0
    monitoring.invoke("monitor check", check="disk-root", value=43.0)
    assert fake_host.metric_value("monitor_checks_total", check="disk-root") == 2.0
    assert fake_host.alerts == {}
    assert fake_host.state["checks/disk-root"][0]["value"] == 43.0


def test_a_check_above_the_configured_threshold_raises_then_resolves_its_alert(fake_host: RacedHost) -> None:
    fake_host.config = {"threshold": 50.0, "severity": "critical"}
    harness = harness_on(MonitoringPlugin, fake_host)
    assert harness.invoke("monitor check", check="disk-root", value=60.0).data["alerting"] is True
    assert fake_host.alerts["check-disk-root"] == {
        "id": 1,
        "name": "check-disk-root",
        "severity": "critical",
        "message": "check 'disk-root' is at 60, above the threshold 50",
    }
    assert harness.invoke("monitor check", check="disk-root", value=40.0).data["alerting"] is False
    assert fake_host.alerts == {}


def test_a_new_instance_resolves_an_alert_an_earlier_one_raised(fake_host: RacedHost) -> None:
    harness_on(MonitoringPlugin, fake_host).invoke("monitor check", check="cpu", value=95.0)
    assert set(fake_host.alerts) == {"check-cpu"}
    harness_on(MonitoringPlugin, fake_host).invoke("monitor check", check="cpu", value=5.0)
    assert fake_host.alerts == {}


def test_status_is_read_only_and_shows_checks_and_open_alerts(monitoring: PluginHarness) -> None:
    monitoring.invoke("monitor check", check="cpu", value=95.0)
    monitoring.invoke("monitor check", check="disk-root", value=10.0)
    status = monitoring.invoke("monitor status")
    assert status.exit_code == 0, status.error
    assert [check["check"] for check in status.data["checks"]] == ["cpu", "disk-root"]
    assert [alert["name"] for alert in status.data["alerts"]] == ["check-cpu"]
    assert monitoring.runtime.commands["monitor status"].read_only
    assert not monitoring.runtime.commands["monitor check"].read_only


def test_cleanup_resolves_the_alerts_this_instance_raised(monitoring: PluginHarness, fake_host: RacedHost) -> None:
    monitoring.invoke("monitor check", check="cpu", value=95.0)
    monitoring.invoke("monitor check", check="memory", value=99.0)
    assert set(fake_host.alerts) == {"check-cpu", "check-memory"}
    monitoring.close()
    assert fake_host.alerts == {}


def test_lifecycle_events_count_restarts_and_failures_per_plugin(
    monitoring: PluginHarness, fake_host: RacedHost
) -> None:
    assert monitoring.runtime.describe().subscriptions == ["sysops.lifecycle"]
    for kind in ("restarted", "restarted", "failed", "active", "oom-killed"):
        monitoring.deliver("sysops.lifecycle", {"plugin": "hello", "kind": kind, "message": "..."}, publisher="sysops")
    assert fake_host.metric_value("monitor_plugin_restarts_total", target="hello") == 2.0
    assert fake_host.metric_value("monitor_plugin_failures_total", target="hello", kind="failed") == 1.0
    assert fake_host.metric_value("monitor_plugin_failures_total", target="hello", kind="oom-killed") == 1.0
    assert fake_host.metric_value("monitor_plugin_failures_total", target="hello", kind="active") is None


def test_deploy_service_keeps_the_last_deployment_and_publishes_deploy_finished(
    deploy: PluginHarness, fake_host: RacedHost
) -> None:
    first = deploy.invoke("deploy-service", service="web", version="1.0", replicas=2)
    assert first.exit_code == 0, first.error
    second = deploy.invoke("deploy-service", service="web", version="1.1", replicas=3)
    assert (second.data["number"], second.data["previous_version"], second.data["replicas"]) == (2, "1.0", 3)
    assert [event.topic for event in fake_host.published] == [FINISHED_TOPIC, FINISHED_TOPIC]
    assert fake_host.published[-1].payload == second.data
    assert [log.arguments["fields"]["version"] for log in fake_host.logs] == ["1.0", "1.1"]
    assert deploy.invoke("deploy last", service="web").data == second.data
    deploy.invoke("deploy-service", service="api")
    assert [entry["service"] for entry in deploy.invoke("deploy ls").data] == ["api", "web"]
    missing = deploy.invoke("deploy last", service="db")
    assert (missing.exit_code, missing.error) == (1, "service 'db' was never deployed")


def test_deploy_service_retries_when_another_replica_wrote_first(deploy: PluginHarness, fake_host: RacedHost) -> None:
    deploy.invoke("deploy-service", service="web", version="1.0")
    fake_host.lose_next_cas = 1
    retried = deploy.invoke("deploy-service", service="web", version="2.0")
    assert retried.exit_code == 0, retried.error
    assert retried.data["number"] == 3  # counted after the other replica's deployment
    fake_host.lose_next_cas = 10
    assert "try again" in deploy.invoke("deploy-service", service="web").error
    assert len(fake_host.published) == 2  # nothing announced for the deployment that gave up


def test_deploy_service_declares_the_adrs_two_permissions(deploy: PluginHarness) -> None:
    assert deploy.runtime.commands["deploy-service"].permissions == ["deployment.execute", "service.scale"]
    assert deploy.runtime.commands["deploy ls"].read_only and deploy.runtime.commands["deploy last"].read_only


# With the host's own services and examples/policy.yaml, as the walk-through in docs/examples.md runs them.


def _save_example(settings: Settings, plugin: str) -> None:
    store = Store(settings.store_path)
    manifest = load_manifest(EXAMPLES / plugin).model_dump(mode="json", exclude_none=True)
    store.save_plugin(plugin, str(EXAMPLES / plugin), "docker", manifest)
    store.close()


@pytest.fixture
def host_services(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[HostServices]:
    settings.home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("SYSOPS_POLICY", str(EXAMPLES / "policy.yaml"))
    for plugin in ("monitoring", "deploy"):
        _save_example(settings, plugin)
    services = HostServices(settings, settings.store_path, lambda topic, payload, publisher: 1)
    yield services
    services.close()


@pytest.mark.parametrize(("plugin", "refused"), [("monitoring", ()), ("deploy", ("service.scale",))])
def test_the_example_policy_grants_what_each_example_asks_but_service_scale(
    host_services: HostServices, plugin: str, refused: tuple[str, ...]
) -> None:
    report = host_services.permission_report(plugin)
    assert report.refused == refused
    assert set(report.granted) == set(load_manifest(EXAMPLES / plugin).permissions) - set(refused)


def test_the_host_refuses_deploy_service_without_service_scale(host_services: HostServices) -> None:
    spec_permissions = harness_on(DeployPlugin, FakeHost()).runtime.commands["deploy-service"].permissions
    refusal = host_services.command_refusal("deploy", spec_permissions, "deploy-service")
    assert refusal == (
        "plugin 'deploy' needs permission 'service.scale' for command 'deploy-service', which policy does not "
        f"grant (add it under plugins.deploy.grants in {EXAMPLES / 'policy.yaml'})"
    )
    assert host_services.command_refusal("deploy", ["deployment.execute"], "deploy-service") is None


def test_monitoring_runs_on_the_host_services_with_the_example_policy(host_services: HostServices) -> None:
    harness = harness_on(MonitoringPlugin, RealHost(host_services, "monitoring"))
    assert harness.invoke("monitor check", check="disk-root", value=42.0).data["threshold"] == 90  # policy value
    raised = harness.invoke("monitor check", check="disk-root", value=97.0)
    assert raised.exit_code == 0, raised.error
    [alert] = host_services.alerts.list("monitoring")
    assert (alert.name, alert.severity, alert.open) == ("check-disk-root", "warning", True)
    exposed = host_services.metrics.render().decode()
    assert 'sysops_plugin_monitor_check_value{check="disk-root",plugin="monitoring"} 97.0' in exposed
    assert 'sysops_plugin_monitor_checks_total{check="disk-root",plugin="monitoring"} 2.0' in exposed
    harness.deliver("sysops.lifecycle", {"plugin": "hello", "kind": "restarted", "message": ""}, publisher="sysops")
    exposed = host_services.metrics.render().decode()
    assert 'sysops_plugin_monitor_plugin_restarts_total{plugin="monitoring",target="hello"} 1.0' in exposed
    status = harness.invoke("monitor status")
    assert [entry["name"] for entry in status.data["alerts"]] == ["check-disk-root"]
    harness.close()
    assert host_services.alerts.list("monitoring") == []


def test_monitoring_without_the_alerts_grant_is_refused_naming_it(
    host_services: HostServices, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = settings.home / "policy.yaml"
    policy.write_text((EXAMPLES / "policy.yaml").read_text().replace('"alerts.*", ', ""))
    monkeypatch.setenv("SYSOPS_POLICY", str(policy))
    harness = harness_on(MonitoringPlugin, RealHost(host_services, "monitoring"))
    assert harness.invoke("monitor check", check="cpu", value=10.0).exit_code == 0
    refused = harness.invoke("monitor check", check="cpu", value=95.0)
    assert refused.exit_code == 9  # a missing grant, as when the host refuses a command
    assert refused.error == (
        "host refused service 'alerts' method 'raise': plugin 'monitoring' needs permission 'alerts.write' for "
        f"alerts.raise, which policy does not grant (add it under plugins.monitoring.grants in {policy})"
    )
    assert host_services.alerts.list("monitoring") == []


def test_deploy_keeps_its_deployments_in_the_host_state(host_services: HostServices) -> None:
    first = harness_on(DeployPlugin, RealHost(host_services, "deploy"))
    assert first.invoke("deploy-service", service="web", version="1.1").exit_code == 0
    again = harness_on(DeployPlugin, RealHost(host_services, "deploy"))  # another instance, as after a reload
    second = again.invoke("deploy-service", service="web", version="1.2")
    assert (second.exit_code, second.data["number"], second.data["previous_version"]) == (0, 2, "1.1")

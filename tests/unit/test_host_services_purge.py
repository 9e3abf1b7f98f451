"""`plugin down --purge` forgets what the host services keep of a plugin; a plain `down` keeps it for the next
`up` (in-process host over the fake driver, real sockets)."""

from __future__ import annotations

from pathlib import Path

from sysops.core.orchestrator import Orchestrator
from sysops.services.call import Caller
from sysops.settings import Settings

from tests.unit.test_host_services_wiring import (  # noqa: F401  (fixtures)
    Keeper,
    host,
    plugin_classes,
    service,
    up,
    write_policy,
)

PERMISSIONS = ["state.read", "state.write", "alerts.write", "logs.write", "metrics.write"]


def _leave_traces(host: Orchestrator) -> None:  # noqa: F811
    instance = up(host, PERMISSIONS)
    service(instance, "state", "set", key="k", value="kept")
    services = host.hosting.services  # type: ignore[attr-defined]
    caller = Caller("keeper", instance.id, instance.revision)
    services.call(caller, "alerts", "raise", {"name": "disk", "severity": "warning", "message": "97%"})
    service(instance, "logs", "write", level="info", message="hello")
    services.call(caller, "metrics", "counter", {"name": "hits", "amount": 1})


def test_purge_forgets_state_alerts_records_and_metrics(host: Orchestrator, settings: Settings) -> None:  # noqa: F811
    write_policy(settings, ["state.*", "alerts.*", "logs.*", "metrics.*"])
    _leave_traces(host)
    services = host.hosting.services  # type: ignore[attr-defined]
    assert 'sysops_plugin_hits_total{plugin="keeper"} 1.0' in services.metrics.render().decode()
    host.down("keeper")  # a plain down keeps everything for the next up
    second = up(host, PERMISSIONS)
    assert service(second, "state", "get", key="k")["value"] == "kept"
    assert services.alerts.list("keeper") and services.logs.records("keeper")
    host.down("keeper", purge=True)
    assert services.alerts.list("keeper", include_resolved=True) == []
    assert services.logs.records("keeper") == []
    assert "sysops_plugin_hits_total{" not in services.metrics.render().decode()  # its own series
    host.driver.add_image("keeper", Keeper)  # type: ignore[attr-defined]  # purge removed its images: a new build
    third = up(host, PERMISSIONS)
    assert not (Path(second.socket_dir) / "host.sock").exists()
    assert service(third, "state", "get", key="k") == {"found": False, "value": None, "version": 0}
    assert services.state.get("keeper", "k")["found"] is False  # the read cache forgot it too
    assert services.call(Caller("keeper", third.id, third.revision), "state", "set", {"key": "n", "value": 1})


def test_purge_of_one_plugin_keeps_another_plugins_data(host: Orchestrator, settings: Settings) -> None:  # noqa: F811
    write_policy(settings, ["state.*", "alerts.*", "logs.*", "metrics.*"])
    _leave_traces(host)
    services = host.hosting.services  # type: ignore[attr-defined]
    other = Caller("other", "o-1", 1)
    services.state.set("other", "k", "theirs")
    services.logs.write(other, "info", "theirs", {})
    host.down("keeper", purge=True)
    assert services.state.get("other", "k")["value"] == "theirs"
    assert [record.message for record in services.logs.records("other")] == ["theirs"]

"""Host services against a hostile plugin: what one plugin sends must not grow the host without bound.

Each test plays an attack that worked before its fix: creating metric families without end once its
series quota is used up (a family was registered before the quota was checked), and opening alerts
without end (only resolved ones were bounded).
"""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sysops.services import alerts, limits, metrics
from sysops.services.dispatch import HostServices

from tests.unit.test_host_services import MON, _call, _refused, published, services  # noqa: F401  (fixtures)


def test_a_plugin_past_its_series_quota_creates_no_more_metric_families(
    services: HostServices,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "METRIC_SERIES_PER_PLUGIN", 3)
    for index in range(3):
        _call(services, "metrics.counter", MON, name=f"used_{index}")
    for index in range(50):
        _refused(services, "metrics.counter", "resource_exhausted", "metric series", MON, name=f"spam_{index}")
        _refused(services, "metrics.gauge", "resource_exhausted", "metric series", MON, name=f"spam_g{index}", value=1)
    exposed = {family.name for family in text_string_to_metric_families(services.metrics.render().decode())}
    assert not any(name.startswith("sysops_plugin_spam") for name in exposed), sorted(exposed)
    assert len(services.metrics._families) == 3


def test_open_alerts_of_a_plugin_are_bounded(
    services: HostServices,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(alerts, "OPEN_ALERTS_PER_PLUGIN", 5)
    for index in range(5):
        _call(services, "alerts.raise", MON, name=f"a{index}", severity="warning", message="m")
    too_many = {"name": "a5", "severity": "warning", "message": "m"}
    _refused(services, "alerts.raise", "resource_exhausted", "open alerts", MON, **too_many)
    # raising one that is open again still updates it, and a resolved one makes room
    _call(services, "alerts.raise", MON, name="a0", severity="critical", message="again")
    _call(services, "alerts.resolve", MON, name="a1")
    _call(services, "alerts.raise", MON, name="a5", severity="warning", message="m")
    assert len(services.alerts.list("mon")) == 5
    assert limits.OPEN_ALERTS_PER_PLUGIN == 1000

"""The monitoring plugin's tests, with the sysops test kit: metrics, alerts, configuration and an event handler."""

import pytest
from sysops_sdk.testing import PluginUnderTest


def test_a_check_sets_its_gauge_and_counts(plugin: PluginUnderTest) -> None:
    result = plugin.invoke("monitor check", "disk-root", value=42.0)
    assert result.exit_code == 0
    assert result.data["alerting"] is False and result.data["threshold"] == 90.0
    assert plugin.metric("monitor_check_value", check="disk-root") == 42.0
    assert plugin.metric("monitor_checks_total", check="disk-root") == 1.0


def test_a_check_above_the_configured_threshold_raises_an_alert(plugin: PluginUnderTest) -> None:
    plugin.host.config["threshold"] = 50  # in container mode: `sysops plugin config monitoring set threshold 50`
    assert plugin.invoke("monitor check", "cpu", value=60).data["alerting"] is True
    assert plugin.invoke("monitor check", "cpu", value=10).data["alerting"] is False
    if plugin.mode == "inprocess":
        alerts = [(call.method, call.arguments["name"]) for call in plugin.host.calls if call.service == "alerts"]
        assert alerts == [("raise", "check-cpu"), ("resolve", "check-cpu")]
        assert "check-cpu" not in plugin.host.alerts


def test_status_lists_the_checks(plugin: PluginUnderTest) -> None:
    plugin.invoke("monitor check", "mem", value=5)
    status = plugin.invoke("monitor status").data
    assert "mem" in [check["check"] for check in status["checks"]]  # a container keeps earlier tests' checks


def test_lifecycle_events_count_restarts_and_failures(plugin: PluginUnderTest) -> None:
    if plugin.mode != "inprocess":
        pytest.skip("only the host publishes sysops.lifecycle")
    plugin.publish("sysops.lifecycle", {"kind": "restarted", "plugin": "web"})
    plugin.publish("sysops.lifecycle", {"kind": "oom-killed", "plugin": "web"})
    plugin.publish("sysops.lifecycle", {"kind": "ready", "plugin": "web"})
    assert plugin.metric("monitor_plugin_restarts_total", target="web") == 1.0
    assert plugin.metric("monitor_plugin_failures_total", target="web", kind="oom-killed") == 1.0

"""The backup-settings plugin's tests, with the sysops test kit (`pytest`, or `sysops plugin test DIR`)."""

import pytest
from sysops_sdk.testing import PluginUnderTest


def test_the_section_has_the_manifest_defaults(plugin: PluginUnderTest) -> None:
    result = plugin.invoke("backup-settings")
    assert result.exit_code == 0
    assert result.data == {"retention_days": 7, "schedule": "daily", "targets": []}


def test_the_section_shows_the_operators_values(plugin: PluginUnderTest) -> None:
    if plugin.mode != "inprocess":
        pytest.skip("the operator's values come from $SYSOPS_HOME/config.yaml on a real host")
    plugin.host.section.update(schedule="hourly", targets=["/etc"])
    assert plugin.invoke("backup-settings").data == {"retention_days": 7, "schedule": "hourly", "targets": ["/etc"]}

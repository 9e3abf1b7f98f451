"""The deploy-watcher plugin's tests, with the sysops test kit (an event plugin: no commands, only handlers)."""

import pytest
from sysops_sdk.testing import PluginUnderTest


@pytest.fixture
def watcher(plugin: PluginUnderTest) -> PluginUnderTest:
    if plugin.mode != "inprocess":
        pytest.skip("the handlers' effects are read from the fake host's state and logs")
    return plugin


def test_each_deploy_event_is_counted_by_topic_and_logged(watcher: PluginUnderTest) -> None:
    watcher.publish("deploy.finished", {"service": "web"})
    watcher.publish("deploy.finished", {"service": "api"})
    watcher.publish("deploy.started", {"service": "web"})
    assert watcher.host.state["count-deploy.finished"][0] == 2
    assert watcher.host.state["count-deploy.started"][0] == 1
    assert [record.arguments["message"] for record in watcher.host.logs] == [
        "deploy.finished from operator",
        "deploy.finished from operator",
        "deploy.started from operator",
    ]


def test_other_topics_are_not_handled(watcher: PluginUnderTest) -> None:
    watcher.publish("backup.finished", {})
    assert watcher.host.state == {} and watcher.host.logs == []

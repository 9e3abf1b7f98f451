"""The deploy plugin's tests, with the sysops test kit (`pytest`, or `sysops plugin test examples/deploy`).

In-process the fake host grants every permission; in container mode the operator's policy decides
(examples/policy.yaml grants deployment.execute but not service.scale, so deploy-service is refused there).
"""

import pytest
from sysops_sdk.testing import PluginUnderTest


@pytest.fixture
def deploy(plugin: PluginUnderTest) -> PluginUnderTest:
    if plugin.mode != "inprocess":
        pytest.skip("deploy-service needs a policy granting service.scale")
    return plugin


def test_deploy_records_and_numbers_deployments(deploy: PluginUnderTest) -> None:
    first = deploy.invoke("deploy-service", "web", version="1.2.0", replicas=3)
    assert first.exit_code == 0
    assert first.data["number"] == 1 and first.data["previous_version"] is None
    second = deploy.invoke("deploy-service", "web", version="1.3.0")
    assert second.data["number"] == 2 and second.data["previous_version"] == "1.2.0"
    assert deploy.invoke("deploy last", "web").data["version"] == "1.3.0"
    assert [row["service"] for row in deploy.invoke("deploy ls").data] == ["web"]


def test_deploy_announces_and_logs_each_deployment(deploy: PluginUnderTest) -> None:
    deploy.invoke("deploy-service", "api", version="2.0.0")
    assert [(event.topic, event.payload["service"]) for event in deploy.host.published] == [("deploy.finished", "api")]
    assert deploy.host.logs[0].arguments["message"] == "deployed"


def test_last_of_an_unknown_service_fails_with_a_message(plugin: PluginUnderTest) -> None:
    result = plugin.invoke("deploy last", "nothing-here")
    assert result.exit_code == 1
    assert "never deployed" in result.error

"""The CLI's routed path end to end in-process: store routes, click parsing, gRPC to a plugin thread."""

import json

import pytest
from sysops.cli.main import main
from sysops.core.orchestrator import Orchestrator
from sysops.errors import ExitCode
from sysops.host.call_server import CallServer
from sysops.runtime.fake import FakeDriver
from sysops.settings import Settings
from sysops_sdk import Plugin

from tests.unit.test_rollout import _target


@pytest.fixture
def running(orchestrator: Orchestrator, call_host: CallServer) -> FakeDriver:
    """The fake driver of `orchestrator` (conftest) with echo-v1 rolled out and serving, calls through `call_host`."""
    orchestrator.rollout.roll(_target("echo-v1"))
    assert isinstance(orchestrator.driver, FakeDriver)
    return orchestrator.driver


def test_routed_command_prints_result(running: FakeDriver, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["echo", "hello", "--upper"]) == 0
    assert capsys.readouterr().out == "v1:HELLO\n"


def test_dict_result_as_table_and_json(running: FakeDriver, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calls"]) == 0
    assert capsys.readouterr().out.splitlines() == ["KEY    VALUE", "calls  0"]
    assert main(["calls", "--output", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"calls": 0}


def test_help_lists_plugin_commands(running: FakeDriver, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "echo" in out and "plugin" in out
    assert main(["echo", "--help"]) == 0
    out = capsys.readouterr().out
    assert "TEXT" in out and "What to echo" in out and "--upper" in out and "In capitals" in out
    assert "Provided by plugin 'echo'" in out


def test_usage_errors_exit_2(running: FakeDriver, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["echo"]) == ExitCode.USAGE
    assert "Missing argument" in capsys.readouterr().err
    assert main(["ecoh", "x"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: unknown command 'ecoh' (did you mean 'echo'?)")
    assert "Traceback" not in err


def test_dead_instance_gives_unavailable(running: FakeDriver, capsys: pytest.CaptureFixture[str]) -> None:
    for handle in list(running.instances):
        running.crash(handle)
    assert main(["echo", "x"]) == ExitCode.PLUGIN_UNAVAILABLE
    err = capsys.readouterr().err
    assert err.startswith("error: plugin 'echo' did not answer command 'echo'")
    assert len(err.strip().splitlines()) == 1


def test_protocol_major_mismatch_is_refused_at_connect(
    running: FakeDriver, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sysops.core import client as client_module
    from sysops.core.client import PluginClient
    from sysops.errors import ProtocolMismatchError
    from sysops.store import Store
    from sysops_sdk import _server

    route = Store(Settings().store_path).route("echo")
    assert route is not None
    monkeypatch.setattr(client_module, "PROTOCOL_VERSION", "2.0")
    with (
        PluginClient(route.endpoints[0], "echo", route.token_for(route.endpoints[0])) as client,
        pytest.raises(ProtocolMismatchError, match=r"speaks sysops protocol 1\.4"),
    ):
        client.describe()
    monkeypatch.setattr(client_module, "PROTOCOL_METADATA", (("sysops-protocol", "2.0"),))
    assert main(["echo", "x"]) == ExitCode.INVALID_PLUGIN
    assert "caller speaks 2.0" in capsys.readouterr().err
    assert _server.PROTOCOL_VERSION == "1.4"


def test_instances_refuse_calls_without_their_token(running: FakeDriver) -> None:
    from sysops.core.client import PluginClient
    from sysops.errors import PluginUnavailableError
    from sysops.store import Store

    route = Store(Settings().store_path).route("echo")
    assert route is not None and route.token_for(route.endpoints[0])
    with PluginClient(route.endpoints[0], "echo") as client:
        assert client.healthy()  # health checks stay open for probes
        with pytest.raises(PluginUnavailableError, match="wrong sysops instance token"):
            list(client.invoke("echo", {"text": "x"}))


def test_a_stale_route_follows_the_roll_with_the_new_token(
    settings: Settings, plugin_classes: dict[str, type[Plugin]], capsys: pytest.CaptureFixture[str]
) -> None:
    from sysops.core import router

    from tests.unit.test_rollout import _target

    driver = FakeDriver()
    for image, plugin_class in plugin_classes.items():
        driver.add_image(image, plugin_class)
    orchestrator = Orchestrator(settings, driver)
    try:
        orchestrator.rollout.roll(_target("echo-v1"))
        stale = orchestrator.store.route("echo")
        assert stale is not None
        orchestrator.rollout.roll(_target("echo-v2", version="2.0.0"))  # the old instance is gone
        items = list(router.call(stale, {"text": "x"}, "text", orchestrator.store.route))
        assert [item.text for item in items if not isinstance(item, str)] == ["v2:x"]
    finally:
        for handle in list(driver.instances):
            driver.remove(handle)
        orchestrator.close()

"""The SDK's plugin types: a service plugin's loop, health entry and restart policy; an integration plugin's
secrets; a configuration plugin's section; an event plugin's shape (no commands, at least one handler)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import sysops_sdk
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sysops_sdk import (
    CommandDefinitionError,
    CommandPlugin,
    ConfigurationPlugin,
    Event,
    EventPlugin,
    IntegrationPlugin,
    PermissionDeniedError,
    Plugin,
    ServicePlugin,
    on_event,
    plugin_command,
)
from sysops_sdk._commands import _registry as command_registry
from sysops_sdk._events import _registry as event_registry
from sysops_sdk._server import PluginRuntime, PluginServer
from sysops_sdk.testing import FakeHost, PluginHarness
from sysops_sdk.wire import EXIT_SERVICE, RESTART_ENV, SERVICE_HEALTH, TYPES_ENV

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(autouse=True)
def _own_registries() -> Iterator[None]:
    """Module-level commands and handlers other test modules left registered do not reach these plugins."""
    commands, handlers = list(command_registry), list(event_registry)
    command_registry.clear()
    event_registry.clear()
    yield
    command_registry[:], event_registry[:] = commands, handlers


class _Quiet(Plugin):
    def initialize(self) -> None:
        return None

    def cleanup(self) -> None:
        return None


class Crashing(_Quiet, ServicePlugin):
    name = "crashing"
    version = "1.0.0"
    #: What run() does: "raise", "return" or "loop" (until stopping).
    behaviour = "raise"

    def run(self) -> None:
        if self.behaviour == "raise":
            raise RuntimeError("the loop broke\nsecond line")
        if self.behaviour == "loop":
            self.stopping.wait(30)

    @plugin_command("ping")
    def ping(self) -> str:
        return "pong"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[PluginServer, health_pb2_grpc.HealthStub, list[int]]]:
    """A real plugin server of a Crashing plugin on a Unix socket, with its exits recorded, not performed."""
    server = PluginServer(PluginRuntime(Crashing()), f"unix://{tmp_path}/plugin.sock")
    exits: list[int] = []
    assert server.service is not None
    server.service.exit_process = exits.append
    server.start()
    channel = grpc.insecure_channel(f"unix://{tmp_path}/plugin.sock")
    try:
        yield server, health_pb2_grpc.HealthStub(channel), exits
    finally:
        channel.close()
        server.shutdown(0.1)


def _health(stub: health_pb2_grpc.HealthStub, service: str = "") -> int:
    return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status)


def _ended(server: PluginServer) -> None:
    assert server.service is not None
    server.service._thread.join(5)
    assert not server.service._thread.is_alive()


def test_the_types_are_exported() -> None:
    for name in ("CommandPlugin", "ServicePlugin", "IntegrationPlugin", "ConfigurationPlugin", "EventPlugin"):
        assert name in sysops_sdk.__all__
        assert issubclass(getattr(sysops_sdk, name), Plugin)


@pytest.mark.parametrize(
    ("policy", "behaviour", "exits"),
    [
        ("on-failure", "raise", [EXIT_SERVICE]),
        ("always", "raise", [EXIT_SERVICE]),
        ("never", "raise", []),
        ("on-failure", "return", []),
        ("always", "return", [EXIT_SERVICE]),
        ("never", "return", []),
        ("bogus", "raise", [EXIT_SERVICE]),  # an unknown value is the default, on-failure
    ],
)
def test_a_loop_that_ends_is_restarted_by_its_policy(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    policy: str,
    behaviour: str,
    exits: list[int],
) -> None:
    monkeypatch.setenv(RESTART_ENV, policy)
    monkeypatch.setattr(Crashing, "behaviour", behaviour)
    server = PluginServer(PluginRuntime(Crashing()), f"unix://{tmp_path}/plugin.sock")
    assert server.service is not None
    seen: list[int] = []
    server.service.exit_process = seen.append
    server.start()
    try:
        server.start_service()
        _ended(server)
        assert seen == exits
        reason = "run() raised RuntimeError: the loop broke" if behaviour == "raise" else "run() returned"
        assert server.service.reason == reason
        line = [entry for entry in capsys.readouterr().err.splitlines() if "service loop stopped" in entry]
        then = "exiting so the runtime restarts the instance" if exits else "the instance keeps serving its commands"
        effective = policy.replace("bogus", "on-failure")
        assert len(line) == 1
        assert line[0].startswith(f"sysops-plugin: service loop stopped: {reason}; restart {effective}: {then}")
    finally:
        server.shutdown(0.1)


def test_never_keeps_the_commands_serving_and_reports_the_service_stopped(
    monkeypatch: pytest.MonkeyPatch, served: tuple[PluginServer, health_pb2_grpc.HealthStub, list[int]]
) -> None:
    monkeypatch.setenv(RESTART_ENV, "never")
    server, stub, exits = served
    assert server.service is not None
    server.service.policy = "never"
    server.start_service()
    _ended(server)
    assert exits == []
    assert _health(stub) == SERVING
    assert _health(stub, SERVICE_HEALTH) == NOT_SERVING
    assert PluginHarness(Crashing).invoke("ping").text == "pong"


def test_the_service_entry_serves_while_run_runs_and_shutdown_sets_stopping(
    monkeypatch: pytest.MonkeyPatch, served: tuple[PluginServer, health_pb2_grpc.HealthStub, list[int]]
) -> None:
    monkeypatch.setattr(Crashing, "behaviour", "loop")
    server, stub, exits = served
    server.start_service()
    assert _health(stub, SERVICE_HEALTH) == SERVING
    plugin = server.runtime.plugin
    assert isinstance(plugin, ServicePlugin) and not plugin.stopping.is_set()
    server.shutdown(2.0)
    assert plugin.stopping.is_set()
    _ended(server)
    assert exits == []  # a loop ended by the shutdown is the normal end
    assert server.exit_code == 0


def test_exit_with_shuts_the_server_down_with_that_code(tmp_path: Path) -> None:
    server = PluginServer(PluginRuntime(Crashing()), f"unix://{tmp_path}/plugin.sock")
    server.start()
    server.exit_with(EXIT_SERVICE)
    finished = threading.Event()
    threading.Thread(target=lambda: (server.wait(), finished.set()), daemon=True).start()
    assert finished.wait(5)
    assert server.exit_code == EXIT_SERVICE


def test_a_plain_plugin_has_no_service_loop(tmp_path: Path) -> None:
    class Plain(_Quiet, CommandPlugin):
        name = "plain"

    server = PluginServer(PluginRuntime(Plain()), f"unix://{tmp_path}/plugin.sock")
    assert server.service is None
    server.start_service()  # nothing to start


class Fetcher(_Quiet, IntegrationPlugin):
    name = "fetcher"

    @plugin_command("token")
    def token(self) -> str:
        return self.secret("api-token")[:3]


def test_an_integration_plugin_reads_its_secret_through_the_secrets_service() -> None:
    host = FakeHost(secrets={"api-token": "s3cret"})
    harness = PluginHarness(Fetcher, services=host.services())
    assert harness.invoke("token").text == "s3c"
    assert [(call.service, call.method, call.arguments) for call in host.calls] == [
        ("secrets", "get", {"name": "api-token"})
    ]
    with pytest.raises(PermissionDeniedError, match="other"):
        harness.plugin.get_service("secrets").get("other")  # type: ignore[union-attr]


def test_a_configuration_plugin_reads_its_section_through_the_config_service() -> None:
    class Backup(_Quiet, ConfigurationPlugin):
        name = "backup"

    host = FakeHost(section={"retention_days": 7})
    plugin = Backup(services=host.services())
    assert plugin.section() == {"retention_days": 7}
    assert [(call.service, call.method) for call in host.calls] == [("config", "section")]


def test_an_event_plugin_with_a_command_method_is_refused_when_the_class_is_made() -> None:
    with pytest.raises(CommandDefinitionError, match=r"event plugin .*Loud has commands \(shout\)"):

        class Loud(_Quiet, EventPlugin):
            @on_event("deploy.finished")
            def seen(self, event: Event) -> None:
                return None

            @plugin_command("shout")
            def shout(self) -> str:
                return "!"


def test_an_event_plugin_without_handlers_or_with_module_commands_is_refused_at_server_start() -> None:
    class Deaf(_Quiet, EventPlugin):
        name = "deaf"

    with pytest.raises(CommandDefinitionError, match="no @on_event handler"):
        PluginRuntime(Deaf())

    class Listener(_Quiet, EventPlugin):
        @on_event("deploy.*")
        def seen(self, event: Event) -> None:
            self.seen_topics.append(event.topic)

        def __init__(self, services: object = None) -> None:
            super().__init__(services)  # type: ignore[arg-type]
            self.seen_topics: list[str] = []

    @plugin_command("stray")
    def stray() -> str:
        return "module-level"

    with pytest.raises(CommandDefinitionError, match=r"has commands \(stray\)"):
        PluginRuntime(Listener())
    command_registry.remove(stray)
    harness = PluginHarness(Listener)
    assert harness.command_names() == []
    harness.deliver("deploy.finished", {"service": "web"})
    assert harness.plugin.seen_topics == ["deploy.finished"]  # type: ignore[attr-defined]


def test_the_class_and_the_manifest_types_must_agree_at_server_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TYPES_ENV, "command")
    with pytest.raises(CommandDefinitionError, match=r"Crashing is a ServicePlugin, but plugin.yaml's types lists "):
        PluginRuntime(Crashing())
    with pytest.raises(CommandDefinitionError, match="add 'integration' to types"):
        PluginRuntime(Fetcher())

    class Plain(_Quiet):
        name = "plain"

    monkeypatch.setenv(TYPES_ENV, "service,command")
    with pytest.raises(CommandDefinitionError, match=r"lists 'service', but .*Plain is no ServicePlugin"):
        PluginRuntime(Plain())
    assert PluginRuntime(Crashing()).commands  # the class fits what the manifest says
    monkeypatch.delenv(TYPES_ENV)  # run outside sysops (a plugin's own tests): nothing to compare with
    assert PluginRuntime(Fetcher()) is not None

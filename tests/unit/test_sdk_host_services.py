"""The SDK's side of host services and events (issue 10), over real gRPC on Unix sockets.

A tiny sysops.host.v1.Host servicer (answering from `testing.FakeHost`, recording every request) stands in for
the host: the typed clients `Plugin.get_service` returns must send exactly the calls of docs/services.md and
map the host's statuses to the SDK's exceptions; a host that is down must fail within the deadline. A real
PluginServer checks `@on_event` (Describe subscriptions, Deliver), `read_only` and the granted-permission check.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from sysops_sdk import (
    Event,
    HostUnavailableError,
    PermissionDeniedError,
    Plugin,
    ServiceCallError,
    ServiceUnavailableError,
    on_event,
    plugin_command,
    requires_permission,
)
from sysops_sdk._events import _registry as event_registry
from sysops_sdk._events import topic_matches
from sysops_sdk._server import PluginRuntime, PluginServer
from sysops_sdk.protocol.v1 import host_pb2, host_pb2_grpc
from sysops_sdk.protocol.v1 import plugin_pb2 as pb
from sysops_sdk.protocol.v1 import plugin_pb2_grpc as pb_grpc
from sysops_sdk.services import AlertsClient, ConfigClient, EventsClient, LogsClient, MetricsClient, StateClient
from sysops_sdk.testing import FakeHost, PluginHarness

TOKEN = "instance-token"


@dataclass
class RecordingHost(host_pb2_grpc.HostServicer):  # type: ignore[misc]
    """Answers Host/Call from a FakeHost, or with a status set in `refuse`; keeps every request it got."""

    backend: FakeHost = field(default_factory=lambda: FakeHost(config={"threshold": 90}))
    refuse: dict[tuple[str, str], tuple[grpc.StatusCode, str]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)

    def Call(self, request: host_pb2.ServiceCall, context: grpc.ServicerContext) -> host_pb2.ServiceReply:
        self.tokens.append(dict(context.invocation_metadata()).get("authorization", ""))
        arguments = json.loads(request.arguments_json or "{}")
        self.requests.append((request.service, request.method, arguments))
        if refusal := self.refuse.get((request.service, request.method)):
            context.abort(*refusal)
        result = self.backend.call(request.service, request.method, arguments)
        return host_pb2.ServiceReply(result_json=json.dumps(result))


def serve_host(socket: Path) -> tuple[RecordingHost, grpc.Server]:
    servicer = RecordingHost()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    host_pb2_grpc.add_HostServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix://{socket}")
    server.start()
    return servicer, server


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingHost]:
    monkeypatch.setenv("SYSOPS_HOST_ENDPOINT", f"unix://{tmp_path}/host.sock")
    monkeypatch.setenv("SYSOPS_TOKEN", TOKEN)
    monkeypatch.delenv("SYSOPS_HOST_TIMEOUT", raising=False)
    servicer, server = serve_host(tmp_path / "host.sock")
    yield servicer
    server.stop(grace=None).wait()


class Watcher(Plugin):
    name = "watcher"

    def initialize(self) -> None:
        self.seen: list[tuple[str, Event]] = []

    def cleanup(self) -> None:
        pass

    @on_event("deploy.*")
    def any_deploy(self, event: Event) -> None:
        self.seen.append(("any", event))

    @on_event("deploy.finished")
    @on_event("sysops.lifecycle")
    def finished(self, event: Event) -> None:
        self.seen.append(("finished", event))

    @on_event("boom")
    def explode(self, event: Event) -> None:
        raise RuntimeError(f"cannot handle {event.payload}\nsecond line")

    @plugin_command("status", read_only=True)
    def status(self) -> str:
        return "ok"

    @plugin_command("deploy")
    @requires_permission("system.deploy")
    def deploy(self) -> str:
        self.seen.append(("deployed", Event(0, "", None, "", 0.0)))
        return "deployed"

    @plugin_command("report")
    def report(self) -> dict[str, Any]:
        self.get_service("metrics").counter("reports_total", help="Reports").labels(kind="daily").inc()
        self.get_service("state").set("last", {"n": 1})
        self.publish("watcher.reported", {"n": 1})
        return {"threshold": self.get_service("config").get("threshold")}


module_events: list[Event] = []


@on_event("deploy.finished")
def module_handler(event: Event) -> None:
    module_events.append(event)


event_registry.remove(module_handler)  # only while a test of this module runs (`_own_registry`)


@pytest.fixture(autouse=True)
def _own_registry() -> Iterator[None]:
    saved = list(event_registry)
    event_registry.append(module_handler)
    module_events.clear()
    yield
    event_registry[:] = saved


def test_each_client_method_sends_its_wire_call_and_returns_the_result(host: RecordingHost) -> None:
    plugin = Watcher()
    state: StateClient = plugin.get_service("state")
    assert state.get("k", "dflt") == "dflt"
    assert state.set("k", {"a": 1}) == 1
    assert state.get_versioned("k") == ({"a": 1}, 1)
    assert state.compare_and_set("k", 2, expected_version=5) is False
    assert state.compare_and_set("k", 2, expected_version=1) is True
    assert state.get("k") == 2
    assert state.list("k") == ["k"]
    assert state.delete("k") is True
    assert state.delete("k") is False
    config: ConfigClient = plugin.get_service("config")
    assert (config.get("threshold"), config.get("missing", 7), config.all()) == (90, 7, {"threshold": 90})
    metrics: MetricsClient = plugin.get_service("metrics")
    metrics.counter("runs_total", help="Runs", labels={"a": "1"}).labels(b="2").inc(3)
    metrics.gauge("load").set(0.5)
    metrics.histogram("latency_seconds", buckets=[0.1, 1]).observe(0.2)
    alerts: AlertsClient = plugin.get_service("alerting")
    assert alerts.raise_alert("disk", "disk 95% full", severity="critical") == 1
    assert alerts.list() == [{"id": 1, "name": "disk", "severity": "critical", "message": "disk 95% full"}]
    assert alerts.resolve("disk") is True
    events: EventsClient = plugin.get_service("events")
    assert events.publish("watcher.tick", {"n": 1}) == 1
    assert plugin.publish("watcher.tick", [2]) == 2
    logs: LogsClient = plugin.get_service("logs")
    logs.warning("slow", seconds=3)
    assert host.requests == [
        ("state", "get", {"key": "k"}),
        ("state", "set", {"key": "k", "value": {"a": 1}}),
        ("state", "get", {"key": "k"}),
        ("state", "cas", {"key": "k", "expected_version": 5, "value": 2}),
        ("state", "cas", {"key": "k", "expected_version": 1, "value": 2}),
        ("state", "get", {"key": "k"}),
        ("state", "list", {"prefix": "k"}),
        ("state", "delete", {"key": "k"}),
        ("state", "delete", {"key": "k"}),
        ("config", "get", {"key": "threshold"}),
        ("config", "get", {"key": "missing"}),
        ("config", "all", {}),
        ("metrics", "counter", {"name": "runs_total", "help": "Runs", "labels": {"a": "1", "b": "2"}, "amount": 3}),
        ("metrics", "gauge", {"name": "load", "help": "", "labels": {}, "value": 0.5}),
        (
            "metrics",
            "histogram",
            {"name": "latency_seconds", "help": "", "labels": {}, "value": 0.2, "buckets": [0.1, 1]},
        ),
        ("alerts", "raise", {"name": "disk", "severity": "critical", "message": "disk 95% full"}),
        ("alerts", "list", {}),
        ("alerts", "resolve", {"name": "disk"}),
        ("events", "publish", {"topic": "watcher.tick", "payload": {"n": 1}}),
        ("events", "publish", {"topic": "watcher.tick", "payload": [2]}),
        ("logs", "write", {"level": "warning", "message": "slow", "fields": {"seconds": 3}}),
    ]
    assert set(host.tokens) == {f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    ("code", "exception", "expected"),
    [
        (
            grpc.StatusCode.PERMISSION_DENIED,
            PermissionDeniedError,
            "host refused service 'state' method 'set': plugin 'watcher' needs grant 'state.write'",
        ),
        (grpc.StatusCode.NOT_FOUND, ServiceUnavailableError, "the sysops host has no service 'state' method 'set'"),
        (grpc.StatusCode.INVALID_ARGUMENT, ServiceCallError, "host refused service 'state' method 'set': "),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ServiceCallError, "host refused service 'state' method 'set': "),
        (grpc.StatusCode.UNAVAILABLE, HostUnavailableError, "the sysops host could not serve service 'state'"),
    ],
)
def test_host_statuses_become_one_line_sdk_errors(
    host: RecordingHost, code: grpc.StatusCode, exception: type[Exception], expected: str
) -> None:
    host.refuse[("state", "set")] = (code, "plugin 'watcher' needs grant 'state.write'\nmore detail")
    with pytest.raises(exception) as raised:
        Watcher().get_service("state").set("k", 1)
    message = str(raised.value)
    assert message.startswith(expected) and "\n" not in message
    assert "needs grant 'state.write'" in message


def test_service_call_error_is_a_value_error_and_host_unavailable_a_service_unavailable() -> None:
    assert issubclass(ServiceCallError, ValueError)
    assert issubclass(HostUnavailableError, ServiceUnavailableError)


def test_a_host_that_is_down_fails_within_the_deadline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"unix://{tmp_path}/nobody.sock"
    monkeypatch.setenv("SYSOPS_HOST_ENDPOINT", endpoint)
    monkeypatch.setenv("SYSOPS_HOST_TIMEOUT", "1")
    started = time.monotonic()
    with pytest.raises(HostUnavailableError) as raised:
        Watcher().get_service("state").get("k")
    assert time.monotonic() - started < 2.5
    assert str(raised.value) == f"the sysops host did not answer service 'state' method 'get' within 1s at {endpoint}"


def test_a_host_socket_that_appears_after_the_call_started_is_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYSOPS_HOST_ENDPOINT", f"unix://{tmp_path}/late.sock")
    monkeypatch.setenv("SYSOPS_HOST_TIMEOUT", "5")
    started: list[grpc.Server] = []
    later = threading.Timer(0.5, lambda: started.append(serve_host(tmp_path / "late.sock")[1]))
    later.start()
    try:
        assert Watcher().get_service("config").all() == {"threshold": 90}
    finally:
        later.join()
        for server in started:
            server.stop(grace=None).wait()


def test_a_bad_host_timeout_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYSOPS_HOST_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="SYSOPS_HOST_TIMEOUT='soon' is not a number of seconds above 0"):
        Watcher().get_service("state")


def test_get_service_names_give_typed_clients_and_unknown_names_list_the_known(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SYSOPS_HOST_ENDPOINT", "unix:///nonexistent/host.sock")  # no call is made
    plugin = Watcher()
    expected = {
        "state": StateClient,
        "config": ConfigClient,
        "metrics": MetricsClient,
        "alerts": AlertsClient,
        "alerting": AlertsClient,
        "events": EventsClient,
        "logs": LogsClient,
    }
    for name, client in expected.items():
        assert isinstance(plugin.get_service(name), client)
        assert plugin.get_service(name) is plugin.get_service(name)
    with pytest.raises(ServiceUnavailableError) as raised:
        plugin.get_service("mail")
    assert str(raised.value) == (
        "plugin 'watcher' asked for service 'mail', which is not available "
        "(available: alerting, alerts, config, events, logs, metrics, plugins, secrets, state)"
    )


def test_injected_services_are_the_only_ones() -> None:
    plugin = Watcher(services={"metrics": "m"})
    assert plugin.get_service("metrics") == "m"
    with pytest.raises(ServiceUnavailableError, match=r"'state', which is not available \(available: metrics\)"):
        plugin.get_service("state")


def test_fake_host_serves_a_plugin_under_test() -> None:
    fake = FakeHost(config={"threshold": 90})
    harness = PluginHarness(Watcher, services=fake.services())
    assert harness.invoke("report").data == {"threshold": 90}
    harness.invoke("report")
    assert fake.metric_value("reports_total", kind="daily") == 2.0
    assert fake.state == {"last": ({"n": 1}, 2)}
    state = fake.services()["state"]
    assert state.delete("last") and state.set("last", 0) == 3  # versions are never reused, as in the host
    assert [(event.topic, event.payload) for event in fake.published] == [("watcher.reported", {"n": 1})] * 2
    harness.deliver("deploy.finished", {"service": "web"})
    assert [kind for kind, _ in harness.plugin.seen] == ["any", "finished"]  # type: ignore[attr-defined]
    with pytest.raises(AssertionError, match=r"Watcher\.explode of event 2 on topic 'boom' failed: RuntimeError"):
        harness.deliver("boom", "x")
    with pytest.raises(ServiceUnavailableError, match="no service 'state' method 'drop'"):
        fake.call("state", "drop", {})


@pytest.fixture
def plugin_server(tmp_path: Path) -> Iterator[tuple[Watcher, pb_grpc.PluginServiceStub, PluginServer]]:
    plugin = Watcher()
    plugin.initialize()
    server = PluginServer(PluginRuntime(plugin), f"unix://{tmp_path}/plugin.sock")
    server.start()
    channel = grpc.insecure_channel(f"unix://{tmp_path}/plugin.sock")
    try:
        yield plugin, pb_grpc.PluginServiceStub(channel), server
    finally:
        channel.close()
        server.shutdown(0.1)


def _delivery(topic: str, payload: object, id: int = 1) -> pb.EventDelivery:
    return pb.EventDelivery(id=id, topic=topic, payload_json=json.dumps(payload), publisher="plugin:deploy", time=12.5)


def test_describe_lists_subscriptions_and_read_only_commands(
    plugin_server: tuple[Watcher, pb_grpc.PluginServiceStub, PluginServer],
) -> None:
    _, stub, _ = plugin_server
    descriptor = stub.Describe(pb.DescribeRequest(protocol_version="1.3"), timeout=5)
    assert list(descriptor.subscriptions) == ["boom", "deploy.*", "deploy.finished", "sysops.lifecycle"]
    read_only = {command.name: command.read_only for command in descriptor.commands}
    assert read_only == {"status": True, "deploy": False, "report": False}


def test_deliver_runs_every_matching_handler_in_order(
    plugin_server: tuple[Watcher, pb_grpc.PluginServiceStub, PluginServer],
) -> None:
    plugin, stub, _ = plugin_server
    stub.Deliver(_delivery("deploy.finished", {"service": "web"}, id=7), timeout=5)
    stub.Deliver(_delivery("deploy.a.b", None, id=8), timeout=5)
    stub.Deliver(_delivery("sysops.lifecycle", {"kind": "ready"}, id=9), timeout=5)
    stub.Deliver(_delivery("nobody.listens", 1, id=10), timeout=5)  # no handler: nothing to do, success
    assert [(kind, event.id) for kind, event in plugin.seen] == [
        ("any", 7),
        ("finished", 7),
        ("any", 8),
        ("finished", 9),
    ]
    assert plugin.seen[0][1] == Event(
        id=7, topic="deploy.finished", payload={"service": "web"}, publisher="plugin:deploy", time=12.5
    )
    assert [event.id for event in module_events] == [7]


def test_a_raising_handler_fails_the_delivery_and_a_draining_plugin_refuses_it(
    plugin_server: tuple[Watcher, pb_grpc.PluginServiceStub, PluginServer],
) -> None:
    _, stub, server = plugin_server
    with pytest.raises(grpc.RpcError) as failed:
        stub.Deliver(_delivery("boom", "payload", id=3), timeout=5)
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    assert failed.value.details() == (
        "handler Watcher.explode of event 3 on topic 'boom' failed: RuntimeError: cannot handle payload"
    )
    server.runtime.draining = True
    with pytest.raises(grpc.RpcError) as refused:
        stub.Deliver(_delivery("deploy.x", 1), timeout=5)
    assert (refused.value.code(), refused.value.details()) == (grpc.StatusCode.UNAVAILABLE, "plugin is shutting down")


def _invoke(stub: pb_grpc.PluginServiceStub, caller: pb.CallerIdentity) -> pb.Result:
    events = list(stub.Invoke(pb.InvokeRequest(command="deploy", arguments_json="{}", caller=caller), timeout=5))
    return events[-1].result


@pytest.mark.parametrize(
    ("caller", "runs"),
    [
        (pb.CallerIdentity(), True),  # a host that does not name the caller: the host alone decides
        (pb.CallerIdentity(principal="cli:root", granted_permissions=["system.deploy"]), True),
        (pb.CallerIdentity(principal="cli:root", granted_permissions=["logs.write", "system.*"]), True),
        (pb.CallerIdentity(principal="cli:root", granted_permissions=["logs.write", "system"]), False),
        (pb.CallerIdentity(principal="cli:root"), False),
    ],
)
def test_a_command_whose_permission_was_not_granted_does_not_run(
    plugin_server: tuple[Watcher, pb_grpc.PluginServiceStub, PluginServer], caller: pb.CallerIdentity, runs: bool
) -> None:
    plugin, stub, _ = plugin_server
    result = _invoke(stub, caller)
    ran = [kind for kind, _ in plugin.seen] == ["deployed"]
    assert ran is runs
    if runs:
        assert (result.exit_code, result.text) == (0, "deployed")
    else:
        assert result.exit_code == 9
        assert (
            result.error
            == "command 'deploy' needs permission 'system.deploy', which was not granted to plugin 'watcher'"
        )


def test_bad_event_topics_are_refused_at_declaration() -> None:
    for topic in ("Deploy", "", "deploy.*.x", "a b", "**", ".*", "x" * 129):
        with pytest.raises(ValueError, match="invalid event topic"):
            on_event(topic)


def test_topic_patterns_match_as_the_host_bus_reads_them() -> None:
    assert topic_matches("*", "anything.at.all")
    assert topic_matches("deploy.*", "deploy.a.b") and not topic_matches("deploy.*", "deploy")
    assert not topic_matches("deploy.*", "deployx.a") and not topic_matches("deploy", "deploy.a")

"""The host services inside an in-process host (services/hosting.py over the fake driver): an instance's
host.sock exists right after its start and answers for that plugin, a service without its grant is refused
while a granted one works, the socket goes with the instance, and a command whose @requires_permission is
not granted is refused before the plugin is called (exit 9), and runs, told its grants, once policy grants it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sysops.core import router
from sysops.core.client import InvocationResult
from sysops.core.manifest import parse_manifest
from sysops.core.orchestrator import Orchestrator
from sysops.core.rollout import RollTarget
from sysops.errors import ExitCode, PolicyDeniedError
from sysops.services.hosting import Hosting, start_hosting
from sysops.services.transport import HOST_SOCKET
from sysops.settings import Settings
from sysops.store import InstanceRecord, Store
from sysops_sdk import Event, Plugin, on_event, plugin_command, requires_permission
from sysops_sdk.protocol.v1 import host_pb2 as pb
from sysops_sdk.protocol.v1 import host_pb2_grpc as pb_grpc

RAN: list[str] = []


class Keeper(Plugin):
    name = "keeper"
    version = "1.0.0"
    description = "uses host services"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("guarded")
    @requires_permission("deploy.run")
    def guarded(self) -> str:
        RAN.append("guarded")
        return "ran"

    @plugin_command("open")
    def open_command(self) -> str:
        return "open"


@pytest.fixture
def plugin_classes() -> Iterator[dict[str, type[Plugin]]]:
    yield {"keeper": Keeper}


@pytest.fixture
def host(settings: Settings, orchestrator: Orchestrator) -> Iterator[Orchestrator]:
    """The host services of a host over the fake driver, and an orchestrator made after them (so it has the
    host's hooks), as the control server's calls make theirs (`inner.hosting` is the host services)."""
    RAN.clear()
    stop = threading.Event()
    hosting = start_hosting(settings, orchestrator.driver.name, None, stop)
    inner = Orchestrator(settings, orchestrator.driver)
    inner.hosting = hosting  # type: ignore[attr-defined]
    yield inner
    inner.close()
    stop.set()
    hosting.wake()
    assert hosting.closed.wait(5)


def write_policy(settings: Settings, grants: list[str]) -> None:
    (settings.home / "policy.yaml").write_text(json.dumps({"plugins": {"keeper": {"grants": grants}}}))


def up(orchestrator: Orchestrator, permissions: list[str]) -> InstanceRecord:
    manifest = parse_manifest(
        {"name": "keeper", "version": "1.0.0", "entrypoint": "x:Keeper", "permissions": permissions}, "plugin.yaml"
    )
    return orchestrator.rollout.roll(RollTarget(manifest, "keeper", "keeper", "fp", "/src/keeper"))


def service(instance: InstanceRecord, name: str, method: str, token: str | None = None, **arguments: Any) -> Any:
    with grpc.insecure_channel(f"unix:{Path(instance.socket_dir) / HOST_SOCKET}") as channel:
        reply = pb_grpc.HostStub(channel).Call(
            pb.ServiceCall(service=name, method=method, arguments_json=json.dumps(arguments)),
            timeout=5,
            metadata=(("authorization", f"Bearer {token or instance.token}"),),
        )
    return json.loads(reply.result_json) if reply.result_json else None


def routed(settings: Settings, command: str) -> InvocationResult:
    store = Store(settings.store_path)
    try:
        route = store.route(command)
        assert route is not None
        items = list(router.call(route, {}, "text", store.route))
    finally:
        store.close()
    result = items[-1]
    assert isinstance(result, InvocationResult)
    return result


def test_a_started_instance_reaches_its_granted_services_on_host_sock(host: Orchestrator, settings: Settings) -> None:
    write_policy(settings, ["state.*"])
    instance = up(host, ["state.read", "state.write", "config.read"])
    assert (Path(instance.socket_dir) / HOST_SOCKET).exists()
    assert host.driver.started_specs[-1].environment["SYSOPS_HOST_ENDPOINT"] == "unix:///run/sysops/host.sock"  # type: ignore[attr-defined]
    assert service(instance, "state", "set", key="k", value={"n": 1}) == {"version": 1}
    assert service(instance, "state", "get", key="k") == {"found": True, "value": {"n": 1}, "version": 1}
    with pytest.raises(grpc.RpcError) as refused:
        service(instance, "config", "get", key="x")
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "config.read" in refused.value.details()
    with pytest.raises(grpc.RpcError) as wrong:
        service(instance, "state", "get", token="not-the-token", key="k")
    assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_listener_goes_with_the_instance_and_state_stays_with_the_plugin(
    host: Orchestrator, settings: Settings
) -> None:
    write_policy(settings, ["state.*"])
    first = up(host, ["state.read", "state.write"])
    service(first, "state", "set", key="k", value="kept")
    host.down("keeper")
    assert not (Path(first.socket_dir) / HOST_SOCKET).exists()
    second = up(host, ["state.read", "state.write"])
    assert second.id != first.id
    assert service(second, "state", "get", key="k")["value"] == "kept"


def test_a_command_needing_an_ungranted_permission_is_refused_before_the_plugin_runs(
    host: Orchestrator, settings: Settings
) -> None:
    write_policy(settings, [])
    up(host, ["deploy.run"])
    with pytest.raises(PolicyDeniedError) as refused:
        routed(settings, "guarded")
    assert refused.value.exit_code == ExitCode.POLICY_DENIED
    assert "needs permission 'deploy.run'" in str(refused.value)
    assert "plugins.keeper.grants" in str(refused.value)
    assert RAN == []
    assert routed(settings, "open").text == "open"  # a command needing nothing runs
    write_policy(settings, ["deploy.*"])
    time.sleep(0.01)  # a new mtime for the policy cache
    assert routed(settings, "guarded").text == "ran"
    assert RAN == ["guarded"]


def test_routed_calls_and_restarts_are_counted_in_the_host_metrics(host: Orchestrator, settings: Settings) -> None:
    from sysops.core import events
    from sysops.core.events import EventKind

    up(host, [])
    routed(settings, "open")
    events.record(host.store, "keeper", EventKind.RESTARTED, "instance x restarted by the supervisor")
    text = host.hosting.services.metrics.render().decode()  # type: ignore[attr-defined]
    assert 'sysops_calls_total{command="open",outcome="ok",plugin="keeper"} 1.0' in text
    assert 'sysops_restarts_total{plugin="keeper"} 1.0' in text


RECEIVED: list[tuple[str, Any, str]] = []


class Listener(Plugin):
    name = "listener"
    version = "1.0.0"
    description = "subscribes to demo events"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @on_event("demo.*")
    def seen(self, event: Event) -> None:
        RECEIVED.append((event.topic, event.payload, event.publisher))

    @plugin_command("noop")
    def noop(self) -> str:
        return ""


def up_listener(orchestrator: Orchestrator) -> InstanceRecord:
    manifest = parse_manifest(
        {"name": "listener", "version": "1.0.0", "entrypoint": "x:Listener", "permissions": ["events.subscribe"]},
        "plugin.yaml",
    )
    return orchestrator.rollout.roll(RollTarget(manifest, "listener", "listener", "fp", "/src/listener"))


@pytest.fixture
def listening(settings: Settings, orchestrator: Orchestrator) -> Iterator[tuple[Orchestrator, Hosting]]:
    RECEIVED.clear()
    orchestrator.driver.add_image("listener", Listener)  # type: ignore[attr-defined]
    stop = threading.Event()
    hosting = start_hosting(settings, orchestrator.driver.name, None, stop)
    inner = Orchestrator(settings, orchestrator.driver)
    yield inner, hosting
    inner.close()
    stop.set()
    hosting.wake()
    assert hosting.closed.wait(5)


def test_a_granted_subscriber_gets_events_and_plugin_down_unsubscribes_it(
    listening: tuple[Orchestrator, Hosting], settings: Settings
) -> None:
    orchestrator, hosting = listening
    (settings.home / "policy.yaml").write_text(json.dumps({"plugins": {"listener": {"grants": ["events.*"]}}}))
    up_listener(orchestrator)
    wait_until(lambda: "listener" in hosting.bus.subscribers(), "the subscription")
    assert hosting.bus.subscribers()["listener"] == ("demo.*",)
    hosting.bus.publish("demo.started", {"n": 1}, "operator")
    hosting.bus.publish("other.topic", {"n": 2}, "operator")
    wait_until(lambda: len(RECEIVED) >= 1, "the delivery")
    assert RECEIVED == [("demo.started", {"n": 1}, "operator")]
    orchestrator.down("listener")
    hosting.wake()
    wait_until(lambda: "listener" not in hosting.bus.subscribers(), "the unsubscription")


def test_without_the_subscribe_grant_the_plugin_is_not_subscribed_and_an_event_says_so(
    listening: tuple[Orchestrator, Hosting], settings: Settings
) -> None:
    orchestrator, hosting = listening
    up_listener(orchestrator)
    wait_until(lambda: any(e.kind == "refused" for e in orchestrator.store.events("listener")), "the refused event")
    [refused] = [e for e in orchestrator.store.events("listener") if e.kind == "refused"]
    assert "events.subscribe" in refused.message and "plugins.listener.grants" in refused.message
    assert "listener" not in hosting.bus.subscribers()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_the_identity_sent_with_a_call_follows_the_grants_within_the_recheck(
    host: Orchestrator, settings: Settings
) -> None:
    from sysops.services.dispatch import RECHECK_SECONDS

    write_policy(settings, ["deploy.run"])
    up(host, ["deploy.run", "state.read"])
    store = Store(settings.store_path)
    route = store.route("open")
    store.close()
    assert route is not None
    hosting: Hosting = host.hosting  # type: ignore[attr-defined]
    first = hosting.admit(route, [], "cli:alice")
    assert (first.principal, list(first.granted_permissions)) == ("cli:alice", ["deploy.run"])
    assert hosting.admit(route, [], "cli:alice") is first  # made once, not per call
    assert hosting.admit(route, [], "cli:bob").principal == "cli:bob"
    for grants in (["deploy.run", "state.read"], []):
        write_policy(settings, grants)
        time.sleep(RECHECK_SECONDS + 0.05)
        assert list(hosting.admit(route, [], "cli:alice").granted_permissions) == sorted(grants)


def test_repeated_calls_are_counted_without_making_their_label_children_again(
    host: Orchestrator, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prometheus_client.metrics import MetricWrapperBase

    up(host, [])
    routed(settings, "open")
    made: list[tuple[str, ...]] = []
    original = MetricWrapperBase.labels

    def counted(self: MetricWrapperBase, *values: str) -> Any:
        made.append(values)
        return original(self, *values)

    monkeypatch.setattr(MetricWrapperBase, "labels", counted)
    routed(settings, "open")
    routed(settings, "open")
    text = host.hosting.services.metrics.render().decode()  # type: ignore[attr-defined]
    assert 'sysops_calls_total{command="open",outcome="ok",plugin="keeper"} 3.0' in text
    assert 'sysops_call_seconds_count{plugin="keeper"} 3.0' in text
    assert made == []

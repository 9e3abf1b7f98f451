"""Host services against a hostile plugin or caller: what one plugin sends must not grow the host without
bound, starve other plugins, or reach more than it was granted.

Most tests play an attack that worked before its fix (made-up metric families and service names, open
alerts and absent state keys without end, JSON nested just under the parser's limit, numbers too large
for a float, one plugin's calls holding the threads or memory every plugin's calls need). The others pin
behaviour found sound and documented: a wildcard asked in a manifest is literal (docs/permissions.md),
and a control method hidden behind a pass-through prefix of the server's role check reaches nothing.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from sysops.server.protocol.v1 import control_pb2 as control_pb
from sysops.services import alerts, limits, metrics, transport
from sysops.services.call import NOT_CACHED, ServiceCallError
from sysops.services.dispatch import Caller, HostServices
from sysops.services.transport import CALLS_IN_FLIGHT_PER_INSTANCE, HOST_SOCKET, InstanceListeners
from sysops.settings import Settings
from sysops_sdk.protocol.v1 import host_pb2 as pb
from sysops_sdk.protocol.v1 import host_pb2_grpc as pb_grpc

from tests.unit import test_host_services as base
from tests.unit.dispatcher_fakes import AnswersNothingFromMemory
from tests.unit.test_bus import BusFactory, Recorder, make_bus, recorder, store_path, stored_event_ids, wait_until  # noqa: F401
from tests.unit.test_host_services import published, services  # noqa: F401  (fixtures)
from tests.unit.test_host_transport import TOKEN, call, instance, socket_dir
from tests.unit.test_operator_surface import Served, served  # noqa: F401  (fixture)


def test_a_plugin_past_its_series_quota_creates_no_more_metric_families(
    services: HostServices,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "METRIC_SERIES_PER_PLUGIN", 3)
    for index in range(3):
        base._call(services, "metrics.counter", base.MON, name=f"used_{index}")
    for index in range(50):
        base._refused(
            services, "metrics.counter", "resource_exhausted", "metric series", base.MON, name=f"spam_{index}"
        )
        base._refused(
            services, "metrics.gauge", "resource_exhausted", "metric series", base.MON, name=f"spam_g{index}", value=1
        )
    exposed = {family.name for family in text_string_to_metric_families(services.metrics.render().decode())}
    assert not any(name.startswith("sysops_plugin_spam") for name in exposed), sorted(exposed)
    assert len(services.metrics._families) == 3


def test_open_alerts_of_a_plugin_are_bounded(
    services: HostServices,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(alerts, "OPEN_ALERTS_PER_PLUGIN", 5)
    for index in range(5):
        base._call(services, "alerts.raise", base.MON, name=f"a{index}", severity="warning", message="m")
    too_many = {"name": "a5", "severity": "warning", "message": "m"}
    base._refused(services, "alerts.raise", "resource_exhausted", "open alerts", base.MON, **too_many)
    # raising one that is open again still updates it, and a resolved one makes room
    base._call(services, "alerts.raise", base.MON, name="a0", severity="critical", message="again")
    base._call(services, "alerts.resolve", base.MON, name="a1")
    base._call(services, "alerts.raise", base.MON, name="a5", severity="warning", message="m")
    assert len(services.alerts.list("mon")) == 5
    assert limits.OPEN_ALERTS_PER_PLUGIN == 1000


def test_a_wildcard_asked_in_the_manifest_stands_for_nothing_even_under_a_grant_of_everything(
    services: HostServices,  # noqa: F811
    settings: Settings,
) -> None:
    base._save_plugin(settings, "greedy", ["state.*", "sysops.*"])
    base._write_policy(settings, 'plugins:\n  greedy: {grants: ["*"]}\n')
    greedy = Caller("greedy", "greedy-1", 1)
    assert services.permission_report("greedy").granted == ("state.*", "sysops.*")
    base._refused(services, "state.get", "permission_denied", "'state.read'", greedy, key="k")
    assert services.command_refusal("greedy", ["deploy.run"], "deploy") is not None


@pytest.mark.parametrize(("service", "method"), [("state", "set"), ("events", "publish"), ("logs", "write")])
def test_deeply_nested_json_that_parses_is_refused_as_an_argument_not_an_internal_error(
    services: HostServices,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    service: str,
    method: str,
) -> None:
    listeners = InstanceListeners(services, workers=2)
    try:
        directory = socket_dir(tmp_path)
        listeners.attach(replace(instance(directory), plugin="mon"))
        for depth in range(960, 1000, 4):  # deep enough to fail in the services, shallow enough to parse
            nested = "[" * depth + "]" * depth
            arguments = {
                ("state", "set"): f'{{"key": "k", "value": {nested}}}',
                ("events", "publish"): f'{{"topic": "t", "payload": {nested}}}',
                ("logs", "write"): f'{{"level": "info", "message": "m", "fields": {{"f": {nested}}}}}',
            }[(service, method)]
            with grpc.insecure_channel(f"unix:{directory / HOST_SOCKET}") as channel:
                try:
                    pb_grpc.HostStub(channel).Call(
                        pb.ServiceCall(service=service, method=method, arguments_json=arguments),
                        timeout=5,
                        metadata=(("authorization", f"Bearer {TOKEN}"),),
                    )
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (depth, error.details())
        assert "Traceback" not in caplog.text
    finally:
        listeners.stop()


class _SlowForOnePlugin(AnswersNothingFromMemory):
    """A dispatcher whose calls from plugin 'slow' wait on a gate (as calls queued on a busy write lock)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.waiting = threading.Semaphore(0)

    def call(self, caller: Caller, service: str, method: str, arguments: dict[str, Any]) -> Any:
        if caller.plugin == "slow":
            self.waiting.release()
            self.gate.wait(10)
        return {"plugin": caller.plugin}


def test_one_plugin_keeping_its_host_threads_busy_does_not_delay_another_plugins_calls(tmp_path: Path) -> None:
    dispatcher = _SlowForOnePlugin()
    listeners = InstanceListeners(dispatcher, workers=4)
    hostile, other = socket_dir(tmp_path, "a"), socket_dir(tmp_path, "b")
    listeners.attach(replace(instance(hostile, "a1", "token-a"), plugin="slow"))
    listeners.attach(replace(instance(other, "b1", "token-b"), plugin="other"))
    flood = [threading.Thread(target=_call_quietly, args=(hostile / HOST_SOCKET, "token-a")) for _ in range(12)]
    try:
        for thread in flood:
            thread.start()
        assert dispatcher.waiting.acquire(timeout=5)  # the hostile plugin's calls are holding threads
        started = time.monotonic()
        assert call(other / HOST_SOCKET, "state", token="token-b") == {"plugin": "other"}
        assert time.monotonic() - started < 1.0
    finally:
        dispatcher.gate.set()
        for thread in flood:
            thread.join(timeout=15)
        listeners.stop()


class _CachedReadsSlowRest:
    """A dispatcher that answers the state.get of key `mem` from memory (its `cached_call`), refuses key `bad` there,
    fails on key `boom` (a bug), and holds every other call on a gate (as calls waiting for the database)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.waiting = threading.Semaphore(0)

    def cached_call(self, caller: Caller, service: str, method: str, arguments: dict[str, Any]) -> Any:
        key = arguments.get("key")
        if key == "mem":
            return {"from": "memory", "plugin": caller.plugin}
        if key == "bad":
            raise ServiceCallError("invalid_argument", "state.get: refused from memory")
        if key == "boom":
            raise RuntimeError("a bug with a secret in its message")
        return NOT_CACHED

    def call(self, caller: Caller, service: str, method: str, arguments: dict[str, Any]) -> Any:
        self.waiting.release()
        self.gate.wait(10)
        return {"from": "thread"}


def test_a_read_the_services_hold_in_memory_is_answered_while_every_thread_of_the_instance_is_busy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cached read is answered on the listener's event loop, with no hop to a thread and back (which cost more
    than the read, bench_host_services): so it does not wait behind the instance's own slow calls either. Its token
    is checked, its refusal is a status and a bug is one line (INTERNAL), as on the threads."""
    dispatcher = _CachedReadsSlowRest()
    listeners = InstanceListeners(dispatcher, workers=2)
    directory = socket_dir(tmp_path)
    listeners.attach(instance(directory, "a1", "token-a"))
    path = directory / HOST_SOCKET
    slow = [threading.Thread(target=_call_quietly, args=(path, "token-a")) for _ in range(4)]
    try:
        for thread in slow:
            thread.start()
        for _ in range(2):
            assert dispatcher.waiting.acquire(timeout=5)  # both threads are held
        started = time.monotonic()
        assert call(path, "state", '{"key": "mem"}', token="token-a") == {"from": "memory", "plugin": "demo"}
        assert time.monotonic() - started < 1.0
        with pytest.raises(grpc.RpcError) as refused:
            call(path, "state", '{"key": "bad"}', token="token-a")
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == "state.get: refused from memory"
        with pytest.raises(grpc.RpcError) as bug:
            call(path, "state", '{"key": "boom"}', token="token-a")
        assert bug.value.code() == grpc.StatusCode.INTERNAL
        assert bug.value.details() == "state.get: internal error in the sysops host"
        assert "a bug with a secret" in caplog.text  # logged in the host, not sent to the plugin
        with pytest.raises(grpc.RpcError) as unknown:  # a wrong token is never answered from memory: it waits for
            call(path, "state", '{"key": "mem"}', token="token-b", timeout=1)  # a thread, which refuses it
        assert unknown.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        with pytest.raises(grpc.RpcError) as other:  # only state.get is looked for in memory
            call(path, "logs", '{"key": "mem"}', token="token-a", timeout=1)
        assert other.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        dispatcher.gate.set()
        for thread in slow:
            thread.join(timeout=15)
        listeners.stop()


def _call_quietly(path: Path, token: str) -> None:
    with contextlib.suppress(grpc.RpcError):
        call(path, "state", token=token)


def test_an_instance_with_too_many_calls_in_flight_is_refused_at_once_rather_than_held(tmp_path: Path) -> None:
    dispatcher = _SlowForOnePlugin()
    listeners = InstanceListeners(dispatcher, workers=4)
    directory = socket_dir(tmp_path)
    listeners.attach(replace(instance(directory, "a1", "token-a"), plugin="slow"))
    channel = grpc.insecure_channel(f"unix:{directory / HOST_SOCKET}")
    try:
        stub = pb_grpc.HostStub(channel)
        request = pb.ServiceCall(service="state", method="get", arguments_json="{}")
        metadata = (("authorization", "Bearer token-a"),)
        calls = [
            stub.Call.future(request, timeout=20, metadata=metadata) for _ in range(CALLS_IN_FLIGHT_PER_INSTANCE + 8)
        ]
        deadline = time.monotonic() + 5
        while sum(call.done() for call in calls) < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
        refused = [call for call in calls if call.done()]
        assert len(refused) == 8
        assert all(call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for call in refused)
    finally:
        dispatcher.gate.set()
        channel.close()
        listeners.stop()


def test_calls_whose_message_never_comes_count_against_the_limit_too(tmp_path: Path) -> None:
    """Headers sent, the message never: the asyncio listener first counted a call only once its message had
    come, so a plugin could hold any number of such calls (a task and a core call each, on the loop every
    instance shares). They are refused beyond CALLS_IN_FLIGHT_PER_INSTANCE, as the threaded server did."""
    listeners = InstanceListeners(_SlowForOnePlugin(), workers=4)
    directory = socket_dir(tmp_path)
    listeners.attach(instance(directory))
    never = threading.Event()

    def stalled() -> Iterator[pb.ServiceCall]:
        never.wait(30)
        yield pb.ServiceCall()

    channel = grpc.insecure_channel(f"unix:{directory / HOST_SOCKET}")
    try:
        method = channel.stream_unary(
            "/sysops.host.v1.Host/Call",
            request_serializer=pb.ServiceCall.SerializeToString,
            response_deserializer=pb.ServiceReply.FromString,
        )
        metadata = (("authorization", f"Bearer {TOKEN}"),)
        calls = [
            method.future(stalled(), timeout=20, metadata=metadata) for _ in range(CALLS_IN_FLIGHT_PER_INSTANCE + 8)
        ]
        deadline = time.monotonic() + 5
        while sum(call.done() for call in calls) < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
        refused = [call for call in calls if call.done()]
        assert len(refused) == 8 and all(call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for call in refused)
    finally:
        never.set()
        channel.close()
        listeners.stop()


def test_health_on_host_sock_is_check_only(tmp_path: Path) -> None:
    """A health Watch is a stream held open per request with its service name (up to the message cap): a
    plugin opening many with long names grew the host by megabytes each. host.sock answers Check only."""
    listeners = InstanceListeners(_SlowForOnePlugin(), workers=1)
    directory = socket_dir(tmp_path)
    listeners.attach(instance(directory))
    try:
        with grpc.insecure_channel(f"unix:{directory / HOST_SOCKET}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            assert (
                stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
            )
            with pytest.raises(grpc.RpcError) as unknown:
                stub.Check(health_pb2.HealthCheckRequest(service="x" * 1000), timeout=5)
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.RpcError) as watched:
                next(iter(stub.Watch(health_pb2.HealthCheckRequest(service="x" * 100_000), timeout=5)))
            assert watched.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        listeners.stop()


def test_reading_ever_new_absent_state_keys_does_not_grow_the_read_cache_without_end(
    services: HostServices,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(services.state.cache, "max_entries", 50)
    for index in range(500):
        assert base._call(services, "state.get", base.MON, key=f"absent-{index}")["found"] is False
    assert len(services.state.cache._entries) <= 50
    assert base._call(services, "state.get", base.MON, key="absent-499")["found"] is False  # still answered


def test_calls_of_made_up_services_do_not_make_new_host_metric_series(
    services: HostServices,  # noqa: F811
) -> None:
    for index in range(50):
        base._refused(services, f"made-up-{index}.get", "not_found", "unknown host service", base.MON)
        base._refused(services, f"state.made-up-{index}", "not_found", "has no method", base.MON)
    exposed = services.metrics.render().decode()
    assert "made-up" not in exposed
    assert 'sysops_host_service_calls_total{outcome="not_found",plugin="mon",service="unknown"} 50.0' in exposed


@pytest.mark.parametrize(
    ("method", "arguments"),
    [
        ("gauge", {"value": 10**400}),
        ("histogram", {"value": -(10**400)}),
        ("counter", {"amount": 10**400}),
        ("histogram", {"value": 1, "buckets": [1, 10**400]}),
    ],
)
def test_a_metric_number_too_large_for_a_float_is_refused_as_an_argument(
    services: HostServices,  # noqa: F811
    method: str,
    arguments: dict[str, Any],
) -> None:
    base._refused(services, f"metrics.{method}", "invalid_argument", "finite number", base.MON, name="big", **arguments)


@pytest.mark.parametrize(
    "method",
    [
        "/sysops.host.v1.Host/../sysops.control.v1.Control/Down",
        "/grpc.health.v1.Health/../../sysops.control.v1.Control/Down",
        "/sysops.host.v1.Host/%2e%2e/sysops.control.v1.Control/Down",
        "/sysops.host.v1.Host//sysops.control.v1.Control/Down",
    ],
)
def test_a_control_method_hidden_behind_a_pass_through_prefix_reaches_nothing(
    served: Served,  # noqa: F811
    method: str,
) -> None:
    with grpc.insecure_channel(served.address) as channel:
        down = channel.unary_stream(method, request_serializer=control_pb.DownRequest.SerializeToString)
        with pytest.raises(grpc.RpcError) as refused:
            list(down(control_pb.DownRequest(name="ops"), timeout=5))  # no caller token at all
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert any(instance.status.running for instance in served.driver.instances.values())  # ops still up


def test_links_planted_at_host_sock_neither_redirect_nor_remove_what_they_point_to(tmp_path: Path) -> None:
    listeners = InstanceListeners(_SlowForOnePlugin(), workers=1)
    directory = socket_dir(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    victim.chmod(0o644)
    before = victim.stat()
    try:
        (directory / HOST_SOCKET).symlink_to(victim)  # planted before the host listens
        listeners.attach(instance(directory))
        assert (directory / HOST_SOCKET).is_socket() and not (directory / HOST_SOCKET).is_symlink()
        (directory / HOST_SOCKET).unlink()  # swapped for a link while served: detach must not follow it
        (directory / HOST_SOCKET).symlink_to(victim)
        listeners.detach("abc123")
        after = victim.stat()
        assert victim.read_text() == "keep me"
        assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode)
    finally:
        listeners.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="the host gives host.sock to the plugin's uid only as root")
def test_a_link_swapped_in_between_listening_and_chown_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = socket_dir(tmp_path)
    os.chown(directory, 54321, 54321)  # the plugin's directory
    victim = tmp_path / "victim"
    victim.write_text("root's")
    real_umask = transport.private_umask

    @contextlib.contextmanager
    def then_swap(mask: int) -> Iterator[None]:
        with real_umask(mask):
            yield
        (directory / HOST_SOCKET).rename(directory / "moved.sock")  # the plugin, in the race window
        (directory / HOST_SOCKET).symlink_to(victim)

    monkeypatch.setattr(transport, "private_umask", then_swap)
    listeners = InstanceListeners(_SlowForOnePlugin(), workers=1)
    try:
        listeners.attach(instance(directory))
        assert victim.stat().st_uid == 0 and victim.read_text() == "root's"
        assert os.lstat(directory / HOST_SOCKET).st_uid == 54321  # only the link itself was given away
    finally:
        listeners.stop()


def test_a_stuck_subscriber_does_not_keep_every_other_topics_events_on_disk(
    make_bus: BusFactory,  # noqa: F811
    recorder: Recorder,  # noqa: F811
    store_path: Path,  # noqa: F811
) -> None:
    bus = make_bus(backlog_limit=20, retained_bytes=20_000)
    recorder.gates["stuck"] = threading.Event()
    bus.subscribe("stuck", ["quiet.topic"])
    bus.start()
    bus.publish("quiet.topic", {}, "plugin:spam")  # its worker takes it and hangs in the handler
    wait_until(lambda: ("stuck", 1) in recorder.attempts)
    payload = {"pad": "x" * 180}  # some 190 characters of JSON each
    for _ in range(1000):
        bus.publish("loud.topic", payload, "plugin:spam")
    bus.retain()
    stored = stored_event_ids(store_path)
    assert len(stored) <= 20_000 // 190 + 1, len(stored)  # 1,001 before: all of them, up to 100,000
    assert stored[-1] == bus.publish("loud.topic", payload, "plugin:spam") - 1  # the newest are kept


class _RefusesLate(AnswersNothingFromMemory):
    """A dispatcher whose calls wait on a gate and then fail (a permission refused, say)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.done = threading.Event()

    def call(self, caller: Caller, service: str, method: str, arguments: dict[str, Any]) -> Any:
        self.gate.wait(10)
        self.done.set()
        raise ServiceCallError("permission_denied", "not granted")


def test_a_call_whose_client_left_is_refused_without_an_asyncio_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The work of a call whose client went away ends on its thread; its refusal was nobody's, and asyncio
    logged "Future exception was never retrieved" with a traceback for each."""
    dispatcher = _RefusesLate()
    listeners = InstanceListeners(dispatcher, workers=1)
    directory = socket_dir(tmp_path)
    listeners.attach(instance(directory))
    try:
        with pytest.raises(grpc.RpcError) as gone:
            call(directory / HOST_SOCKET, "state", token=TOKEN, timeout=0.3)
        assert gone.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        dispatcher.gate.set()
        assert dispatcher.done.wait(5)
        time.sleep(0.2)
        gc.collect()
        time.sleep(0.2)
        assert "never retrieved" not in caplog.text
    finally:
        listeners.stop()

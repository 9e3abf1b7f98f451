"""Supervision (issue 9 item 2): the manifest's `liveness:`, the restart rule, the loop over the fake driver,
and the pod's livenessProbe on Kubernetes."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from concurrent import futures
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sysops.core import router
from sysops.core.client import InvocationResult, PluginClient
from sysops.core.manifest import Liveness, parse_manifest
from sysops.core.orchestrator import Orchestrator
from sysops.core.supervisor import SERVING, Action, Backoff, Rules, Supervisor, Watch, decide
from sysops.core.suspects import REGISTRY, Suspects
from sysops.errors import DeadlineExceededError, ManifestError
from sysops.runtime.base import LivenessCheck, ResourceLimits, ResourceReport
from sysops.runtime.fake import FakeDriver
from sysops.runtime.kubernetes.driver import KubernetesDriver
from sysops.store import InstanceRecord

from tests.unit.test_rollout import _target

TIMED_OUT = "no answer within 2s"
RULES = Rules(Liveness(interval_s=1, timeout_s=0.5, failures=3), start_s=5, budget=3, stable_s=100)


def _run(answers: list[tuple[float, str]], rules: Rules = RULES) -> list[tuple[float, Action, Watch]]:
    watch, taken = Watch(), []
    for now, answer in answers:
        watch, action = decide(watch, answer, now, rules)
        taken.append((now, action, watch))
    return taken


def _restarts(taken: list[tuple[float, Action, Watch]]) -> list[float]:
    return [now for now, action, _ in taken if action is Action.RESTART]


# the manifest block
def test_liveness_has_defaults_and_takes_its_keys() -> None:
    base = {"name": "p", "version": "1.0.0", "entrypoint": "p.plugin:P"}
    assert parse_manifest(base, "plugin.yaml").liveness == Liveness(interval_s=10, timeout_s=2, failures=3)
    tuned = parse_manifest({**base, "liveness": {"interval_s": 1, "timeout_s": 0.5, "failures": 2}}, "plugin.yaml")
    assert tuned.liveness == Liveness(interval_s=1, timeout_s=0.5, failures=2)


@pytest.mark.parametrize(
    ("liveness", "named"),
    [
        ({"interval_s": 0}, "liveness.interval_s"),
        ({"timeout_s": 0}, "liveness.timeout_s"),
        ({"timeout_s": 61}, "liveness.timeout_s"),
        ({"failures": 0}, "liveness.failures"),
        ({"failures": 1.5}, "liveness.failures"),
        ({"failures": "3"}, "liveness.failures"),
        ({"interval": 5}, "unknown key 'liveness.interval' (allowed here: interval_s, timeout_s, failures)"),
    ],
)
def test_a_bad_liveness_is_one_line_naming_the_key(liveness: dict[str, object], named: str) -> None:
    base = {"name": "p", "version": "1.0.0", "entrypoint": "p.plugin:P", "liveness": liveness}
    with pytest.raises(ManifestError) as raised:
        parse_manifest(base, "plugin.yaml")
    text = str(raised.value)
    assert named in text and "\n" not in text


# the rule
def test_a_restart_after_the_failures_in_a_row_and_not_before() -> None:
    taken = _run([(1, TIMED_OUT), (2, TIMED_OUT), (3, SERVING), (4, TIMED_OUT), (5, TIMED_OUT), (6, TIMED_OUT)])
    assert _restarts(taken) == [6], "a healthy answer starts the count again"
    assert taken[-1][2].restarts == 1 and taken[-1][2].failures == 0


def test_the_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(first_s=1, cap_s=8)
    assert [backoff.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 8, 8]


def test_restarts_of_a_wedged_instance_are_spaced_by_the_backoff_and_end_in_give_up() -> None:
    rules = Rules(Liveness(interval_s=1, failures=1), start_s=0, budget=3, stable_s=100, backoff=Backoff(10, 20))
    taken = _run([(float(now), TIMED_OUT) for now in range(0, 60)], rules)
    assert _restarts(taken) == [0, 10, 30], "waits 10 s, then 20 s (the cap)"
    gave_up = [now for now, action, _ in taken if action is Action.GIVE_UP]
    assert gave_up and gave_up[0] == 50, "the budget of 3 is spent: the next restart becomes a give-up"


def test_a_starting_instance_gets_its_start_time_before_failures_count() -> None:
    rules = Rules(Liveness(interval_s=1, failures=2), start_s=5, budget=3, stable_s=100, backoff=Backoff(1, 1))
    taken = _run([(0, TIMED_OUT), (1, TIMED_OUT), *((float(now), TIMED_OUT) for now in range(2, 9))], rules)
    assert _restarts(taken) == [1, 7], "failures from 2 to 5 fell in the start window of the restart at 1"
    early = _run([(0, TIMED_OUT), (1, TIMED_OUT), (2, SERVING), (3, TIMED_OUT), (4, TIMED_OUT)], rules)
    assert _restarts(early) == [1, 4], "a healthy answer ends the start window"


def test_a_stable_run_makes_the_budget_whole_again() -> None:
    rules = Rules(Liveness(interval_s=1, failures=1), start_s=0, budget=1, stable_s=50, backoff=Backoff(1, 1))
    wedged_again = _run([(0, TIMED_OUT), (1, SERVING), (30, SERVING), (31, TIMED_OUT)], rules)
    assert wedged_again[-1][1] is Action.GIVE_UP, "30 s healthy is not stable: the budget of 1 is spent"
    stable = _run([(0, TIMED_OUT), (1, SERVING), (51, SERVING), (52, TIMED_OUT)], rules)
    assert stable[-1][1] is Action.RESTART and stable[-1][2].restarts == 1


# the loop, over the fake driver
class _Prober:
    """Answers health checks as told: SERVING unless the instance is marked wedged."""

    def __init__(self) -> None:
        self.wedged: set[str] = set()

    def __call__(self, instance: InstanceRecord, timeout: float) -> str:
        return f"no answer within {timeout:g}s" if instance.id in self.wedged else SERVING


def _supervised(
    orchestrator: Orchestrator, interval_s: float = 1, suspects: Suspects | None = None
) -> tuple[Supervisor, _Prober, list[float], InstanceRecord]:
    instance = orchestrator.rollout.roll(_target("echo-v1"))
    liveness = {"interval_s": interval_s, "failures": 2}
    manifest = parse_manifest({"name": "echo", "version": "1.0.0", "entrypoint": "x:Y", "liveness": liveness}, "test")
    orchestrator.store.save_plugin("echo", "/src/echo", "fake", manifest.model_dump(mode="json"))
    clock = [1000.0]
    prober = _Prober()
    supervisor = Supervisor(
        orchestrator.settings,
        orchestrator.driver,
        clock=lambda: clock[0],
        prober=prober,
        suspects=suspects or Suspects(),
    )
    return supervisor, prober, clock, instance


def _passes(supervisor: Supervisor, orchestrator: Orchestrator, clock: list[float], seconds: int) -> None:
    with futures.ThreadPoolExecutor(2) as pool:
        for _ in range(seconds):
            supervisor.supervise(orchestrator, pool)
            clock[0] += 1


def test_a_wedged_instance_is_restarted_in_place_with_events_saying_why(orchestrator: Orchestrator) -> None:
    supervisor, prober, clock, instance = _supervised(orchestrator)
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    _passes(supervisor, orchestrator, clock, 3)
    assert driver.restarted == []
    prober.wedged.add(instance.id)
    _passes(supervisor, orchestrator, clock, 2)
    assert driver.restarted == [instance.handle], "two failed probes at 1 s intervals: restarted"
    kinds = [(e.kind, e.message) for e in orchestrator.store.events("echo")][-2:]
    assert kinds[0][0] == "unresponsive" and "health check failed 2 times in a row (no answer within 2s)" in kinds[0][1]
    assert kinds[1][0] == "restarted" and "restart 1 of 3" in kinds[1][1]
    assert [i.handle for i in orchestrator.store.active_instances("echo")] == [instance.handle]
    prober.wedged.clear()
    _passes(supervisor, orchestrator, clock, 3)
    assert driver.restarted == [instance.handle]


def test_the_unresponsive_event_names_what_the_cgroup_counted(
    orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    supervisor, prober, clock, instance = _supervised(orchestrator)
    usage = {"pids_limit_hits": 61, "memory_limit_hits": 0, "oom_kills": 1}
    report = ResourceReport(applied={}, usage=usage)
    monkeypatch.setattr(orchestrator.driver, "resources", lambda *_, **__: report)
    prober.wedged.add(instance.id)
    _passes(supervisor, orchestrator, clock, 2)
    (unresponsive,) = [e.message for e in orchestrator.store.events("echo") if e.kind == "unresponsive"]
    assert unresponsive == (
        "health check failed 2 times in a row (no answer within 2s); pids limit hit 61 times; "
        "1 process OOM-killed; restart 1 of 3"
    )


def test_a_wedged_instance_whose_restarts_do_not_help_ends_failed(orchestrator: Orchestrator) -> None:
    supervisor, prober, clock, instance = _supervised(orchestrator)
    supervisor.backoff = Backoff(1, 1)
    prober.wedged.add(instance.id)
    _passes(supervisor, orchestrator, clock, 150)  # three restarts, each with a 30 s start window
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    assert driver.restarted == [instance.handle] * 3
    status = orchestrator.status("echo")
    assert status.state == "Failed"
    assert "Failed after 3 restarts: unresponsive: health check failed" in orchestrator.store.plugin("echo").last_error
    assert orchestrator.store.events("echo")[-1].kind == "failed"


def test_an_instance_the_engine_just_restarted_gets_its_start_time(orchestrator: Orchestrator) -> None:
    supervisor, prober, clock, instance = _supervised(orchestrator)  # readiness timeout 30 s (the default)
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    fake = driver.instances[instance.handle]
    prober.wedged.add(instance.id)  # still starting after a crash: its server does not answer yet
    for _ in range(20):  # 20 s of the 30 s, at 1 s intervals with failures 2
        started = datetime.fromtimestamp(time.time() - 5, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        fake.status = dataclasses.replace(fake.status, started_at=started, restart_count=1)
        _passes(supervisor, orchestrator, clock, 1)
    assert driver.restarted == [], "an instance the engine restarted 5 s ago is starting, not wedged"
    fake.status = dataclasses.replace(fake.status, started_at="2020-01-01T00:00:00Z")
    _passes(supervisor, orchestrator, clock, 2)
    assert driver.restarted == [instance.handle]


def test_a_crash_between_wedges_does_not_make_the_restart_budget_whole(orchestrator: Orchestrator) -> None:
    supervisor, prober, clock, instance = _supervised(orchestrator)
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    fake = driver.instances[instance.handle]
    prober.wedged.add(instance.id)
    _passes(supervisor, orchestrator, clock, 2)
    assert driver.restarted == [instance.handle]
    prober.wedged.clear()
    _passes(supervisor, orchestrator, clock, 3)  # it answers again, for a while
    prober.wedged.add(instance.id)
    fake.status = dataclasses.replace(fake.status, running=False, exit_code=1)  # a probe finds it crashed
    _passes(supervisor, orchestrator, clock, 1)
    fake.status = dataclasses.replace(fake.status, running=True, exit_code=None)  # the engine restarted it
    _passes(supervisor, orchestrator, clock, 2)  # and it wedges again
    assert driver.restarted == [instance.handle] * 2
    restarted = [e.message for e in orchestrator.store.events("echo") if e.kind == "restarted"]
    assert "restart 2 of 3" in restarted[-1], "the crash the engine handled must not reset the supervisor's budget"


def test_a_roll_in_progress_is_not_disturbed(orchestrator: Orchestrator) -> None:
    supervisor, prober, clock, instance = _supervised(orchestrator)
    prober.wedged.add(instance.id)
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    with orchestrator.plugin_lock("echo"):
        _passes(supervisor, orchestrator, clock, 4)
    assert driver.restarted == []
    _passes(supervisor, orchestrator, clock, 1)
    assert driver.restarted == [instance.handle]


def test_the_loop_survives_a_failing_pass_and_stops_on_its_event(orchestrator: Orchestrator) -> None:
    supervisor, _, _, _ = _supervised(orchestrator)
    calls: list[int] = []

    def broken(*_: object) -> None:
        calls.append(1)
        raise RuntimeError("engine went away")

    supervisor.supervise = broken  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop, 0.01))
    thread.start()
    while len(calls) < 3:
        threading.Event().wait(0.01)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()


# Kubernetes: the kubelet applies the same rule
def test_the_pod_gets_a_liveness_probe_from_the_manifest() -> None:
    driver = KubernetesDriver(namespace="unit")
    limits = ResourceLimits(nano_cpus=10**9, memory_bytes=128 << 20, pids=64, data_bytes=256 << 20)
    liveness = LivenessCheck(interval_s=1.5, timeout_s=0.5, failures=2, start_s=30)
    spec = SimpleNamespace(name="p", image="i", uid=0x10000001, limits=limits, liveness=liveness)
    pod = driver._pod_body(spec, {}, {}, {}, {})  # type: ignore[arg-type]
    (container,) = pod["spec"]["containers"]
    probe = container["livenessProbe"]
    assert probe["exec"]["command"][-3:] == ["sysops_sdk.healthcheck", "127.0.0.1:50051", "0.5"]
    assert (probe["periodSeconds"], probe["failureThreshold"], probe["initialDelaySeconds"]) == (2, 2, 30)
    assert probe["timeoutSeconds"] == 1 + 2, "the gRPC deadline plus the interpreter's start"
    assert pod["spec"]["restartPolicy"] == "Always"


class _SlowHealth(health.HealthServicer):
    """Answers SERVING after 1.5 s."""

    def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext) -> Any:
        time.sleep(1.5)
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


def test_the_health_check_takes_the_probe_deadline() -> None:
    """`python -m sysops_sdk.healthcheck ADDRESS TIMEOUT` (the livenessProbe) waits TIMEOUT, not its default 1 s."""
    server = grpc.server(futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(_SlowHealth(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        check = [sys.executable, "-m", "sysops_sdk.healthcheck", f"127.0.0.1:{port}"]
        assert subprocess.run(check, capture_output=True, timeout=30).returncode == 1
        assert subprocess.run([*check, "4"], capture_output=True, timeout=30).returncode == 0
    finally:
        server.stop(0)


# what the router tells the supervisor and back (core/suspects.py)
def _wedged_suspect(
    orchestrator: Orchestrator,
) -> tuple[Supervisor, Suspects, list[float], InstanceRecord, FakeDriver]:
    """A supervised instance probed healthy (next probe due 30 s on), then wedged and marked suspect by a routed
    call that overran its deadline."""
    suspects = Suspects()
    supervisor, prober, clock, instance = _supervised(orchestrator, interval_s=30, suspects=suspects)
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    _passes(supervisor, orchestrator, clock, 2)  # probed at 1000 s; next due at 1030 s
    prober.wedged.add(instance.id)
    suspects.suspect(instance.endpoint)
    return supervisor, suspects, clock, instance, driver


def test_a_suspect_that_fails_one_probe_is_restarted_without_waiting_for_its_interval(
    orchestrator: Orchestrator,
) -> None:
    supervisor, suspects, clock, instance, driver = _wedged_suspect(orchestrator)
    _passes(supervisor, orchestrator, clock, 1)
    assert driver.restarted == [instance.handle], "probed at once, and one failure after an overrun is enough"
    unresponsive = [e.message for e in orchestrator.store.events("echo") if e.kind == "unresponsive"]
    assert unresponsive == [
        "a command overran its deadline and the health check then failed (no answer within 2s); restart 1 of 3"
    ]
    assert not suspects.is_suspect(instance.endpoint)


def test_a_suspect_whose_plugin_was_busy_at_its_probe_is_judged_again_soon(orchestrator: Orchestrator) -> None:
    """A reconcile pass holds each plugin's lock for a moment every few seconds: a suspect's failed probe that
    lands in that moment must not wait a whole liveness interval (the CI run of 4a0289d waited 60 s)."""
    supervisor, _, clock, instance, driver = _wedged_suspect(orchestrator)
    with orchestrator.plugin_lock("echo"):  # the reconcile pass of the resident host
        _passes(supervisor, orchestrator, clock, 1)
    assert driver.restarted == []
    _passes(supervisor, orchestrator, clock, 2)
    assert driver.restarted == [instance.handle], "judged again a second later, still as a suspect"
    (unresponsive,) = [e.message for e in orchestrator.store.events("echo") if e.kind == "unresponsive"]
    assert unresponsive.startswith("a command overran its deadline and the health check then failed")


def test_a_suspect_that_answers_is_left_alone(orchestrator: Orchestrator) -> None:
    suspects = Suspects()
    supervisor, _, clock, instance = _supervised(orchestrator, interval_s=30, suspects=suspects)
    _passes(supervisor, orchestrator, clock, 1)
    suspects.suspect(instance.endpoint)  # the command was slow, the instance is fine
    _passes(supervisor, orchestrator, clock, 3)
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    assert driver.restarted == [] and not suspects.is_suspect(instance.endpoint)
    assert supervisor.watches[instance.id].failures == 0


def test_an_instance_is_marked_restarting_until_a_probe_finds_it_serving(orchestrator: Orchestrator) -> None:
    suspects = Suspects()
    supervisor, prober, clock, instance = _supervised(orchestrator, interval_s=30, suspects=suspects)
    prober.wedged.add(instance.id)
    suspects.suspect(instance.endpoint)
    _passes(supervisor, orchestrator, clock, 1)
    assert suspects.is_restarting(instance.endpoint)
    _passes(supervisor, orchestrator, clock, 1)  # still not answering, within its start time
    assert suspects.is_restarting(instance.endpoint)
    prober.wedged.clear()
    _passes(supervisor, orchestrator, clock, 1)  # probed at the next tick, not after 30 s
    assert not suspects.is_restarting(instance.endpoint)


def test_a_call_that_finds_its_instance_restarting_waits_for_it(orchestrator: Orchestrator) -> None:
    instance = orchestrator.rollout.roll(_target("echo-v1"))
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    driver.crash(instance.handle, exit_code=137)  # the supervisor's restart killed it: its socket is closed
    REGISTRY.restarting(instance.endpoint)

    def restart() -> None:
        time.sleep(0.5)
        driver.restart(instance.handle, 0.1)
        REGISTRY.restarted(instance.endpoint)

    helper = threading.Thread(target=restart)
    helper.start()
    try:
        route = orchestrator.store.route("echo")
        assert route is not None
        *_, result = router.call(route, {"text": "a"}, "text", orchestrator.store.route)
    finally:
        helper.join()
        REGISTRY.restarted(instance.endpoint)
    assert isinstance(result, InvocationResult) and result.text == "v1:a"


def test_a_call_that_overruns_its_deadline_marks_its_instance_suspect(
    orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = orchestrator.rollout.roll(_target("echo-v1"))

    def overrun(*_: object, **__: object) -> None:
        raise DeadlineExceededError("deadline exceeded")

    monkeypatch.setattr(PluginClient, "invoke", overrun)
    route = orchestrator.store.route("echo")
    assert route is not None
    with pytest.raises(DeadlineExceededError, match="overran its"):
        list(router.call(route, {"text": "a"}, "text", orchestrator.store.route))
    assert REGISTRY.take_suspect(instance.endpoint), "the supervisor is told to probe it at once"

"""Rollout decisions on the in-process fake driver: real gRPC to threads, no engine."""

from pathlib import Path

import pytest
from sysops.core.client import InvocationResult, PluginClient
from sysops.core.manifest import parse_manifest
from sysops.core.orchestrator import Orchestrator
from sysops.core.rollout import RollTarget
from sysops.errors import CommandConflictError, StartFailedError
from sysops.runtime.fake import FakeDriver
from sysops.settings import Settings


def _target(image: str, name: str = "echo", version: str = "1.0.0") -> RollTarget:
    manifest = parse_manifest(
        {"name": name, "version": version, "entrypoint": "x:Y", "limits": {"cpu_percent": 20, "memory_mb": 64}},
        "test",
    )
    return RollTarget(manifest, image, image, f"fp-{image}", "/src/echo")


def _call(orchestrator: Orchestrator, command: str, **arguments: object) -> InvocationResult:
    route = orchestrator.store.route(command)
    assert route is not None
    endpoint = route.endpoint
    with PluginClient(endpoint, token=route.token_for(endpoint)) as client:
        *_, result = client.invoke(command, dict(arguments))
    assert isinstance(result, InvocationResult)
    return result


def test_roll_switches_routes_hands_over_state_and_retires_old(orchestrator: Orchestrator) -> None:
    first = orchestrator.rollout.roll(_target("echo-v1"))
    assert _call(orchestrator, "echo", text="a").text == "v1:a"
    assert _call(orchestrator, "echo", text="b", upper=True).text == "v1:B"
    second = orchestrator.rollout.roll(_target("echo-v2", version="2.0.0"))
    assert _call(orchestrator, "echo", text="a").text == "v2:a"
    assert _call(orchestrator, "calls").data == {"calls": 3}  # two calls handed over, plus this one's echo
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    assert [i.status.running for i in driver.instances.values()] == [True]
    assert [i.id for i in orchestrator.store.instances("echo")] == [second.id]
    assert first.id != second.id
    assert [r.version for r in orchestrator.history("echo")] == ["1.0.0", "2.0.0"]
    kinds = [e.kind for e in orchestrator.store.events("echo")]
    assert kinds[-4:] == ["loaded", "active", "loaded", "rolled"]


def test_limits_reach_the_driver(orchestrator: Orchestrator) -> None:
    orchestrator.rollout.roll(_target("echo-v1"))
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    spec = driver.started_specs[-1]
    assert spec.limits.nano_cpus == 200_000_000
    assert spec.limits.memory_bytes == 64 * 1024 * 1024
    assert spec.egress == ()
    assert spec.labels["sysops.plugin"] == "echo" and spec.labels["sysops.revision"] == "1"


def test_failed_initialize_rolls_back_and_old_keeps_serving(orchestrator: Orchestrator) -> None:
    orchestrator.rollout.roll(_target("echo-v1"))
    failed = "initialize\\(\\) of plugin 'echo' failed: RuntimeError: database unreachable"
    with pytest.raises(StartFailedError, match=failed):
        orchestrator.rollout.roll(_target("broken", version="3.0.0"))
    assert _call(orchestrator, "echo", text="still").text == "v1:still"
    status = orchestrator.status("echo")
    assert status.version == "1.0.0" and str(status.state) == "Active"
    assert "database unreachable" in status.last_error
    assert orchestrator.store.events("echo")[-1].kind == "rolled-back"
    assert len(orchestrator.store.instances("echo")) == 1


def test_first_start_failure_is_reported_failed(orchestrator: Orchestrator) -> None:
    with pytest.raises(StartFailedError):
        orchestrator.rollout.roll(_target("broken", version="3.0.0"))
    assert str(orchestrator.status("echo").state) == "Failed"
    assert orchestrator.store.routes() == []


def test_command_clash_is_refused_naming_both(orchestrator: Orchestrator) -> None:
    orchestrator.rollout.roll(_target("echo-v1"))
    with pytest.raises(CommandConflictError, match="of plugin 'other' is already provided by plugin 'echo'"):
        orchestrator.rollout.roll(_target("clash", name="other"))
    assert _call(orchestrator, "echo", text="x").text == "v1:x"
    assert {r.plugin for r in orchestrator.store.routes()} == {"echo"}


def test_rollback_to_previous_revision_reuses_its_image(orchestrator: Orchestrator) -> None:
    orchestrator.rollout.roll(_target("echo-v1"))
    orchestrator.rollout.roll(_target("echo-v2", version="2.0.0"))
    orchestrator.store.save_plugin("echo", "/src/echo", "fake", {})
    instance = orchestrator.rollback("echo")
    assert instance.revision == 1 and instance.version == "1.0.0"
    assert _call(orchestrator, "echo", text="r").text == "v1:r"
    with pytest.raises(Exception, match="has no revision 9"):
        orchestrator.rollback("echo", to=9)


def test_reconcile_forgets_vanished_and_removes_orphans(orchestrator: Orchestrator) -> None:
    instance = orchestrator.rollout.roll(_target("echo-v1"))
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    # an orphan from an interrupted roll: a labelled container the store never activated
    orphan = driver.start(driver.started_specs[-1].__class__(**{**driver.started_specs[-1].__dict__, "name": "orphan"}))
    orchestrator.reconcile()
    assert orphan.handle not in driver.instances
    assert [i.id for i in orchestrator.store.active_instances("echo")] == [instance.id]
    driver.remove(instance.handle)
    orchestrator.reconcile()
    assert orchestrator.store.routes() == []
    assert "removed outside sysops" in orchestrator.status("echo").last_error


def test_reconcile_replaces_a_lost_instance_where_the_runtime_does_not(
    orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kubernetes: a deleted or drained plugin pod is not re-created by anything but sysops."""
    monkeypatch.setattr(FakeDriver, "replaces_lost_instances", True)
    orchestrator.rollout.roll(_target("echo-v1"))
    second = orchestrator.rollout.roll(_target("echo-v2", version="2.0.0"))
    orchestrator.driver.remove(second.handle)
    orchestrator.reconcile()
    [replacement] = orchestrator.store.active_instances("echo")
    assert replacement.id != second.id and (replacement.revision, replacement.version) == (2, "2.0.0")
    assert _call(orchestrator, "echo", text="r").text == "v2:r"
    assert str(orchestrator.status("echo").state) == "Active"
    assert [r.revision for r in orchestrator.history("echo")] == [1, 2]  # the same revision, not a new one
    kinds = [e.kind for e in orchestrator.store.events("echo")]
    assert kinds[-3:] == ["failed", "loaded", "active"]


def test_crashed_instance_is_failed_with_reason(orchestrator: Orchestrator) -> None:
    instance = orchestrator.rollout.roll(_target("echo-v1"))
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    driver.crash(instance.handle, exit_code=137, oom_killed=True)
    status = orchestrator.status("echo")
    assert str(status.state) == "Failed"
    assert "OOMKilled" in status.last_error


def test_socket_dirs_fit_unix_socket_paths(tmp_path: Path) -> None:
    deep = Settings(home=tmp_path / ("x" * 90))
    assert len(str(deep.run_dir / "0123456789" / "plugin.sock")) < 108


def test_reserved_and_self_clashing_names_are_refused(orchestrator: Orchestrator) -> None:
    with pytest.raises(CommandConflictError, match="uses the reserved name 'plugin'"):
        orchestrator.rollout._check_conflicts("x", {"plugin hack": b""})
    with pytest.raises(CommandConflictError, match="defines both a command and a group named 'db'"):
        orchestrator.rollout._check_conflicts("x", {"db": b"", "db migrate": b""})


def test_limits_the_engine_did_not_apply_fail_the_roll(orchestrator: Orchestrator) -> None:
    orchestrator.rollout.roll(_target("echo-v1"))
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    driver.limit_mismatches.append("memory_bytes: asked 67108864, applied 0")
    with pytest.raises(StartFailedError, match=r"did not apply the manifest's limits \(memory_bytes: asked"):
        orchestrator.rollout.roll(_target("echo-v2", version="2.0.0"))
    assert _call(orchestrator, "echo", text="x").text == "v1:x"


def _replicated(image: str, version: str, replicas: int, **readiness: object) -> RollTarget:
    manifest = parse_manifest(
        {"name": "echo", "version": version, "entrypoint": "x:Y", "replicas": replicas, "readiness": readiness},
        "test",
    )
    return RollTarget(manifest, image, image, f"fp-{image}", "/src/echo")


def test_replicas_spread_calls_and_roll_one_by_one(orchestrator: Orchestrator) -> None:
    orchestrator.rollout.roll(_replicated("echo-v1", "1.0.0", 3))
    route = orchestrator.store.route("echo")
    assert route is not None and len(set(route.endpoints)) == 3
    ready_counts: list[int] = []
    original_switch = orchestrator.store.switch

    def watching_switch(plugin: str, **kwargs: object) -> None:
        original_switch(plugin, **kwargs)  # type: ignore[arg-type]
        ready_counts.append(len(orchestrator.store.active_instances(plugin)))

    orchestrator.store.switch = watching_switch  # type: ignore[method-assign]
    orchestrator.rollout.roll(_replicated("echo-v2", "2.0.0", 3))
    assert ready_counts == [3, 3, 3]  # each switch swaps one old for one new: never fewer than 3
    assert {i.version for i in orchestrator.store.active_instances("echo")} == {"2.0.0"}
    assert {_call(orchestrator, "echo", text="x").text for _ in range(6)} == {"v2:x"}


def test_failed_roll_of_a_later_replica_restores_the_previous_version(orchestrator: Orchestrator) -> None:
    orchestrator.rollout.roll(_replicated("echo-v1", "1.0.0", 2))
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    starts = 0
    original_start = driver.start

    def second_new_instance_fails(spec):  # type: ignore[no-untyped-def]
        nonlocal starts
        starts += 1
        if starts == 2:
            return original_start(spec.__class__(**{**spec.__dict__, "image": "broken"}))
        return original_start(spec)

    driver.start = second_new_instance_fails  # type: ignore[method-assign]
    with pytest.raises(StartFailedError):
        orchestrator.rollout.roll(_replicated("echo-v2", "2.0.0", 2))
    active = orchestrator.store.active_instances("echo")
    assert [i.version for i in active] == ["1.0.0", "1.0.0"]
    assert {_call(orchestrator, "echo", text="x").text for _ in range(4)} == {"v1:x"}
    assert sum(i.status.running for i in driver.instances.values()) == 2


def test_self_test_command_gates_readiness(orchestrator: Orchestrator) -> None:
    orchestrator.rollout.roll(_replicated("echo-v1", "1.0.0", 1, command="echo", arguments={"text": "ok"}))
    with pytest.raises(StartFailedError, match="self-test 'echo' failed"):
        orchestrator.rollout.roll(_replicated("echo-v2", "2.0.0", 1, command="echo", arguments={}))
    assert _call(orchestrator, "echo", text="x").text == "v1:x"

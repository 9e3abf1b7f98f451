"""Hand-over, failed-roll and claim sequencing of the rollout, on the in-process fake driver (no engine)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from sysops.cli.app import app
from sysops.core.client import InvocationResult, PluginClient
from sysops.core.manifest import parse_manifest
from sysops.core.orchestrator import Orchestrator
from sysops.core.policy import Policy, apply_policy
from sysops.core.rollout import RollTarget
from sysops.errors import CommandConflictError, PolicyDeniedError, StartFailedError
from sysops.reserved import RESERVED_COMMANDS
from sysops.runtime.fake import FakeDriver
from sysops.settings import Settings
from sysops_sdk import Plugin, plugin_command

from tests.unit.conftest import EchoV1, EchoV2


class SlowWriter(EchoV1):
    """Counts calls; `slow` holds a call in flight, so a roll must wait for it before the snapshot."""

    @plugin_command("slow")
    def slow(self) -> str:
        time.sleep(0.6)
        self.calls += 1
        return "slow done"


class SnapshotFails(EchoV1):
    def snapshot(self) -> dict[str, int]:
        raise RuntimeError("cannot serialize the cache")


class RestoreFails(EchoV2):
    def restore(self, state: dict[str, int]) -> None:
        raise KeyError("schema")


class SecondStartFails(EchoV1):
    """Starts once; every later instance fails in initialize() (a later replica slot of a first install)."""

    started = 0

    def initialize(self) -> None:
        SecondStartFails.started += 1
        if SecondStartFails.started > 1:
            raise RuntimeError("port taken")
        super().initialize()


class ClaimsContext(EchoV1):
    name = "ctx"

    @plugin_command("context")
    def context(self) -> str:
        return "mine"


class OtherEcho(EchoV1):
    name = "other"


IMAGES: dict[str, type[Plugin]] = {
    "echo-v1": EchoV1,
    "echo-v2": EchoV2,
    "slow": SlowWriter,
    "snapshot-fails": SnapshotFails,
    "restore-fails": RestoreFails,
    "restore-fails-again": RestoreFails,
    "second-fails": SecondStartFails,
    "ctx": ClaimsContext,
    "other": OtherEcho,
}


def _target(image: str, name: str = "echo", version: str = "1.0.0", *, built: bool = False, **extra: Any) -> RollTarget:
    data = {"name": name, "version": version, "entrypoint": "x:Y", "limits": {"memory_mb": 64}, **extra}
    return RollTarget(parse_manifest(data, "test"), image, image, f"fp-{image}-{version}", f"/src/{name}", built)


def _call(endpoint: str, token: str, command: str, **arguments: object) -> InvocationResult:
    with PluginClient(endpoint, token=token) as client:
        *_, result = client.invoke(command, dict(arguments))
    assert isinstance(result, InvocationResult)
    return result


def _route_call(orchestrator: Orchestrator, command: str, **arguments: object) -> InvocationResult:
    route = orchestrator.store.route(command)
    assert route is not None
    endpoint = route.endpoint
    return _call(endpoint, route.token_for(endpoint), command, **arguments)


def _calls_per_instance(orchestrator: Orchestrator) -> list[int]:
    return [_call(i.endpoint, i.token, "calls").data["calls"] for i in orchestrator.store.active_instances("echo")]


@pytest.fixture
def orchestrator(settings: Settings) -> Iterator[Orchestrator]:
    driver = FakeDriver()
    for image, plugin_class in IMAGES.items():
        driver.add_image(image, plugin_class)
    SecondStartFails.started = 0
    orchestrator = Orchestrator(settings, driver)
    yield orchestrator
    for handle in list(driver.instances):
        driver.remove(handle)
    orchestrator.close()


def _driver(orchestrator: Orchestrator) -> FakeDriver:
    assert isinstance(orchestrator.driver, FakeDriver)
    return orchestrator.driver


# item 10: state hand-over
def test_snapshot_waits_for_calls_in_flight_and_later_calls_are_refused_not_lost(orchestrator: Orchestrator) -> None:
    orchestrator.rollout.roll(_target("slow"))
    old = orchestrator.store.active_instances("echo")[0]
    late: list[str] = []

    def call_late() -> None:
        time.sleep(0.3)  # the roll is quiescing the old instance: a new call is refused before it runs
        try:
            late.append(_call(old.endpoint, old.token, "echo", text="late").text)
        except Exception as exc:
            late.append(str(exc))

    callers = [
        threading.Thread(target=_call, args=(old.endpoint, old.token, "slow")),
        threading.Thread(target=call_late),
    ]
    for caller in callers:
        caller.start()
    time.sleep(0.1)
    orchestrator.rollout.roll(_target("echo-v2", version="2.0.0"))
    for caller in callers:
        caller.join()
    assert _calls_per_instance(orchestrator) == [1]  # the slow call's write was handed over
    assert len(late) == 1 and "plugin is shutting down" in late[0]


def test_failed_snapshot_fails_the_roll_and_the_old_instance_serves_again(orchestrator: Orchestrator) -> None:
    orchestrator.rollout.roll(_target("snapshot-fails"))
    with pytest.raises(StartFailedError, match=r"Snapshot on 1\.0\.0 .*snapshot\(\) of plugin 'echo' failed: Runtime"):
        orchestrator.rollout.roll(_target("echo-v2", version="2.0.0"))
    assert _route_call(orchestrator, "echo", text="a").text == "v1:a"  # re-opened, not left draining
    assert len(_driver(orchestrator).instances) == 1
    assert orchestrator.store.events("echo")[-1].kind == "rolled-back"


def test_failed_restore_fails_the_roll_with_a_sysops_error(orchestrator: Orchestrator) -> None:
    orchestrator.rollout.roll(_target("echo-v1"))
    _route_call(orchestrator, "echo", text="a")
    with pytest.raises(StartFailedError, match=r"Restore on 2\.0\.0 .*restore\(\) of plugin 'echo' failed: KeyError"):
        orchestrator.rollout.roll(_target("restore-fails", version="2.0.0"))
    assert _route_call(orchestrator, "echo", text="b").text == "v1:b"
    assert _calls_per_instance(orchestrator) == [2]
    assert len(_driver(orchestrator).instances) == 1


def test_added_replicas_copy_the_state_of_a_live_instance(orchestrator: Orchestrator) -> None:
    orchestrator.rollout.roll(_target("echo-v1"))
    for text in "abc":
        _route_call(orchestrator, "echo", text=text)
    orchestrator.rollout.roll(_target("echo-v2", version="2.0.0", replicas=3))
    assert _calls_per_instance(orchestrator) == [3, 3, 3]
    assert _route_call(orchestrator, "echo", text="d").text == "v2:d"  # no instance was left quiesced


# item 11: what a failed roll stores
def test_failed_roll_keeps_the_serving_manifest(orchestrator: Orchestrator) -> None:
    orchestrator.rollout.roll(_target("echo-v1"))
    with pytest.raises(StartFailedError):
        orchestrator.rollout.roll(_target("restore-fails", version="2.0.0", replicas=2, limits={"memory_mb": 128}))
    plugin = orchestrator.store.plugin("echo")
    assert plugin is not None
    assert plugin.manifest["version"] == "1.0.0" and plugin.manifest["limits"]["memory_mb"] == 64
    assert orchestrator.status("echo").replicas == "1/1"
    assert [r.revision for r in orchestrator.history("echo")] == [1]


def test_rollback_applies_the_policy_caps(orchestrator: Orchestrator, home: Path) -> None:
    orchestrator.rollout.roll(_target("echo-v1"))
    orchestrator.rollout.roll(_target("echo-v2", version="2.0.0"))
    home.mkdir(parents=True, exist_ok=True)
    (home / "policy.yaml").write_text("caps: {memory_mb: 32}\n")
    with pytest.raises(PolicyDeniedError, match=r"revision 1 of echo: limits\.memory_mb asks 64, policy caps it at 32"):
        orchestrator.rollback("echo")
    assert _route_call(orchestrator, "echo", text="x").text == "v2:x"


def test_replicas_are_capped_by_policy_with_a_default() -> None:
    manifest = parse_manifest({"name": "echo", "version": "1.0.0", "entrypoint": "x:Y", "replicas": 11}, "test")
    with pytest.raises(PolicyDeniedError, match=r"plugin\.yaml: replicas asks 11, policy caps it at 10"):
        apply_policy(manifest, Policy(), "plugin.yaml")
    assert apply_policy(manifest, Policy.model_validate({"caps": {"replicas": 12}}), "plugin.yaml").replicas == 11
    with pytest.raises(PolicyDeniedError, match=r"replicas asks 11, policy caps it at 2 \(ops\.yaml\)"):
        apply_policy(manifest, Policy.model_validate({"caps": {"replicas": 2}, "source": "ops.yaml"}), "plugin.yaml")


# item 13: half-up installs, claims, images
def test_first_install_whose_later_replica_fails_leaves_nothing_up(orchestrator: Orchestrator) -> None:
    with pytest.raises(StartFailedError, match="port taken"):
        orchestrator.rollout.roll(_target("second-fails", replicas=2))
    assert orchestrator.store.routes() == []
    assert orchestrator.store.instances("echo") == []
    assert _driver(orchestrator).instances == {}
    assert str(orchestrator.status("echo").state) == "Failed"


def test_a_claim_made_after_the_early_check_is_refused_at_the_switch(
    orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    orchestrator.rollout.roll(_target("echo-v1"))
    monkeypatch.setattr(orchestrator.store, "route_conflict", lambda plugin, commands: None)  # lost the race
    with pytest.raises(CommandConflictError, match="'calls' of plugin 'other' is already provided by plugin 'echo'"):
        orchestrator.rollout.roll(_target("other", name="other", built=True))
    assert {route.plugin for route in orchestrator.store.routes()} == {"echo"}
    assert orchestrator.store.instances("other") == []
    assert len(_driver(orchestrator).instances) == 1
    assert "other" not in _driver(orchestrator).images  # the loser's image went with it


def test_failed_roll_removes_the_image_it_built_but_not_a_revision_s(orchestrator: Orchestrator) -> None:
    orchestrator.rollout.roll(_target("restore-fails", built=True))  # a first install restores nothing
    with pytest.raises(StartFailedError):
        orchestrator.rollout.roll(_target("restore-fails-again", version="2.0.0", built=True))
    assert "restore-fails-again" not in _driver(orchestrator).images
    with pytest.raises(StartFailedError):  # the same image as the serving revision's: kept
        orchestrator.rollout.roll(_target("restore-fails", version="3.0.0", built=True))
    assert "restore-fails" in _driver(orchestrator).images


def test_down_keeps_revisions_so_a_later_purge_removes_the_images(orchestrator: Orchestrator) -> None:
    orchestrator.rollout.roll(_target("echo-v1"))
    orchestrator.rollout.roll(_target("echo-v2", version="2.0.0"))
    orchestrator.down("echo")
    assert [r.revision for r in orchestrator.history("echo")] == [1, 2]
    assert {"echo-v1", "echo-v2"} <= set(_driver(orchestrator).images)
    orchestrator.down("echo", purge=True)
    assert not {"echo-v1", "echo-v2"} & set(_driver(orchestrator).images)
    assert orchestrator.store.revisions("echo") == []


# item 14: one list of reserved names
def test_reserved_names_cover_every_builtin_of_the_cli() -> None:
    builtins = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert builtins and builtins <= set(RESERVED_COMMANDS)


def test_a_plugin_claiming_context_is_refused(orchestrator: Orchestrator) -> None:
    with pytest.raises(
        CommandConflictError, match="command 'context' of plugin 'ctx' uses the reserved name 'context'"
    ):
        orchestrator.rollout.roll(_target("ctx", name="ctx"))
    assert orchestrator.store.routes() == []

"""What an idle host's supervision costs with many plugins (issue 15 item 3): a pass parses a stored manifest
only when it changed, and health probes reuse one connection per instance, dropped after a failed probe."""

from __future__ import annotations

import dataclasses
from concurrent import futures
from typing import Any

import pytest
from sysops.core import client_pool, supervisor
from sysops.core.manifest import parse_manifest
from sysops.core.orchestrator import Orchestrator
from sysops.core.supervisor import SERVING, KeptProbes, Supervisor
from sysops.store import InstanceRecord, Store

from tests.unit.test_rollout import _target


def _save(orchestrator: Orchestrator, interval_s: float) -> None:
    data = {"name": "echo", "version": "1.0.0", "entrypoint": "x:Y", "liveness": {"interval_s": interval_s}}
    manifest = parse_manifest(data, "test")
    orchestrator.store.save_plugin("echo", "/src/echo", "fake", manifest.model_dump(mode="json"))


def test_a_pass_parses_a_stored_manifest_only_when_it_changed(
    orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    orchestrator.rollout.roll(_target("echo-v1"))
    _save(orchestrator, interval_s=1)
    parsed: list[str] = []
    real_parse = supervisor.parse_stored_manifest

    def counting(data: Any, where: str) -> Any:
        parsed.append(where)
        return real_parse(data, where)

    monkeypatch.setattr(supervisor, "parse_stored_manifest", counting)
    clock = [1000.0]
    probed: list[float] = []

    def prober(instance: InstanceRecord, timeout: float) -> str:
        probed.append(clock[0])
        return SERVING

    watcher = Supervisor(orchestrator.settings, orchestrator.driver, clock=lambda: clock[0], prober=prober)
    with futures.ThreadPoolExecutor(2) as pool:
        for _ in range(6):
            watcher.supervise(orchestrator, pool)
            clock[0] += 1
        assert len(parsed) == 1, "six passes over an unchanged manifest parse it once"
        assert len(probed) == 6, "probed every 1 s interval"
        _save(orchestrator, interval_s=3)  # a changed manifest is parsed again and its interval honoured
        probed.clear()
        for _ in range(6):
            watcher.supervise(orchestrator, pool)
            clock[0] += 1
    assert len(parsed) == 2
    assert len(probed) == 2, "probed every 3 s once the stored manifest said so"


def test_probes_keep_one_connection_per_instance_and_drop_it_after_a_failure(
    orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = orchestrator.rollout.roll(_target("echo-v1"))
    opened: list[str] = []
    real_client = client_pool.PluginClient

    def counting(endpoint: str, plugin: str = "", token: str = "") -> Any:
        opened.append(endpoint)
        return real_client(endpoint, plugin, token)

    monkeypatch.setattr(client_pool, "PluginClient", counting)
    probes = KeptProbes()
    assert [probes(instance, 2.0) for _ in range(5)] == [SERVING] * 5
    assert opened == [instance.endpoint], "five probes, one connection"
    assert probes.endpoints() == {instance.endpoint}
    gone = dataclasses.replace(instance, endpoint=f"unix://{orchestrator.settings.home}/nothing-here.sock")
    assert probes(gone, 0.5) != SERVING
    assert gone.endpoint not in probes.endpoints(), "a failed probe forgets its connection"
    probes.retain(set())
    assert probes.endpoints() == set()


def test_the_default_prober_is_the_kept_one(orchestrator: Orchestrator) -> None:
    instance = orchestrator.rollout.roll(_target("echo-v1"))
    _save(orchestrator, interval_s=1)
    watcher = Supervisor(orchestrator.settings, orchestrator.driver)
    assert watcher.probes is not None
    with futures.ThreadPoolExecutor(2) as pool:
        watcher.supervise(orchestrator, pool)
    assert watcher.probes.endpoints() == {instance.endpoint}
    orchestrator.down("echo")
    with futures.ThreadPoolExecutor(2) as pool:
        watcher.supervise(orchestrator, pool)
    assert watcher.probes.endpoints() == set(), "an instance no longer supervised loses its connection"


def test_a_pass_reads_the_store_only_when_some_connection_changed_it(
    orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    orchestrator.rollout.roll(_target("echo-v1"))
    _save(orchestrator, interval_s=1)
    reads: list[str] = []
    real_instances = orchestrator.store.instances

    def counting(plugin: str | None = None) -> list[InstanceRecord]:
        reads.append("instances")
        return real_instances(plugin)

    monkeypatch.setattr(orchestrator.store, "instances", counting)
    watcher = Supervisor(orchestrator.settings, orchestrator.driver, clock=lambda: 1000.0, prober=lambda i, t: SERVING)
    with futures.ThreadPoolExecutor(2) as pool:
        for _ in range(5):
            watcher.supervise(orchestrator, pool)
        assert reads == ["instances"], "five passes over an unchanged store read it once"
        other = Store(orchestrator.store.path)  # another process's connection (a roll in the CLI, the host's calls)
        try:
            other.set_last_error("echo", "changed elsewhere")
        finally:
            other.close()
        watcher.supervise(orchestrator, pool)
        assert reads == ["instances"] * 2, "another connection's commit is seen at the next pass"
        _save(orchestrator, interval_s=2)  # and this connection's own
        watcher.supervise(orchestrator, pool)
        assert reads == ["instances"] * 3

"""Kubernetes faults and usage without a cluster: the pod's last termination names crash, OOM kill and a
liveness kill (the probe's record in the termination log), and the SDK reads its own cgroup for `status`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from sysops.core import router
from sysops.errors import PluginUnavailableError
from sysops.runtime.base import InstanceStatus
from sysops.runtime.faults import describe_fault, last_error
from sysops.runtime.kubernetes.pod_faults import ended_since, last_termination
from sysops.runtime.usage import usage_report
from sysops.server.pod_fault_reports import pod_fault_reader
from sysops.store import Route
from sysops_sdk.healthcheck import UNRESPONSIVE, record
from sysops_sdk.usage import own_usage

ENDED = datetime(2026, 12, 3, 12, 0, 5, tzinfo=UTC)


def _container(reason: str, exit_code: int, message: str = "", running: bool = True) -> SimpleNamespace:
    terminated = SimpleNamespace(reason=reason, exit_code=exit_code, message=message, finished_at=ENDED)
    state = SimpleNamespace(terminated=None if running else terminated)
    return SimpleNamespace(state=state, last_state=SimpleNamespace(terminated=terminated), restart_count=1)


def test_the_liveness_probe_keeps_its_verdict_in_the_termination_log(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    record(False, 2.0, log)  # not in a container: nothing is written
    assert not log.exists()
    log.write_text("")
    record(False, 2.0, log)
    record(False, 2.0, log)
    assert log.read_text() == f"{UNRESPONSIVE}2 liveness probes in a row found no SERVING answer within 2s"
    record(True, 2.0, log)
    assert log.read_text() == ""
    record(False, 10.0, log)
    assert log.read_text() == f"{UNRESPONSIVE}1 liveness probe in a row found no SERVING answer within 10s"


def test_a_liveness_kill_an_oom_kill_and_a_crash_are_told_apart() -> None:
    probe = f"{UNRESPONSIVE}2 liveness probes in a row found no SERVING answer within 10s"
    killed = last_termination(_container("Error", 137, probe))
    oom = last_termination(_container("OOMKilled", 137, probe))
    crashed = last_termination(_container("Error", 3))
    assert killed is not None and killed.unresponsive == probe and not killed.oom_killed
    assert oom is not None and oom.oom_killed and oom.unresponsive == ""
    assert crashed is not None and (crashed.exit_code, crashed.unresponsive, crashed.oom_killed) == (3, "", False)
    assert last_termination(SimpleNamespace(state=SimpleNamespace(terminated=None), last_state=None)) is None
    assert ended_since(killed, ENDED.timestamp() - 0.5) and ended_since(killed, ENDED.timestamp() + 0.9)
    assert not ended_since(killed, ENDED.timestamp() + 1.0) and not ended_since(None, 0.0)


def test_status_and_last_error_name_an_unresponsive_pod() -> None:
    text = f"{UNRESPONSIVE}2 liveness probes in a row found no SERVING answer within 10s"
    status = InstanceStatus("pod", "pod", {}, running=True, error=text, restart_count=1)
    assert describe_fault(status, 64 << 20) == f"{text}, restarted 1 time"
    assert last_error(status, ["sysops-plugin: faulty 1.0.0 serving on 0.0.0.0:50051"], 64 << 20) == (
        f"{text}, restarted 1 time"
    )
    oom = InstanceStatus("pod", "pod", {}, running=True, oom_killed=True, restart_count=1)
    assert (
        describe_fault(oom, 64 << 20)
        == "OOMKilled (memory limit 64 MiB, peak reached the 64 MiB limit), restarted 1 time"
    )


def test_the_sdk_reads_its_own_cgroup_v1_and_v2(tmp_path: Path) -> None:
    v1 = tmp_path / "v1"
    files = {
        "memory/memory.usage_in_bytes": "10485760",
        "memory/memory.max_usage_in_bytes": "20971520",
        "memory/memory.failcnt": "0",
        "memory/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 1",
        "cpuacct/cpuacct.usage": "2000000000",
        "pids/pids.current": "7",
        "pids/pids.events": "max 0",
    }
    for name, text in files.items():
        (v1 / name).parent.mkdir(parents=True, exist_ok=True)
        (v1 / name).write_text(text + "\n")
    assert own_usage(v1) == {
        "memory_bytes": 10 << 20,
        "memory_peak_bytes": 20 << 20,
        "memory_failcnt": 0,
        "oom_kills": 1,
        "cpu_usage_ns": 2_000_000_000,
        "pids_current": 7,
        "pids_max_hits": 0,
    }
    v2 = tmp_path / "v2"
    v2.mkdir()
    for name, text in {
        "cgroup.controllers": "cpu memory pids",
        "memory.current": "1048576",
        "memory.events": "low 0\nhigh 0\nmax 3\noom 0\noom_kill 0",
        "cpu.stat": "usage_usec 1500\nuser_usec 1000",
        "pids.current": "4",
    }.items():
        (v2 / name).write_text(text + "\n")
    reading = own_usage(v2)
    assert (
        reading["memory_bytes"] == 1 << 20 and reading["memory_failcnt"] == 3 and reading["cpu_usage_ns"] == 1_500_000
    )
    assert reading["memory_peak_bytes"] is None and reading["pids_current"] == 4
    report = usage_report(reading, 0.123, "0.5s")
    assert report["cpu_percent"] == 12.3 and report["memory_mb"] == 1.0 and report["pids"] == 4


class _Driver:
    def __init__(self, fault: str) -> None:
        self.fault = fault
        self.asked: list[tuple[str, float]] = []

    def describe_failure(self, endpoint: str, since: float, wait: float = 5.0) -> str:
        self.asked.append((endpoint, since))
        return self.fault


class _Mirror:
    def __init__(self) -> None:
        self.written: list[tuple[str, dict[str, object]]] = []

    def write_status(self, name: str, **fields: object) -> None:
        self.written.append((name, fields))


def test_a_pod_that_broke_a_call_is_named_in_its_error_and_its_plugin_objects_status() -> None:
    driver, mirror = _Driver("OOMKilled (memory limit 96 MiB, peak reached the 96 MiB limit)"), _Mirror()
    previous = router.set_remote_fault_reader(pod_fault_reader(driver, mirror))
    try:
        route = Route("hog", "faulty", b"", (("10.0.0.7:50051", "token"),))
        error = router._failure(
            route, "10.0.0.7:50051", 100.0, PluginUnavailableError("did not answer (Socket closed)")
        )
        assert str(error) == (
            "plugin 'faulty' died during command 'hog': OOMKilled (memory limit 96 MiB, peak reached the 96 MiB "
            "limit); see `sysops plugin status faulty`"
        )
        assert driver.asked == [("10.0.0.7:50051", 100.0)]
        assert mirror.written == [("faulty", {"last_fault": driver.fault})]
        driver.fault = ""  # the pod did not end: the call's own error stands, nothing is written
        unchanged = PluginUnavailableError("did not answer (Socket closed)")
        assert router._failure(route, "10.0.0.7:50051", 100.0, unchanged) is unchanged
        assert len(mirror.written) == 1
    finally:
        router.set_remote_fault_reader(previous)

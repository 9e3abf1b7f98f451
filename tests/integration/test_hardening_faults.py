"""Faults on the real engine: capped and streamed plugin logs, crash-loop reporting and the restart budget,
and `sysops plugin up` killed with SIGKILL at chosen moments (the next command completes or cleans up).

Uses the hostile plugin (tests/integration/plugins/hostile): `flood` writes to stdout, `crashloop` crashes
shortly after every start, `crash-later` crashes a few seconds after every start.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest
from sysops.settings import Settings

from tests.integration.conftest import SYSOPS, Sysops, installation_containers, wait_for

pytestmark = pytest.mark.integration

HOSTILE = Path(__file__).parent / "plugins" / "hostile"
_MIB = 1 << 20


def hostile(tmp_path: Path, extra: str = "", *, version: str = "1.0.0") -> Path:
    target = tmp_path / "hostile"
    if not target.exists():
        shutil.copytree(HOSTILE, target, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = (HOSTILE / "plugin.yaml").read_text().replace("version: 1.0.0", f"version: {version}")
    (target / "plugin.yaml").write_text(manifest + extra)
    return target


def ls(sysops: Sysops, env: dict[str, str] | None = None) -> dict[str, dict[str, object]]:
    result = sysops.run("plugin", "ls", "--output", "json", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)}


def status(sysops: Sysops, env: dict[str, str] | None = None) -> dict[str, object]:
    result = sysops.run("plugin", "status", "hostile", "--output", "json", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def plugin_containers(engine: docker.DockerClient, sysops: Sysops, role: bool = False) -> list[object]:
    return [c for c in installation_containers(engine, sysops.installation_id) if ("sysops.role" in c.labels) == role]


def test_flooded_logs_stay_under_the_cap_and_stream_in_bounded_memory(
    fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient
) -> None:
    fresh_sysops.ok("plugin", "up", str(hostile(tmp_path, "logs: {max_mb: 40, files: 2}\n")))
    started = time.monotonic()
    fresh_sysops.ok("flood", "--mb", "200", timeout=180)
    flood_seconds = time.monotonic() - started
    [target] = plugin_containers(engine, fresh_sysops)
    log_path = Path(target.attrs["LogPath"])  # type: ignore[attr-defined]
    on_disk = sum(p.stat().st_size for p in log_path.parent.glob(log_path.name + "*"))
    print(f"flood of 200 MiB took {flood_seconds:.1f}s; log files on disk: {on_disk / _MIB:.1f} MiB")
    assert on_disk <= 80 * _MIB + 2 * _MIB, f"{on_disk / _MIB:.1f} MiB of logs for a cap of 2 x 40 MiB"
    assert on_disk >= 40 * _MIB  # the flood did reach the log
    applied = status(fresh_sysops)["limits"]["applied"]  # type: ignore[index]
    assert applied["logs"] == f"json-file, max-size {40 * _MIB}, max-file 2"

    # `plugin logs` streams: its peak RSS does not grow with the log (tens of MiB for ~80 MiB of log).
    measure = (
        "import resource, subprocess, sys, time; started = time.monotonic();"
        "out = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout;"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, len(out), time.monotonic() - started)"
    )
    probe = subprocess.run(
        [sys.executable, "-c", measure, SYSOPS, "plugin", "logs", "hostile"],
        env=fresh_sysops.env, capture_output=True, text=True, timeout=240, check=True,
    )  # fmt: skip
    peak_kib, printed, seconds = probe.stdout.split()
    peak_mib = int(peak_kib) // 1024
    print(f"plugin logs: {int(printed) / _MIB:.1f} MiB printed in {float(seconds):.1f}s, peak RSS {peak_mib} MiB")
    assert int(printed) >= 30 * _MIB
    assert peak_mib < 100, f"plugin logs peaked at {peak_mib} MiB"  # reading it whole peaked at 150 MiB

    # A plugin that exits 0 on the engine's SIGTERM (every plugin server does): not Active, 0/1, the truth.
    target.stop(timeout=5)  # type: ignore[attr-defined]
    report = status(fresh_sysops)
    assert report["state"] != "Active" and report["health"] == "NOT_SERVING"
    assert report["replicas"] == "0/1"
    assert "stopped outside sysops with exit code 0" in str(report["last_error"])
    assert "serving on" not in str(report["last_error"])


def test_crash_loop_is_reported_truthfully(fresh_sysops: Sysops, tmp_path: Path) -> None:
    fresh_sysops.ok("plugin", "up", str(hostile(tmp_path)))
    fresh_sysops.ok("crashloop")
    seen: list[str] = []
    restarting = re.compile(r"plugin 'hostile' (is restarting \(crash [1-3] of 3(: exit code 1)?\)|failed after 3)")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(restarting.search(text) for text in seen):
        result = fresh_sysops.run("ping", timeout=60)
        if result.returncode != 0:
            seen.append(result.stderr.strip())
    assert any(restarting.search(text) for text in seen), seen
    assert not any("failed to connect to all addresses" in text for text in seen), seen

    wait_for(lambda: status(fresh_sysops)["state"] == "Failed" and "Failed after" in str(status(fresh_sysops)["fault"]),
             60, "the crash loop to end in Failed")  # fmt: skip
    report = status(fresh_sysops)
    assert report["replicas"] == "0/1"
    assert str(report["last_error"]).startswith("exited with code 1"), report["last_error"]
    assert "serving on" not in str(report["last_error"])
    assert ls(fresh_sysops)["hostile"]["replicas"] == "0/1"


def test_restart_budget_is_whole_again_after_a_stable_run(
    fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient
) -> None:
    # The resident host reconciles all the time (its settings are those of the command that started it):
    # every run longer than the stability window renews the budget of 3 restarts, so a plugin that crashes
    # only after stable runs is restarted more than 3 times and never given up.
    fresh_sysops.env["SYSOPS_STABLE_SECONDS"] = "2"
    fresh_sysops.ok("plugin", "up", str(hostile(tmp_path)))
    [target] = plugin_containers(engine, fresh_sysops)
    fresh_sysops.ok("crash-later", "--seconds", "2.5")

    def attrs() -> dict[str, object]:
        target.reload()  # type: ignore[attr-defined]
        return dict(target.attrs)  # type: ignore[attr-defined]

    deadline = time.monotonic() + 90
    while int(attrs()["RestartCount"]) < 4 and time.monotonic() < deadline:  # type: ignore[call-overload]
        time.sleep(0.5)
    state = attrs()
    assert int(state["RestartCount"]) >= 4, state["RestartCount"]  # type: ignore[call-overload]
    assert state["State"]["Status"] in ("running", "restarting"), state["State"]  # type: ignore[index]
    # not given up: the same container is still the plugin's (a give-up removes it)


def up_killed_at(sysops: Sysops, plugin_dir: Path, marker: str, delay: float) -> str:
    """Start `sysops plugin up`, SIGKILL it `delay` seconds after `marker` appears in its progress; return that."""
    process = subprocess.Popen(
        [SYSOPS, "plugin", "up", str(plugin_dir)], env=sysops.env, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    seen = ""
    for line in process.stderr:
        seen += line
        if marker in line:
            time.sleep(delay)
            break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    return seen


def socket_dirs(sysops: Sysops) -> set[str]:
    run_dir = Settings(home=sysops.home).run_dir
    return {entry.name for entry in run_dir.iterdir()} if run_dir.exists() else set()


def test_first_install_killed_mid_start_is_verified_or_discarded(
    fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient
) -> None:
    plugin_dir = hostile(tmp_path, "readiness: {command: ping}\n")
    up_killed_at(fresh_sysops, plugin_dir, "starting hostile", 0.5)
    plugins = ls(fresh_sysops)
    history = fresh_sysops.run("plugin", "history", "hostile", "--output", "json")
    containers = plugin_containers(engine, fresh_sysops)
    adopted = "hostile" in plugins and plugins["hostile"]["state"] == "Active"
    print(f"first install killed mid-start: {'verified and adopted' if adopted else 'discarded'}")
    if adopted:
        assert [row["revision"] for row in json.loads(history.stdout)] == [1]
        assert len(containers) == 1
        kinds = {(e["kind"], "verified" in e["message"]) for e in status(fresh_sysops)["events"]}  # type: ignore[union-attr]
        assert ("adopted", True) in kinds or ("active", False) in kinds, kinds
    else:
        assert containers == [], "a half-started instance was neither verified nor removed"
    assert socket_dirs(fresh_sysops) <= {c.labels["sysops.instance"] for c in containers}  # type: ignore[attr-defined]
    fresh_sysops.ok("plugin", "up", str(plugin_dir))
    assert fresh_sysops.ok("ping") == "pong\n"


def test_an_instance_the_store_lost_is_adopted_only_if_its_limits_read_back(
    fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient
) -> None:
    fresh_sysops.ok("plugin", "up", str(hostile(tmp_path, "readiness: {command: ping}\n")))
    [target] = plugin_containers(engine, fresh_sysops)
    forget_instances(fresh_sysops)  # what an `up` killed between starting the container and recording it leaves
    ls(fresh_sysops)  # verified (self-test, read-back): adopted again
    assert plugin_containers(engine, fresh_sysops) == [target]
    assert fresh_sysops.ok("ping") == "pong\n"
    target.update(mem_limit=300 * _MIB, memswap_limit=300 * _MIB)  # type: ignore[attr-defined]
    forget_instances(fresh_sysops)
    plugins = ls(fresh_sysops)  # its limits no longer read back as the manifest's: removed, not adopted
    assert plugins["hostile"]["state"] != "Active"
    assert plugin_containers(engine, fresh_sysops) == []
    events = [e["message"] for e in status(fresh_sysops)["events"]]  # type: ignore[union-attr]
    assert any("unverified container" in message and "limits.memory_mb" in message for message in events), events


def forget_instances(sysops: Sysops) -> None:
    with sqlite3.connect(sysops.home / "state.db") as db:
        db.execute("DELETE FROM instances")
        db.execute("DELETE FROM routes")


def test_upgrade_killed_while_draining_keeps_history_and_leaves_no_holder(
    fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient
) -> None:
    network = "network:\n  - host: 10.255.255.1\n    ports: [9]\n"
    fresh_sysops.ok("plugin", "up", str(hostile(tmp_path, network)))
    seen = up_killed_at(fresh_sysops, hostile(tmp_path, network, version="1.0.1"), "draining hostile", 0.0)
    assert "draining hostile 1.0.0" in seen
    plugins = ls(fresh_sysops)
    assert plugins["hostile"]["version"] == "1.0.1" and plugins["hostile"]["revision"] == 2
    history = json.loads(fresh_sysops.ok("plugin", "history", "hostile", "--output", "json"))
    assert [row["revision"] for row in history] == [1, 2], "the serving revision has no history row"
    assert len(plugin_containers(engine, fresh_sysops)) == 1
    assert len(plugin_containers(engine, fresh_sysops, role=True)) == 1
    fresh_sysops.ok("plugin", "up", str(hostile(tmp_path, network, version="1.0.2")))
    history = json.loads(fresh_sysops.ok("plugin", "history", "hostile", "--output", "json"))
    assert [row["revision"] for row in history] == [1, 2, 3]

    # The plugin container is gone but its network holder stays (a kill between the two removals):
    # the next command removes the holder at once, not 120 s later.
    [serving] = plugin_containers(engine, fresh_sysops)
    serving.remove(force=True)  # type: ignore[attr-defined]
    ls(fresh_sysops)
    assert plugin_containers(engine, fresh_sysops, role=True) == []
    assert socket_dirs(fresh_sysops) == set()

    # `down` keeps the data volume and images for a later `up` or `down --purge`, which removes them.
    fresh_sysops.ok("plugin", "up", str(hostile(tmp_path, network, version="1.0.2")))
    fresh_sysops.ok("plugin", "down", "hostile")
    label = f"sysops.installation={fresh_sysops.installation_id}"
    assert installation_containers(engine, fresh_sysops.installation_id) == []
    assert engine.volumes.list(filters={"label": [label, "sysops.plugin=hostile"]})
    assert engine.images.list(filters={"label": [label, "sysops.plugin=hostile"]})
    with sqlite3.connect(fresh_sysops.home / "state.db") as db:  # no record at all, as a killed first `up` leaves
        db.execute("DELETE FROM revisions")
    fresh_sysops.ok("plugin", "down", "hostile", "--purge")  # found by its labels, not "no plugin named" (exit 8)
    assert engine.volumes.list(filters={"label": [label, "sysops.plugin=hostile"]}) == []
    assert engine.images.list(filters={"label": [label, "sysops.plugin=hostile"]}) == []
    assert fresh_sysops.run("plugin", "down", "hostile", "--purge").returncode == 8

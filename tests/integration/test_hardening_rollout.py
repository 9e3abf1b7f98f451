"""Rolls on the real engine: no write lost in a hand-over, failed hand-overs, claim races, leaked images, names."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import docker
import pytest

from tests.integration.conftest import (
    SYSOPS,
    Sysops,
    installation_containers,
    plugin_code,
    wait_for,
    watch_session,
    write_plugin,
)

pytestmark = pytest.mark.integration

TALLY = """
import time
from pathlib import Path

from sysops_sdk import Plugin, plugin_command


class P(Plugin):
    name = "tally"
    version = "1.0.0"

    def initialize(self) -> None:
        self.count = 0
        {initialize}

    def cleanup(self) -> None:
        pass

    def snapshot(self) -> dict[str, int]:
        return {{"count": self.count}}

    def restore(self, state: dict[str, int]) -> None:
        {restore}

    @plugin_command("bump")
    def bump(self) -> str:
        time.sleep(0.3)  # so a roll's snapshot always finds a call in flight
        self.count += 1
        return "{marker}"

    @plugin_command("total")
    def total(self) -> int:
        return self.count
"""
RESTORE = 'self.count = state["count"]'


def _tally(
    directory: Path, *, marker: str = "v1", restore: str = RESTORE, initialize: str = "", extra: str = ""
) -> Path:
    code = TALLY.format(marker=marker, restore=restore, initialize=initialize)
    if (directory / "tally_plugin").exists():
        (directory / "tally_plugin" / "plugin.py").write_text(code)
        return directory
    return write_plugin(directory, name="tally", code=code, manifest_extra=extra)


def _images(engine: docker.DockerClient, sysops: Sysops, plugin: str = "") -> list[str]:
    """Ids of every image of the installation (of one plugin), intermediate layer images included."""
    labels = [f"sysops.installation={sysops.installation_id}"] + ([f"sysops.plugin={plugin}"] if plugin else [])
    return sorted(image.id for image in engine.images.list(all=True, filters={"label": labels}))


def _total(sysops: Sysops) -> int:
    return int(sysops.ok("total", "--output", "json"))


def test_no_write_is_lost_when_rolls_hand_state_over_under_load(fresh_sysops: Sysops, tmp_path: Path) -> None:
    plugin_dir = _tally(tmp_path / "tally")
    fresh_sysops.ok("plugin", "up", str(plugin_dir))
    bumped: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def bump() -> None:
        while not stop.is_set():
            result = fresh_sysops.run("bump", timeout=60)
            (bumped if result.returncode == 0 else failures).append(result.stdout.strip() or result.stderr.strip())

    callers = [threading.Thread(target=bump, daemon=True) for _ in range(3)]
    for caller in callers:
        caller.start()
    try:
        for marker in ("v2", "v3"):
            time.sleep(1.0)
            _tally(plugin_dir, marker=marker)
            fresh_sysops.ok("plugin", "up", str(plugin_dir))
        time.sleep(1.0)
    finally:
        stop.set()
        for caller in callers:
            caller.join(timeout=90)
    assert failures == []
    assert {"v1", "v3"} <= set(bumped)
    assert _total(fresh_sysops) == len(bumped)  # every acknowledged write reached the serving version


def test_a_failed_restore_is_one_line_and_the_old_version_keeps_serving(
    fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient
) -> None:
    plugin_dir = _tally(tmp_path / "tally")
    fresh_sysops.ok("plugin", "up", str(plugin_dir))
    fresh_sysops.ok("bump")
    images = _images(engine, fresh_sysops)
    _tally(plugin_dir, marker="v2", restore='self.count = state["renamed"]')
    failed = fresh_sysops.run("plugin", "up", str(plugin_dir))
    assert failed.returncode == 6, failed.stderr
    (error,) = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert (
        "state hand-over failed: Restore on 1.0.0" in error and "restore() of plugin 'tally' failed: KeyError" in error
    )
    assert "internal error" not in failed.stderr and "Traceback" not in failed.stderr
    assert fresh_sysops.ok("bump") == "v1\n" and _total(fresh_sysops) == 2
    assert len(installation_containers(engine, fresh_sysops.installation_id)) == 1
    assert _images(engine, fresh_sysops) == images  # the failed roll's image and layer images are gone
    status = json.loads(fresh_sysops.ok("plugin", "status", "tally", "--output", "json"))
    assert status["revision"] == 1 and status["replicas"] == "1/1"


def test_the_watch_goes_on_after_a_failed_restore(fresh_sysops: Sysops, tmp_path: Path) -> None:
    plugin_dir = _tally(tmp_path / "tally")
    log = tmp_path / "watch.log"
    with watch_session(fresh_sysops, plugin_dir, log) as watch:
        fresh_sysops.ok("bump")
        _tally(plugin_dir, marker="v2", restore='self.count = state["renamed"]')
        wait_for(lambda: "reload failed" in log.read_text(), 180, "the failed reload to be reported")
        assert "state hand-over failed" in log.read_text() and "internal error" not in log.read_text()
        assert watch.poll() is None
        _tally(plugin_dir, marker="v3")
        wait_for(lambda: fresh_sysops.ok("bump") == "v3\n", 180, "the fixed version")
        assert _total(fresh_sysops) >= 2  # the count from v1 was handed to v3


def test_images_of_failed_rolls_go_and_down_then_purge_removes_the_rest(
    fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient
) -> None:
    plugin_dir = _tally(tmp_path / "tally")
    fresh_sysops.ok("plugin", "up", str(plugin_dir))
    serving = _images(engine, fresh_sysops)
    assert serving
    _tally(plugin_dir, marker="broken", initialize="raise RuntimeError('no database')")
    failed = fresh_sysops.run("plugin", "up", str(plugin_dir))
    assert failed.returncode == 6 and "no database" in failed.stderr
    assert _images(engine, fresh_sysops) == serving
    fresh_sysops.ok("plugin", "down", "tally")
    assert [r["revision"] for r in json.loads(fresh_sysops.ok("plugin", "history", "tally", "-o", "json"))] == [1]
    fresh_sysops.ok("plugin", "down", "tally", "--purge")
    assert _images(engine, fresh_sysops) == []


def test_a_first_install_whose_second_replica_fails_leaves_nothing_up(
    fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient
) -> None:
    second_fails = "if Path('/data/started').exists(): raise RuntimeError('second replica')\n        " + (
        "Path('/data/started').write_text('x')"
    )
    plugin_dir = _tally(tmp_path / "tally", initialize=second_fails, extra="replicas: 2\n")
    failed = fresh_sysops.run("plugin", "up", str(plugin_dir))
    assert failed.returncode == 6 and "second replica" in failed.stderr
    assert installation_containers(engine, fresh_sysops.installation_id) == []
    assert _images(engine, fresh_sysops) == []
    unknown = fresh_sysops.run("bump")
    assert unknown.returncode == 2 and "unknown command 'bump'" in unknown.stderr
    status = json.loads(fresh_sysops.ok("plugin", "status", "tally", "--output", "json"))
    assert status["state"] == "Failed" and status["replicas"] == "0/2"


def test_two_plugins_claiming_one_command_at_once_one_wins_the_other_is_refused(
    fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient
) -> None:
    directories = {
        name: write_plugin(tmp_path / name, name=name, code=plugin_code(name, command="shared", answer=name))
        for name in ("alpha", "beta")
    }
    processes = {
        name: subprocess.Popen(
            [SYSOPS, "plugin", "up", str(directory)],
            env=fresh_sysops.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, directory in directories.items()
    }
    outcomes = {
        name: (process.wait(timeout=240), process.stderr.read())
        for name, process in processes.items()
        if process.stderr
    }
    winners = [name for name, (code, _) in outcomes.items() if code == 0]
    assert len(winners) == 1, outcomes
    loser = ({"alpha", "beta"} - set(winners)).pop()
    exit_code, stderr = outcomes[loser]
    assert exit_code == 7, stderr
    assert f"command 'shared' of plugin '{loser}' is already provided by plugin '{winners[0]}'" in stderr
    assert "internal error" not in stderr and "IntegrityError" not in stderr
    assert fresh_sysops.ok("shared") == f"{winners[0]}\n"
    containers = installation_containers(engine, fresh_sysops.installation_id)
    assert {c.labels["sysops.plugin"] for c in containers} == {winners[0]}
    assert _images(engine, fresh_sysops, loser) == []


def test_a_plugin_cannot_claim_a_builtin_name(
    fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient
) -> None:
    code = plugin_code("ctx", command="context", answer="mine")
    refused = fresh_sysops.run("plugin", "up", str(write_plugin(tmp_path / "ctx", name="ctx", code=code)))
    assert refused.returncode == 7
    assert "\nerror: command 'context' of plugin 'ctx' uses the reserved name 'context'" in refused.stderr
    assert installation_containers(engine, fresh_sysops.installation_id) == []
    assert "plugin 'ctx'" not in fresh_sysops.run("context", "--help").stdout


def test_a_failed_snapshot_fails_the_roll_and_the_old_version_keeps_its_state(
    fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient
) -> None:
    """A Snapshot that raises stops the roll before anything switches (it was ignored: the old instance was
    retired anyway and the new one started empty)."""
    plugin_dir = tmp_path / "tally"
    failing = TALLY.format(marker="v1", restore=RESTORE, initialize="").replace(
        'return {"count": self.count}', 'raise RuntimeError("snapshot broke")'
    )
    write_plugin(plugin_dir, name="tally", code=failing)
    fresh_sysops.ok("plugin", "up", str(plugin_dir))
    fresh_sysops.ok("bump")
    fresh_sysops.ok("bump")
    _tally(plugin_dir, marker="v2")
    failed = fresh_sysops.run("plugin", "up", str(plugin_dir))
    assert failed.returncode == 6, failed.stderr
    (error,) = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert "state hand-over failed: Snapshot on 1.0.0" in error and "snapshot broke" in error
    assert "Traceback" not in failed.stderr
    assert fresh_sysops.ok("bump") == "v1\n" and _total(fresh_sysops) == 3  # the old one serves, state whole
    assert len(installation_containers(engine, fresh_sysops.installation_id)) == 1

"""After the Docker engine restarts, the plugins that were up come back by themselves (issue 9 item 2).

On shutdown dockerd sends SIGTERM to every container; the plugin server drains and exits 0, which the
on-failure restart policy does not restart, so after the engine is back the container stays stopped
until reconciliation starts it again (core/recovery.py). Restarting the engine every other test uses is
not an option, so this test runs a PRIVATE dockerd: its own --data-root, --exec-root, --pidfile, Unix
socket and bridge (sysops-tbr0, 172.31.250.1/24; never docker0, never `--bridge=none`), with the base
image loaded into it from the default engine, and the CLI pointed at it with DOCKER_HOST and its own
SYSOPS_HOME. Everything it made (the resident host, containers, mounts, the dockerd, its directories and
the bridge) is removed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest

from tests.integration.conftest import (
    Sysops,
    plugin_code,
    remove_installation,
    unmount_installation,
    wait_for,
    write_plugin,
)

pytestmark = pytest.mark.integration

BRIDGE = "sysops-tbr0"
BRIDGE_ADDRESS = "172.31.250.1/24"
#: The API of Debian's docker.io (Engine 20.10), the engine of these machines.
API_VERSION = "1.41"
BASE_IMAGE = os.environ.get("SYSOPS_BASE_IMAGE", "sysops/plugin-base:0.1.0")


@dataclass
class PrivateEngine:
    """A dockerd of the test's own, and how to stop and start it again."""

    root: Path
    socket: str
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        command = [
            "dockerd",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'dockerd.pid'}",
            f"--host={self.host}",
            f"--bridge={BRIDGE}",
            "--iptables=false",
            "--ip-masq=false",
        ]
        with open(self.log, "ab") as sink:
            self.process = subprocess.Popen(command, stdout=sink, stderr=sink, start_new_session=True)
        client = _client(self.host, timeout=10)
        try:
            wait_for(lambda: _answers(client), 30, f"the private dockerd to answer on {self.socket}")
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it (it stops its containers first), and wait for it to exit."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _client(host: str, timeout: int = 30) -> docker.DockerClient:
    """A client of `host` that asks nothing until used (its API version is fixed: the engine may be down)."""
    return docker.DockerClient(base_url=host, version=API_VERSION, timeout=timeout)


def _answers(client: docker.DockerClient) -> bool:
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, OSError):
        return False


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


def _unmount_under(root: Path) -> None:
    for line in reversed(Path("/proc/self/mounts").read_text().splitlines()):
        target = line.split()[1].replace("\\040", " ")
        if target.startswith(f"{root}/"):
            _run("umount", "-l", target)


@pytest.fixture
def private_engine(engine: docker.DockerClient) -> Iterator[PrivateEngine]:
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        pytest.fail("the engine-restart test needs dockerd and root (it runs a private dockerd)")
    root = Path(tempfile.mkdtemp(prefix="sysops-tdd-", dir="/tmp"))
    private = PrivateEngine(root=root, socket=str(root / "docker.sock"), log=root / "dockerd.log")
    _run("ip", "link", "delete", BRIDGE)  # left by an interrupted run
    try:
        for step in (
            ("ip", "link", "add", "name", BRIDGE, "type", "bridge"),
            ("ip", "addr", "add", BRIDGE_ADDRESS, "dev", BRIDGE),
            ("ip", "link", "set", BRIDGE, "up"),
        ):
            made = _run(*step)
            assert made.returncode == 0, f"{' '.join(step)}: {made.stderr.strip()}"
        private.start()
        saved = subprocess.Popen(["docker", "save", BASE_IMAGE], stdout=subprocess.PIPE)
        loaded = subprocess.run(
            ["docker", "load"], stdin=saved.stdout, env={**os.environ, "DOCKER_HOST": private.host},
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert saved.wait(timeout=60) == 0 and loaded.returncode == 0, f"loading the base image: {loaded.stderr}"
        yield private
    finally:
        private.stop()
        _unmount_under(root)
        _run("ip", "link", "delete", BRIDGE)
        shutil.rmtree(root, ignore_errors=True)
        print(f"private dockerd log was {private.log} (removed)")


@pytest.fixture
def cli(private_engine: PrivateEngine, tmp_path: Path) -> Iterator[Sysops]:
    home = tmp_path / "home"
    env = {
        **os.environ,
        "SYSOPS_HOME": str(home),
        "DOCKER_HOST": private_engine.host,
        "SYSOPS_READY_TIMEOUT": "20",
        "SYSOPS_DRAIN_TIMEOUT": "3",
    }
    env.pop("SYSOPS_DEBUG", None)
    instance = Sysops(home=home, env=env)
    yield instance
    instance.run("host", "stop", timeout=30)
    _kill_hosts_of(home)
    if private_engine.process is not None and private_engine.process.poll() is None:
        client = _client(private_engine.host)
        with contextlib.suppress(docker.errors.DockerException):
            remove_installation(client, instance.installation_id)
        client.close()
    unmount_installation(instance)


def _kill_hosts_of(home: Path) -> None:
    """SIGKILL any resident host still running for `home` (`host stop` is the normal way)."""
    wanted = f"SYSOPS_HOME={home}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if wanted in (entry / "environ").read_bytes().split(b"\0") and b"host" in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def _listing(cli: Sysops) -> tuple[int, dict[str, object] | None]:
    """(exit code of `sysops plugin ls -o json`, the row of plugin 'comeback' or None)."""
    listed = cli.run("plugin", "ls", "--output", "json", timeout=60)
    if listed.returncode != 0:
        return listed.returncode, None
    rows = [row for row in json.loads(listed.stdout) if row["name"] == "comeback"]
    return 0, rows[0] if rows else None


def test_after_an_engine_restart_the_plugin_serves_again_once_and_ls_tells_the_truth(
    private_engine: PrivateEngine, cli: Sysops, tmp_path: Path
) -> None:
    code = plugin_code("comeback", command="comeback-ping", answer="still here")
    cli.ok("plugin", "up", str(write_plugin(tmp_path / "comeback", name="comeback", code=code)))
    assert cli.ok("comeback-ping").strip() == "still here"
    client = _client(private_engine.host)
    selector = [f"sysops.installation={cli.installation_id}", "sysops.plugin=comeback"]
    label: dict[str, str | list[str] | bool] = {"label": selector}
    (before,) = client.containers.list(all=True, filters=label)
    container_id = str(before.id)
    client.close()
    history_before = json.loads(cli.ok("plugin", "history", "comeback", "--output", "json"))

    private_engine.stop()
    down_code, down_row = _listing(cli)
    assert down_code == 5 and down_row is None, "while the engine is down, ls says so (exit 5), never Active"

    restarted_at = time.monotonic()
    private_engine.start()
    client = _client(private_engine.host)
    stopped = client.containers.get(container_id)
    assert stopped.attrs["State"]["Running"] is False and stopped.attrs["State"]["ExitCode"] == 0, (
        "the engine stopped it with SIGTERM, the plugin exited 0, and on-failure left it stopped"
    )

    samples: list[tuple[dict[str, object] | None, bool]] = []

    def active() -> bool:
        _, row = _listing(cli)
        container = client.containers.get(container_id)
        samples.append((row, bool(container.attrs["State"]["Running"])))
        return row is not None and row["state"] == "Active"

    wait_for(active, 30, "plugin ls to show comeback Active again")
    print(f"Active {time.monotonic() - restarted_at:.1f}s after the engine was started again; ls samples: {samples}")
    for row, running in samples:
        if row is not None and row["state"] == "Active":
            assert running and row["health"] == "SERVING" and row["replicas"] == "1/1", samples
        if row is not None and not running:
            assert row["state"] != "Active" and row["replicas"] == "0/1", f"ls lied about a stopped container: {row}"

    assert cli.ok("comeback-ping").strip() == "still here"
    after = client.containers.list(all=True, filters=label)
    assert [c.id for c in after] == [container_id], "started again in place: one container, the same, no duplicate"
    assert after[0].attrs["State"]["Running"] is True
    client.close()
    assert json.loads(cli.ok("plugin", "history", "comeback", "--output", "json")) == history_before
    listed = cli.run("events", "--plugin", "comeback", "--output", "json", timeout=30)
    restarted = [
        event
        for event in (json.loads(line) for line in listed.stdout.splitlines() if line.strip())
        if event["kind"] == "restarted"
    ]
    assert restarted and "the engine stopped it (exit code 0); started again" in restarted[-1]["message"], listed

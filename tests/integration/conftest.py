"""Fixtures for tests against the real Docker engine.

Each test module gets its own SYSOPS_HOME, so its containers, images and volumes carry that
installation's label and names; everything carrying it is removed afterwards, and nothing a user runs
on the same engine is touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest
from sysops.host.launcher import stop_host
from sysops.runtime.docker.data_filesystems import unmount_data_filesystem
from sysops.runtime.socket_dirs import unmount_socket_tmpfs
from sysops.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SYSOPS = str(Path(sys.executable).with_name("sysops"))


@dataclass
class Sysops:
    """Runs the `sysops` CLI as a subprocess against one state directory."""

    home: Path
    env: dict[str, str]

    @property
    def installation_id(self) -> str:
        return hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:12]

    def run(
        self, *args: str, timeout: float = 240, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SYSOPS, *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, timeout: float = 240) -> str:
        result = self.run(*args, timeout=timeout)
        assert result.returncode == 0, f"sysops {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
        return result.stdout

    def stop_host(self) -> None:
        """Stop the installation's resident host, if the CLI started one (plugins keep running)."""
        stop_host(Settings(home=self.home))


def host_processes(under: Path) -> list[int]:
    """Pids of resident hosts whose SYSOPS_HOME is inside `under` (what this test session started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"sysops.cli.main" not in words or b"host" not in words:
            continue
        homes = [item[len(b"SYSOPS_HOME=") :] for item in environment if item.startswith(b"SYSOPS_HOME=")]
        if homes and homes[0].decode(errors="replace").startswith(f"{under.resolve()}/"):
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="session", autouse=True)
def no_host_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Stop every resident host this session's CLIs started (each fixture stops its own; this is the net)."""
    yield
    for pid in host_processes(tmp_path_factory.getbasetemp()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def engine() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"integration tests need a Docker engine ({exc}); run scripts/bootstrap.sh")
    base = os.environ.get("SYSOPS_BASE_IMAGE", "sysops/plugin-base:0.1.0")
    try:
        client.images.get(base)
    except docker.errors.ImageNotFound:
        pytest.fail(f"base image {base} is missing; run plugin-base-image/build.sh")
    return client


def installation_containers(
    client: docker.DockerClient, installation_id: str, *, running_only: bool = False
) -> list[docker.models.containers.Container]:
    """Containers of one installation; retried when one vanishes between the engine's list and inspect."""
    filters = {"label": f"sysops.installation={installation_id}"}
    for _attempt in range(5):
        try:
            return list(client.containers.list(all=not running_only, filters=filters))
        except docker.errors.NotFound:
            time.sleep(0.2)
    return list(client.containers.list(all=not running_only, filters=filters))


def remove_installation(client: docker.DockerClient, installation_id: str) -> None:
    """Remove every container, image and volume of one sysops installation, and unmount what they used."""
    label = f"sysops.installation={installation_id}"
    for container in installation_containers(client, installation_id):
        mounts = container.attrs.get("Mounts") or []
        sockets = [m.get("Source", "") for m in mounts if m.get("Destination") == "/run/sysops"]
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
        for socket_dir in sockets:
            unmount_socket_tmpfs(socket_dir)
    for image in client.images.list(filters={"label": label}):
        with contextlib.suppress(docker.errors.NotFound):
            client.images.remove(image.id, force=True)
    for volume in client.volumes.list():
        if volume.name.startswith(f"sysops-{installation_id}-"):
            device = (volume.attrs.get("Options") or {}).get("device")
            volume.remove(force=True)
            if device:
                unmount_data_filesystem(device)


def unmount_installation(sysops: Sysops) -> None:
    """Unmount what sysops mounted for an installation (socket tmpfs, data filesystems) once its containers are gone."""
    sysops.stop_host()  # normally done before its containers are removed; a host left running would redo them
    roots = (f"{sysops.home.resolve()}/", f"/tmp/sysops-run-{os.geteuid()}/{sysops.installation_id}/")
    for line in reversed(Path("/proc/self/mounts").read_text().splitlines()):
        target = line.split()[1].replace("\\040", " ")
        if target.startswith(roots):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)
    # /data images hold their space (256 MiB each by default): pytest keeps the last runs' temporary directories;
    # the socket directories of a long SYSOPS_HOME are in the shared /tmp fallback, which nothing else empties
    shutil.rmtree(sysops.home / "data", ignore_errors=True)
    shutil.rmtree(roots[1], ignore_errors=True)


def _make_sysops(tmp_path: Path) -> Sysops:
    home = tmp_path / "home"
    env = {**os.environ, "SYSOPS_HOME": str(home), "SYSOPS_READY_TIMEOUT": "20", "SYSOPS_DRAIN_TIMEOUT": "3"}
    env.pop("SYSOPS_DEBUG", None)
    return Sysops(home=home, env=env)


@pytest.fixture(scope="module")
def sysops(engine: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sysops]:
    instance = _make_sysops(tmp_path_factory.mktemp("sysops"))
    yield instance
    instance.stop_host()
    remove_installation(engine, instance.installation_id)
    unmount_installation(instance)


@pytest.fixture
def fresh_sysops(engine: docker.DockerClient, tmp_path: Path) -> Iterator[Sysops]:
    instance = _make_sysops(tmp_path)
    yield instance
    instance.stop_host()
    remove_installation(engine, instance.installation_id)
    unmount_installation(instance)


def bridge_gateway(client: docker.DockerClient | None = None) -> str:
    """The Docker bridge's address on this machine, where containers (and the test cluster's pods) reach it.

    The engine's IPAM config names it, except on engines that list the bridge's subnet alone (seen on a new
    machine of this kind: `{"Subnet": "172.17.0.0/16"}`, no "Gateway"): the bridge interface's own address is
    it then."""
    network = (client or docker.from_env()).api.inspect_network("bridge")
    for config in network["IPAM"]["Config"] or []:
        if config.get("Gateway"):
            return str(config["Gateway"])
    interface = (network.get("Options") or {}).get("com.docker.network.bridge.name", "docker0")
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", interface], capture_output=True, text=True, check=True)
    assert "inet " in out.stdout, f"the bridge network has no gateway address ({interface}: {out.stdout!r})"
    return out.stdout.split("inet ", 1)[1].split("/", 1)[0]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds, failing with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextlib.contextmanager
def watch_session(sysops: Sysops, plugin_dir: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run `sysops plugin up DIR --watch` (output to `log`) until the block ends, then Ctrl-C it."""
    with open(log, "w") as sink:
        process = subprocess.Popen(
            [SYSOPS, "plugin", "up", str(plugin_dir), "--watch"], env=sysops.env, stderr=sink, stdout=sink
        )
    try:
        wait_for(lambda: "watching" in log.read_text(), 120, "the watch session to start")
        yield process
    finally:
        interrupt(process, 20)


def interrupt(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Ctrl-C a sysops process and wait for it; kill it if it is still there after `timeout` seconds."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def copy_example(name: str, target: Path) -> Path:
    """Copy an example plugin so a test may edit it."""
    destination = target / name
    shutil.copytree(ROOT / "examples" / name, destination, ignore=shutil.ignore_patterns("__pycache__"))
    return destination


def write_plugin(directory: Path, *, name: str, code: str, manifest_extra: str = "", command: str = "ping") -> Path:
    """Write a minimal plugin package whose module is `<name>_plugin.plugin` with class `P`."""
    package = name.replace("-", "_") + "_plugin"
    (directory / package).mkdir(parents=True)
    (directory / package / "__init__.py").write_text("")
    (directory / package / "plugin.py").write_text(code)
    (directory / "plugin.yaml").write_text(
        f"name: {name}\nversion: 1.0.0\nentrypoint: {package}.plugin:P\n{manifest_extra}"
    )
    return directory


PLUGIN_TEMPLATE = """
from sysops_sdk import Plugin, plugin_command

class P(Plugin):
    name = "{name}"
    version = "1.0.0"

    def initialize(self) -> None:
        {initialize}

    def cleanup(self) -> None:
        pass

    @plugin_command("{command}")
    def run(self) -> str:
        return "{answer}"
"""


def plugin_code(name: str, *, command: str = "ping", answer: str = "pong", initialize: str = "pass") -> str:
    return PLUGIN_TEMPLATE.format(name=name, command=command, answer=answer, initialize=initialize)

"""A hostile review of the per-plugin /data and socket tmpfs (issue 8, item 2), on the real engine.

A plugin may plant a setuid copy of a binary in /data and make its root world-writable; every host
mount of its filesystem (sysops's own and the engine's volume mount) must keep it inert. And a plugin
whose `data_mb` is larger than the free space of SYSOPS_HOME's filesystem filled that filesystem through
its sparse image: state.db then failed with a disk I/O error in every command. The image's space is now
reserved, and a `plugin up` it does not fit is refused in one line, leaving nothing mounted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.integration.conftest import (
    Sysops,
    installation_containers,
    plugin_code,
    remove_installation,
    unmount_installation,
    wait_for,
    write_plugin,
)

pytestmark = pytest.mark.integration

HOSTILE = """
import os
import shutil
import sys

from sysops_sdk import Plugin, plugin_command


class P(Plugin):
    name = "{name}"
    version = "1.0.0"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("{name}-plant")
    def plant(self) -> str:
        os.chmod("/data", 0o777)
        shutil.copy(sys.executable, "/data/suid")
        os.chmod("/data/suid", 0o4755)
        return oct(os.stat("/data/suid").st_mode)
"""
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _hostile_plugin(parent: Path, name: str, data_mb: int) -> Path:
    return write_plugin(
        parent / name,
        name=name,
        code=HOSTILE.format(name=name),
        command=f"{name}-plant",
        manifest_extra=f"limits: {{data_mb: {data_mb}}}\n",
    )


def _let_it_past_the_static_checks(sysops: Sysops) -> None:
    """The operator's policy ignores bandit's B103 (the plugin's chmod 0o777 of /data, high): this plugin is hostile
    on purpose, and the sandbox must hold even for one an operator let through (docs/static-checks.md)."""
    sysops.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    (sysops.home / "policy.yaml").write_text("checks: {ignore: [B103]}\n")


def _mounts_of(text: str) -> list[list[str]]:
    """Mounts whose source or target holds `text`: [source, target, type, options]."""
    lines = Path("/proc/self/mounts").read_text().splitlines()
    return [line.split()[:4] for line in lines if text in " ".join(line.split()[:2])]


def _loop_device(image: Path) -> str:
    listing = subprocess.run(["losetup", "-n", "-O", "NAME", "-j", str(image)], capture_output=True, text=True)
    return listing.stdout.split()[0]


def test_a_setuid_file_a_plugin_plants_in_data_is_inert_on_every_host_mount(
    fresh_sysops: Sysops, tmp_path: Path
) -> None:
    plugin = _hostile_plugin(tmp_path, "rv-plant", data_mb=16)
    _let_it_past_the_static_checks(fresh_sysops)
    result = fresh_sysops.run("plugin", "up", str(plugin), timeout=180)
    assert result.returncode == 0, result.stderr
    assert fresh_sysops.ok("rv-plant-plant").strip() == "0o104755"
    mounts = _mounts_of(_loop_device(fresh_sysops.home / "data" / "rv-plant" / "data.ext4") + " ")
    assert len(mounts) >= 2, mounts  # sysops's own mount and the engine's volume mount
    for _source, target, _kind, options in mounts:
        assert {"nosuid", "nodev", "noexec"} <= set(options.split(",")), (target, options)
        run_as_nobody = subprocess.run(
            [*NOBODY, f"{target}/suid", "-c", "import os; print(os.geteuid())"], capture_output=True, text=True
        )
        assert run_as_nobody.returncode != 0 and not run_as_nobody.stdout, (target, run_as_nobody)


@pytest.fixture
def small_home(engine: docker.DockerClient, tmp_path: Path) -> Iterator[Sysops]:
    """A SYSOPS_HOME on a 24 MiB filesystem of its own."""
    filesystem = tmp_path / "small"
    filesystem.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "sysops-review", str(filesystem)], check=True)
    home = filesystem / "home"
    sysops = Sysops(home=home, env={**os.environ, "SYSOPS_HOME": str(home), "SYSOPS_READY_TIMEOUT": "20"})
    try:
        yield sysops
    finally:
        sysops.stop_host()
        remove_installation(engine, sysops.installation_id)
        unmount_installation(sysops)
        subprocess.run(["umount", "-l", str(filesystem)], check=False)


def test_a_data_mb_larger_than_the_free_space_of_sysops_home_is_refused(small_home: Sysops, tmp_path: Path) -> None:
    plugin = _hostile_plugin(tmp_path, "rv-big", data_mb=64)
    _let_it_past_the_static_checks(small_home)
    result = small_home.run("plugin", "up", str(plugin), timeout=180)
    assert result.returncode == 6, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "rv-big" in errors[0] and "64 MiB" in errors[0], result.stderr
    assert "limits.data_mb" in errors[0] and "Traceback" not in result.stderr
    assert not _mounts_of(str(small_home.home.resolve()) + "/"), "a refused start left a mount behind"
    assert small_home.run("plugin", "ls").returncode == 0  # state.db still works


@pytest.fixture
def long_home(engine: docker.DockerClient, tmp_path: Path) -> Iterator[Sysops]:
    """A SYSOPS_HOME too long for a socket path: its socket directories are in the /tmp fallback."""
    home = tmp_path / ("long-" * 16) / "home"
    sysops = Sysops(home=home, env={**os.environ, "SYSOPS_HOME": str(home), "SYSOPS_READY_TIMEOUT": "20"})
    yield sysops
    sysops.stop_host()
    remove_installation(engine, sysops.installation_id)
    unmount_installation(sysops)


def test_after_a_reboot_emptied_tmp_a_plugin_of_the_tmp_fallback_comes_back(
    long_home: Sysops, engine: docker.DockerClient, tmp_path: Path
) -> None:
    """The reboot drops the mounts and empties /tmp: the socket directory, the bind mount's source, is gone
    (the engine refused to start the container: `plugin ls` and every later command failed with its raw
    'bind source path does not exist', and the plugin never came back)."""
    plugin = write_plugin(tmp_path / "rv-back", name="rv-back", code=plugin_code("rv-back", command="rv-back-ping"))
    result = long_home.run("plugin", "up", str(plugin), timeout=180)
    assert result.returncode == 0, result.stderr
    fallback = Path(f"/tmp/sysops-run-{os.geteuid()}/{long_home.installation_id}")
    (container,) = installation_containers(engine, long_home.installation_id)
    assert any(mount["Source"].startswith(f"{fallback}/") for mount in container.attrs["Mounts"])
    container.stop(timeout=1)
    long_home.stop_host()  # a reboot ends the host too (its listeners hold host.sock in the socket directory)
    for _source, target, _kind, _options in _mounts_of(f"{long_home.home.resolve()}/") + _mounts_of(f"{fallback}/"):
        subprocess.run(["umount", target], check=True)  # what the reboot does to the mounts ...
    shutil.rmtree(fallback)  # ... and to /tmp
    assert not fallback.exists() and not installation_containers(engine, long_home.installation_id, running_only=True)
    long_home.ok("plugin", "ls")  # reconciliation makes the directory again, mounts it and starts the instance
    wait_for(lambda: long_home.run("rv-back-ping").stdout.strip() == "pong", 60, "the plugin to come back")

"""Many small plugins in a private SYSOPS_HOME, for the scale and throughput benchmarks, always removed at the end.

`fleet(names)` writes one tiny plugin per name (the same code; each contributes `<name>-ping` and a CPU-bound
`<name>-spin`, since two plugins may not claim one command), brings them up with the real CLI in a temporary
SYSOPS_HOME (the first command starts that installation's host) and, whatever happens, takes every plugin down
with --purge, stops the host, then removes by label any container, image or volume of that installation still
left and unmounts what is still mounted inside its home (and says how many there were: `Fleet.leftovers` after
the block, all 0 when `plugin down` left nothing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
SYSOPS = str(BIN / "sysops")

_MANIFEST = """name: {name}
version: 1.0.0
description: A plugin of the scale benchmark
entrypoint: fleet_plugin.plugin:FleetPlugin
types: [command]
compatibility: {{sysops: ">=0.1,<1.0", python: ">=3.11"}}
limits: {{cpu_percent: {cpu_percent}, memory_mb: 96, pids: 64}}
replicas: {replicas}
network: none
"""
_PYPROJECT = """[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "sysops-bench-{name}"
version = "1.0.0"
requires-python = ">=3.11"

[tool.setuptools]
packages = ["fleet_plugin"]
"""
_CODE = '''"""A plugin of the scale benchmark: one cheap command, one CPU-bound one."""

from sysops_sdk import Plugin, argument, plugin_command


class FleetPlugin(Plugin):
    name = {name!r}
    version = "1.0.0"
    description = "scale benchmark"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command({ping!r})
    def ping(self) -> str:
        """Answer at once."""
        return "pong"

    @plugin_command({spin!r})
    @argument("rounds", help="How many rounds of hashing")
    def spin(self, rounds: int) -> str:
        """Burn CPU: `rounds` rounds of sha256."""
        import hashlib

        digest = b"x"
        for _ in range(rounds):
            digest = hashlib.sha256(digest).digest()
        return digest.hex()[:8]
'''


def write_plugin(root: Path, name: str, *, replicas: int = 1, cpu_percent: int = 50) -> Path:
    """The directory of a fleet plugin called `name` under `root`."""
    directory = root / name
    package = directory / "fleet_plugin"
    package.mkdir(parents=True, exist_ok=True)
    (directory / "plugin.yaml").write_text(_MANIFEST.format(name=name, replicas=replicas, cpu_percent=cpu_percent))
    (directory / "pyproject.toml").write_text(_PYPROJECT.format(name=name))
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(_CODE.format(name=name, ping=f"{name}-ping", spin=f"{name}-spin"))
    return directory


@dataclass
class Fleet:
    """The private installation the fleet runs in."""

    home: Path
    env: dict[str, str]
    plugins_dir: Path
    names: list[str] = field(default_factory=list)
    #: Seconds each `plugin up` took, in order.
    up_seconds: list[float] = field(default_factory=list)
    #: Containers, images and volumes of the installation still there after every `plugin down` (set at exit).
    leftovers: dict[str, int] = field(default_factory=dict)

    @property
    def installation(self) -> str:
        return _installation_id(self.env)

    def sysops(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the CLI in this installation, output captured."""
        return subprocess.run([SYSOPS, *argv], env=self.env, check=check, capture_output=True, text=True)

    def up(self, name: str, *, replicas: int = 1, cpu_percent: int = 50) -> float:
        """Write and bring up plugin `name`; the seconds it took."""
        directory = write_plugin(self.plugins_dir, name, replicas=replicas, cpu_percent=cpu_percent)
        self.names.append(name)
        started = time.perf_counter()
        done = self.sysops("plugin", "up", str(directory), check=False)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"plugin up {name} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
        self.up_seconds.append(seconds)
        return seconds

    def containers(self) -> list[str]:
        """Ids of the installation's running containers."""
        return _docker_ids(["ps", "-q", "--no-trunc"], self.installation)

    def host_pid(self) -> int:
        """The pid of the installation's resident host."""
        return int(json.loads((self.home / "host.json").read_text())["pid"])


@contextmanager
def fleet() -> Iterator[Fleet]:
    """A private installation; everything it made is removed at the end (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="sysops-bench-fleet-", ignore_cleanup_errors=True) as temporary:
        home = Path(temporary) / "home"
        home.mkdir()
        env = {**os.environ, "SYSOPS_HOME": str(home)}
        made = Fleet(home, env, Path(temporary) / "plugins")
        try:
            yield made
        finally:
            made.leftovers = teardown(made.env, made.names)


def teardown(env: dict[str, str], names: Sequence[str]) -> dict[str, int]:
    """`plugin down --purge` every plugin, stop the host, then count and force-remove what is still labelled."""
    for name in names:  # one after another: 4 at once left data filesystems of some plugins mounted
        subprocess.run([SYSOPS, "plugin", "down", name, "--purge"], env=env, capture_output=True, check=False)
    subprocess.run([SYSOPS, "host", "stop"], env=env, capture_output=True, check=False)
    installation = _installation_id(env)
    containers = _docker_ids(["ps", "-aq", "--no-trunc"], installation)
    volumes = _docker_ids(["volume", "ls", "-q"], installation)
    images = _docker_ids(["images", "-q", "--no-trunc"], installation)
    if containers:
        subprocess.run(["docker", "rm", "-f", "-v", *containers], capture_output=True, check=False)
    if volumes:
        subprocess.run(["docker", "volume", "rm", "-f", *volumes], capture_output=True, check=False)
    if images:
        subprocess.run(["docker", "rmi", "-f", *sorted(set(images))], capture_output=True, check=False)
    mounts = _mounts_under(Path(env["SYSOPS_HOME"]))
    for mount in sorted(mounts, key=len, reverse=True):  # data filesystems and socket tmpfs left mounted
        subprocess.run(["umount", mount], capture_output=True, check=False)
    return {"containers": len(containers), "volumes": len(volumes), "images": len(set(images)), "mounts": len(mounts)}


def _mounts_under(home: Path) -> list[str]:
    """Mount points inside `home` (from /proc/self/mounts; octal escapes such as \\040 left as they are)."""
    prefix = f"{home.resolve()}/"
    lines = Path("/proc/self/mounts").read_text().splitlines()
    return [point for point in (line.split()[1] for line in lines) if point.startswith(prefix)]


def _installation_id(env: dict[str, str]) -> str:
    probe = "from sysops.settings import Settings; print(Settings().installation_id)"
    return subprocess.run(
        [sys.executable, "-c", probe], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def _docker_ids(command: list[str], installation: str) -> list[str]:
    listed = subprocess.run(
        ["docker", *command, "--filter", f"label=sysops.installation={installation}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return listed.stdout.split()

"""`sysops plugin test DIR` on the real engine: what its container can see, how it prints, and what it leaves.

One plugin directory (a copy of hello whose tests/ is in .dockerignore, so every case reuses one image) under
one SYSOPS_HOME serves every case; each case writes its own tests/. A `tests` that is a symbolic link to a host
directory is refused and never mounted.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from sysops.runtime.base import plugin_uid
from sysops.runtime.docker.one_off import LABEL_ONE_OFF

from tests.integration.conftest import ROOT, SYSOPS, Sysops, installation_containers, wait_for

pytestmark = pytest.mark.integration

HELLO = ROOT / "examples" / "hello"


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("plugin") / "hello"
    shutil.copytree(HELLO, target, ignore=shutil.ignore_patterns("__pycache__", "tests"))
    (target / ".dockerignore").write_text("tests\n")
    return target


@pytest.fixture
def tests_dir(plugin_dir: Path) -> Iterator[Path]:
    tests = plugin_dir / "tests"
    tests.mkdir()
    yield tests
    if tests.is_symlink():
        tests.unlink()
    else:
        shutil.rmtree(tests)


def host_directory(tmp_path: Path) -> Path:
    """A host directory the container must never see."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "test_secret.py").write_text("def test_secret():\n    print('SECRET-ON-THE-HOST')\n")
    return victim


def test_a_tests_link_to_a_host_directory_is_refused(
    sysops: Sysops, plugin_dir: Path, tests_dir: Path, tmp_path: Path
) -> None:
    victim = host_directory(tmp_path)
    tests_dir.rmdir()
    tests_dir.symlink_to(victim)
    done = sysops.run("plugin", "test", str(plugin_dir), "--", "-s", timeout=600)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "SECRET-ON-THE-HOST" not in done.stdout
    assert "tests: is a symbolic link" in done.stderr and "Traceback" not in done.stderr
    assert not installation_containers(docker.from_env(), sysops.installation_id)


def test_a_link_inside_tests_to_a_host_directory_is_refused(
    sysops: Sysops, plugin_dir: Path, tests_dir: Path, tmp_path: Path
) -> None:
    victim = host_directory(tmp_path)
    (tests_dir / "test_ok.py").write_text("import os\n\ndef test_ok():\n    print(os.listdir('/plugin/tests/leak'))\n")
    (tests_dir / "leak").symlink_to(victim)
    done = sysops.run("plugin", "test", str(plugin_dir), "--", "-s", timeout=600)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "leads outside the plugin directory" in done.stderr


def test_the_tests_run_from_a_copy_that_is_removed_afterwards(
    sysops: Sysops, plugin_dir: Path, tests_dir: Path
) -> None:
    (tests_dir / "test_where.py").write_text(
        "import os\n\ndef test_where():\n    assert os.listdir('/plugin/tests') == ['test_where.py']\n"
    )
    done = sysops.run("plugin", "test", str(plugin_dir), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    assert not list((sysops.home / "cache" / "test-runs").glob("tests-*"))


NOISY = """\
import os


def test_noisy():
    os.write(1, b"clip:\\x1b]52;c;SGVsbG8=\\x07 bad:\\xff\\xfe end\\n")
"""


def on_a_terminal(sysops: Sysops, *args: str) -> bytes:
    """What `sysops ARGS` writes to its stdout when that is a terminal."""
    controller, terminal = pty.openpty()
    env = {key: value for key, value in sysops.env.items() if key != "SYSOPS_RAW_OUTPUT"}
    process = subprocess.Popen([SYSOPS, *args], stdout=terminal, stderr=subprocess.DEVNULL, env=env)
    os.close(terminal)
    seen = b""
    try:
        while True:
            ready, _, _ = select.select([controller], [], [], 600)
            if not ready:
                raise AssertionError(f"no output for 600 s: {seen!r}")
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(controller)
        process.wait(timeout=60)
    return seen


def test_pytest_output_is_escaped_on_a_terminal_and_raw_to_a_pipe(
    sysops: Sysops, plugin_dir: Path, tests_dir: Path
) -> None:
    (tests_dir / "test_noisy.py").write_text(NOISY)
    shown = on_a_terminal(sysops, "plugin", "test", str(plugin_dir), "--", "-s")
    assert b"1 passed" in shown, shown
    assert b"\x1b" not in shown and b"\\x1b]52;c;SGVsbG8=\\x07" in shown
    assert "bad:\ufffd\ufffd end".encode() in shown
    piped = subprocess.run(
        [SYSOPS, "plugin", "test", str(plugin_dir), "--", "-s"], env=sysops.env, capture_output=True, timeout=600
    )
    assert piped.returncode == 0, piped.stderr
    assert b"clip:\x1b]52;c;SGVsbG8=\x07 bad:" in piped.stdout  # (the engine's log already replaced bad bytes)


SLEEPY = "import time\n\n\ndef test_sleeps():\n    time.sleep(300)\n"


def one_off_containers(sysops: Sysops) -> list[docker.models.containers.Container]:
    return [c for c in installation_containers(docker.from_env(), sysops.installation_id) if LABEL_ONE_OFF in c.labels]


def copies_left(sysops: Sysops) -> list[Path]:
    return list((sysops.home / "cache" / "test-runs").glob("tests-*"))


def started_sleepy_run(sysops: Sysops, plugin_dir: Path) -> subprocess.Popen[bytes]:
    """`sysops plugin test` running a test that sleeps, once its container runs."""
    process = subprocess.Popen(
        [SYSOPS, "plugin", "test", str(plugin_dir)], env=sysops.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    wait_for(lambda: any(c.status == "running" for c in one_off_containers(sysops)), 300, "the test container")
    return process


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signalled_run_leaves_no_container_and_no_copy(
    sysops: Sysops, plugin_dir: Path, tests_dir: Path, signum: signal.Signals
) -> None:
    (tests_dir / "test_sleepy.py").write_text(SLEEPY)
    process = started_sleepy_run(sysops, plugin_dir)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0 and b"Traceback" not in stderr, stderr
    assert not one_off_containers(sysops)
    assert not copies_left(sysops)


def test_what_a_killed_run_left_is_removed_by_the_next_run(sysops: Sysops, plugin_dir: Path, tests_dir: Path) -> None:
    (tests_dir / "test_sleepy.py").write_text(SLEEPY)
    process = started_sleepy_run(sysops, plugin_dir)
    process.kill()
    process.communicate(timeout=60)
    assert one_off_containers(sysops) and copies_left(sysops)
    (tests_dir / "test_sleepy.py").write_text("def test_quick():\n    pass\n")
    started = time.monotonic()
    done = sysops.run("plugin", "test", str(plugin_dir), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not one_off_containers(sysops) and not copies_left(sysops), time.monotonic() - started


LIMITS = """\
import os
from pathlib import Path


def first(*paths):
    return next(Path(path).read_text().strip() for path in paths if Path(path).exists())


def test_limits():
    memory = first("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
    swap = first("/sys/fs/cgroup/memory.swap.max", "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes", "/dev/null")
    pids = first("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max")
    cpu = first("/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
    period = first("/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/cpu/cpu.cfs_period_us").split()[-1]
    print(f"LIMITS uid={os.getuid()} gid={os.getgid()} memory={memory} swap={swap} pids={pids} cpu={cpu.split()[0]}"
          f" period={period}")
"""


def test_the_container_has_the_plugins_uid_and_manifest_limits(
    sysops: Sysops, plugin_dir: Path, tests_dir: Path
) -> None:
    (tests_dir / "test_limits.py").write_text(LIMITS)
    done = sysops.run("plugin", "test", str(plugin_dir), "--", "-s", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    uid = plugin_uid(sysops.installation_id, "hello")
    line = next(line for line in done.stdout.splitlines() if "LIMITS " in line)  # after pytest's "test_limits.py "
    values = dict(word.split("=", 1) for word in line.split("LIMITS ", 1)[1].split())
    # hello's plugin.yaml: cpu_percent 50, memory_mb 128, pids 64; swap: none beyond memory (v2 0, v1 memsw = memory)
    assert values["uid"] == values["gid"] == str(uid)
    assert values["memory"] == str(128 * 1024 * 1024) and values["pids"] == "64" and values["cpu"] == "150000"
    assert values["period"] == "300000"  # 50% as 150 ms of CPU per 300 ms (runtime/docker/cpu_quota.py)
    assert values["swap"] in ("0", str(128 * 1024 * 1024), ""), values


def test_tests_past_the_timeout_are_stopped_and_removed(sysops: Sysops, plugin_dir: Path, tests_dir: Path) -> None:
    (tests_dir / "test_sleepy.py").write_text(SLEEPY)
    started = time.monotonic()
    done = sysops.run("plugin", "test", str(plugin_dir), "--timeout", "3", timeout=600)
    assert done.returncode == 10, done.stdout + done.stderr
    assert time.monotonic() - started < 60
    assert "hello's tests: still running after 3 s" in done.stderr and "Traceback" not in done.stderr
    assert not one_off_containers(sysops) and not copies_left(sysops)


def test_runs_leave_no_image(sysops: Sysops, plugin_dir: Path, tests_dir: Path) -> None:
    (tests_dir / "test_quick.py").write_text("def test_quick():\n    pass\n")
    client = docker.from_env()
    for _run in range(2):
        done = sysops.run("plugin", "test", str(plugin_dir), timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        assert not client.images.list(filters={"label": f"sysops.installation={sysops.installation_id}"})


def test_the_image_a_revision_uses_is_kept(sysops: Sysops, plugin_dir: Path, tests_dir: Path) -> None:
    (tests_dir / "test_quick.py").write_text("def test_quick():\n    pass\n")
    client = docker.from_env()
    ours = {"label": [f"sysops.installation={sysops.installation_id}", "sysops.plugin=hello"]}
    up = sysops.run("plugin", "up", str(plugin_dir), timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        before = {image.id for image in client.images.list(filters=ours)}
        done = sysops.run("plugin", "test", str(plugin_dir), timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        assert before and {image.id for image in client.images.list(filters=ours)} >= before
    finally:
        sysops.run("plugin", "down", "hello", "--purge", timeout=240)

"""The test kit on the real engine: `sysops plugin test DIR` and the `plugin` fixture's container mode.

`plugin test` builds the plugin's image and runs its tests inside a container of it: the hello example passes,
a failing test makes it exit non-zero, and the tests really run in the plugin's hardened container (its user,
read-only root, no network). The container mode of the fixture brings the plugin up with the CLI under a
private SYSOPS_HOME, runs the same tests through the CLI, and leaves no container, image, volume, mount or home.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from tests.integration.conftest import ROOT, Sysops, installation_containers, remove_installation

pytestmark = pytest.mark.integration

HELLO = ROOT / "examples" / "hello"
MONITORING = ROOT / "examples" / "monitoring"

INSIDE = """\
import os
import socket


def test_runs_as_the_plugin_user_on_a_read_only_root_without_network(plugin):
    assert os.getuid() >= 0x10000000  # the plugin's own uid (runtime/base.py plugin_uid), as an instance
    try:
        open("/plugin/written", "w")
    except OSError:
        pass
    else:
        raise AssertionError("the root filesystem is writable")
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=2)
    except OSError:
        pass
    else:
        raise AssertionError("the test container reached the network")
    assert plugin.invoke("greet", "inside").text == "Hello, inside!"


def test_this_one_fails(plugin):
    assert plugin.invoke("greet", "World").text == "Goodbye"
"""


def copy_of_hello(tmp_path: Path) -> Path:
    target = tmp_path / "hello"
    shutil.copytree(HELLO, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def container_mode_run(plugin_dir: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The plugin's own tests run by pytest with --sysops-mode=container, outside any SYSOPS_HOME of ours."""
    clean = {key: value for key, value in os.environ.items() if key not in ("SYSOPS_HOME", "SYSOPS_POLICY")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:cov", "--sysops-mode=container"],
        cwd=plugin_dir,
        env={**clean, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_plugin_test_runs_the_hello_tests_in_its_image(fresh_sysops: Sysops) -> None:
    done = fresh_sysops.run("plugin", "test", str(HELLO), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 passed" in done.stdout
    assert "rootdir: /plugin" in done.stdout  # inside the container, not on the host
    assert not installation_containers(docker.from_env(), fresh_sysops.installation_id)


def test_plugin_test_exits_with_pytests_code_when_a_test_fails(fresh_sysops: Sysops, tmp_path: Path) -> None:
    plugin_dir = copy_of_hello(tmp_path)
    (plugin_dir / "tests" / "test_inside.py").write_text(INSIDE)
    done = fresh_sysops.run("plugin", "test", str(plugin_dir), timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed, 7 passed" in done.stdout
    assert "test_this_one_fails" in done.stdout
    selected = fresh_sysops.run("plugin", "test", str(plugin_dir), "--", "-k", "not fails", timeout=600)
    assert selected.returncode == 0, selected.stdout
    assert "7 passed, 1 deselected" in selected.stdout


def test_plugin_test_refuses_a_plugin_without_tests(fresh_sysops: Sysops, tmp_path: Path) -> None:
    plugin_dir = copy_of_hello(tmp_path)
    shutil.rmtree(plugin_dir / "tests")
    done = fresh_sysops.run("plugin", "test", str(plugin_dir))
    assert done.returncode == 2
    assert "no tests/ directory" in done.stderr and "Traceback" not in done.stderr


def test_container_mode_runs_hello_in_its_container_and_cleans_up(tmp_path: Path) -> None:
    plugin_dir = copy_of_hello(tmp_path)
    record = tmp_path / "home.txt"
    (plugin_dir / "tests" / "test_mode.py").write_text(
        "import os\n\n\ndef test_mode(plugin):\n"
        "    assert plugin.mode == 'container'\n"
        "    open(os.environ['KIT_HOME_RECORD'], 'w').write(str(plugin.sysops_home))\n"
        "    assert plugin.invoke('greet', 'World', shout=True).text == 'HELLO, WORLD!'\n"
        "    assert plugin.invoke('nope').exit_code == 2\n"
    )
    done = container_mode_run(plugin_dir, {"KIT_HOME_RECORD": str(record)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "7 passed" in done.stdout
    home = Path(record.read_text())
    installation = Sysops(home=home, env={}).installation_id
    client = docker.from_env()
    try:
        assert not home.exists()
        assert not installation_containers(client, installation)
        assert not client.images.list(filters={"label": f"sysops.installation={installation}"})
        assert not [volume for volume in client.volumes.list() if volume.name.startswith(f"sysops-{installation}-")]
        assert str(home) not in Path("/proc/self/mounts").read_text()
    finally:
        remove_installation(client, installation)


def test_container_mode_grants_what_the_manifest_asks_and_reads_metrics_and_sets_config() -> None:
    done = container_mode_run(MONITORING)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed, 1 skipped" in done.stdout  # the metric, config and status cases ran on the real host

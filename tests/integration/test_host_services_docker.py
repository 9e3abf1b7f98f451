"""Host services on the real engine (issue 10): a `network: none` plugin reaches `state` through the
host.sock of its socket directory; a service without its grant is refused in the plugin naming the grant
while a granted one works; state outlives a reload, a rollback, a container restart and a host restart; a
command whose @requires_permission is not granted is refused before it runs (exit 9) and runs once the
policy grants it. The plugin is tests/integration/plugins/keeper."""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

import docker
import pytest

from tests.integration.conftest import Sysops, installation_containers, wait_for

pytestmark = pytest.mark.integration

KEEPER = Path(__file__).parent / "plugins" / "keeper"


def write_policy(sysops: Sysops, grants: list[str]) -> None:
    sysops.home.mkdir(parents=True, exist_ok=True)
    (sysops.home / "policy.yaml").write_text(json.dumps({"plugins": {"keeper": {"grants": grants}}}))
    time.sleep(0.05)  # the host re-reads a policy file whose mtime changed


def rebuild(plugin_dir: Path, version: str, mark: str) -> None:
    manifest = plugin_dir / "plugin.yaml"
    manifest.write_text(manifest.read_text().replace("version: 1.0.0", f"version: {version}"))
    code = plugin_dir / "keeper_plugin" / "plugin.py"
    code.write_text(code.read_text().replace('MARK = "A"', f'MARK = "{mark}"'))


@pytest.fixture(scope="module")
def keeper(sysops: Sysops, tmp_path_factory: pytest.TempPathFactory) -> Path:
    plugin_dir = tmp_path_factory.mktemp("plugins") / "keeper"
    shutil.copytree(KEEPER, plugin_dir)
    write_policy(sysops, ["state.*"])
    sysops.ok("plugin", "up", str(plugin_dir))
    return plugin_dir


def container(engine: docker.DockerClient, sysops: Sysops) -> docker.models.containers.Container:
    [running] = installation_containers(engine, sysops.installation_id, running_only=True)
    return running


def test_a_network_none_plugin_reaches_state_through_host_sock(
    sysops: Sysops, keeper: Path, engine: docker.DockerClient
) -> None:
    attrs = container(engine, sysops).attrs
    assert attrs["HostConfig"]["NetworkMode"] == "none"
    env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
    assert env["SYSOPS_HOST_ENDPOINT"] == "unix:///run/sysops/host.sock"
    socket_dir = next(m["Source"] for m in attrs["Mounts"] if m["Destination"] == "/run/sysops")
    info = os.lstat(Path(socket_dir) / "host.sock")
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert str(info.st_uid) == attrs["Config"]["User"].split(":")[0]  # the plugin's own uid
    assert sysops.ok("remember", "colour", "blue") == "version 1\n"
    assert sysops.ok("recall", "colour") == "A:blue\n"


def test_a_service_without_its_grant_is_refused_naming_the_grant(sysops: Sysops, keeper: Path) -> None:
    refused = sysops.run("peek-config")
    assert refused.returncode == 9, refused.stderr  # as for a command the host refuses
    assert "config.read" in refused.stderr and "plugins.keeper.grants" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert sysops.ok("recall", "colour") == "A:blue\n"  # the granted one works


def test_a_command_needing_an_ungranted_permission_is_refused_before_it_runs(sysops: Sysops, keeper: Path) -> None:
    refused = sysops.run("guarded")
    assert refused.returncode == 9, refused.stderr
    assert "needs permission 'deploy.run'" in refused.stderr and "plugins.keeper.grants" in refused.stderr
    assert sysops.ok("recall", "guarded-ran") == "A:(none)\n"  # it never ran
    write_policy(sysops, ["state.*", "deploy.run"])
    assert sysops.ok("guarded") == "deployed\n"
    assert sysops.ok("recall", "guarded-ran") == "A:yes\n"
    write_policy(sysops, ["state.*"])


def test_state_outlives_a_reload_a_rollback_a_container_restart_and_a_host_restart(
    sysops: Sysops, keeper: Path, engine: docker.DockerClient
) -> None:
    sysops.ok("remember", "kept", "across")
    rebuild(keeper, "1.0.1", "B")
    sysops.ok("plugin", "up", str(keeper))
    assert sysops.ok("recall", "kept") == "B:across\n"  # new code, same state
    sysops.ok("plugin", "rollback", "keeper")
    assert sysops.ok("recall", "kept") == "A:across\n"
    first = container(engine, sysops)
    first.restart(timeout=5)  # the same instance again: its socket directory (and host.sock) stays
    wait_for(lambda: sysops.run("recall", "kept").stdout == "A:across\n", 30, "recall after a container restart")
    sysops.stop_host()  # the next command starts a host, which re-adopts the instance and listens again
    assert sysops.ok("recall", "kept") == "A:across\n"

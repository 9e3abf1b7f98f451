"""Plugins are isolated from each other and from local users on the host (issue 8 item 2), on the real engine.

Every plugin ran as the image's uid 10001, and its socket directory and /data were host directories
mounted without nosuid,nodev,noexec: a plugin planted a setuid binary there that a local user ran to
become every plugin at once. Now each plugin has its own uid, and its socket directory is a 1 MiB tmpfs
of that uid, nosuid,nodev,noexec on the host and in the container.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import docker
import pytest
from sysops.runtime.base import PLUGIN_UID, plugin_uid

from tests.integration.conftest import Sysops, installation_containers, write_plugin

pytestmark = pytest.mark.integration

PROBE = """
import os

from sysops_sdk import Plugin, option, plugin_command


class P(Plugin):
    name = "{name}"
    version = "1.0.0"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("{name}-probe")
    def probe(self) -> dict:
        mounts = {{}}
        with open("/proc/self/mounts") as table:
            for line in table:
                source, target, kind, options = line.split()[:4]
                if target in ("/data", "/run/sysops"):
                    mounts[target] = {{"type": kind, "options": options.split(",")}}
        return {{"uid": os.getuid(), "gid": os.getgid(), "mounts": mounts}}

    @plugin_command("{name}-fill")
    @option("--mb", help="MiB to write into the directory")
    @option("--where", help="Directory to write into")
    def fill(self, mb: int = 1, where: str = "/data") -> str:
        written = 0
        try:
            with open(os.path.join(where, "fill"), "wb") as sink:
                for _ in range(mb):
                    sink.write(b"x" * (1 << 20))
                    sink.flush()
                    written += 1
                os.fsync(sink.fileno())
        except OSError as exc:
            return f"{{written}} MiB, then {{exc.strerror}}"
        finally:
            if os.path.exists(os.path.join(where, "fill")):
                os.unlink(os.path.join(where, "fill"))
        return f"{{written}} MiB"
"""
NAMES = ("iso-a", "iso-b")


@pytest.fixture(scope="module")
def plugins(sysops: Sysops, tmp_path_factory: pytest.TempPathFactory) -> Sysops:
    for name in NAMES:
        directory = write_plugin(
            tmp_path_factory.mktemp(name), name=name, code=PROBE.format(name=name), command=f"{name}-probe"
        )
        result = sysops.run("plugin", "up", str(directory), timeout=180)
        assert result.returncode == 0, result.stderr
    return sysops


def probe(sysops: Sysops, name: str) -> dict[str, object]:
    return dict(json.loads(sysops.ok(f"{name}-probe", "--output", "json")))


def socket_mounts(home: Path) -> list[list[str]]:
    """Socket tmpfs mounts of an installation on the host: [source, target, type, options]."""
    lines = Path("/proc/self/mounts").read_text().splitlines()
    return [line.split()[:4] for line in lines if line.split()[1].startswith(f"{home.resolve()}/")]


def test_each_plugin_runs_as_its_own_uid(plugins: Sysops, engine: docker.DockerClient) -> None:
    uids = {}
    for name in NAMES:
        answer = probe(plugins, name)
        uids[name] = answer["uid"]
        assert answer["uid"] == answer["gid"] == plugin_uid(plugins.installation_id, name)
    assert uids["iso-a"] != uids["iso-b"] and PLUGIN_UID not in uids.values()
    users = {
        c.labels["sysops.plugin"]: c.attrs["Config"]["User"]
        for c in installation_containers(engine, plugins.installation_id)
    }
    assert users == {name: f"{uid}:{uid}" for name, uid in uids.items()}


def test_socket_dir_is_a_small_inert_tmpfs_of_the_plugin(plugins: Sysops) -> None:
    for name in NAMES:
        mount = probe(plugins, name)["mounts"]["/run/sysops"]  # type: ignore[index]
        assert mount["type"] == "tmpfs"
        assert {"nosuid", "nodev", "noexec", "size=1024k"} <= set(mount["options"]), mount
    host = [m for m in socket_mounts(plugins.home) if m[0] == "sysops-socket"]
    assert len(host) == 2
    for _source, target, kind, options in host:
        assert kind == "tmpfs" and {"nosuid", "nodev", "noexec", "mode=700"} <= set(options.split(","))
        assert os.stat(target).st_uid in {plugin_uid(plugins.installation_id, name) for name in NAMES}


def test_a_plugin_cannot_fill_the_host_disk_through_its_socket_dir(plugins: Sysops) -> None:
    answer = plugins.ok("iso-a-fill", "--mb", "8", "--where", "/run/sysops")
    assert answer in {"0 MiB, then No space left on device\n", "1 MiB, then No space left on device\n"}


def test_down_purge_unmounts_the_socket_dir(plugins: Sysops) -> None:
    plugins.ok("plugin", "down", "iso-b", "--purge")
    host = socket_mounts(plugins.home)
    assert len(host) == 1 and os.stat(host[0][1]).st_uid == plugin_uid(plugins.installation_id, "iso-a")
    assert plugins.ok("iso-a-probe", "--output", "json")

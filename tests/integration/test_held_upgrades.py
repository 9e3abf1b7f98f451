"""Held upgrades and the security rating on the real engine, through the CLI and the resident host.

v1 serves; v2 asking a new permission is held (exit 9, what grew, how to approve) while v1 keeps answering;
`plugin approve` shows the difference and rolls v2; v3 asking nothing more rolls without a hold; v4 asking a
network destination is held; the policy's min_rating refuses a plugin rated lower before it starts; `ls` and
`status` show the rating.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import docker
import pytest

from tests.integration.conftest import Sysops, installation_containers

pytestmark = pytest.mark.integration

NAME = "heldup"
CODE = """
from sysops_sdk import Plugin, plugin_command

class P(Plugin):
    name = "{name}"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("{command}")
    def run(self) -> str:
        return "{answer}"
"""


def write_version(directory: Path, version: str, manifest_extra: str = "", *, name: str = NAME) -> Path:
    """(Re)write the plugin at `directory` as `version`, answering `held-ping` with the version."""
    package = directory / f"{name}_plugin"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(CODE.format(name=name, command=f"{name}-ping", answer=version))
    (directory / "plugin.yaml").write_text(
        f"name: {name}\nversion: {version}\nentrypoint: {name}_plugin.plugin:P\n{manifest_extra}"
    )
    return directory


def answer(sysops: Sysops) -> str:
    return sysops.ok(f"{NAME}-ping").strip()


def test_an_upgrade_asking_more_is_held_until_approved(
    fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient
) -> None:
    sysops = fresh_sysops
    sysops.home.mkdir(parents=True, exist_ok=True)
    (sysops.home / "policy.yaml").write_text("hold_upgrades: all\n")  # a plugin from a directory: held too
    plugin = write_version(tmp_path / NAME, "1.0.0", "permissions: [state.read]\n")
    sysops.ok("plugin", "up", str(plugin))
    assert answer(sysops) == "1.0.0"
    listed = json.loads(sysops.ok("plugin", "ls", "--output", "json"))
    assert next(row["rating"] for row in listed if row["name"] == NAME) in range(1, 7)

    # v2 asks a permission beyond the host services: held, v1 keeps serving
    write_version(plugin, "2.0.0", "permissions: [state.read, deployment.execute]\n")
    refused = sysops.run("plugin", "up", str(plugin))
    assert refused.returncode == 9, refused.stderr
    assert "upgrade of heldup 1.0.0 -> 2.0.0 is held" in refused.stderr
    assert "permission deployment.execute" in refused.stderr
    assert "1.0.0 keeps serving" in refused.stderr and "`sysops plugin approve heldup`" in refused.stderr
    assert answer(sysops) == "1.0.0"
    held = sysops.home / "held" / f"{NAME}.json"
    assert stat.S_IMODE(held.stat().st_mode) == 0o600
    running = installation_containers(engine, sysops.installation_id)
    assert [c.labels.get("sysops.version") for c in running if c.labels.get("sysops.plugin") == NAME] == ["1.0.0"]

    # approve: without a terminal it needs --yes; with it, the difference first, then the roll
    no_terminal = sysops.run("plugin", "approve", NAME)
    assert no_terminal.returncode == 2 and "pass --yes" in no_terminal.stderr
    assert answer(sysops) == "1.0.0"
    approved = sysops.run("plugin", "approve", NAME, "--yes")
    assert approved.returncode == 0, approved.stderr
    assert "held upgrade of heldup: 1.0.0 (serving) -> 2.0.0" in approved.stdout
    assert "  + permission deployment.execute" in approved.stdout
    assert "  +- deployment.execute" in approved.stdout and "  +version: 2.0.0" in approved.stdout
    assert "heldup 2.0.0 ready" in approved.stderr
    assert answer(sysops) == "2.0.0"
    assert not held.exists()
    assert sysops.run("plugin", "approve", NAME, "--yes").returncode == 8  # nothing held any more

    # v3 asks nothing more than v2: not held
    write_version(plugin, "3.0.0", "permissions: [deployment.execute]\nlimits: {memory_mb: 128}\n")
    sysops.ok("plugin", "up", str(plugin))
    assert answer(sysops) == "3.0.0"

    # v4 asks a network destination: held, v3 keeps serving
    write_version(
        plugin, "4.0.0", "permissions: [deployment.execute]\nnetwork: [{host: api.example.com, ports: [443]}]\n"
    )
    refused = sysops.run("plugin", "up", str(plugin))
    assert refused.returncode == 9 and "network api.example.com:443" in refused.stderr, refused.stderr
    assert answer(sysops) == "3.0.0"

    status = sysops.ok("plugin", "status", NAME)
    rating_line = next(line for line in status.splitlines() if line.startswith("rating "))
    assert 1 <= int(rating_line.split()[1]) <= 5  # deployment.execute is privileged
    assert "privileged permissions deployment.execute" in status


def test_min_rating_refuses_a_plugin_rated_lower(
    fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient
) -> None:
    sysops = fresh_sysops
    sysops.home.mkdir(parents=True, exist_ok=True)
    (sysops.home / "policy.yaml").write_text("min_rating: 5\n")
    low = write_version(tmp_path / "lowrated", "1.0.0", "permissions: [system.deploy]\n", name="lowrated")
    refused = sysops.run("plugin", "up", str(low))
    assert refused.returncode == 9, refused.stderr
    assert "lowrated 1.0.0 is rated" in refused.stderr and "below the policy's min_rating 5" in refused.stderr
    assert "privileged permissions system.deploy" in refused.stderr
    running = installation_containers(engine, sysops.installation_id)
    assert not [c for c in running if c.labels.get("sysops.plugin") == "lowrated"]
    (sysops.home / "policy.yaml").write_text("min_rating: 1\n")
    sysops.ok("plugin", "up", str(low))
    assert sysops.ok("lowrated-ping").strip() == "1.0.0"

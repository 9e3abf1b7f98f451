"""Plugin dependencies on the real Docker engine (issue 11 part B): `plugin up` starts what a plugin requires
first, each ready before the next; a missing or conflicting requirement is refused (exit 7) before any container
starts; `plugin down` of a required plugin is refused / `--cascade` / `--force`; two major versions run side by
side, and a version built side by side starts again under the plain name when that is free; a plugin asks the
host whether its dependencies run (SDK `is_plugin_available` / `check_dependencies`).

Small plugins are written in the test's tmp directory; the required ones are found by discovery
(SYSOPS_PLUGIN_PATH). Each test has its own installation (fresh_sysops), removed afterwards with every container,
image and volume it made.
"""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest

from tests.integration.conftest import Sysops, installation_containers, plugin_code, write_plugin

pytestmark = pytest.mark.integration

SDK_PROBE_CODE = """
from sysops_sdk import Plugin, plugin_command

class P(Plugin):
    name = "{name}"
    version = "1.0.0"
    requires = ["a>=1"]

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("probe")
    def probe(self) -> str:
        return " ".join(str(answer) for answer in (
            self.is_plugin_available("a"),
            self.is_plugin_available("a", ">=2"),
            self.is_plugin_available("nothing"),
            self.check_dependencies(),
        ))
"""


def _plugin(
    root: Path,
    directory: str,
    name: str,
    version: str = "1.0.0",
    *,
    requires: tuple[str, ...] = (),
    conflicts: tuple[str, ...] = (),
    code: str = "",
) -> Path:
    """A plugin in root/directory whose command is `<name>-ping` (so plugins never claim one command)."""
    extra = "".join(
        f"{key}: {json.dumps(list(values))}\n"
        for key, values in (("requires", requires), ("conflicts", conflicts))
        if values
    )
    command = f"{name}-ping-v{version.split('.')[0]}"
    path = write_plugin(
        root / directory,
        name=name,
        code=code or plugin_code(name, command=command),
        manifest_extra=extra,
        command=command,
    )
    manifest = path / "plugin.yaml"
    manifest.write_text(manifest.read_text().replace("version: 1.0.0", f"version: {version}"))
    return path


def _with_path(sysops: Sysops, plugins: Path) -> Sysops:
    """The same installation, with `plugins` as a discovery directory."""
    return Sysops(home=sysops.home, env={**sysops.env, "SYSOPS_PLUGIN_PATH": str(plugins)})


def _events(sysops: Sysops) -> list[tuple[str, str]]:
    lines = sysops.ok("events", "-o", "json").splitlines()
    return [(event["plugin"], event["kind"]) for event in map(json.loads, lines)]


def _listed(sysops: Sysops) -> dict[str, tuple[str, str]]:
    return {row["name"]: (row["version"], row["state"]) for row in json.loads(sysops.ok("plugin", "ls", "-o", "json"))}


def _plugin_containers(engine: docker.DockerClient, sysops: Sysops) -> list[str]:
    return sorted(c.labels.get("sysops.plugin", "") for c in installation_containers(engine, sysops.installation_id))


def test_up_starts_the_chain_in_order_and_down_is_refused_cascaded_or_forced(
    fresh_sysops: Sysops, engine: docker.DockerClient, tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    _plugin(plugins, "a", "a")
    _plugin(plugins, "b", "b", requires=("a>=1",))
    c_dir = _plugin(tmp_path / "own", "c", "c", requires=("b",))
    sysops = _with_path(fresh_sysops, plugins)

    result = sysops.run("plugin", "up", str(c_dir))
    assert result.returncode == 0, result.stderr
    assert "plan: a 1.0.0: start" in result.stderr and "plan: c 1.0.0: start" in result.stderr
    events = _events(sysops)
    order = [events.index((name, kind)) for name in "abc" for kind in ("loaded", "active")]
    assert order == sorted(order), f"not started one after the other, each ready first: {events}"
    assert _listed(sysops) == {"a": ("1.0.0", "Active"), "b": ("1.0.0", "Active"), "c": ("1.0.0", "Active")}

    refused = sysops.run("plugin", "down", "a")
    assert refused.returncode == 7
    assert (
        refused.stderr.count("\n") == 1
        and "plugin a is required by running plugins: c 1.0.0, b 1.0.0" in refused.stderr
    )
    assert _plugin_containers(engine, sysops) == ["a", "b", "c"]

    sysops.ok("plugin", "down", "a", "--cascade")
    unloaded = [plugin for plugin, kind in _events(sysops) if kind == "unloaded"]
    assert unloaded == ["c", "b", "a"]
    assert _plugin_containers(engine, sysops) == []

    again = fresh_sysops.run("plugin", "up", str(c_dir))  # no discovery: a and b only as built revisions
    assert again.returncode == 0, again.stderr
    assert "plan: a 1.0.0: start (revision 1 of a)" in again.stderr
    assert _plugin_containers(engine, sysops) == ["a", "b", "c"]
    sysops.ok("plugin", "down", "b", "--force")
    assert _plugin_containers(engine, sysops) == ["a", "c"]
    status = json.loads(sysops.ok("plugin", "status", "c", "-o", "json"))
    assert status["state"] == "Active" and len(status["missing"]) == 1 and "c 1.0.0 requires b" in status["missing"][0]


def test_a_missing_requirement_or_a_conflict_is_refused_before_anything_starts(
    fresh_sysops: Sysops, engine: docker.DockerClient, tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    _plugin(plugins, "a", "a")
    _plugin(plugins, "f", "f", requires=("absent>=2",))
    e_dir = _plugin(tmp_path / "own", "e", "e", requires=("f",))
    sysops = _with_path(fresh_sysops, plugins)

    missing = sysops.run("plugin", "up", str(e_dir))
    assert missing.returncode == 7, missing.stderr
    [line] = missing.stderr.splitlines()
    assert "absent" in line and "f 1.0.0 requires absent>=2" in line, line
    assert _plugin_containers(engine, sysops) == []

    sysops.ok("plugin", "up", str(plugins / "a"))
    g_dir = _plugin(tmp_path / "own", "g", "g", conflicts=("a",))
    conflict = sysops.run("plugin", "up", str(g_dir))
    assert conflict.returncode == 7
    assert conflict.stderr.count("\n") == 1 and "conflicts" in conflict.stderr and "g 1.0.0" in conflict.stderr
    assert _plugin_containers(engine, sysops) == ["a"]


def test_two_major_versions_run_side_by_side(fresh_sysops: Sysops, engine: docker.DockerClient, tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    _plugin(plugins, "h1", "h", "1.0.0")
    _plugin(plugins, "h2", "h", "2.0.0")
    old_user = _plugin(tmp_path / "own", "i", "i", requires=("h<2",))
    new_user = _plugin(tmp_path / "own", "j", "j", requires=("h>=2",))
    sysops = _with_path(fresh_sysops, plugins)

    sysops.ok("plugin", "up", str(new_user))
    result = sysops.run("plugin", "up", str(old_user))
    assert result.returncode == 0, result.stderr
    assert "plan: h 1.0.0 as h--v1: start" in result.stderr
    listed = _listed(sysops)
    assert listed["h"] == ("2.0.0", "Active") and listed["h--v1"] == ("1.0.0", "Active")
    assert "h--v1" in sysops.ok("plugin", "ls")
    assert sysops.ok("h-ping-v2").strip() == "pong"  # the version under the plain name serves its commands
    assert sysops.run("h-ping-v1").returncode != 0  # a side-by-side version's commands are not routed

    sysops.ok("plugin", "down", "h", "--cascade")
    sysops.ok("plugin", "down", "h--v1", "--cascade")
    again = fresh_sysops.run("plugin", "up", str(old_user))  # no discovery: h 1.0.0 only as h--v1's revision
    assert again.returncode == 0, again.stderr
    assert "plan: h 1.0.0: start (revision 1 of h--v1)" in again.stderr  # the plain name is free: it takes it
    listed = _listed(sysops)
    assert listed["h"] == ("1.0.0", "Active") and "h--v1" not in listed
    assert _plugin_containers(engine, sysops) == ["h", "i"]
    assert sysops.ok("h-ping-v1").strip() == "pong"  # under the plain name its commands are routed


def test_a_plugin_asks_the_host_about_its_dependencies(
    fresh_sysops: Sysops, engine: docker.DockerClient, tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    _plugin(plugins, "a", "a", "1.5.0")
    probe = _plugin(tmp_path / "own", "k", "k", requires=("a>=1",), code=SDK_PROBE_CODE.format(name="k"))
    sysops = _with_path(fresh_sysops, plugins)
    sysops.ok("plugin", "up", str(probe))
    assert sysops.ok("probe").strip() == "True False False True"
    sysops.ok("plugin", "down", "a", "--force")
    assert sysops.ok("probe").strip() == "False False False False"

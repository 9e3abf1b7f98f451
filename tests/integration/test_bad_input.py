"""Every bad input gets one clear line naming the file, key or plugin, a stable exit code, no traceback."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from tests.integration.conftest import Sysops, installation_containers, plugin_code, write_plugin

pytestmark = pytest.mark.integration


def _assert_clean_error(result: object, code: int, *fragments: str) -> None:
    assert result.returncode == code, result.stderr  # type: ignore[attr-defined]
    stderr: str = result.stderr  # type: ignore[attr-defined]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in stderr, stderr


def _containers(engine: docker.DockerClient, sysops: Sysops) -> list[str]:
    return [c.name for c in installation_containers(engine, sysops.installation_id)]


def test_invalid_and_missing_manifest(fresh_sysops: Sysops, tmp_path: Path) -> None:
    plugin = write_plugin(tmp_path / "p", name="good", code=plugin_code("good"), manifest_extra="limits: {memory: 5}\n")
    _assert_clean_error(
        fresh_sysops.run("plugin", "up", str(plugin)), 4, f"{plugin}/plugin.yaml", "unknown key 'limits.memory'"
    )
    (plugin / "plugin.yaml").unlink()
    _assert_clean_error(fresh_sysops.run("plugin", "up", str(plugin)), 4, f"{plugin}/plugin.yaml: file not found")


def test_missing_entrypoint_module_and_syntax_error(fresh_sysops: Sysops, tmp_path: Path) -> None:
    plugin = write_plugin(tmp_path / "p", name="good", code=plugin_code("good"))
    (plugin / "plugin.yaml").write_text("name: good\nversion: 1.0.0\nentrypoint: good_plugin.missing:P\n")
    _assert_clean_error(
        fresh_sysops.run("plugin", "up", str(plugin)), 4, "entrypoint 'good_plugin.missing:P' not found"
    )
    (plugin / "plugin.yaml").write_text("name: good\nversion: 1.0.0\nentrypoint: good_plugin.plugin:P\n")
    (plugin / "good_plugin" / "plugin.py").write_text("def broken(:\n")
    _assert_clean_error(fresh_sysops.run("plugin", "up", str(plugin)), 4, "good_plugin/plugin.py:1: ", "SyntaxError")


def test_entrypoint_that_does_not_import(fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient) -> None:
    code = "import no_such_dependency_xyz\n" + plugin_code("imports")
    plugin = write_plugin(tmp_path / "p", name="imports", code=code)
    _assert_clean_error(
        fresh_sysops.run("plugin", "up", str(plugin)),
        6,
        "plugin 'imports' 1.0.0 failed to start: entrypoint 'imports_plugin.plugin:P' does not import",
        "ModuleNotFoundError",
    )
    assert _containers(engine, fresh_sysops) == []


def test_initialize_crash_is_failed_with_log_lines(
    fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient
) -> None:
    code = plugin_code("crashy", initialize="raise RuntimeError('cannot reach the database')")
    plugin = write_plugin(tmp_path / "p", name="crashy", code=code)
    result = fresh_sysops.run("plugin", "up", str(plugin))
    _assert_clean_error(result, 6, "initialize() of plugin 'crashy' failed: RuntimeError: cannot reach the database")
    assert "last log lines:" in result.stderr
    status = fresh_sysops.run("plugin", "status", "crashy")
    assert status.returncode == 0
    assert "state         Failed" in status.stdout and "cannot reach the database" in status.stdout
    assert _containers(engine, fresh_sysops) == []


def test_command_clash_is_refused_naming_both(fresh_sysops: Sysops, tmp_path: Path) -> None:
    first = write_plugin(tmp_path / "a", name="first", code=plugin_code("first", answer="from first"))
    second = write_plugin(tmp_path / "b", name="second", code=plugin_code("second", answer="from second"))
    fresh_sysops.ok("plugin", "up", str(first))
    _assert_clean_error(
        fresh_sysops.run("plugin", "up", str(second)),
        7,
        "command 'ping' of plugin 'second' is already provided by plugin 'first'",
    )
    assert fresh_sysops.ok("ping") == "from first\n"


def test_name_clash_between_plugin_directories(fresh_sysops: Sysops, tmp_path: Path) -> None:
    first = write_plugin(tmp_path / "a", name="same", code=plugin_code("same", command="one"))
    second = write_plugin(tmp_path / "b", name="same", code=plugin_code("same", command="two"))
    fresh_sysops.ok("plugin", "up", str(first))
    _assert_clean_error(fresh_sysops.run("plugin", "up", str(second)), 4, "plugin name 'same' is already used by")
    assert fresh_sysops.ok("one") == "pong\n"


def test_engine_not_reachable(fresh_sysops: Sysops, tmp_path: Path) -> None:
    plugin = write_plugin(tmp_path / "p", name="good", code=plugin_code("good"))
    result = fresh_sysops.run("plugin", "up", str(plugin), env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})
    _assert_clean_error(result, 5, "Docker engine not reachable", "start it")

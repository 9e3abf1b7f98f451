"""The SDK's test kit in-process (sysops_sdk.pytest_plugin, the `plugin` fixture), as a plugin author runs it.

Each case writes a small plugin and its tests into a temporary directory and runs pytest on them in a
subprocess, so the kit is loaded the way authors get it: through the SDK's `pytest11` entry point.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

MANIFEST = """\
name: kit-sample
version: 1.0.0
description: A plugin for the test kit's tests
entrypoint: kit_sample.plugin:SamplePlugin
types: [command]
config:
  threshold: {type: float, default: 90.0, help: Alert above this}
"""

PLUGIN = """\
from sysops_sdk import Event, Plugin, argument, on_event, option, plugin_command


class SamplePlugin(Plugin):
    name = "kit-sample"

    def initialize(self) -> None:
        self.seen = []

    def cleanup(self) -> None:
        pass

    @plugin_command("greet")
    @argument("name", help="who")
    @option("--shout", is_flag=True, help="capitals")
    @option("--dry-run", is_flag=True, help="say so")
    def greet(self, name: str, shout: bool = False, dry_run: bool = False) -> str:
        text = f"Hello, {name}!" + (" (dry run)" if dry_run else "")
        return text.upper() if shout else text

    @plugin_command("check")
    @argument("value", help="measured")
    def check(self, value: float) -> dict:
        threshold = float(self.get_service("config").get("threshold"))
        self.get_service("metrics").gauge("sample_value", help="last").set(value)
        return {"value": value, "threshold": threshold, "alerting": value > threshold}

    @plugin_command("seen")
    def show_seen(self) -> list:
        return self.seen

    @on_event("deploy.finished")
    def on_deploy(self, event: Event) -> None:
        self.seen.append(event.payload["service"])
"""

TESTS = """\
def test_arguments_and_options(plugin):
    result = plugin.invoke("greet", "World", shout=True, dry_run=True)
    assert result.exit_code == 0 and result.text == "HELLO, WORLD! (DRY RUN)"
    assert plugin.mode == "inprocess" and plugin.name == "kit-sample"


def test_config_defaults_and_host_config(plugin):
    assert plugin.invoke("check", 95).data["alerting"] is True
    plugin.host.config["threshold"] = 99
    assert plugin.invoke("check", 95).data == {"value": 95, "threshold": 99.0, "alerting": False}


def test_metric(plugin):
    assert plugin.metric("sample_value") is None
    plugin.invoke("check", 42)
    assert plugin.metric("sample_value") == 42.0


def test_publish(plugin):
    plugin.publish("deploy.finished", {"service": "web"})
    assert plugin.invoke("seen").data == ["web"]


def test_refusals(plugin):
    assert plugin.invoke("greet", "a", "b").exit_code == 2
    unknown = plugin.invoke("greet", "a", loud=True)
    assert unknown.exit_code == 2 and "no such option loud" in unknown.error
    assert plugin.invoke("nope").exit_code == 2


def test_fresh_plugin_per_test(plugin):
    assert plugin.invoke("seen").data == []
"""


def write_plugin(directory: Path, tests: str = TESTS) -> Path:
    (directory / "kit_sample").mkdir(parents=True)
    (directory / "kit_sample" / "__init__.py").write_text("")
    (directory / "kit_sample" / "plugin.py").write_text(PLUGIN)
    (directory / "plugin.yaml").write_text(MANIFEST)
    (directory / "tests").mkdir()
    (directory / "tests" / "test_sample.py").write_text(tests)
    return directory


def run_pytest(directory: Path, *arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:cov", *arguments],
        cwd=directory,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_kit_runs_a_plugin_in_process(tmp_path: Path) -> None:
    done = run_pytest(write_plugin(tmp_path / "sample"), "tests")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 passed" in done.stdout


def test_without_the_kit_there_is_no_plugin_fixture(tmp_path: Path) -> None:
    done = run_pytest(write_plugin(tmp_path / "sample"), "tests", "-p", "no:sysops")
    assert done.returncode != 0
    assert "fixture 'plugin' not found" in done.stdout


def test_a_failing_assertion_fails_the_run(tmp_path: Path) -> None:
    failing = 'def test_wrong(plugin):\n    assert plugin.invoke("greet", "World").text == "Bye"\n'
    done = run_pytest(write_plugin(tmp_path / "sample", failing), "tests")
    assert done.returncode == 1
    assert "1 failed" in done.stdout


def test_tests_outside_a_plugin_directory_say_so(tmp_path: Path) -> None:
    (tmp_path / "test_alone.py").write_text("def test_x(plugin):\n    pass\n")
    done = run_pytest(tmp_path, "test_alone.py")
    assert done.returncode == 1
    assert "sysops test kit: no plugin.yaml in" in done.stdout
    assert "Traceback" not in done.stdout


def test_the_ini_option_names_the_plugin_directory(tmp_path: Path) -> None:
    write_plugin(tmp_path / "sample")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "pytest.ini").write_text("[pytest]\nsysops_plugin_dir = ../sample\n")
    (elsewhere / "test_there.py").write_text(
        'def test_x(plugin):\n    assert plugin.invoke("greet", "Ini").text == "Hello, Ini!"\n'
    )
    done = run_pytest(elsewhere, "test_there.py")
    assert done.returncode == 0, done.stdout


def test_an_unknown_mode_is_a_usage_error(tmp_path: Path) -> None:
    done = run_pytest(write_plugin(tmp_path / "sample"), "tests", env={"SYSOPS_TEST_MODE": "vm"})
    assert done.returncode == 4
    assert "SYSOPS_TEST_MODE='vm'" in done.stderr


def test_a_plugin_class_that_disagrees_with_its_types_is_refused(tmp_path: Path) -> None:
    directory = write_plugin(tmp_path / "sample")
    (directory / "plugin.yaml").write_text(MANIFEST.replace("types: [command]", "types: [service]"))
    done = run_pytest(directory, "tests")
    assert done.returncode == 1
    assert "does not start" in done.stdout and "ServicePlugin" in done.stdout


@pytest.mark.parametrize("example", sorted(path.parent.name for path in (ROOT / "examples").glob("*/tests")))
def test_every_example_passes_its_own_tests_in_process(example: str) -> None:
    done = run_pytest(ROOT / "examples" / example, "tests")
    assert done.returncode == 0, done.stdout + done.stderr

"""`sysops plugin ls` answered by the host's call socket without the typer app (issue 15 item 3: <= 0.3 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from sysops.cli import plugin_list
from sysops.cli.host_call import HostCall
from sysops.cli.main import main
from sysops.core.orchestrator import Orchestrator
from sysops.host.call_server import start_call_server
from sysops.host.paths import host_paths
from sysops.settings import Settings

from tests.unit.test_rollout import _target


@pytest.fixture
def listing_host(control_host: Orchestrator, settings: Settings) -> Iterator[Orchestrator]:
    """A host with one plugin up whose call socket answers `plugins` (as host/serving.py wires it)."""
    control_host.rollout.roll(_target("echo-v1"))
    calls = start_call_server(
        settings, host_paths(settings).call_socket, orchestrators=lambda: Orchestrator(settings, control_host.driver)
    )
    yield control_host
    calls.stop()


@pytest.mark.parametrize("output", ["text", "wide", "json", "yaml"])
def test_the_fast_path_prints_what_the_typer_command_prints(
    listing_host: Orchestrator, output: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["plugin", "ls", "--output", output]) == 0
    fast = capsys.readouterr().out
    monkeypatch.setattr(plugin_list, "fast_plugin_ls", lambda arguments: False)
    assert main(["plugin", "ls", "--output", output]) == 0
    assert fast == capsys.readouterr().out
    assert "echo" in fast


def test_plugin_ls_asks_the_call_socket_without_importing_typer(listing_host: Orchestrator) -> None:
    script = (
        "import sys; from sysops.cli.main import main; code = main(['plugin', 'ls', '-o', 'json']); "
        "print(sorted(m for m in ('typer', 'grpc', 'pydantic', 'docker') if m in sys.modules), file=sys.stderr); "
        "sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [row["name"] for row in json.loads(done.stdout)] == ["echo"]
    assert done.stderr.strip() == "[]"


def test_a_host_that_does_not_answer_plugins_gets_the_typer_command(
    control_host: Orchestrator, call_host: object, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    control_host.rollout.roll(_target("echo-v1"))
    with HostCall(settings) as host:
        assert host.plugins() is None  # a call server without orchestrators answers "unknown request"
    assert main(["plugin", "ls", "-o", "json"]) == 0
    assert [row["name"] for row in json.loads(capsys.readouterr().out)] == ["echo"]


@pytest.mark.parametrize(
    ("arguments", "output"),
    [
        ([], "text"),
        (["-o", "json"], "json"),
        (["-owide"], "wide"),
        (["--output=yaml"], "yaml"),
        (["--outdated"], None),
        (["--help"], None),
        (["-o", "xml"], None),
        (["-o"], None),
    ],
)
def test_only_what_the_fast_path_prints_is_taken_from_the_command_line(
    arguments: list[str], output: str | None
) -> None:
    assert plugin_list.listing_output(arguments) == output

"""`sysops plugin ls` through the host's call socket (cli/plugin_ls.py): the same rows as the typer command,
without importing typer's app; anything but an output format, and a host that does not know `list`, go the
full way; plugin-controlled text is escaped in the table."""

from __future__ import annotations

import json
import sys

import pytest
from sysops.cli.host_call import HostCall, HostUnawareError
from sysops.cli.main import main
from sysops.cli.plugin_ls import _output_format, fast_plugin_ls
from sysops.core.orchestrator import Orchestrator
from sysops.errors import ExitCode, SysopsError
from sysops.host import launcher
from sysops.host.call_server import start_call_server
from sysops.host.paths import host_paths
from sysops.settings import Settings

from tests.unit.test_rollout import _target


@pytest.fixture
def listed(control_host: Orchestrator) -> Orchestrator:
    control_host.rollout.roll(_target("echo-v1"))
    control_host.store.set_last_error("echo", "bad\x1b[31m red\nsecond line")
    return control_host


def _full_cli(argv: list[str]) -> int:
    from sysops.cli.app import build_cli

    code = build_cli(argv).main(argv, prog_name="sysops", standalone_mode=False)
    return int(code or 0)


@pytest.mark.parametrize("output", ["json", "yaml", "text", "wide"])
def test_plugin_ls_is_answered_by_the_call_socket_with_the_full_commands_rows(
    listed: Orchestrator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, output: str
) -> None:
    argv = ["plugin", "ls", "-o", output]
    assert _full_cli(argv) == 0
    full = capsys.readouterr().out
    with monkeypatch.context() as patched:
        patched.setitem(sys.modules, "sysops.cli.app", None)
        assert main(argv) == 0, capsys.readouterr().err
    fast = capsys.readouterr().out
    if output == "json":
        assert json.loads(fast) == json.loads(full)
        assert json.loads(fast)[0]["last_error"] == "bad\x1b[31m red\nsecond line"  # JSON escapes it itself
    else:
        assert fast == full
    if output == "wide":
        assert "\x1b" not in fast and "bad\\x1b[31m red" in fast  # escaped, on one line


def test_anything_but_an_output_format_goes_the_full_way(listed: Orchestrator) -> None:
    assert _output_format([]) == "text"
    assert _output_format(["-o", "json"]) == _output_format(["--output=json"]) == "json"
    for options in (["--outdated"], ["--help"], ["-o", "bogus"], ["-o"], ["-o", "json", "--outdated"], ["x"]):
        assert _output_format(options) is None
        assert fast_plugin_ls(options) is None


def test_a_bad_format_is_still_the_full_commands_usage_error(
    listed: Orchestrator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plugin", "ls", "-o", "bogus"]) == 2
    assert "'bogus' is not one of" in capsys.readouterr().err


def test_a_host_that_does_not_know_list_leaves_it_to_the_full_cli(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    older = start_call_server(settings, host_paths(settings).call_socket)  # no lister: as before `list` existed
    monkeypatch.setattr(launcher, "ensure_host", host_paths)  # it runs (as far as this test is concerned)
    try:
        settings.store_path.touch()
        with HostCall(settings) as host, pytest.raises(HostUnawareError):
            host.plugins()
        assert fast_plugin_ls([]) is None
    finally:
        older.stop()


@pytest.mark.parametrize(
    ("failure", "code", "said"),
    [
        (ConnectionRefusedError("engine socket refused"), ExitCode.ENGINE_UNAVAILABLE, "ConnectionRefusedError"),
        (RuntimeError("a bug"), ExitCode.COMMAND_FAILED, "internal error"),
    ],
)
def test_a_failing_list_is_one_error_naming_its_cause(
    settings: Settings, failure: Exception, code: ExitCode, said: str
) -> None:
    def lister() -> str:
        raise failure

    host = start_call_server(settings, host_paths(settings).call_socket, lister=lister)
    try:
        with HostCall(settings) as call, pytest.raises(SysopsError) as raised:
            call.plugins()
        assert raised.value.exit_code == code
        assert "cannot list the plugins" in raised.value.message and said in raised.value.message
        with HostCall(settings) as call:  # the host's worker lives on
            assert call.routes() == []
    finally:
        host.stop()

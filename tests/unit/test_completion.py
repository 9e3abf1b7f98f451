"""Shell completion (cli/completion.py): scripts, and the shell's callback answered from the stored routes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sysops.cli.main import main
from sysops.core.orchestrator import Orchestrator
from sysops.host.paths import host_paths
from sysops.runtime.fake import FakeDriver
from sysops.settings import Settings

from tests.unit.test_rollout import _target


@pytest.fixture
def stored(orchestrator: Orchestrator) -> FakeDriver:
    """echo-v1 rolled out: its routes are in the store; no host serves them (nothing answers a call)."""
    orchestrator.rollout.roll(_target("echo-v1"))
    assert isinstance(orchestrator.driver, FakeDriver)
    return orchestrator.driver


def _complete(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], line: str, shell: str = "bash"
) -> list[str]:
    """What `sysops` answers a shell completing `line` (the word under the cursor is the last, maybe empty)."""
    words = line.split(" ")
    monkeypatch.setenv("_SYSOPS_COMPLETE", f"{shell}_complete")
    monkeypatch.setenv("COMP_WORDS", line)
    # bash and zsh say which word is completed; fish says the word itself
    monkeypatch.setenv("COMP_CWORD", words[-1] if shell == "fish" else str(len(words) - 1))
    assert main([]) == 0
    return [answer for answer in capsys.readouterr().out.splitlines() if answer]


def test_builtins_and_plugin_commands_complete(
    stored: FakeDriver, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _complete(monkeypatch, capsys, "sysops ec") == ["plain,echo"]
    assert "plain,plugin" in _complete(monkeypatch, capsys, "sysops p")
    assert _complete(monkeypatch, capsys, "sysops plugin l") == ["plain,ls", "plain,logs"]


def test_a_plugin_commands_options_complete(
    stored: FakeDriver, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _complete(monkeypatch, capsys, "sysops echo hi --u") == ["plain,--upper"]
    assert _complete(monkeypatch, capsys, "sysops echo hi --output ") == ["plain,text", "plain,json"]


def test_listing_output_formats_complete(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    formats = ["plain,text", "plain,json", "plain,yaml", "plain,wide"]
    assert _complete(monkeypatch, capsys, "sysops plugin ls -o ") == formats


def test_zsh_and_fish_answer_too(
    stored: FakeDriver, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _complete(monkeypatch, capsys, "sysops ec", "zsh") == ["plain", "echo", "_"]
    assert _complete(monkeypatch, capsys, "sysops ec", "fish") == ["plain,echo"]


def test_completion_starts_no_host_and_no_instance(
    stored: FakeDriver, settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    instances = set(stored.instances)
    # conftest's no_real_host fails the test if anything tries to start a host
    assert _complete(monkeypatch, capsys, "sysops echo --") == ["plain,--upper", "plain,--output", "plain,--help"]
    assert set(stored.instances) == instances
    paths = host_paths(settings)
    assert not paths.record.exists() and not paths.call_socket.exists() and not paths.control_socket.exists()


def test_nothing_up_yet_completes_the_builtins_and_creates_nothing(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _complete(monkeypatch, capsys, "sysops comp") == ["plain,completion"]
    assert not home.exists()


def test_a_remote_context_completes_builtins_without_a_connection(
    stored: FakeDriver, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SYSOPS_SERVER", "203.0.113.1:1")  # TEST-NET: a connection attempt would hang, not fail
    assert _complete(monkeypatch, capsys, "sysops ec") == []
    assert _complete(monkeypatch, capsys, "sysops plugin st") == ["plain,status"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_the_shell_script(shell: str, home: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sysops.cli.main", "completion", shell], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "_SYSOPS_COMPLETE" in result.stdout and f"{shell}_complete" in result.stdout


def test_bash_script_completes_a_plugin_command_in_bash(stored: FakeDriver, home: Path) -> None:
    """The script bash sources, driven by bash itself: Tab after `sysops ec` offers echo."""
    sysops = Path(sys.executable).parent / "sysops"  # the console script, as a shell finds it
    script = subprocess.run([sysops, "completion", "bash"], capture_output=True, text=True, timeout=60).stdout
    driver = f'{script}\nCOMP_WORDS=(sysops ec); COMP_CWORD=1; _sysops_completion {sysops}; echo "${{COMPREPLY[@]}}"\n'
    result = subprocess.run(["bash", "-c", driver], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["echo"]


def test_plugin_name_arguments_complete_from_the_store(
    stored: FakeDriver, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in ("status", "down", "logs", "history", "rollback"):
        assert _complete(monkeypatch, capsys, f"sysops plugin {command} e") == ["plain,echo"], command
    assert _complete(monkeypatch, capsys, "sysops plugin status x") == []


def _store_route(settings: Settings, command: str, spec: bytes) -> None:
    """Write a route straight into the store, as a damaged or hostile store would hold it."""
    import sqlite3

    with sqlite3.connect(settings.store_path) as db:
        db.execute("INSERT INTO routes (command, plugin, spec) VALUES (?, ?, ?)", (command, "evil", spec))
    db.close()


def _spec(**param: object) -> bytes:
    from sysops_sdk.protocol.v1 import plugin_pb2 as pb

    return pb.CommandSpec(help="evil", params=[pb.ParamSpec(**param)]).SerializeToString()  # type: ignore[arg-type]


def test_a_damaged_route_is_skipped_and_nothing_goes_to_stderr(
    stored: FakeDriver, settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sysops_sdk.protocol.v1 import plugin_pb2 as pb

    _store_route(settings, "zcorrupt", b"\xff\xff\xff\xff\x0a")  # not a CommandSpec
    # a name click refuses when the command is built
    _store_route(settings, "zbadparam", _spec(name="nodash", kind=pb.ParamSpec.OPTION, flags=["nodash"]))
    assert _complete(monkeypatch, capsys, "sysops plugin status ") == ["plain,echo"]
    assert _complete(monkeypatch, capsys, "sysops ec") == ["plain,echo"]
    assert capsys.readouterr().err == ""


def test_any_failure_completes_the_builtins(
    stored: FakeDriver, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sysops.cli import completion

    def broken() -> list[object]:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(completion, "stored_shapes", broken)
    assert _complete(monkeypatch, capsys, "sysops plugin st") == ["plain,status"]
    assert capsys.readouterr().err == ""


def test_hostile_words_are_not_offered_and_help_stays_one_line(
    stored: FakeDriver, settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sysops_sdk.protocol.v1 import plugin_pb2 as pb

    _store_route(settings, "zap$(touch${IFS}/tmp/pwned)", _spec(name="x", kind=pb.ParamSpec.ARGUMENT))
    hostile_choices = ["a$(touch /tmp/pwned)", "*", "ok"]
    _store_route(
        settings,
        "zchoice",
        _spec(
            name="mode",
            kind=pb.ParamSpec.OPTION,
            flags=["--mode"],
            type="choice",
            choices=hostile_choices,
            help="fine\n--INJECTED\nplain",
        ),
    )
    assert _complete(monkeypatch, capsys, "sysops z") == ["plain,zchoice"]
    assert _complete(monkeypatch, capsys, "sysops zchoice --mode ") == ["plain,ok"]
    zsh = _complete(monkeypatch, capsys, "sysops zchoice --m", "zsh")
    assert zsh == ["plain", "--mode", "fine\\x0a--INJECTED\\x0aplain"]
    fish = _complete(monkeypatch, capsys, "sysops zchoice --m", "fish")
    assert fish == ["plain,--mode\tfine\\x0a--INJECTED\\x0aplain"]

"""The routed fast path (`sysops echo hello`) imports neither rich nor typer, click or PyYAML (issue 14 item 3).

rich is imported only to draw a table or progress on a terminal (cli/output.py, cli/progress.py); a routed
command whose result is text never needs it, even on a terminal. Measured in a fresh interpreter, whose
stdout is a pipe or a pseudo-terminal, calling the in-process host of the fixtures over its real socket.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from sysops.core.orchestrator import Orchestrator
from sysops.host.call_server import CallServer

from tests.unit.test_rollout import _target

HEAVY = "{'rich', 'typer', 'click', 'yaml'}"


@pytest.fixture
def serving(orchestrator: Orchestrator, call_host: CallServer) -> None:
    orchestrator.rollout.roll(_target("echo-v1"))


def _imported(home: Path, argv: list[str], *, terminal: bool) -> tuple[str, str]:
    """What a fresh `main(argv)` printed, and the heavy modules it imported (as a Python set's repr)."""
    code = (
        f"import sys; from sysops.cli.main import main; code = main({argv!r}); sys.stdout.flush(); "
        f"sys.stderr.write(repr(sorted({HEAVY} & set(sys.modules)))); sys.exit(code)"
    )
    env = {**os.environ, "SYSOPS_HOME": str(home), "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    if not terminal:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout, done.stderr
    leader, follower = pty.openpty()
    try:
        process = subprocess.run(
            [sys.executable, "-c", code], env=env, stdout=follower, stderr=subprocess.PIPE, text=True, timeout=60
        )
        shown = os.read(leader, 65536).decode()
    finally:
        os.close(leader)
        os.close(follower)
    assert process.returncode == 0, process.stderr
    return shown, process.stderr


def test_a_routed_call_to_a_pipe_imports_nothing_heavy(serving: None, home: Path) -> None:
    shown, imported = _imported(home, ["echo", "hello"], terminal=False)
    assert shown == "v1:hello\n" and imported == "[]"


def test_a_routed_text_result_on_a_terminal_imports_nothing_heavy(serving: None, home: Path) -> None:
    shown, imported = _imported(home, ["echo", "hello"], terminal=True)
    assert "v1:hello" in shown and imported == "[]"


def test_a_routed_table_on_a_terminal_is_drawn_by_rich(serving: None, home: Path) -> None:
    """The one case that needs rich imports it: a dict result shown as a table on a terminal."""
    shown, imported = _imported(home, ["calls"], terminal=True)
    assert "rich" in imported and "typer" not in imported and "\x1b[1m" in shown

"""Batched streamed lines through the whole local path: CLI → host call socket → router → plugin (fake driver).

What the CLI prints to a pipe is byte for byte the lines the generator yielded; on a terminal each line of a
batch is escaped and the newlines stay; a generator that fails after its lines exits 1 with its error; a slow
generator's line reaches the CLI's stdout before the generator produces the next one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sysops.cli.main import main
from sysops.core.orchestrator import Orchestrator
from sysops.host.call_server import CallServer
from sysops_sdk import Plugin, option, plugin_command

from tests.unit.test_call_socket import ATTACK, _Terminal
from tests.unit.test_rollout import _target


class Lines(Plugin):
    name = "lines"
    version = "1.0.0"
    description = "streaming through the CLI"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("numbers")
    @option("--count", help="How many lines")
    def numbers(self, count: int = 10) -> Iterator[str]:
        for number in range(count):
            yield f"number {number}" if number % 100 else ""

    @plugin_command("numbers-then-fail")
    def numbers_then_fail(self) -> Iterator[str]:
        for number in range(5000):
            yield f"number {number}"
        raise ValueError("ran out of numbers")

    @plugin_command("hostile")
    def hostile(self) -> Iterator[str]:
        for number in range(2000):
            yield f"{number} {ATTACK}"

    @plugin_command("drip")
    def drip(self) -> Iterator[str]:
        yield "first"
        yield f"second {time.time():.6f}"
        time.sleep(2.5)
        yield f"third {time.time():.6f}"


@pytest.fixture
def plugin_classes() -> Iterator[dict[str, type[Plugin]]]:
    yield {"lines": Lines}


@pytest.fixture
def host(orchestrator: Orchestrator, call_host: CallServer) -> Iterator[CallServer]:
    orchestrator.rollout.roll(_target("lines", name="lines"))
    yield call_host


def _cli(home: Path, *argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "sysops.cli.main", *argv],
        env={**os.environ, "SYSOPS_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_a_pipe_gets_every_line_byte_for_byte(host: CallServer, home: Path) -> None:
    cli = _cli(home, "numbers", "--count", "30000")
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 0, err.decode()
    assert out == "".join(f"number {n}\n" if n % 100 else "\n" for n in range(30000)).encode()


def test_a_generator_failing_after_its_lines_exits_1(host: CallServer, home: Path) -> None:
    cli = _cli(home, "numbers-then-fail")
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 1
    assert out == "".join(f"number {n}\n" for n in range(5000)).encode()
    assert "ran out of numbers" in err.decode()


def test_a_terminal_gets_each_line_of_a_batch_escaped(host: CallServer, monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert main(["hostile"]) == 0
    shown = terminal.getvalue()
    assert "\x1b" not in shown and "\u202e" not in shown and "\x07" not in shown
    assert shown.splitlines() == [f"{n} \\x1b]52;c;cm0gLXJmIH4=\\x07\\u202e" for n in range(2000)]


def test_a_slow_generators_line_is_printed_before_the_next_is_produced(host: CallServer, home: Path) -> None:
    cli = _cli(home, "drip")
    assert cli.stdout is not None
    seen: list[tuple[float, bytes]] = []
    for line in cli.stdout:
        seen.append((time.time(), line))
    cli.wait(timeout=30)
    assert [line.split()[0] for _, line in seen] == [b"first", b"second", b"third"]
    printed_at = seen[1][0]
    third_made_at = float(seen[2][1].split()[1])
    assert printed_at < third_made_at - 1.5, seen  # shown while the generator slept, not with the third line

"""`sysops events -f` on the real engine: the transitions of a roll and of a rollback, in order, locally and
through `sysops serve` (issue 9 item 4)."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import SYSOPS, Sysops, copy_example, interrupt, wait_for
from tests.integration.test_server import Server, server  # noqa: F401  (the fixture of a `sysops serve`)

pytestmark = pytest.mark.integration

#: A first install, an upgrade, then a version whose initialize() fails: rolled back, the second keeps serving.
ROLL_AND_ROLLBACK = ["loaded", "active", "loaded", "rolled", "loaded", "rolled-back"]


@dataclass
class Follower:
    """A `sysops events -f ...` subprocess writing to a file."""

    process: subprocess.Popen[bytes]
    output: Path
    stderr: Path

    def lines(self) -> list[str]:
        return self.output.read_text().splitlines()

    def json_kinds(self) -> list[str]:
        return [json.loads(line)["kind"] for line in self.lines()]


@contextlib.contextmanager
def following(sysops: Sysops, directory: Path, *options: str) -> Iterator[Follower]:
    """Run `sysops events -f OPTIONS` until the block ends, then Ctrl-C it (killed if it outlives 15 s)."""
    name = "-".join(option.strip("-") for option in options) or "all"
    output, stderr = directory / f"events-{name}.out", directory / f"events-{name}.err"
    with open(output, "wb") as out, open(stderr, "wb") as err:
        process = subprocess.Popen([SYSOPS, "events", "-f", *options], env=sysops.env, stdout=out, stderr=err)
    follower = Follower(process, output, stderr)
    try:
        yield follower
    finally:
        interrupt(process, 15)


def roll_then_fail(sysops: Sysops, plugin_dir: Path) -> None:
    """Install hello, upgrade it, then save a version whose initialize() raises (refused, rolled back)."""
    sysops.ok("plugin", "up", str(plugin_dir))
    source = plugin_dir / "hello_plugin" / "plugin.py"
    good = source.read_text()
    source.write_text(good.replace('f"{greeting.capitalize()}, {name}!"', 'f"{greeting.capitalize()} v2, {name}!"'))
    sysops.ok("plugin", "up", str(plugin_dir))
    source.write_text(source.read_text().replace("self.greeted = 0", "raise RuntimeError('no database')"))
    failed = sysops.run("plugin", "up", str(plugin_dir))
    assert failed.returncode == 6, failed.stderr
    assert sysops.ok("greet", "World") == "Hello v2, World!\n"


def test_events_follow_shows_a_roll_and_a_rollback_in_order(fresh_sysops: Sysops, tmp_path: Path) -> None:
    plugin_dir = copy_example("hello", tmp_path)
    with (
        following(fresh_sysops, tmp_path, "--output", "json", "--plugin", "hello") as as_json,
        following(fresh_sysops, tmp_path) as as_text,
    ):
        wait_for(lambda: as_text.lines() != [], 30, "the text follower's header")
        roll_then_fail(fresh_sysops, plugin_dir)
        wait_for(lambda: len(as_json.lines()) >= len(ROLL_AND_ROLLBACK), 30, "the followed events")
        wait_for(lambda: len(as_text.lines()) > len(ROLL_AND_ROLLBACK), 30, "the followed text rows")
    for follower in (as_json, as_text):
        assert follower.process.returncode == 130 and "Traceback" not in follower.stderr.read_text()
    rows = [json.loads(line) for line in as_json.lines()]
    assert [row["kind"] for row in rows] == ROLL_AND_ROLLBACK
    assert {row["plugin"] for row in rows} == {"hello"}
    assert [row["id"] for row in rows] == sorted({row["id"] for row in rows})
    assert rows[1]["message"] == "1.0.0 (revision 1) serving"
    assert rows[3]["message"].startswith("1.0.0 -> 1.0.0 (revision 2) serving")
    assert "no database" in rows[5]["message"] and "keeps serving" in rows[5]["message"]
    header, *text = as_text.lines()
    assert header.split() == ["TIME", "PLUGIN", "KIND", "MESSAGE"]
    kind_at = header.index("KIND")
    assert [row[kind_at:].split()[0] for row in text] == ROLL_AND_ROLLBACK
    # the same events without following, and the last ones in `plugin status`
    listed = fresh_sysops.ok("events", "--plugin", "hello", "-o", "json").splitlines()
    assert [json.loads(line)["kind"] for line in listed] == ROLL_AND_ROLLBACK
    status = fresh_sysops.ok("plugin", "status", "hello")
    shown = status[status.index("events:") :].splitlines()[1:]
    assert [line.split()[2] for line in shown] == ROLL_AND_ROLLBACK
    fresh_sysops.ok("plugin", "down", "hello")
    kinds = [json.loads(line)["kind"] for line in fresh_sysops.ok("events", "-o", "json").splitlines()]
    assert kinds[-2:] == ["stopping", "unloaded"]
    bad = fresh_sysops.run("events", "--plugin", "Hello/../x")
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.count("\n") == 1


def test_events_follow_through_sysops_serve(server: tuple[Server, Sysops], tmp_path: Path) -> None:  # noqa: F811
    _, cli = server
    plugin_dir = copy_example("hello", tmp_path)
    with following(cli, tmp_path, "-o", "json") as follower:
        roll_then_fail(cli, plugin_dir)
        wait_for(lambda: len(follower.lines()) >= len(ROLL_AND_ROLLBACK), 30, "the events streamed by the server")
    assert follower.process.returncode == 130 and "Traceback" not in follower.stderr.read_text()
    assert follower.json_kinds() == ROLL_AND_ROLLBACK
    # the server is still answering (the cancelled follow freed its worker); its store has the same events
    listed = cli.ok("events", "--plugin", "hello", "-o", "json").splitlines()
    assert [json.loads(line)["kind"] for line in listed] == ROLL_AND_ROLLBACK
    missing = cli.run("events", "--plugin", "nope")
    warning, error = missing.stderr.splitlines()  # the plaintext warning (the test server has no TLS), then the error
    assert missing.returncode == 8 and warning.startswith("warning: talking plaintext")
    assert error == "error: no plugin named 'nope'; `sysops plugin ls` lists them"
    cli.ok("plugin", "down", "hello")

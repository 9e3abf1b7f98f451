"""Rollout analysis on the real engine (docs/rollout-analysis.md): `plugin up` of a version that answers but
fails a fifth of its calls is rolled back by the analysis in each of 20 trials under a steady load of routed
`sysops ping` calls through the resident host; every failed call was answered by that version before the
decision and none fails after it; the event names the threshold; a window without calls is inconclusive and
keeps the old version; a good version passes and serves."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
from sysops.host import call_wire as wire
from sysops.host.paths import host_paths
from sysops.settings import Settings

from tests.integration.conftest import Sysops, installation_containers, write_plugin

pytestmark = pytest.mark.integration

TRIALS = 20
ROLLOUT = """rollout:
  analysis_s: 1.0
  share: 0.5
  max_error_rate: 0.05
  min_calls: 8
"""
CODE = """
from sysops_sdk import Plugin, plugin_command

class P(Plugin):
    name = "canary"
    version = "{version}"

    def initialize(self) -> None:
        self.calls = 0

    def cleanup(self) -> None:
        pass

    @plugin_command("ping")
    def run(self) -> str:
        self.calls += 1
        if {failing} and self.calls % 5 == 0:
            raise RuntimeError("{tag} broke on call " + str(self.calls))
        return "{tag}:pong"
"""


def _write(directory: Path, tag: str, version: str, *, failing: bool) -> Path:
    """Write revision `tag` of the plugin into `directory` (one source directory, as a user edits it)."""
    code = CODE.format(version=version, tag=tag, failing=failing)
    if not directory.exists():
        write_plugin(directory, name="canary", code=code, manifest_extra=ROLLOUT)
    (directory / "canary_plugin" / "plugin.py").write_text(code)
    manifest = directory / "plugin.yaml"
    manifest.write_text(re.sub(r"version: .*", f"version: {version}", manifest.read_text(), count=1))
    return directory


@dataclass
class Call:
    sent: float
    ended: float
    ok: bool
    output: str


def routed_ping(settings: Settings) -> tuple[bool, str]:
    """`sysops ping` as the CLI sends it: an invoke on the host's call socket (host/call_wire.py), the answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(30)
        connection.connect(str(host_paths(settings).call_socket))
        wire.send(connection, {"op": wire.INVOKE, "command": "ping", "arguments": {}, "output": "text"})
        reader = wire.Reader(connection)
        while True:
            reply = reader.message()
            if reply is None:
                return False, "the host closed the connection"
            if reply.get("type") == wire.ERROR:
                return False, str(reply.get("message"))
            if reply.get("type") == wire.RESULT:
                return True, b"".join(reader.chunks(reply.get("bytes", -1))).decode().strip()


@dataclass
class Calls:
    """The calls a load sent, in the order they ended."""

    made: list[Call] = field(default_factory=list)

    def between(self, start: float, end: float) -> list[Call]:
        return [call for call in list(self.made) if start <= call.sent < end]


@contextlib.contextmanager
def steady_load(sysops: Sysops, clients: int = 2) -> Iterator[Calls]:
    """Threads sending routed `ping` calls through the host for the block; bounded in count and time."""
    calls, stop, settings = Calls(), threading.Event(), Settings(home=sysops.home)
    deadline = time.monotonic() + 170

    def run() -> None:
        while not stop.is_set() and time.monotonic() < deadline and len(calls.made) < 50_000:
            sent = time.time()
            ok, output = routed_ping(settings)
            calls.made.append(Call(sent, time.time(), ok, output))
            time.sleep(0.03)

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        running = [pool.submit(run) for _ in range(clients)]
        try:
            yield calls
        finally:
            stop.set()
            concurrent.futures.wait(running, timeout=40)


def _events(sysops: Sysops) -> list[dict[str, object]]:
    output = sysops.ok("events", "--plugin", "canary", "--output", "json")
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_a_failing_version_is_rolled_back_by_analysis_and_a_good_one_passes(
    sysops: Sysops, tmp_path: Path, engine: docker.DockerClient
) -> None:
    source = _write(tmp_path / "canary", "v1", "1.0.0", failing=False)
    sysops.ok("plugin", "up", str(source))
    _write(source, "v2", "2.0.0", failing=True)
    assert sysops.ok("ping").strip() == "v1:pong"

    with steady_load(sysops) as load:
        time.sleep(1.0)
        first = time.time()
        trials = []
        for trial in range(TRIALS):
            started = time.time()
            result = sysops.run("plugin", "up", str(source), timeout=120)
            trials.append((started, time.time()))
            assert result.returncode == 6, f"trial {trial}: {result.returncode}\n{result.stderr}"
            assert "analysis failed: error rate" in result.stderr and "> max_error_rate 0.05 over" in result.stderr
        time.sleep(1.5)
        final = time.time()
    rolled_back = [event for event in _events(sysops) if event["kind"] == "rolled-back"]
    assert len(rolled_back) == TRIALS
    previous = first
    for trial, (event, (started, returned)) in enumerate(zip(rolled_back, trials, strict=True)):
        message = str(event["message"])
        assert "analysis failed: error rate" in message and "max_error_rate 0.05" in message, message
        assert "1.0.0 (revision 1) keeps serving" in message
        decided = float(str(event["unix_time"]))
        assert started <= decided <= returned
        failed = [call for call in load.between(previous, decided) if not call.ok]
        assert failed, f"trial {trial}: the new version failed no call"
        for call in failed:  # each failure is the new version's, from before the decision
            assert "v2 broke on call" in call.output, call
        after = load.between(decided, returned)  # the decision is recorded once the new version is gone
        assert all(call.ok and call.output == "v1:pong" for call in after), after
        previous = returned
    answered = load.between(0, final)
    assert len(answered) > TRIALS * 10
    for call in answered:  # every call answered or failed by the new version during a window; the rest v1
        assert call.output in ("v1:pong", "v2:pong") or "v2 broke on call" in call.output, call
    after_last = load.between(float(str(rolled_back[-1]["unix_time"])), final)
    assert after_last and all(call.ok and call.output == "v1:pong" for call in after_last)
    assert len(installation_containers(engine, sysops.installation_id)) == 1

    # no calls: inconclusive, v1 keeps serving
    _write(source, "v3", "3.0.0", failing=False)
    result = sysops.run("plugin", "up", str(source), timeout=120)
    assert result.returncode == 6, result.stderr
    assert "analysis inconclusive: 0 calls to the new version in 1s, fewer than min_calls 8" in result.stderr
    event = _events(sysops)[-1]
    assert event["kind"] == "rolled-back" and "analysis inconclusive" in str(event["message"])
    assert sysops.ok("ping").strip() == "v1:pong"

    # a good version under load passes and serves; no call fails
    with steady_load(sysops) as load:
        time.sleep(0.5)
        result = sysops.run("plugin", "up", str(source), timeout=120)
        time.sleep(1.0)
    assert result.returncode == 0, result.stderr
    assert "analysis passed" in result.stdout + result.stderr
    assert all(call.ok for call in load.made), [call for call in load.made if not call.ok]
    assert {call.output for call in load.made} <= {"v1:pong", "v3:pong"}
    assert sysops.ok("ping").strip() == "v3:pong"
    assert _events(sysops)[-1]["kind"] == "rolled"

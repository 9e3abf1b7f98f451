"""The call path's review findings: pooled plugin calls do not leak, a request is bounded in size and time,
the CLI shows a busy host's line, and call-socket workers beyond a floor go away when idle."""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from sysops.cli import host_call
from sysops.cli.host_call import HostCall
from sysops.core.orchestrator import Orchestrator
from sysops.errors import ExitCode, SysopsError
from sysops.host import call_wire as wire
from sysops.host.call_server import WORKER_FLOOR, CallServer, start_call_server
from sysops.host.paths import host_paths
from sysops.settings import Settings
from sysops_sdk import Plugin, argument, plugin_command

from tests.unit.test_rollout import _target


class Echo(Plugin):
    name = "echo"
    version = "1.0.0"
    description = "call socket review test plugin"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("say")
    @argument("word", help="Word")
    def say(self, word: str) -> str:
        return word


@pytest.fixture
def plugin_classes() -> Iterator[dict[str, type[Plugin]]]:
    yield {"echo": Echo}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _invoke(connection: socket.socket, reader: wire.Reader) -> None:
    wire.send(connection, {"op": wire.INVOKE, "command": "say", "arguments": {"word": "hi"}, "output": "text"})
    reply = reader.message()
    assert reply is not None and reply["type"] == wire.RESULT, reply
    assert reader.text(reply["bytes"]) == "hi"


def test_pooled_plugin_calls_do_not_leak(orchestrator: Orchestrator, call_host: CallServer) -> None:
    """~18 KB a call stayed referenced in the channel while pooled clients read their streams single-threaded."""
    orchestrator.rollout.roll(_target("echo", name="echo"))
    connection = socket.socket(socket.AF_UNIX)
    connection.connect(str(call_host.path))
    reader = wire.Reader(connection)
    try:
        for _ in range(300):
            _invoke(connection, reader)
        gc.collect()
        before = _rss_bytes()
        started = time.monotonic()
        for _ in range(2000):
            _invoke(connection, reader)
        gc.collect()
        grown = _rss_bytes() - before
    finally:
        reader.close()
        connection.close()
    assert time.monotonic() - started < 30
    assert grown < 10 << 20, f"RSS grew {grown >> 20} MiB over 2000 pooled calls"


def test_an_oversized_request_is_answered_with_one_line_and_closed(settings: Settings) -> None:
    server = start_call_server(settings, host_paths(settings).call_socket)
    try:
        connection = socket.socket(socket.AF_UNIX)
        connection.connect(str(server.path))
        connection.settimeout(10)
        with contextlib.suppress(OSError):  # the host closes once past the cap
            connection.sendall(b"x" * (wire.MAX_REQUEST_BYTES + 4096))  # no newline
        replies = connection.makefile("rb")
        line = replies.readline()
        try:
            rest = replies.read()
        except ConnectionResetError:  # closed with our unread bytes in its queue
            rest = b""
        connection.close()
        assert b"request longer than" in line and b'"exit_code":2' in line and rest == b"", (line, rest)
    finally:
        server.stop()


def test_a_slow_request_is_dropped_at_its_deadline(settings: Settings) -> None:
    """A byte now and then does not keep a connection: the whole request has one deadline."""
    server = start_call_server(settings, host_paths(settings).call_socket, idle_seconds=0.6)
    try:
        connection = socket.socket(socket.AF_UNIX)
        connection.connect(str(server.path))
        started = time.monotonic()
        closed_after = None
        for _ in range(20):  # a byte every 0.2 s: each receive is well within 0.6 s
            try:
                connection.sendall(b" ")
            except OSError:
                closed_after = time.monotonic() - started
                break
            time.sleep(0.2)
        connection.close()
        assert closed_after is not None and closed_after < 2.5, closed_after
    finally:
        server.stop()


def test_the_cli_shows_a_busy_host_line_when_its_send_fails(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_call_server(settings, host_paths(settings).call_socket, max_connections=0)
    opened = host_call._open

    def open_then_wait(path: str) -> socket.socket:
        connection = opened(path)
        time.sleep(0.3)  # the host has written "busy" and closed before the request goes
        return connection

    monkeypatch.setattr(host_call, "_open", open_then_wait)
    try:
        with HostCall(settings) as call, pytest.raises(SysopsError) as raised:
            call.routes()
        assert "host is busy" in raised.value.message and raised.value.exit_code == ExitCode.ENGINE_UNAVAILABLE
    finally:
        server.stop()


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sysops-call-") and "hang" not in t.name]


def test_idle_workers_beyond_the_floor_exit(settings: Settings) -> None:
    server = start_call_server(settings, host_paths(settings).call_socket, worker_idle_seconds=0.3)
    try:
        held = []
        for _ in range(12):
            connection = socket.socket(socket.AF_UNIX)
            connection.connect(str(server.path))
            held.append(connection)
        time.sleep(0.3)
        assert len(_workers()) > WORKER_FLOOR
        for connection in held:
            connection.close()
        ends = time.monotonic() + 5
        while len(_workers()) > WORKER_FLOOR and time.monotonic() < ends:
            time.sleep(0.1)
        assert len(_workers()) <= WORKER_FLOOR
        probe = socket.socket(socket.AF_UNIX)  # the remaining ones still serve
        probe.connect(str(server.path))
        reader = wire.Reader(probe)
        wire.send(probe, {"op": wire.ROUTES, "prefix": ""})
        assert reader.message() == {"type": wire.ROUTES, "commands": []}
        reader.close()
        probe.close()
    finally:
        server.stop()

"""Streamed lines in batches (protocol 1.4) between the orchestrator's client and a real plugin server, in-process.

Order and line boundaries survive batching (empty lines, items of several lines, a line longer than a batch),
a failing generator still ends with its exit code after the lines it yielded, a slow generator's lines arrive
while it sleeps (the time flush), a caller that speaks only 1.3 still gets one message per line, and a caller
that goes away mid-stream stops the generator (its `finally` runs) and frees the server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sysops.core import client as client_module
from sysops.core.client import Abandon, InvocationResult, PluginClient
from sysops.errors import CallInterruptedError
from sysops_sdk import Plugin, _cancel, option, plugin_command
from sysops_sdk._chunks import BATCH_CHARS
from sysops_sdk._line_batches import LineBatcher
from sysops_sdk._server import PluginRuntime, PluginServer

#: The cancellation test interrupts threads with asynchronous exceptions (see test_sdk_cancel.py).
pytestmark = pytest.mark.untraced

LONG = "L" * (BATCH_CHARS + 1000)
EVENTS: list[str] = []


def many_lines(count: int) -> list[str]:
    """What `many --count N` prints, line by line."""
    lines: list[str] = []
    for number in range(count):
        if number == 7:
            lines += ["first of two", "second of two"]
        elif number == 11:
            lines.append(LONG)
        else:
            lines.append("" if number % 1000 == 0 else f"line {number}")
    return lines


class Streams(Plugin):
    name = "streams"
    version = "1.0.0"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("many")
    @option("--count", help="lines")
    def many(self, count: int = 10) -> Iterator[str]:
        for number in range(count):
            if number == 7:
                yield "first of two\r\nsecond of two"  # one item, two lines
            elif number == 11:
                yield LONG
            else:
                yield "" if number % 1000 == 0 else f"line {number}"

    @plugin_command("broken")
    def broken(self) -> Iterator[str]:
        for number in range(3000):
            yield f"before {number}"
        raise RuntimeError("the generator broke")

    @plugin_command("slow")
    def slow(self) -> Iterator[str]:
        yield "a"
        yield "b"
        time.sleep(2.0)
        yield "c"

    @plugin_command("endless")
    def endless(self) -> Iterator[str]:
        EVENTS.append("started")
        try:
            number = 0
            while True:
                number += 1
                yield f"endless {number}"
        finally:
            EVENTS.append("closed")

    @plugin_command("ping")
    def ping(self) -> str:
        return "pong"


@pytest.fixture
def endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("SYSOPS_CANCEL_GRACE", "0.2")
    monkeypatch.setattr(time, "sleep", _cancel.interruptible_sleep)  # what serve() installs
    EVENTS.clear()
    server = PluginServer(PluginRuntime(Streams()), f"unix://{tmp_path}/plugin.sock")
    server.start()
    try:
        yield f"unix://{tmp_path}/plugin.sock"
    finally:
        server.server.stop(0)


def invoke(endpoint: str, command: str, **arguments: object) -> list[str | InvocationResult]:
    with PluginClient(endpoint, "streams") as client:
        return list(client.invoke(command, arguments, timeout=30))


def printed(items: list[str | InvocationResult]) -> list[str]:
    """The lines a CLI prints: each text item and a newline."""
    return "".join(f"{item}\n" for item in items if isinstance(item, str)).split("\n")[:-1]


def test_batches_keep_order_and_line_boundaries(endpoint: str) -> None:
    items = invoke(endpoint, "many", count=20_000)
    result = items[-1]
    assert isinstance(result, InvocationResult) and result.exit_code == 0
    assert printed(items) == many_lines(20_000)
    assert len(items) < 200  # batched: not one message per line


def test_a_caller_of_protocol_1_3_gets_one_message_per_line(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "PROTOCOL_METADATA", (("sysops-protocol", "1.3"),))
    items = invoke(endpoint, "many", count=300)
    assert printed(items) == many_lines(300)
    assert [item for item in items if isinstance(item, str)] == many_lines(300)


def test_a_failing_generator_ends_with_its_exit_code_after_its_lines(endpoint: str) -> None:
    items = invoke(endpoint, "broken")
    result = items[-1]
    assert isinstance(result, InvocationResult)
    assert (result.exit_code, result.error) == (1, "the generator broke")
    assert printed(items) == [f"before {number}" for number in range(3000)]


def test_a_slow_generator_shows_each_line_before_the_next_is_produced(endpoint: str) -> None:
    arrived: list[tuple[float, str]] = []
    started = time.monotonic()
    with PluginClient(endpoint, "streams") as client:
        for item in client.invoke("slow", {}, timeout=30):
            if isinstance(item, str):
                arrived += [(time.monotonic() - started, line) for line in item.split("\n")]
    assert [line for _, line in arrived] == ["a", "b", "c"]
    seconds = dict((line, at) for at, line in arrived)
    assert seconds["a"] < 1.0 and seconds["b"] < 1.0, arrived  # not held back until "c" comes, 2 s later
    assert seconds["c"] >= 1.9


def test_a_caller_going_away_mid_stream_stops_the_generator(endpoint: str) -> None:
    abandon = Abandon()
    received = 0
    with PluginClient(endpoint, "streams") as client, pytest.raises(CallInterruptedError):
        for _item in client.invoke("endless", {}, timeout=30, abandon=abandon):
            received += 1
            if received == 3:
                threading.Timer(0.3, abandon).start()  # the client stops reading, then goes away
                time.sleep(0.6)
    deadline = time.monotonic() + 5
    while "closed" not in EVENTS and time.monotonic() < deadline:
        time.sleep(0.05)
    assert EVENTS == ["started", "closed"]
    assert invoke(endpoint, "ping")[-1] == InvocationResult("text", "pong", None, 0, "")


def test_the_batcher_pauses_a_fast_generator_and_keeps_the_final_item_last() -> None:
    items: Iterator[str | int] = iter([*(f"l{n}" for n in range(100)), "x\ny", 7])
    with _cancel.Cancellation("direct") as call:
        batches = list(LineBatcher(items, call, flush_bytes=20, flush_seconds=5.0, buffer_bytes=40).batches())
    assert batches[-1] == 7
    lines = [line for batch in batches[:-1] for line in batch]  # type: ignore[union-attr]
    assert lines == [f"l{n}" for n in range(100)] + ["x", "y"]
    assert len(batches) > 5 and all(sum(map(len, b)) < 60 for b in batches[:-1])  # type: ignore[arg-type]


def test_without_a_thread_to_be_had_each_item_goes_as_it_comes(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    with _cancel.Cancellation("direct") as call:
        batches = list(LineBatcher(iter(["a", "b\nc", 3]), call).batches())
    assert batches == [["a"], ["b", "c"], 3]

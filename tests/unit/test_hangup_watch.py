"""The call socket's hang-up watch: a call whose client hangs up or speaks is abandoned, at no system call per call.

Each test uses a socket pair: the host's end is watched, the client's end is closed or written to.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from sysops.core.client import Abandon
from sysops.host import call_server
from sysops.host.call_server import _HangupWatch


@pytest.fixture
def watch() -> Iterator[_HangupWatch]:
    watching = _HangupWatch()
    yield watching
    watching.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    host, client = socket.socketpair()
    yield host, client
    host.close()
    client.close()


def _abandoned(abandon: Abandon, within: float) -> bool:
    ends = time.monotonic() + within
    while time.monotonic() < ends and not abandon.abandoned:
        time.sleep(0.005)
    return abandon.abandoned


@pytest.mark.parametrize("client_does", ["hangs up", "sends a byte"])
def test_a_client_that_hangs_up_or_speaks_during_a_long_call_has_it_abandoned(
    watch: _HangupWatch, pair: tuple[socket.socket, socket.socket], client_does: str
) -> None:
    host, client = pair
    abandon = Abandon()
    watch.start(host.fileno(), abandon)
    time.sleep(call_server.WATCH_AFTER_SECONDS * 3)  # a call that runs on
    if client_does == "hangs up":
        client.close()
    else:
        client.sendall(b"x")
    assert _abandoned(abandon, 2.0)
    watch.stop(host.fileno())


def test_a_call_that_ends_before_it_is_watched_costs_no_poll(
    watch: _HangupWatch, pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(call_server, "WATCH_AFTER_SECONDS", 1.0)
    polled: list[int] = []
    real_poll = call_server.select.poll

    class CountingPoll:
        def __init__(self) -> None:
            self._poll = real_poll()

        def register(self, fd: int, mask: int) -> None:
            polled.append(fd)
            self._poll.register(fd, mask)

        def poll(self, timeout: float) -> list[tuple[int, int]]:
            return self._poll.poll(timeout)

    monkeypatch.setattr(call_server.select, "poll", CountingPoll)
    host, client = pair
    abandon = Abandon()
    watch.start(host.fileno(), abandon)
    client.sendall(b"x")  # would abandon it, had it run long enough to be watched
    time.sleep(0.1)
    watch.stop(host.fileno())
    time.sleep(0.05)
    assert not abandon.abandoned
    assert host.fileno() not in polled


def test_a_descriptor_used_again_by_a_newer_call_abandons_only_that_call(
    watch: _HangupWatch, pair: tuple[socket.socket, socket.socket]
) -> None:
    host, client = pair
    older, newer = Abandon(), Abandon()
    watch.start(host.fileno(), older)
    watch.stop(host.fileno())
    watch.start(host.fileno(), newer)
    client.close()
    assert _abandoned(newer, 2.0)
    assert not older.abandoned


def test_close_ends_the_thread_while_calls_are_watched(pair: tuple[socket.socket, socket.socket]) -> None:
    watching = _HangupWatch()
    watching.start(pair[0].fileno(), Abandon())
    time.sleep(call_server.WATCH_AFTER_SECONDS * 2)
    watching.close()
    assert not any(thread.name == "sysops-call-hangups" and thread.is_alive() for thread in threading.enumerate())


def test_a_stream_of_calls_wakes_the_thread_at_most_twice_per_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    naps: list[float] = []

    class CountingTime:
        monotonic = staticmethod(time.monotonic)

        @staticmethod
        def sleep(seconds: float) -> None:
            naps.append(seconds)
            time.sleep(seconds)

    monkeypatch.setattr(call_server, "time", CountingTime)
    pairs = [socket.socketpair() for _ in range(8)]
    watching = _HangupWatch()
    try:
        # 8 calls in flight, each ending a little before it would be watched, one starting every 2 ms: the oldest
        # call still running is always due soon, which woke the thread every few milliseconds
        in_flight: list[int] = []
        free = [host.fileno() for host, _ in pairs]
        ends = time.monotonic() + 0.5
        while time.monotonic() < ends:
            if len(in_flight) == len(pairs):
                fd = in_flight.pop(0)
                watching.stop(fd)
                free.append(fd)
            fd = free.pop()
            watching.start(fd, Abandon())
            in_flight.append(fd)
            time.sleep(0.002)
    finally:
        watching.close()
        for ends_of_pair in pairs:
            for end in ends_of_pair:
                end.close()
    assert len(naps) <= 0.5 / (call_server.WATCH_AFTER_SECONDS / 2) + 5  # one wake per half wait at most


def test_a_cancel_that_fails_does_not_end_the_watch(watch: _HangupWatch) -> None:
    class FailingAbandon(Abandon):
        def __call__(self) -> None:
            raise RuntimeError("a bug in cancelling")

    first, second = socket.socketpair(), socket.socketpair()
    try:
        watch.start(first[0].fileno(), FailingAbandon())
        first[1].close()
        time.sleep(call_server.WATCH_AFTER_SECONDS * 3 + 0.3)
        abandon = Abandon()
        watch.start(second[0].fileno(), abandon)
        second[1].close()
        assert _abandoned(abandon, 2.0)  # the next call's hang-up still cancels it
    finally:
        for end in (*first, *second):
            end.close()

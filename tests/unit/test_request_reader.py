"""The host's request reader: kernel-kept timeouts (no poll or ioctl per call), the same deadlines as before."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from sysops.host import call_wire as wire


class CountingConnection(wire.HostConnection):
    """A host connection that counts its receives, sends and option changes."""

    receives = 0
    sends = 0
    option_changes = 0

    def recv(self, size: int, flags: int = 0) -> bytes:
        self.receives += 1
        return super().recv(size, flags)

    def send(self, data: object, flags: int = 0) -> int:  # type: ignore[override]
        self.sends += 1
        return super().send(data, flags)  # type: ignore[arg-type]

    def setsockopt(self, *args: object) -> None:  # type: ignore[override]
        self.option_changes += 1
        super().setsockopt(*args)  # type: ignore[arg-type]


def _pair(receive_seconds: float, send_seconds: float) -> tuple[CountingConnection, socket.socket]:
    host_end, client = socket.socketpair()
    return CountingConnection.adopt(host_end, receive_seconds, send_seconds), client


@pytest.fixture
def pairs() -> Iterator[Callable[[float, float], tuple[CountingConnection, socket.socket]]]:
    made: list[socket.socket] = []

    def make(receive_seconds: float, send_seconds: float = 60.0) -> tuple[CountingConnection, socket.socket]:
        host, client = _pair(receive_seconds, send_seconds)
        made.extend((host, client))
        return host, client

    yield make
    for end in made:
        end.close()


Pairs = Callable[..., tuple[CountingConnection, socket.socket]]


def _receive_timeout(connection: socket.socket) -> float:
    seconds, micros = struct.unpack("ll", connection.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))
    return float(seconds + micros / 1_000_000)


def test_a_request_is_one_receive_and_no_timeout_change(pairs: Pairs) -> None:
    host, client = pairs(30.0)
    host.option_changes = 0
    reader = wire.RequestReader(host, 30.0)
    for number in range(3):
        client.sendall(wire.encode({"op": "invoke", "n": number}))
        assert reader.message(wire.MAX_REQUEST_BYTES) == {"op": "invoke", "n": number}
    assert (host.receives, host.option_changes) == (3, 0)
    assert host.gettimeout() is None  # blocking: Python polls before nothing
    assert _receive_timeout(host) == 30.0


def test_a_request_in_pieces_must_all_arrive_by_its_deadline(pairs: Pairs) -> None:
    host, client = pairs(0.4)
    reader = wire.RequestReader(host, 0.4)

    def trickle() -> None:
        for byte in b'{"op": "routes"':
            client.sendall(bytes([byte]))
            time.sleep(0.1)

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        reader.message(wire.MAX_REQUEST_BYTES)
    assert time.monotonic() - started < 1.0  # the whole line's deadline, not one per byte
    assert _receive_timeout(host) == pytest.approx(0.4)  # given back for the next request
    sender.join()


def test_an_idle_client_times_out_and_one_that_closes_is_none(pairs: Pairs) -> None:
    host, client = pairs(0.2)
    reader = wire.RequestReader(host, 0.2)
    with pytest.raises(TimeoutError):
        reader.message(wire.MAX_REQUEST_BYTES)
    client.sendall(b'{"op": "list"}\n{"op": ')
    assert reader.message(wire.MAX_REQUEST_BYTES) == {"op": "list"}
    client.close()
    with pytest.raises(wire.WireError, match="middle of a message"):
        reader.message(wire.MAX_REQUEST_BYTES)


def test_an_oversized_request_is_refused(pairs: Pairs) -> None:
    host, client = pairs(5.0)
    reader = wire.RequestReader(host, 5.0)
    client.sendall(b"x" * 5000)
    with pytest.raises(wire.OversizedMessageError):
        reader.message(1000)


def test_a_send_the_client_keeps_up_with_is_one_system_call(pairs: Pairs) -> None:
    host, client = pairs(5.0)
    wire.send_text(host, {"type": wire.LINE}, "x" * 1000)
    assert (host.sends, host.gettimeout()) == (1, None)
    assert client.recv(4096).endswith(b"x" * 1000)


def test_a_send_the_client_does_not_take_fails_at_the_send_timeout(pairs: Pairs) -> None:
    host, _client = pairs(5.0, 0.3)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        host.sendall(b"x" * (64 << 20))
    assert 0.2 < time.monotonic() - started < 5.0


def test_a_client_that_reads_a_little_now_and_then_is_dropped_at_the_send_timeout(pairs: Pairs) -> None:
    host, client = pairs(5.0, 0.5)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.1):
            with contextlib.suppress(OSError):
                client.recv(1 << 16)

    reader = threading.Thread(target=trickle, daemon=True)
    reader.start()
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            wire.send_text(host, {"type": wire.RESULT, "kind": "text"}, "x" * (8 << 20))
        assert time.monotonic() - started < 2.0  # one deadline per slice, however much the client takes
        assert host.gettimeout() is None  # blocking again after
    finally:
        stop.set()
        reader.join()

"""The host's request reader: kernel-kept timeouts (no poll or ioctl per call), the same deadlines as before."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from sysops.host import call_wire as wire


class CountingSocket(socket.socket):
    """A socket that counts its receives and option changes."""

    receives = 0
    option_changes = 0

    def recv(self, size: int, flags: int = 0) -> bytes:
        self.receives += 1
        return super().recv(size, flags)

    def setsockopt(self, *args: object) -> None:  # type: ignore[override]
        self.option_changes += 1
        super().setsockopt(*args)  # type: ignore[arg-type]


@pytest.fixture
def pair() -> Iterator[tuple[CountingSocket, socket.socket]]:
    host_end, client = socket.socketpair()
    host = CountingSocket(fileno=os.dup(host_end.fileno()))
    host_end.close()
    yield host, client
    host.close()
    client.close()


def _receive_timeout(connection: socket.socket) -> float:
    seconds, micros = struct.unpack("ll", connection.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))
    return float(seconds + micros / 1_000_000)


def test_a_request_is_one_receive_and_no_timeout_change(pair: tuple[CountingSocket, socket.socket]) -> None:
    host, client = pair
    wire.keep_timeouts(host, 30.0, 60.0)
    host.option_changes = 0
    reader = wire.RequestReader(host, 30.0)
    for number in range(3):
        client.sendall(wire.encode({"op": "invoke", "n": number}))
        assert reader.message(wire.MAX_REQUEST_BYTES) == {"op": "invoke", "n": number}
    assert (host.receives, host.option_changes) == (3, 0)
    assert host.gettimeout() is None  # blocking: Python polls before nothing
    assert _receive_timeout(host) == 30.0


def test_a_request_in_pieces_must_all_arrive_by_its_deadline(pair: tuple[CountingSocket, socket.socket]) -> None:
    host, client = pair
    wire.keep_timeouts(host, 0.4, 60.0)
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


def test_an_idle_client_times_out_and_one_that_closes_is_none(pair: tuple[CountingSocket, socket.socket]) -> None:
    host, client = pair
    wire.keep_timeouts(host, 0.2, 60.0)
    reader = wire.RequestReader(host, 0.2)
    with pytest.raises(TimeoutError):
        reader.message(wire.MAX_REQUEST_BYTES)
    client.sendall(b'{"op": "list"}\n{"op": ')
    assert reader.message(wire.MAX_REQUEST_BYTES) == {"op": "list"}
    client.close()
    with pytest.raises(wire.WireError, match="middle of a message"):
        reader.message(wire.MAX_REQUEST_BYTES)


def test_an_oversized_request_is_refused(pair: tuple[CountingSocket, socket.socket]) -> None:
    host, client = pair
    wire.keep_timeouts(host, 5.0, 60.0)
    reader = wire.RequestReader(host, 5.0)
    client.sendall(b"x" * 5000)
    with pytest.raises(wire.OversizedMessageError):
        reader.message(1000)


def test_a_send_the_client_does_not_take_fails_at_the_send_timeout(pair: tuple[CountingSocket, socket.socket]) -> None:
    host, _client = pair
    wire.keep_timeouts(host, 5.0, 0.3)
    started = time.monotonic()
    with pytest.raises(BlockingIOError):
        host.sendall(b"x" * (64 << 20))
    assert 0.2 < time.monotonic() - started < 5.0

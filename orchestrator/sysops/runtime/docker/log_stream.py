"""A container's log as the engine sends it, read in blocks: the docker SDK's log stream reads each frame (one log
line) with two reads of its own, which bounded `plugin logs` of a large log at a few thousand lines per second.

`LogStream` asks the engine for the log (stdout and stderr, `tail`, `follow`), reads the response in blocks of up
to BLOCK_BYTES (a follow takes what has arrived, so its lines are not held back) and strips the engine's
multiplexing headers (8 bytes: stream, 0, 0, 0, size big-endian) from many frames per block; a TTY container's
log has none. Iterating it yields byte blocks whose concatenation is the log; `close` ends it from any thread.
A follow waits for lines without the client's timeout (a quiet plugin's `plugin logs -f` raised "Read timed out"
after 60 s), and `close` shuts its socket down, so that a read blocked in another thread returns at once (closing
the response alone left it blocked until that timeout), as the docker SDK's own streams do.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import urllib3

#: Bytes read from the engine at a time.
BLOCK_BYTES = 256 << 10
_HEADER_BYTES = 8


class LogStream:
    """The log of one container from a docker APIClient (`docker.DockerClient().api`), in blocks of bytes."""

    def __init__(self, api: Any, handle: str, *, tty: bool, tail: int | None, follow: bool) -> None:
        params: dict[str, int | str] = {"stdout": 1, "stderr": 1, "timestamps": 0, "follow": int(follow)}
        params["tail"] = "all" if tail is None else tail
        self._response = api._get(api._url("/containers/{0}/logs", handle), params=params, stream=True)
        api._raise_for_status(self._response)
        self._tty = tty
        self._follow = follow
        self._socket: Any = None
        if follow:
            self._socket = api._get_raw_response_socket(self._response)
            api._disable_socket_timeout(self._socket)

    def close(self) -> None:
        """End the stream (a follow blocked in a read returns)."""
        if self._socket is not None:  # a Unix socket's response wraps the socket (SocketIO._sock)
            with contextlib.suppress(OSError, AttributeError):
                getattr(self._socket, "_sock", self._socket).shutdown(socket.SHUT_RDWR)
        self._response.close()

    def __iter__(self) -> Iterator[bytes]:
        blocks = self._blocks()
        return blocks if self._tty else _payloads(blocks)

    def _blocks(self) -> Iterator[bytes]:
        raw = self._response.raw
        read = raw.read1 if self._follow else raw.read
        while True:
            try:
                block = read(BLOCK_BYTES)
            except (OSError, ValueError, AttributeError, urllib3.exceptions.HTTPError):  # closed from another thread
                return
            if not block:
                return
            yield block


def _payloads(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """The payloads of the multiplexed frames in `blocks`, joined per block (a frame may span blocks)."""
    pending = bytearray()
    for block in blocks:
        pending += block
        payloads: list[bytes] = []
        offset, size = 0, len(pending)
        while size - offset >= _HEADER_BYTES:
            end = offset + _HEADER_BYTES + int.from_bytes(pending[offset + 4 : offset + 8], "big")
            if end > size:
                break
            payloads.append(bytes(pending[offset + _HEADER_BYTES : end]))
            offset = end
        del pending[:offset]
        if payloads:
            yield b"".join(payloads)

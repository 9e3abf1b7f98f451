"""The wire format of the call socket, shared by the host (host/call_server.py) and the CLI (cli/host_call.py).

Routed commands are the CLI's hot path, so the CLI speaks no gRPC to the host: each message is one line of
JSON (an object, ASCII, ending in a newline). A message that carries text (a streamed output line, a text
result) says how many bytes of UTF-8 follow it (`"bytes": N`) and exactly that many raw bytes follow the
line: a 64 MiB result is neither JSON-escaped nor held twice, and the reader can stream it. No text frame
and no JSON line is larger than MAX_TEXT_BYTES (the plugin protocol's reply limit) plus a little.
Standard library only: imported on every `sysops <command>`. docs/protocol.md ("Call socket") describes
the requests and replies.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

#: Largest text of one streamed line or result, in UTF-8 bytes (the plugin protocol's MAX_REPLY_BYTES).
MAX_TEXT_BYTES = 64 << 20
#: Largest JSON line (a data result is JSON inside a message; arguments are at most 1 MiB).
MAX_LINE_BYTES = MAX_TEXT_BYTES + (1 << 20)
#: Largest request line the host reads (arguments are at most 1 MiB as JSON: core/router.py).
MAX_REQUEST_BYTES = 2 << 20
#: Text is encoded and sent in slices of this many characters, so it is never held twice in full.
SLICE_CHARACTERS = 1 << 20
#: Text up to this size travels in the same send as its header.
_SMALL_TEXT = 64 << 10

# Requests (client → host).
ROUTES = "routes"  # {"op": "routes", "prefix": "db"} → {"type": "routes", "commands": [shape, ...]}
INVOKE = "invoke"  # {"op": "invoke", "command", "arguments", "output"} → line* then result or error
LIST = "list"  # {"op": "list"} → {"type": "list", "bytes": N} + N bytes: the JSON statuses of `plugin ls`
# Replies (host → client).
LINE = "line"  # {"type": "line", "bytes": N} + N bytes: one streamed output line, without its newline
RESULT = "result"  # {"type": "result", "kind": "text", "bytes": N} + N bytes | kind "data", "data" | kind "none"
ERROR = "error"  # {"type": "error", "message", "hint", "details", "exit_code"}: the call failed, or the host is busy


class WireError(Exception):
    """The peer went away mid-message or sent something that is not this protocol."""


class OversizedMessageError(WireError):
    """The peer sent a line longer than the reader takes."""


def encode(message: dict[str, Any]) -> bytes:
    """One message as its line of JSON."""
    return json.dumps(message, separators=(",", ":")).encode("ascii") + b"\n"


def utf8_size(text: str) -> int:
    """The size of `text` in UTF-8, counted slice by slice (no full copy)."""
    if text.isascii():
        return len(text)
    return sum(
        len(text[start : start + SLICE_CHARACTERS].encode("utf-8", "surrogatepass"))
        for start in range(0, len(text), SLICE_CHARACTERS)
    )


def send(connection: socket.socket, message: dict[str, Any]) -> None:
    """Send one message."""
    connection.sendall(encode(message))


def send_text(connection: socket.socket, header: dict[str, Any], text: str) -> None:
    """Send `header` with `"bytes"` set, then the text as raw UTF-8, slice by slice.

    Raises ValueError (before sending anything) if the text is larger than MAX_TEXT_BYTES.
    """
    size = utf8_size(text)
    if size > MAX_TEXT_BYTES:
        raise ValueError(f"text of {size} bytes is larger than the {MAX_TEXT_BYTES} allowed")
    line = encode({**header, "bytes": size})
    if size <= _SMALL_TEXT:
        connection.sendall(line + text.encode("utf-8", "surrogatepass"))
        return
    connection.sendall(line)
    for start in range(0, len(text), SLICE_CHARACTERS):
        connection.sendall(text[start : start + SLICE_CHARACTERS].encode("utf-8", "surrogatepass"))


def parse_line(line: bytes, limit: int) -> dict[str, Any] | None:
    """The message of one line read (up to `limit` + 1 bytes); None for no bytes (the peer closed between messages).

    A line longer than `limit` bytes raises OversizedMessageError; one cut short, or not a JSON object, WireError.
    """
    if not line:
        return None
    if not line.endswith(b"\n"):
        if len(line) > limit:
            raise OversizedMessageError(f"message longer than {limit} bytes")
        raise WireError("connection closed in the middle of a message")
    try:
        message = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise WireError(f"message is not JSON ({exc})") from None
    if not isinstance(message, dict):
        raise WireError("message is not a JSON object")
    return message


class HostConnection(socket.socket):
    """The host's side of a client connection: blocking, with its receive timeout kept by the kernel (SO_RCVTIMEO),
    and sends that cost one system call when the client keeps up.

    Python's own socket timeout costs a poll() before every receive and send (and an ioctl to change it): each a
    system call that hands a busy host's interpreter lock to another thread. A receive that waits for the kernel's
    timeout raises BlockingIOError (TimeoutError from RequestReader). A send is first tried without waiting; what
    the client does not take at once is sent under Python's timeout, `send_seconds` for all of it (a client that
    takes a little now and then is still dropped then), and the connection is blocking again after.
    """

    send_seconds = 60.0

    @classmethod
    def adopt(cls, accepted: socket.socket, receive_seconds: float, send_seconds: float) -> HostConnection:
        """`accepted` (which is detached) as a HostConnection."""
        connection = cls(fileno=accepted.detach())
        connection.setblocking(True)
        _set_receive_timeout(connection, receive_seconds)
        connection.send_seconds = send_seconds
        return connection

    def sendall(self, data: ReadableBuffer, flags: int = 0, /) -> None:
        """Send all of `data`; TimeoutError when the client did not take it within send_seconds (or the timeout a
        caller set)."""
        if self.gettimeout() is not None:  # a caller's own timeout (a last error line before closing)
            super().sendall(data, flags)
            return
        view = memoryview(data).cast("B")
        try:
            sent = self.send(view, flags | socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        if sent == len(view):
            return
        self.settimeout(self.send_seconds)
        try:
            super().sendall(view[sent:], flags)
        finally:
            with contextlib.suppress(OSError):
                self.settimeout(None)


def _set_receive_timeout(connection: socket.socket, seconds: float) -> None:
    """The kernel's receive timeout of `connection` (SO_RCVTIMEO)."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))


def _timeval(seconds: float) -> bytes:
    """`seconds` as a struct timeval, at least a microsecond (zero would mean no timeout at all)."""
    micros = max(1, round(seconds * 1_000_000))
    return struct.pack("ll", micros // 1_000_000, micros % 1_000_000)


class RequestReader:
    """Reads request lines from a HostConnection: one receive per request.

    The whole line must arrive by its deadline, however slowly its bytes come: the kernel's receive timeout is
    `idle_seconds` for the first receive of a line (set once per connection), and what is left of the deadline for
    each later piece of the same line (set then, and back after: only for lines that come in pieces).
    """

    def __init__(self, connection: socket.socket, idle_seconds: float) -> None:
        self._connection = connection
        self._idle_seconds = idle_seconds
        self._buffer = bytearray()

    def message(self, limit: int) -> dict[str, Any] | None:
        """The next request (None if the client closed between requests); TimeoutError when it is late."""
        deadline = time.monotonic() + self._idle_seconds
        shortened = False
        scanned = 0  # the bytes before this hold no newline (a line in many pieces is searched once)
        try:
            while True:
                end = self._buffer.find(b"\n", scanned, limit + 1)
                if end >= 0 or len(self._buffer) > limit:
                    line = bytes(self._buffer[: end + 1 if end >= 0 else limit + 1])
                    del self._buffer[: len(line)]
                    return parse_line(line, limit)
                scanned = len(self._buffer)
                if self._buffer:  # a line in pieces: the next piece gets what is left of its deadline
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError("the request did not arrive in time")
                    _set_receive_timeout(self._connection, left)
                    shortened = True
                try:
                    piece = self._connection.recv(1 << 16)
                except BlockingIOError:
                    raise TimeoutError("the request did not arrive in time") from None
                if not piece:
                    return parse_line(bytes(self._buffer), limit)
                self._buffer += piece
        finally:
            if shortened:
                with contextlib.suppress(OSError):
                    _set_receive_timeout(self._connection, self._idle_seconds)


class Reader:
    """Reads messages and the raw text that follows them from one connection (the CLI's side)."""

    def __init__(self, connection: socket.socket) -> None:
        self._connection = connection
        self._file = connection.makefile("rb")

    def message(self, limit: int = MAX_LINE_BYTES) -> dict[str, Any] | None:
        """The next message, or None if the peer closed the connection between messages.

        A line longer than `limit` bytes raises OversizedMessageError.
        """
        return parse_line(self._file.readline(limit + 1), limit)

    def chunks(self, size: object) -> Iterator[bytes]:
        """The `size` raw bytes that follow a text header, as they arrive (in chunks of at most 1 MiB)."""
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_TEXT_BYTES:
            raise WireError(f"text size {size!r} is not a byte count within {MAX_TEXT_BYTES}")
        left: int = size
        while left:
            chunk = self._file.read1(min(left, 1 << 20))
            if not chunk:
                raise WireError(f"connection closed {left} bytes before the end of a text")
            left -= len(chunk)
            yield chunk

    def text(self, size: object) -> str:
        """The `size` raw bytes that follow a text header, as text (for lines and small results)."""
        try:
            return b"".join(self.chunks(size)).decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise WireError(f"text is not UTF-8 ({exc.reason})") from None

    def close(self) -> None:
        """Close the reader's file (the socket stays open until closed itself)."""
        self._file.close()

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

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

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


class Reader:
    """Reads messages and the raw text that follows them from one connection."""

    def __init__(self, connection: socket.socket) -> None:
        self._connection = connection
        self._file = connection.makefile("rb")

    def message(self, limit: int = MAX_LINE_BYTES, deadline: float | None = None) -> dict[str, Any] | None:
        """The next message, or None if the peer closed the connection between messages.

        A line longer than `limit` bytes raises OversizedMessageError. With a `deadline` (time.monotonic()),
        the whole line must arrive by then (TimeoutError), however slowly its bytes come; the connection's
        timeout is changed to what is left.
        """
        line = self._file.readline(limit + 1) if deadline is None else self._line_by(deadline, limit)
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

    def _line_by(self, deadline: float, limit: int) -> bytes:
        """Up to `limit` + 1 bytes ending at the first newline, read by `deadline` (TimeoutError)."""
        line = bytearray()
        while len(line) <= limit:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request did not arrive in time")
            self._connection.settimeout(left)
            buffered = self._file.peek(1)  # what is buffered, or one receive
            if not buffered:
                break
            end = buffered.find(b"\n", 0, limit + 1 - len(line))
            taken = self._file.read(end + 1 if end >= 0 else min(len(buffered), limit + 1 - len(line)))
            line += taken
            if end >= 0:
                break
        return bytes(line)

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

"""A container's log as the engine sends it, read in blocks: the docker SDK's log stream reads each frame (one log
line) with two reads of its own, which bounded `plugin logs` of a large log at a few thousand lines per second.

`LogStream` asks the engine for the log (stdout and stderr, `tail`, `follow`), reads the response in blocks of up
to BLOCK_BYTES (a follow takes what has arrived, so its lines are not held back) and strips the engine's
multiplexing headers (8 bytes: stream, 0, 0, 0, size big-endian) from many frames per block; a TTY container's
log has none. Iterating it yields byte blocks of whole lines, each stream's lines whole and in its order (see
below: a line longer than LINE_PIECE_BYTES comes in pieces, each ended); `close` ends it from any thread.
A follow waits for lines without the client's timeout (a quiet plugin's `plugin logs -f` raised "Read timed out"
after 60 s), and `close` shuts its socket down, so that a read blocked in another thread returns at once (closing
the response alone left it blocked until that timeout), as the docker SDK's own streams do.

Over HTTP/1.1 the engine sends a streamed body in chunks, one per frame it writes (one per log line), and the
standard library decodes them one by one in Python: that was most of the host's CPU for `plugin logs` of a
large log (about 3 us a line). When the engine is on a Unix socket (the usual local case), the request is
made in HTTP/1.0 on a connection of its own: the engine then sends the body as it is, ended by closing the
connection. Elsewhere (tcp, TLS, ssh), the SDK's session reads it as before.

The engine still writes a frame (a line) at a time, and its socket holds only a few hundred of them (each small
write takes a kernel buffer of its own: about 28 KiB of 100-byte lines in the default 208 KiB), so a reader that
takes lines as they come wakes once a line, which cost as much CPU again as the chunks had. Reading a whole log
(no follow), a read that found less than GATHER_BYTES waits GATHER_SECONDS before the next, so that the next one
finds a few hundred lines; a read that found more reads again at once, so the engine's buffer does not fill and
hold it up. A follow reads what has come at once, as before.

The engine keeps a line in entries of at most 16 KiB, and copies stdout and stderr in a goroutine each, so a
line of one stream may reach the log between the entries of a long line of the other (seen under load: a
stderr line inside a 70,000-byte stdout line). The payloads are therefore joined per stream: a stream's line
that has not ended is held until it does (up to LINE_PIECE_BYTES, the pieces the driver cuts a long line into,
each then ended), while the other stream's lines go on. Joined in the engine's order instead, the two lines
came out as one line and a piece, both wrong (`docker logs 2>&1` shows them so).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import docker
import urllib3

#: Bytes read from the engine at a time.
BLOCK_BYTES = 256 << 10
#: A read of a whole log that got less than GATHER_BYTES waits GATHER_SECONDS before the next (module docstring).
GATHER_BYTES = 16 << 10
GATHER_SECONDS = 0.0005
#: The pieces a line without an end is yielded in (the driver cuts a long line into pieces of this size).
LINE_PIECE_BYTES = 64 << 10
_HEADER_BYTES = 8
_NEWLINE = 0x0A
_FRAME_SIZE = struct.Struct(">I")
#: The engine's URL scheme for a Unix socket in the docker SDK (its adapter knows the socket's path).
_UNIX_SCHEME = "http+docker"


class _Body(Protocol):
    def read(self, size: int) -> bytes: ...

    def read1(self, size: int) -> bytes: ...


class _UnixHttp10(http.client.HTTPConnection):
    """http.client over the engine's Unix socket, asking in HTTP/1.0 so that the body comes unchunked."""

    _http_vsn = 10
    _http_vsn_str = "HTTP/1.0"

    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            unix.settimeout(self.timeout)
            unix.connect(self._path)
        except OSError:
            unix.close()
            raise
        self.sock = unix


class LogStream:
    """The log of one container from a docker APIClient (`docker.DockerClient().api`), in blocks of bytes."""

    def __init__(self, api: Any, handle: str, *, tty: bool, tail: int | None, follow: bool) -> None:
        params: dict[str, int | str] = {"stdout": 1, "stderr": 1, "timestamps": 0, "follow": int(follow)}
        params["tail"] = "all" if tail is None else tail
        url = api._url("/containers/{0}/logs", handle)
        self._tty = tty
        self._follow = follow
        self._socket: Any = None
        self._closers: list[Any] = []
        unix_path = _unix_socket_path(api)
        self._unix = unix_path is not None
        if unix_path is not None:
            self._body: _Body = self._open_unix(unix_path, f"{urlsplit(url).path}?{urlencode(params)}", api)
            return
        response = api._get(url, params=params, stream=True)
        api._raise_for_status(response)
        self._body = response.raw
        self._closers.append(response)
        if follow:
            self._socket = api._get_raw_response_socket(response)
            api._disable_socket_timeout(self._socket)

    def _open_unix(self, socket_path: str, target: str, api: Any) -> _Body:
        """Connect, ask and read the reply's head within the client's timeout; a follow then waits for lines
        without one. An engine that fails or stalls is an APIError, and nothing is left open."""
        connection = _UnixHttp10(socket_path, api.timeout)
        self._closers.append(connection)
        try:
            connection.connect()
            self._socket = connection.sock
            connection.request("GET", target, headers=_session_headers(api))
            response = connection.getresponse()
            self._closers.append(response)
            if response.status != 200:
                message = _error_message(response.read(64 << 10)) or response.reason
                error = docker.errors.NotFound if response.status == 404 else docker.errors.APIError
                raise error(f"{response.status} {message}")
            if self._follow:
                self._socket.settimeout(None)
        except docker.errors.APIError:  # first: the SDK's errors are OSErrors too (requests' IOError)
            self.close()
            raise
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise docker.errors.APIError(f"cannot read the log from the engine: {exc}") from None
        return response

    def close(self) -> None:
        """End the stream (a follow blocked in a read returns)."""
        if self._socket is not None:  # a Unix socket's response wraps the socket (SocketIO._sock)
            with contextlib.suppress(OSError, AttributeError):
                getattr(self._socket, "_sock", self._socket).shutdown(socket.SHUT_RDWR)
        for closer in self._closers:
            with contextlib.suppress(OSError):
                closer.close()

    def __iter__(self) -> Iterator[bytes]:
        blocks = self._blocks()
        return blocks if self._tty else _payloads(blocks)

    def _blocks(self) -> Iterator[bytes]:
        gather = self._unix and not self._follow
        read = self._body.read1 if self._follow or gather else self._body.read
        while True:
            try:
                block = read(BLOCK_BYTES)
            except (OSError, ValueError, AttributeError, http.client.HTTPException, urllib3.exceptions.HTTPError):
                return  # closed from another thread
            if not block:
                return
            yield block
            if gather and len(block) < GATHER_BYTES:
                time.sleep(GATHER_SECONDS)


def _unix_socket_path(api: Any) -> str | None:
    """The engine's Unix socket when the client reaches it through one (docker SDK's UnixHTTPAdapter), else None."""
    if not str(getattr(api, "base_url", "")).startswith(f"{_UNIX_SCHEME}://"):
        return None
    adapter = (getattr(api, "adapters", None) or {}).get(f"{_UNIX_SCHEME}://")  # requests.Session's mounts
    path = getattr(adapter, "socket_path", None)
    return path if isinstance(path, str) and path else None


def _session_headers(api: Any) -> dict[str, str]:
    """What the docker SDK's session sends with each request: its User-Agent and the HttpHeaders of the docker
    CLI's config.json (a socket proxy or an authorization plugin may rely on them)."""
    headers = {"User-Agent": str(api.headers["User-Agent"])} if "User-Agent" in getattr(api, "headers", {}) else {}
    configured = (getattr(api, "_general_configs", None) or {}).get("HttpHeaders") or {}
    headers.update({str(key): str(value) for key, value in configured.items()})
    return headers


def _error_message(body: bytes) -> str:
    """The engine's `{"message": ...}` of an error response, or its text."""
    text = body.decode(errors="replace").strip()
    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(text).get("message") or text)
    return text


def _payloads(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """The payloads of the multiplexed frames in `blocks`, joined per block (a frame may span blocks), each
    stream's lines whole (module docstring): a payload that does not end a line waits in `open_lines`."""
    pending = b""
    size_at = _FRAME_SIZE.unpack_from
    open_lines: dict[int, bytes] = {}
    for block in blocks:
        data = pending + block if pending else block
        view = memoryview(data)  # slices of it are joined without a copy each
        payloads: list[bytes | memoryview] = []
        offset, size = 0, len(data)
        while offset + _HEADER_BYTES <= size:
            start = offset + _HEADER_BYTES
            end = start + size_at(data, offset + 4)[0]
            if end > size:
                break
            if open_lines or data[end - 1] != _NEWLINE:  # a line not ended (an empty payload never is one)
                if end > start:
                    payloads.extend(_line_pieces(open_lines, data[offset], data[start:end]))
            else:  # a whole line, and none held: the usual case
                payloads.append(view[start:end])
            offset = end
        pending = data[offset:]
        if payloads:
            yield b"".join(payloads)
    if open_lines:  # the last output of a stream that ended without a newline
        yield b"\n".join(open_lines.values())


def _line_pieces(open_lines: dict[int, bytes], stream: int, payload: bytes) -> list[bytes]:
    """What can be yielded of `stream`'s `payload`: its lines that end, joined to what `open_lines` held of the
    first; the rest is held, except whole LINE_PIECE_BYTES pieces of it, each ended (the driver's own cut), so
    that what is held stays bounded and another stream's line never joins it."""
    line = open_lines.pop(stream, b"") + payload
    ended = line.rfind(b"\n") + 1
    pieces, rest = [line[:ended]], line[ended:]
    while len(rest) > LINE_PIECE_BYTES:
        pieces += [rest[:LINE_PIECE_BYTES], b"\n"]
        rest = rest[LINE_PIECE_BYTES:]
    if rest:
        open_lines[stream] = rest
    return pieces

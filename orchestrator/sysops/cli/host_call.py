"""The CLI's side of the host's call socket: a routed command's shape, then its call, over one connection.

This is the hot path of `sysops <command>` in the local context, so it imports no gRPC, protobuf, Docker,
Kubernetes, typer or pydantic: it speaks host/call_wire.py's newline-delimited JSON to the resident host
(host/call_server.py), which runs the call. If the host does not run, the launcher starts it. Output goes
through cli/output.py, so plugin text reaches a terminal escaped. Ctrl-C closes the connection, which
cancels the call in the plugin (exit 130); a host that goes away mid-call is one line with the exit code of
an unreachable engine.
"""

from __future__ import annotations

import codecs
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

from sysops.cli.output import RAW_OUTPUT_VARIABLE, emit, write_result
from sysops.core.command_shape import CommandShape
from sysops.core.deadlines import TIMEOUT_ENV
from sysops.errors import CallInterruptedError, EngineUnavailableError, ExitCode, SysopsError
from sysops.host import call_wire as wire
from sysops.host.paths import host_paths
from sysops.host.peer import peer_credentials
from sysops.settings import Settings

#: How long a host that was just started (or found running) may take to open its call socket.
_CALL_SOCKET_WAIT_SECONDS = 3.0
#: How long `plugin ls` waits for the host's answer (the control API's calls wait as long).
_LIST_SECONDS = 60.0
_HOST_HINT = "`sysops host status` says whether it runs; `sysops host logs` shows why it stopped"


class HostError(SysopsError):
    """An error the host reported, with the exit code it gave."""

    def __init__(self, message: str, *, hint: str, details: str, exit_code: object) -> None:
        super().__init__(message, hint=hint, details=details)
        known = isinstance(exit_code, int) and exit_code in ExitCode.__members__.values()
        self.exit_code = ExitCode(exit_code) if isinstance(exit_code, int) and known else ExitCode.COMMAND_FAILED


class HostUnawareError(SysopsError):
    """The host does not know a request (one started by an older sysops): the caller takes another way."""


class HostCall:
    """One CLI run's connection to the host: `routes`, then `invoke` on the same connection."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._connection: socket.socket | None = None
        self._reader: wire.Reader | None = None

    def routes(self, prefix: str = "") -> list[CommandShape]:
        """The shapes of the commands named `prefix` or in its group (all if empty)."""
        try:
            reply = self._reply(self._request({"op": wire.ROUTES, "prefix": prefix}))
        except (OSError, wire.WireError) as exc:
            raise self._broken(f"did not answer which commands there are ({exc})") from None
        try:
            return [CommandShape.from_json(shape) for shape in reply["commands"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise self._broken(f"sent a malformed command list ({exc})") from None

    def plugins(self) -> list[dict[str, Any]]:
        """Every plugin's status (PluginStatus.as_dict), after the host reconciled: what `plugin ls` prints."""
        try:
            reader = self._request({"op": wire.LIST})
            if self._connection is not None:  # a hung engine makes the host slow to answer, never the CLI hang
                self._connection.settimeout(_LIST_SECONDS)
            reply = self._reply(reader)
            if reply.get("type") != wire.LIST:
                raise wire.WireError(f"it sent {str(reply.get('type'))[:40]!r}")
            statuses = json.loads(reader.text(reply.get("bytes")))
        except HostError as exc:
            if exc.message.startswith("unknown request"):
                raise HostUnawareError(exc.message) from None
            raise
        except (OSError, wire.WireError, ValueError) as exc:
            raise self._broken(f"did not answer which plugins there are ({exc})") from None
        if not isinstance(statuses, list) or not all(isinstance(status, dict) for status in statuses):
            raise self._broken("sent a malformed plugin list")
        return statuses

    def invoke(self, shape: CommandShape, arguments: dict[str, Any], output: str) -> None:
        """Run the command in the host and print its lines and result; Ctrl-C cancels it in the plugin."""
        what = f"{shape.plugin}: {shape.name}"
        try:
            request = {"op": wire.INVOKE, "command": shape.name, "arguments": arguments, "output": output}
            if TIMEOUT_ENV in os.environ:  # the deadline setting of the process that asks, as before the host
                request["command_timeout"] = os.environ[TIMEOUT_ENV]
            reader = self._request(request)
            raw = _binary_stdout()
            while True:
                reply = self._reply(reader)
                kind = reply.get("type")
                if kind == wire.LINE:  # one line, or a batch of lines joined by newlines (protocol 1.4)
                    _write_text(reader.chunks(reply.get("bytes")), raw, line=True)
                elif kind == wire.RESULT:
                    _print_result(reply, reader, output)
                    return
                else:
                    raise wire.WireError(f"it sent {str(kind)[:40]!r}")
        except KeyboardInterrupt:
            self.close()  # the host sees the connection close and cancels the plugin call
            raise CallInterruptedError(f"{what}: interrupted (Ctrl-C); the call was cancelled in the plugin") from None
        except (OSError, wire.WireError) as exc:
            self.close()
            raise EngineUnavailableError(
                f"{what}: the sysops host went away during the call ({exc})", hint=_HOST_HINT
            ) from None

    def close(self) -> None:
        """Close the connection (a later request opens a new one)."""
        if self._reader is not None:
            self._reader.close()
        if self._connection is not None:
            self._connection.close()
        self._connection = self._reader = None

    def __enter__(self) -> HostCall:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # the connection
    def _request(self, message: dict[str, Any]) -> wire.Reader:
        if self._connection is None or self._reader is None:
            self._connection = self._connect()
            self._reader = wire.Reader(self._connection)
        try:
            wire.send(self._connection, message)
        except OSError:
            self._raise_waiting_error(self._connection, self._reader)
            raise
        return self._reader

    @classmethod
    def _raise_waiting_error(cls, connection: socket.socket, reader: wire.Reader) -> None:
        """The host may have answered before our request went (busy, then closed): raise what it said."""
        try:
            connection.settimeout(1.0)
            cls._reply(reader)
        except (OSError, wire.WireError):
            pass

    @staticmethod
    def _reply(reader: wire.Reader) -> dict[str, Any]:
        """The next reply; a host error is raised with its exit code, a broken connection as a WireError."""
        reply = reader.message()
        if reply is None:
            raise wire.WireError("it closed the connection")
        if reply.get("type") == wire.ERROR:
            raise HostError(
                str(reply.get("message", "the host reported an error")),
                hint=str(reply.get("hint") or ""),
                details=str(reply.get("details") or ""),
                exit_code=reply.get("exit_code", 1),
            )
        return reply

    def _broken(self, what: str) -> EngineUnavailableError:
        self.close()
        return EngineUnavailableError(f"the sysops host {what}", hint=_HOST_HINT)

    def _connect(self) -> socket.socket:
        """A connection to the host's call socket, starting the host if it does not run."""
        path = str(host_paths(self.settings).call_socket)
        try:
            return _open(path)
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        from sysops.host.launcher import ensure_host

        ensure_host(self.settings)
        ends = time.monotonic() + _CALL_SOCKET_WAIT_SECONDS  # it may open its call socket just after answering
        while True:
            try:
                return _open(path)
            except OSError as exc:
                if time.monotonic() >= ends or not isinstance(exc, FileNotFoundError | ConnectionRefusedError):
                    raise EngineUnavailableError(
                        f"the sysops host does not answer on {path} ({exc.strerror or exc})", hint=_HOST_HINT
                    ) from None
            time.sleep(0.02)


def _open(path: str) -> socket.socket:
    """Connect to `path`; refuse a listener that is neither us nor root (it would see our arguments)."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(path)
        _, uid = peer_credentials(connection)
    except BaseException:
        connection.close()
        raise
    if uid not in (0, os.geteuid()):
        connection.close()
        raise EngineUnavailableError(
            f"refusing the call socket {path}: it is served by uid {uid}, not by you or root",
            hint="another local user may have replaced it; check the permissions of SYSOPS_HOME",
        )
    return connection


def _print_result(reply: dict[str, Any], reader: wire.Reader, output: str) -> None:
    kind = reply.get("kind")
    if kind == "text":
        _write_text(reader.chunks(reply.get("bytes", -1)), _binary_stdout())
    elif kind == "data":
        emit(reply.get("data"), output)


def _write_text(chunks: Iterator[bytes], raw: Any, *, line: bool = False) -> None:
    """Write a text as it arrives (a result can be 64 MiB) and flush it; a `line` (or a batch of lines) always
    gets its newline, a result only if it has none.

    On a terminal (`raw` None) it is decoded and escaped (cli/output.py); to a pipe or file it goes byte for byte.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("surrogatepass")
    last = b""
    for chunk in chunks:
        if raw is not None:
            raw.write(chunk)
        else:
            write_result(decoder.decode(chunk))
        last = chunk[-1:]
    ending = "\n" if line or last != b"\n" else ""
    if raw is None:
        write_result(decoder.decode(b"", final=True) + ending)
        sys.stdout.flush()
        return
    raw.write(ending.encode())
    raw.flush()


def _binary_stdout() -> Any:
    """stdout's byte stream when text may go there as it is (not a terminal, UTF-8), else None."""
    if sys.stdout.isatty() and os.environ.get(RAW_OUTPUT_VARIABLE) != "1":
        return None
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None or (sys.stdout.encoding or "").lower().replace("-", "") != "utf8":
        return None
    sys.stdout.flush()
    return buffer

"""The host's call socket: where `sysops <command>` gets its command's shape and runs it, without gRPC in the CLI.

A Unix socket inside SYSOPS_HOME, 0600 from its creation (file permissions are the authentication
locally, as with the Docker socket; a peer of another uid is refused as well). Every connection is served
on one event loop thread (asyncio): `invoke` runs core/aio_router.py (core/router.py's call: arguments
checked, re-send of calls refused during a roll, the command's deadline, failures named) over grpc.aio
plugin connections kept open across calls, so a call is handed between no threads on its way (the threaded
server this replaced spent most of the host's interpreter on such handoffs under concurrent calls). What
blocks runs in a few threads beside the loop: `routes` (from the store), `list` (`plugin ls`, the control
servicer's statuses), and a routed call's slow paths (aio_router.py). A client whose connection closes
during its call (Ctrl-C or kill -9 of the CLI) has the call cancelled in the plugin. At most
`max_connections` connections are served at once: one more is told the host is busy, in one line; a client
whose request line is not complete within `idle_seconds` (one deadline for the whole line, however slowly
its bytes come) or does not take a send for `send_seconds` is dropped, and a request line longer than
MAX_REQUEST_BYTES is answered with one error line (exit 2). The wire format is host/call_wire.py;
docs/protocol.md describes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sysops.core import aio_router, router
from sysops.core.aio_client import aio_clients, close_all
from sysops.core.client import InvocationResult
from sysops.core.command_shape import shape_from_spec
from sysops.core.deadlines import TIMEOUT_ENV
from sysops.core.thread_stores import ThreadStores
from sysops.errors import (
    CommandFailedError,
    EngineUnavailableError,
    PluginUnavailableError,
    SysopsError,
    UsageError,
    command_failure,
)
from sysops.host import call_wire as wire
from sysops.host import peer
from sysops.host.route_cache import RouteCache
from sysops.private_paths import ensure_private_dir, private_umask
from sysops.settings import Settings
from sysops.store import Route, Store

LOG = logging.getLogger("sysops.host.calls")

#: Connections served at once; one more is told the host is busy.
MAX_CONNECTIONS = 64
#: A client whose request line is not complete this long after it could send it is dropped.
IDLE_SECONDS = 30.0
#: A send the client does not take for this long drops it (a result goes in slices: this is per slice).
SEND_SECONDS = 60.0
#: Threads beside the loop for what blocks (routes, list, a call's slow paths).
BLOCKING_THREADS = 4
#: How often the pool's connections to instances no route names any more are closed.
PRUNE_SECONDS = 5.0
#: Command shapes kept ready to send (they are made again after a roll changes a spec).
_SHAPES_KEPT = 1024
_OUTPUT_FORMATS = ("text", "json")
#: Every plugin's status as JSON text (the control servicer's, for `plugin ls`).
Lister = Callable[[], str]


class _Dropped(Exception):
    """The connection is over: the client went away, did not read in time, or the server stops."""


class _Connection(asyncio.Protocol):
    """One client's connection: its bytes in, its replies out (with flow control), and its serving task."""

    def __init__(self, server: CallServer) -> None:
        self._server = server
        self._loop = server.loop
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self.closed = False  # the client closed its side, or the connection is lost
        self._paused = False  # the transport's send buffer is full
        self._waiter: asyncio.Future[None] | None = None
        self.calling = False
        self.task: asyncio.Task[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if self._server.admit(self, transport):
            self.task = self._loop.create_task(self._server.serve(self))

    def data_received(self, data: bytes) -> None:
        self._buffer += data  # bytes sent during a call are the next request, read once the reply ends
        if len(self._buffer) > wire.MAX_REQUEST_BYTES and self._transport is not None:
            self._transport.pause_reading()  # too long already: no more is read
        self._wake()

    def eof_received(self) -> None:
        self._hung_up()

    def connection_lost(self, exc: Exception | None) -> None:
        self._hung_up()
        self._server.forget(self)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    def _hung_up(self) -> None:
        self.closed = True
        if self.calling and self.task is not None:
            self.task.cancel()  # the client hung up during its call: cancel it in the plugin
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self, deadline: float, timeout_message: str) -> None:
        """Until bytes come, the send buffer drains or the connection ends; TimeoutError at `deadline`."""
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_at(deadline, _expire, waiter, timeout_message)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    # reading and writing
    async def request(self, idle_seconds: float) -> dict[str, Any] | None:
        """The next request, or None if the client closed between requests (module docstring for the limits)."""
        deadline = self._loop.time() + idle_seconds
        while True:
            end = self._buffer.find(b"\n", 0, wire.MAX_REQUEST_BYTES + 1)
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return wire.parse_message(line)
            if len(self._buffer) > wire.MAX_REQUEST_BYTES:
                raise wire.OversizedMessageError(f"message longer than {wire.MAX_REQUEST_BYTES} bytes")
            if self.closed:
                if self._buffer:
                    raise wire.WireError("connection closed in the middle of a message")
                return None
            await self._wait(deadline, "the request did not arrive in time")

    async def send(self, frames: Iterable[bytes], send_seconds: float) -> None:
        """Write `frames`, each once the client took enough of the last (_Dropped when it does not in time)."""
        for frame in frames:
            if self.closed or self._transport is None or self._transport.is_closing():
                raise _Dropped("the client went away")
            self._transport.write(frame)
            while self._paused and not self.closed:
                await self._wait(self._loop.time() + send_seconds, "the client did not read in time")

    def close(self) -> None:
        """Close after what was written is sent."""
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Close at once, dropping what was not sent (its call is cancelled)."""
        self._hung_up()
        if self._transport is not None:
            self._transport.abort()


def _expire(waiter: asyncio.Future[None], message: str) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError(message))


class CallServer:
    """The running call socket of a host; `stop` closes it, ends its connections and cancels their calls."""

    def __init__(
        self,
        settings: Settings,
        path: Path,
        listener: socket.socket,
        limits: tuple[int, float, float],
        lister: Lister | None = None,
    ) -> None:
        self.settings = settings
        self.path = path
        self._lister = lister
        self._identity = os.lstat(path).st_ino
        self._max_connections, self._idle_seconds, self._send_seconds = limits
        self._lock = threading.Lock()  # the shapes, made in the blocking threads
        self._connections: set[_Connection] = set()
        self._stopping = False
        self._pool = aio_clients()
        self._pruned_at = time.monotonic()
        self._stores = ThreadStores(settings.store_path)
        self._routes = RouteCache(self._stores)
        self._shapes: dict[tuple[str, str, bytes], dict[str, Any]] = {}
        self.loop = asyncio.new_event_loop()
        self._blocking = ThreadPoolExecutor(BLOCKING_THREADS, thread_name_prefix="sysops-call-blocking")
        self.loop.set_default_executor(self._blocking)
        self._thread = threading.Thread(target=self._run, name="sysops-calls", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._listen(listener), self.loop).result(10)
        except BaseException:
            self.loop.call_soon_threadsafe(self.loop.stop)
            listener.close()
            raise

    # lifecycle
    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self._stores.close_current()

    async def _listen(self, listener: socket.socket) -> None:
        self._stores.get()  # the loop's store connection, opened before the first call needs it
        self._server = await self.loop.create_unix_server(lambda: _Connection(self), sock=listener)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, remove the socket, end every connection (cancelling its call) and close plugin channels."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shut_down(timeout), self.loop).result(timeout + 1)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        self._blocking.shutdown(wait=False, cancel_futures=True)
        if not self._thread.is_alive():
            self.loop.close()

    async def _shut_down(self, timeout: float) -> None:
        self._server.close()  # closes the listening socket
        with contextlib.suppress(OSError):
            if os.lstat(self.path).st_ino == self._identity:
                self.path.unlink()
        tasks = [connection.task for connection in self._connections if connection.task is not None]
        for connection in list(self._connections):
            connection.abort()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        await close_all(self._pool)

    # connections
    def admit(self, connection: _Connection, transport: asyncio.Transport) -> bool:
        """Whether to serve a new connection: a peer of ours, when fewer than max_connections are served."""
        if not self._peer_is_trusted(transport):
            transport.close()
            return False
        if self._stopping or len(self._connections) >= self._max_connections:
            error = EngineUnavailableError(
                f"sysops host is busy: {self._max_connections} calls are in progress", hint="try again shortly"
            )
            transport.write(wire.encode(_error_message(error)))
            transport.close()
            return False
        self._connections.add(connection)
        return True

    def forget(self, connection: _Connection) -> None:
        """A connection is closed."""
        self._connections.discard(connection)

    @staticmethod
    def _peer_is_trusted(transport: asyncio.Transport) -> bool:
        """Only root and our own uid may call (the socket is 0600: this holds even if its mode was changed)."""
        connection = transport.get_extra_info("socket")
        try:
            return connection is not None and peer.peer_credentials(connection)[1] in (0, os.geteuid())
        except OSError:
            return False

    async def serve(self, connection: _Connection) -> None:
        """Answer requests until the client closes the connection, idles, stops reading or breaks the protocol."""
        try:
            while True:
                request = await connection.request(self._idle_seconds)
                if request is None:
                    return
                operation = request.get("op")
                if operation == wire.INVOKE:
                    await self._answer_invoke(connection, request)
                elif operation == wire.ROUTES:
                    await self._reply(connection, await self._in_thread(self._answer_routes, request))
                elif operation == wire.LIST and self._lister is not None:
                    await self._reply(connection, await self._in_thread(self._answer_list, self._lister))
                else:
                    unknown = UsageError(f"unknown request {str(operation)[:40]!r}")
                    await self._reply(connection, [wire.encode(_error_message(unknown))])
                    return
        except asyncio.CancelledError:
            pass  # the client hung up during its call (cancelled in the plugin), or the server stops
        except TimeoutError:
            LOG.debug("call socket: dropped a client that sent no request or did not read")
        except wire.OversizedMessageError as exc:
            LOG.debug("call socket: dropped a client: %s", exc)
            error = UsageError(
                f"request longer than {wire.MAX_REQUEST_BYTES} bytes", hint="arguments are at most 1 MiB"
            )
            with contextlib.suppress(_Dropped, TimeoutError):
                await self._reply(connection, [wire.encode(_error_message(error))])
        except wire.WireError as exc:
            LOG.debug("call socket: dropped a client: %s", exc)
        except _Dropped:
            pass
        except Exception:  # a bug: this connection ends, the others are served
            LOG.exception("call socket: a connection failed")
            internal = SysopsError("internal error in the sysops host (see its log)")
            with contextlib.suppress(_Dropped, TimeoutError):
                await self._reply(connection, [wire.encode(_error_message(internal))])
        finally:
            connection.close()

    async def _reply(self, connection: _Connection, frames: Iterable[bytes]) -> None:
        await connection.send(frames, self._send_seconds)

    async def _in_thread(self, function: Callable[..., list[bytes]], *arguments: Any) -> list[bytes]:
        return await self.loop.run_in_executor(None, function, *arguments)

    # routes and list (in the blocking threads)
    def _store(self) -> Store:
        """This thread's store connection (core/thread_stores.py)."""
        return self._stores.get()

    def _answer_routes(self, request: dict[str, Any]) -> list[bytes]:
        prefix = request.get("prefix", "")
        if not isinstance(prefix, str):
            return [wire.encode(_error_message(UsageError("routes: prefix must be text")))]
        shapes = [self._shape(route) for route in self._store().routes(prefix)]
        return [wire.encode({"type": wire.ROUTES, "commands": shapes})]

    @staticmethod
    def _answer_list(lister: Lister) -> list[bytes]:
        try:
            statuses = lister()
        except SysopsError as error:
            return [wire.encode(_error_message(error))]
        except Exception as exc:  # an engine that went away (requests' errors are OSErrors: not the client's)
            LOG.warning("plugin list failed: %s: %s", type(exc).__name__, exc)
            message = f"cannot list the plugins: {type(exc).__name__}: {exc}"
            failure: SysopsError = (
                EngineUnavailableError(message)
                if isinstance(exc, OSError)
                else CommandFailedError(f"internal error: {message}")
            )
            return [wire.encode(_error_message(failure))]
        return list(wire.text_frames({"type": wire.LIST}, statuses))

    def _shape(self, route: Route) -> dict[str, Any]:
        """The JSON shape of a route's command, made once per stored spec (parsing it costs ~0.1 ms)."""
        key = (route.command, route.plugin, route.spec)
        shape = self._shapes.get(key)
        if shape is None:
            shape = shape_from_spec(route.command, route.plugin, route.spec).to_json()
            with self._lock:
                if len(self._shapes) >= _SHAPES_KEPT:
                    self._shapes.clear()
                self._shapes[key] = shape
        return shape

    # invoke (on the loop)
    async def _answer_invoke(self, connection: _Connection, request: dict[str, Any]) -> None:
        try:
            route, arguments, output, environ = self._invocation(request)
        except SysopsError as error:
            await self._reply(connection, [wire.encode(_error_message(error))])
            return
        if connection.closed:
            return  # the client closed its side after sending the call: it is abandoned before it starts
        connection.calling = True
        try:
            call = aio_router.call(route, arguments, output, self._current_route, self._pool, environ)
            async with contextlib.aclosing(call) as items:
                async for item in items:
                    if isinstance(item, str):
                        await self._reply(connection, wire.text_frames({"type": wire.LINE}, item))
                    else:
                        await self._reply(connection, _result_frames(item, route))
        except SysopsError as error:
            await self._reply(connection, [wire.encode(_error_message(error))])
        finally:
            connection.calling = False
        await self._prune_pool()

    def _invocation(self, request: dict[str, Any]) -> tuple[Route, dict[str, Any], str, dict[str, str]]:
        """The route, arguments, output format and the caller's deadline setting (as an environment) of an
        `invoke` request, or the SysopsError to answer."""
        command, arguments, output = request.get("command"), request.get("arguments"), request.get("output", "text")
        if not isinstance(command, str) or not isinstance(arguments, dict) or output not in _OUTPUT_FORMATS:
            raise UsageError("invoke: needs a command (text), arguments (an object) and an output of text or json")
        timeout = request.get("command_timeout")  # the CLI's SYSOPS_COMMAND_TIMEOUT, not the host's
        if timeout is not None and not isinstance(timeout, str):
            raise UsageError("invoke: command_timeout must be text")
        environ = {TIMEOUT_ENV: timeout} if timeout is not None else {}
        router.check_arguments(command, arguments)
        route = self._routes.route(command)
        if route is None:
            raise PluginUnavailableError(
                f"no plugin provides command {command!r} any more", hint="`sysops plugin ls` shows what is up"
            )
        return route, arguments, output, environ

    def _current_route(self, command: str) -> Route | None:
        """A command's route as the store has it now (for a re-sent call; in a blocking thread)."""
        return self._store().route(command)

    async def _prune_pool(self) -> None:
        """Now and then, close the pool's connections to instances that no route names any more."""
        now = time.monotonic()
        if now - self._pruned_at < PRUNE_SECONDS:
            return
        self._pruned_at = now
        endpoints = await self.loop.run_in_executor(None, self._routed_endpoints)
        self._pool.retain(endpoints)

    def _routed_endpoints(self) -> set[str]:
        return {endpoint for route in self._store().routes() for endpoint in route.endpoints}


def _result_frames(result: InvocationResult, route: Route) -> Iterable[bytes]:
    """The call's result, or its failure as an error (exit code 1, as the plugin failed; 9 for a missing grant)."""
    if result.exit_code != 0:
        failure = command_failure(f"{route.plugin}: {route.command}: {result.error}", result.exit_code)
        return [wire.encode(_error_message(failure))]
    if result.kind == "text":
        try:
            return wire.text_frames({"type": wire.RESULT, "kind": "text"}, result.text)
        except ValueError as exc:
            return [wire.encode(_error_message(CommandFailedError(f"plugin {route.plugin!r} sent a {exc}")))]
    if result.kind == "data":
        return [wire.encode({"type": wire.RESULT, "kind": "data", "data": result.data})]
    return [wire.encode({"type": wire.RESULT, "kind": "none"})]


def _error_message(error: SysopsError) -> dict[str, Any]:
    return {
        "type": wire.ERROR,
        "message": error.message,
        "hint": error.hint,
        "details": error.details,
        "exit_code": int(error.exit_code),
    }


def start_call_server(
    settings: Settings,
    path: Path,
    *,
    max_connections: int = MAX_CONNECTIONS,
    idle_seconds: float = IDLE_SECONDS,
    send_seconds: float = SEND_SECONDS,
    lister: Lister | None = None,
) -> CallServer:
    """Listen on `path` (0600 from creation) and serve calls on an event loop thread until `stop`; `lister`
    answers `list` (the plugins' statuses as JSON text, as the control API's Query `list`)."""
    listener = _bind_private(path)
    return CallServer(settings, path, listener, (max_connections, idle_seconds, send_seconds), lister)


def _bind_private(path: Path) -> socket.socket:
    """A listening socket at `path`, never reachable by another user, even for an instant.

    It is bound under umask 077 in a fresh 0700 directory beside `path`, made 0600, then renamed into
    place. A symlink, or anything at `path` but a stale socket of ours, is refused (EngineUnavailableError),
    and so is a directory that is not ours and private (ensure_private_dir: UsageError).
    """
    ensure_private_dir(path.parent)
    _clear_stale(path)
    staging = Path(tempfile.mkdtemp(prefix=".c", dir=path.parent))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        bound = staging / "s"
        with private_umask():
            listener.bind(str(bound))
        os.chmod(bound, 0o600)
        listener.listen(128)
        os.rename(bound, path)
    except BaseException:
        listener.close()
        raise
    finally:
        with contextlib.suppress(OSError):
            for leftover in staging.iterdir():
                leftover.unlink()
            staging.rmdir()
    return listener


def _clear_stale(path: Path) -> None:
    """Remove a socket of ours nothing listens on; refuse anything else at `path`."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    problem = ""
    if stat.S_ISLNK(info.st_mode):
        problem = "it is a symlink"
    elif not stat.S_ISSOCK(info.st_mode):
        problem = "it is not a socket"
    elif info.st_uid != os.geteuid():
        problem = f"it is owned by uid {info.st_uid}"
    elif peer.listener(path) is not None:
        problem = "another process serves it"
    if problem:
        raise EngineUnavailableError(
            f"refusing to serve calls on {path}: {problem}",
            hint="stop the other sysops host, or remove what is there if you did not put it there",
        )
    path.unlink()

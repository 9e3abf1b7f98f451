"""The host's call socket: where `sysops <command>` gets its command's shape and runs it, without gRPC in the CLI.

A Unix socket inside SYSOPS_HOME, 0600 from its creation (file permissions are the authentication
locally, as with the Docker socket; a peer of another uid is refused as well). Each connection is served
by a worker thread: `routes` is answered from the store, `invoke` runs core/router.py (arguments checked,
re-send of calls refused during a roll, the command's deadline, failures named) over plugin connections
kept open across calls (core/client_pool.py); each worker accepts its own next connection. While a call
runs, one watcher thread (_HangupWatch) sees its client's connection close (Ctrl-C or kill -9 of the
CLI) or send anything, and cancels the plugin call then (within WATCH_AFTER_SECONDS + WATCH_TURN_SECONDS).
`list` answers `plugin ls` (cli/plugin_ls.py) with the control server's statuses. At most
`max_connections` connections are served at once: one more is told the host is busy, in one line; a
client whose request line is not complete within `idle_seconds` (one deadline for the whole line, however
slowly its bytes come) or does not read for `send_seconds` is dropped, and a request line longer than
MAX_REQUEST_BYTES is answered with one error line (exit 2). Workers beyond WORKER_FLOOR end (closing their
store connection) when no connection came for `worker_idle_seconds`. The
wire format is host/call_wire.py; docs/protocol.md describes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, cast

from sysops.core import router
from sysops.core.client import Abandon, InvocationResult
from sysops.core.client_pool import ClientPool
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
#: Workers kept however long they idle; more end after WORKER_IDLE_SECONDS without a connection.
WORKER_FLOOR = 4
WORKER_IDLE_SECONDS = 60.0
#: A send the client does not take within this long drops it (a result goes in slices: this is per slice).
SEND_SECONDS = 60.0
#: A call is watched for its client hanging up once it has run this long; then in turns of at most WATCH_TURN_SECONDS.
WATCH_AFTER_SECONDS = 0.02
WATCH_TURN_SECONDS = 0.25
#: How often the pool's connections to instances no route names any more are closed.
PRUNE_SECONDS = 5.0
#: Command shapes kept ready to send (they are made again after a roll changes a spec).
_SHAPES_KEPT = 1024
_OUTPUT_FORMATS = ("text", "json")
#: Every plugin's status as JSON text (the control servicer's, for `plugin ls`).
Lister = Callable[[], str]


class _HangupWatch:
    """One thread for all calls: abandons a call when its client's connection hangs up or sends anything.

    A call costs its worker no system call here, only a lock: each system call on a routed call's way hands
    the host's interpreter lock to another thread and waits to get it back, which under concurrent calls was a
    large part of what limited the host (with epoll registered and unregistered per call). The thread looks only
    at calls that have run WATCH_AFTER_SECONDS (most end sooner, and one that ends needs no cancelling), polling
    their connections in turns of at most WATCH_TURN_SECONDS, so a hang-up is noticed within about their sum. A
    connection found readable is checked again under the lock, where it is still that call's: a worker stops
    watching, under the same lock, before it uses or closes the connection again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[int, tuple[Abandon, float]] = {}
        self._calling = threading.Event()  # set when a call comes while none was watched
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="sysops-call-hangups", daemon=True)
        self._thread.start()

    def start(self, fd: int, abandon: Abandon) -> None:
        """Abandon the call if `fd` becomes readable (closed, or the client sent bytes) before `stop(fd)`."""
        with self._lock:
            if not self._calls:
                self._calling.set()
            self._calls[fd] = (abandon, time.monotonic())

    def stop(self, fd: int) -> None:
        """The call on `fd` ended: stop watching it (before the connection is used or closed again)."""
        with self._lock:
            self._calls.pop(fd, None)

    def close(self) -> None:
        """End the thread."""
        self._closing = True
        self._calling.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._closing:
            with self._lock:
                self._calling.clear()  # start() sets it again if a call comes while none is watched
                now = time.monotonic()
                watched = [(fd, call) for fd, call in self._calls.items() if now - call[1] >= WATCH_AFTER_SECONDS]
                young = [call[1] for call in self._calls.values() if now - call[1] < WATCH_AFTER_SECONDS]
            # the next young call is due to be watched this soon (or no call is young); not sooner than half the wait,
            # or a steady stream of short calls, each due soon after the one before, would wake this thread per call
            due = max(min(young) + WATCH_AFTER_SECONDS - now, WATCH_AFTER_SECONDS / 2) if young else WATCH_TURN_SECONDS
            if not watched:
                if young:
                    time.sleep(due)
                else:
                    self._calling.wait()
                continue
            poller = select.poll()
            for fd, _ in watched:
                poller.register(fd, select.POLLIN | select.POLLRDHUP)
            ready = {fd for fd, _ in poller.poll(due * 1000)}
            for fd, call in watched:
                if fd in ready:
                    self._abandon_if_still(fd, call)

    def _abandon_if_still(self, fd: int, call: tuple[Abandon, float]) -> None:
        """Abandon `call` if `fd` is still its connection and readable (the client hung up or spoke out of turn)."""
        with self._lock:
            if self._calls.get(fd) is not call or not _readable(fd):
                return
            del self._calls[fd]
        try:
            call[0]()  # cancel the plugin call
        except Exception:  # a bug: this call is not cancelled, but the thread goes on watching the others
            LOG.exception("call socket: cancelling a call whose client went away failed")


def _readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLRDHUP)
    return bool(poller.poll(0))


class CallServer:
    """The running call socket of a host; `stop` closes it, ends its connections and cancels their calls."""

    def __init__(
        self,
        settings: Settings,
        path: Path,
        listener: socket.socket,
        limits: tuple[int, float, float, float],
        lister: Lister | None = None,
    ) -> None:
        self.settings = settings
        self._lister = lister
        self.path = path
        self._listener = listener
        self._identity = os.lstat(path).st_ino
        self._max_connections, self._idle_seconds, self._send_seconds, worker_idle_seconds = limits
        listener.settimeout(worker_idle_seconds)  # an idle worker's accept() ends: it may retire
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._workers: list[threading.Thread] = []
        self._accepting = 0  # workers waiting in accept()
        self._stopping = False
        self._pool = ClientPool()
        self._pruned_at = time.monotonic()
        self._stores = ThreadStores(settings.store_path)
        self._routes = RouteCache(self._stores)
        self._shapes: dict[tuple[str, str, bytes], dict[str, Any]] = {}
        self._hangups = _HangupWatch()
        with self._lock:
            self._add_worker()

    # lifecycle
    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, remove the socket, end every connection (cancelling its call) and close plugin channels."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            connections = list(self._connections)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self._listener.close()
        with contextlib.suppress(OSError):
            if os.lstat(self.path).st_ino == self._identity:
                self.path.unlink()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)  # the worker's read ends, its call is abandoned
        ends = time.monotonic() + timeout
        for worker in list(self._workers):
            worker.join(max(0.0, ends - time.monotonic()))
        self._hangups.close()
        self._pool.close()

    # accepting: each worker accepts its next connection itself, so a call is handed to no other thread
    def _add_worker(self) -> None:
        """Start one more worker (the lock is held): there is always one waiting in accept()."""
        worker = threading.Thread(target=self._work, name=f"sysops-call-{len(self._workers)}", daemon=True)
        self._workers.append(worker)
        self._accepting += 1
        worker.start()

    def _work(self) -> None:
        try:
            while self._serve_next():
                pass
        finally:
            self._stores.close_current()

    def _serve_next(self) -> bool:
        """Accept one connection and serve it; False once the server stops."""
        try:
            accepted, _ = self._listener.accept()
            connection = wire.HostConnection.adopt(accepted, self._idle_seconds, self._send_seconds)
        except TimeoutError:
            return self._keep_idle_worker()
        except OSError:
            with self._lock:
                self._accepting -= 1
                stopping = self._stopping
            if not stopping:
                time.sleep(0.05)  # e.g. out of file descriptors: try again shortly
                with self._lock:
                    self._accepting += 1
            return not stopping
        with self._lock:
            self._accepting -= 1
            busy = self._stopping or len(self._connections) >= self._max_connections
            if not busy:
                self._connections.add(connection)
            if self._accepting == 0 and not self._stopping:
                self._add_worker()  # at most max_connections + 1: the last one only refuses
        try:
            if busy:
                self._refuse_busy(connection)
            elif self._peer_is_trusted(connection):
                self._serve(connection)
        except Exception:  # a bug: this connection ends, the worker keeps serving
            LOG.exception("call socket: a connection failed")
            with contextlib.suppress(OSError):
                wire.send(connection, _error_message(SysopsError("internal error in the sysops host (see its log)")))
        finally:
            connection.close()
            with self._lock:
                self._connections.discard(connection)
                self._accepting += 1
        return True

    def _keep_idle_worker(self) -> bool:
        """After no connection for a while: False (this worker ends) if it is beyond the floor or the server stops."""
        with self._lock:
            if self._stopping or (len(self._workers) > WORKER_FLOOR and self._accepting > 1):
                self._accepting -= 1
                self._workers.remove(threading.current_thread())
                return False
        return True

    @staticmethod
    def _peer_is_trusted(connection: socket.socket) -> bool:
        """Only root and our own uid may call (the socket is 0600: this holds even if its mode was changed)."""
        return peer.peer_credentials(connection)[1] in (0, os.geteuid())

    def _refuse_busy(self, connection: socket.socket) -> None:
        error = EngineUnavailableError(
            f"sysops host is busy: {self._max_connections} calls are in progress", hint="try again shortly"
        )
        with contextlib.suppress(OSError):
            connection.settimeout(1.0)
            wire.send(connection, _error_message(error))
        connection.close()

    # serving
    def _serve(self, connection: wire.HostConnection) -> None:
        """Answer requests until the client closes the connection, idles, stops reading or breaks the protocol."""
        reader = wire.RequestReader(connection, self._idle_seconds)
        try:
            while True:
                request = reader.message(wire.MAX_REQUEST_BYTES)
                if request is None:
                    return
                operation = request.get("op")
                if operation == wire.ROUTES:
                    self._answer_routes(connection, request)
                elif operation == wire.INVOKE:
                    self._answer_invoke(connection, request)
                elif operation == wire.LIST and self._lister is not None:
                    self._answer_list(connection, self._lister)
                else:
                    wire.send(connection, _error_message(UsageError(f"unknown request {str(operation)[:40]!r}")))
                    return
        except TimeoutError:  # a request late, or a send not taken (wire.HostConnection)
            LOG.debug("call socket: dropped a client that sent no request or did not read")
        except wire.OversizedMessageError as exc:
            LOG.debug("call socket: dropped a client: %s", exc)
            error = UsageError(
                f"request longer than {wire.MAX_REQUEST_BYTES} bytes", hint="arguments are at most 1 MiB"
            )
            with contextlib.suppress(OSError):
                connection.settimeout(1.0)
                wire.send(connection, _error_message(error))
        except wire.WireError as exc:
            LOG.debug("call socket: dropped a client: %s", exc)
        except OSError:
            pass  # the client went away (a call running for it was cancelled)

    def _store(self) -> Store:
        """This worker thread's store connection (core/thread_stores.py)."""
        return self._stores.get()

    def _answer_routes(self, connection: socket.socket, request: dict[str, Any]) -> None:
        prefix = request.get("prefix", "")
        if not isinstance(prefix, str):
            wire.send(connection, _error_message(UsageError("routes: prefix must be text")))
            return
        shapes = [self._shape(route) for route in self._store().routes(prefix)]
        wire.send(connection, {"type": wire.ROUTES, "commands": shapes})

    @staticmethod
    def _answer_list(connection: socket.socket, lister: Lister) -> None:
        try:
            statuses = lister()
        except SysopsError as error:
            wire.send(connection, _error_message(error))
            return
        except Exception as exc:  # an engine that went away (requests' errors are OSErrors: not the client's)
            LOG.warning("plugin list failed: %s: %s", type(exc).__name__, exc)
            message = f"cannot list the plugins: {type(exc).__name__}: {exc}"
            failure: SysopsError = (
                EngineUnavailableError(message)
                if isinstance(exc, OSError)
                else CommandFailedError(f"internal error: {message}")
            )
            wire.send(connection, _error_message(failure))
            return
        wire.send_text(connection, {"type": wire.LIST}, statuses)

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

    def _answer_invoke(self, connection: socket.socket, request: dict[str, Any]) -> None:
        try:
            route, arguments, output, environ = self._invocation(request)
        except SysopsError as error:
            wire.send(connection, _error_message(error))
            return
        abandon = Abandon()
        self._hangups.start(connection.fileno(), abandon)
        try:
            call = router.call(route, arguments, output, self._routes.fresh, abandon, self._pool, environ)
            with contextlib.closing(cast(Generator[str | InvocationResult, None, None], call)) as items:
                for item in items:
                    if isinstance(item, str):
                        wire.send_text(connection, {"type": wire.LINE}, item)
                    else:
                        _send_result(connection, item, route)
        except SysopsError as error:
            if not abandon.abandoned:
                wire.send(connection, _error_message(error))
        except OSError:
            abandon()  # the client stopped reading: cancel the plugin call
            raise
        finally:
            self._hangups.stop(connection.fileno())
        self._prune_pool()

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

    def _prune_pool(self) -> None:
        """Now and then, close the pool's connections to instances that no route names any more."""
        now = time.monotonic()
        with self._lock:
            if now - self._pruned_at < PRUNE_SECONDS:
                return
            self._pruned_at = now
        self._pool.retain({endpoint for route in self._store().routes() for endpoint in route.endpoints})


def _send_result(connection: socket.socket, result: InvocationResult, route: Route) -> None:
    """The call's result, or its failure as an error (exit code 1, as the plugin failed; 9 for a missing grant)."""
    if result.exit_code != 0:
        failure = command_failure(f"{route.plugin}: {route.command}: {result.error}", result.exit_code)
        wire.send(connection, _error_message(failure))
    elif result.kind == "text":
        try:
            wire.send_text(connection, {"type": wire.RESULT, "kind": "text"}, result.text)
        except ValueError as exc:
            wire.send(connection, _error_message(CommandFailedError(f"plugin {route.plugin!r} sent a {exc}")))
    elif result.kind == "data":
        wire.send(connection, {"type": wire.RESULT, "kind": "data", "data": result.data})
    else:
        wire.send(connection, {"type": wire.RESULT, "kind": "none"})


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
    worker_idle_seconds: float = WORKER_IDLE_SECONDS,
    lister: Lister | None = None,
) -> CallServer:
    """Listen on `path` (0600 from creation) and serve calls in background threads until `stop`; `lister` answers
    `list` (the plugins' statuses as JSON text, as the control API's Query `list`)."""
    listener = _bind_private(path)
    limits = (max_connections, idle_seconds, send_seconds, worker_idle_seconds)
    return CallServer(settings, path, listener, limits, lister)


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

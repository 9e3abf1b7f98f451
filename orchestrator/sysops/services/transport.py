"""How plugin instances reach the host services: `sysops.host.v1.Host/Call` over gRPC, authenticated.

Locally every instance gets its own small gRPC server on `host.sock` in its socket directory (the
directory its container sees at /run/sysops, so a `network: none` plugin reaches it). The socket is born
0600 and then given to the plugin's uid (the owner of the directory), so only that plugin can connect; the
listener knows which instance it serves, and the instance token must come with every call as well. Each
listener has its own small thread pool (WORKERS_PER_INSTANCE): with one pool for all, a plugin flooding
its socket with calls (48 clients writing 60 KB state values) kept every thread and delayed another
plugin's state.get from 0.6 ms to 180 ms (median); now it waits only for its own threads. A small call the
services answer from memory (`cached_call`: a cached `state.get` of a plugin granted it lately) is answered on
the listener's event loop instead: the hop to a thread and back cost more than the read (1.39x a health Check
on the same socket, against 1.16x; bench_host_services). And at most
CALLS_IN_FLIGHT_PER_INSTANCE calls of an instance are held (1,000 pending 500 KB calls grew the host by
500 MB before); more are refused at once. The host
attaches a listener right after an instance's container starts (the Docker driver mounts the directory's
tmpfs at start, so not before), detaches it when the instance is removed, and `sync`s them with the store
(at start: re-adoption; and every few seconds: a listener whose socket went away is made again).

In a cluster the server's own gRPC server carries the same servicer, and the caller is the instance whose
token the call carries (looked up in the store); the server's caller check (server/roles.py) lets Host calls
through, because the instance token is checked here. There every plugin pod's host calls share the
server's worker threads with the operators' calls, so the servicer runs at most CALLS_RUNNING_PER_INSTANCE
calls of one instance at once and refuses more at once (RESOURCE_EXHAUSTED): a pod flooding the server
holds a few threads, never all of them.

Replies are JSON; a ServiceCallError becomes the gRPC status of its code, with its one-line message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import stat
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sysops_sdk.protocol.v1 import host_pb2 as pb
from sysops_sdk.protocol.v1 import host_pb2_grpc as pb_grpc

from sysops.private_paths import SOCKET_UMASK, private_umask
from sysops.services.call import ANSWERED_FROM_MEMORY, NOT_CACHED, Caller, ServiceCallError
from sysops.store import InstanceRecord, Store

LOG = logging.getLogger("sysops.services.transport")
#: The socket's name in an instance's socket directory (the plugin sees /run/sysops/host.sock).
HOST_SOCKET = "host.sock"
#: The endpoint a local plugin is given (SYSOPS_HOST_ENDPOINT).
LOCAL_ENDPOINT = f"unix:///run/sysops/{HOST_SOCKET}"
#: Largest ServiceCall accepted (a state value is at most 64 KiB as JSON; escaping can double it).
MAX_REQUEST_BYTES = 512 * 1024
#: Threads serving the host calls of one local instance (created as calls need them, ended with the listener).
WORKERS_PER_INSTANCE = 4
#: Calls of one instance running or waiting for a thread; more are refused at once (RESOURCE_EXHAUSTED), so
#: the requests the host holds for an instance stay under this many times MAX_REQUEST_BYTES.
CALLS_IN_FLIGHT_PER_INSTANCE = 32
#: Calls of one instance the servicer runs at once (the cluster server's threads are shared by everyone).
CALLS_RUNNING_PER_INSTANCE = WORKERS_PER_INSTANCE
#: Calls up to this size may be answered on a listener's event loop when the services hold the answer in memory
#: (a `state.get` is about a hundred bytes); larger ones always go to its threads.
CACHED_REQUEST_BYTES = 4096
#: How long attaching or detaching a listener waits for the event loop at most.
_LOOP_CALL_SECONDS = 30.0
_T = TypeVar("_T")
_AUTHORIZATION = "authorization"
_BEARER = "Bearer "


class ServiceDispatcher(Protocol):
    """What serves a call (services/dispatch.py HostServices)."""

    def call(self, caller: Caller, service: str, method: str, arguments: dict[str, Any]) -> Any:
        """Run one service call for `caller`; raise ServiceCallError with a gRPC status name and a message."""
        ...

    def cached_call(self, caller: Caller, service: str, method: str, arguments: dict[str, Any]) -> Any:
        """`call`'s result if it needs no blocking work (from memory), else NOT_CACHED."""
        ...


#: Finds the instance a call comes from by the token it carries (None: unknown).
Identify = Callable[[str], Caller | None]


def status_of(code: object) -> grpc.StatusCode:
    """The gRPC status for a ServiceCallError code (a StatusCode, or its name in any case); INTERNAL if unknown."""
    if isinstance(code, grpc.StatusCode):
        return code
    name = str(getattr(code, "name", code)).upper()
    return grpc.StatusCode.__members__.get(name, grpc.StatusCode.INTERNAL)


def bearer_token(context: grpc.ServicerContext) -> str:
    """The bearer token of a call's metadata ('' without one)."""
    for key, value in context.invocation_metadata() or ():
        if key == _AUTHORIZATION and isinstance(value, str) and value.startswith(_BEARER):
            return value.removeprefix(_BEARER)
    return ""


class HostServicer(pb_grpc.HostServicer):
    """Serves Host.Call: authenticates the caller, decodes the JSON arguments, dispatches, encodes the result."""

    def __init__(self, services: ServiceDispatcher, identify: Identify) -> None:
        self.services = services
        self.identify = identify
        self._running: dict[str, int] = {}
        self._running_lock = threading.Lock()

    def Call(self, request: pb.ServiceCall, context: grpc.ServicerContext) -> pb.ServiceReply:
        """One host service call; errors are gRPC statuses with one line."""
        try:
            return self.answer(request, bearer_token(context))
        except CallRefused as refusal:
            _abort(context, refusal.status, refusal.message)

    def answer(self, request: pb.ServiceCall, token: str) -> pb.ServiceReply:
        """The reply to a call carrying `token`; raise CallRefused with the gRPC status to end it with."""
        caller = self.identify(token)
        if caller is None:
            raise CallRefused(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong sysops instance token")
        with self._running_lock:
            running = self._running.get(caller.instance_id, 0)
            if running < CALLS_RUNNING_PER_INSTANCE:
                self._running[caller.instance_id] = running + 1
        if running >= CALLS_RUNNING_PER_INSTANCE:
            raise CallRefused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"instance {caller.instance_id} of plugin '{caller.plugin}' already has "
                f"{CALLS_RUNNING_PER_INSTANCE} host calls running; wait for one to finish",
            )
        try:
            return self._call(caller, request)
        finally:
            with self._running_lock:
                left = self._running[caller.instance_id] - 1
                if left:
                    self._running[caller.instance_id] = left
                else:
                    del self._running[caller.instance_id]

    def answer_cached(self, request: pb.ServiceCall, token: str) -> pb.ServiceReply | None:
        """The reply to a small call the services answer without blocking (`cached_call`: a cached `state.get`),
        or None to `answer` it on a thread; raise CallRefused as `answer` does. Only for an `identify` that
        blocks on nothing (a listener's: it knows its instance)."""
        if (request.service, request.method) not in ANSWERED_FROM_MEMORY or request.ByteSize() > CACHED_REQUEST_BYTES:
            return None
        caller = self.identify(token)
        if caller is None:
            return None  # `answer` refuses it
        result = _dispatched(request, caller, self.services.cached_call)
        return None if result is NOT_CACHED else _reply(result)

    def _call(self, caller: Caller, request: pb.ServiceCall) -> pb.ServiceReply:
        where = f"{request.service}.{request.method}"
        size = request.ByteSize()
        if size > MAX_REQUEST_BYTES:
            message = f"{where}: the call is {size} bytes, more than the {MAX_REQUEST_BYTES} allowed"
            raise CallRefused(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
        return _reply(_dispatched(request, caller, self.services.call))


def _dispatched(
    request: pb.ServiceCall, caller: Caller, dispatch: Callable[[Caller, str, str, dict[str, Any]], Any]
) -> Any:
    """`dispatch`'s result for the call: a ServiceCallError becomes its status, a bug in a service one INTERNAL line
    to the plugin (logged here)."""
    where = f"{request.service}.{request.method}"
    arguments = _arguments(request)
    try:
        return dispatch(caller, request.service, request.method, arguments)
    except ServiceCallError as error:
        raise CallRefused(status_of(error.code), error.message) from None
    except Exception:
        LOG.exception("host service call %s of plugin %r failed", where, caller.plugin)
        raise CallRefused(grpc.StatusCode.INTERNAL, f"{where}: internal error in the sysops host") from None


def _arguments(request: pb.ServiceCall) -> dict[str, Any]:
    """A call's arguments: a JSON object (CallRefused INVALID_ARGUMENT otherwise)."""
    where = f"{request.service}.{request.method}"
    try:
        arguments = json.loads(request.arguments_json) if request.arguments_json else {}
    except (ValueError, RecursionError):
        raise CallRefused(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: the arguments are not valid JSON") from None
    if not isinstance(arguments, dict):
        raise CallRefused(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: the arguments are not a JSON object")
    return arguments


def _reply(result: Any) -> pb.ServiceReply:
    return pb.ServiceReply(result_json="" if result is None else json.dumps(result))


class CallRefused(Exception):
    """A host call ended with a gRPC status other than OK, and its one-line message."""

    def __init__(self, status: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _ListenerServicer(pb_grpc.HostServicer):
    """Host.Call on one instance's listener (an asyncio server): the call runs on the listener's own threads,
    and at most CALLS_IN_FLIGHT_PER_INSTANCE of them are held, running or waiting for a thread; more are refused
    at once. A call whose client went away still finishes on its thread and holds its place until then (as on
    a thread-per-call server), so cancelling calls cannot pile up work behind the limit."""

    def __init__(self, servicer: HostServicer, pool: futures.ThreadPoolExecutor) -> None:
        self._servicer = servicer
        self._pool = pool
        self._in_flight = 0
        self._lock = threading.Lock()

    async def Call(self, request: pb.ServiceCall, context: grpc.aio.ServicerContext[Any, Any]) -> pb.ServiceReply:
        token = bearer_token(context)
        try:  # a read from memory is answered here: a hop to a thread and back cost more than the read
            cached = self._servicer.answer_cached(request, token)
        except CallRefused as refusal:
            await _abort_async(context, refusal.status, refusal.message)
        if cached is not None:
            return cached
        with self._lock:
            held = self._in_flight < CALLS_IN_FLIGHT_PER_INSTANCE
            self._in_flight += held
        if not held:
            await _abort_async(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"more than {CALLS_IN_FLIGHT_PER_INSTANCE} host calls of this instance in flight; "
                "wait for one to finish",
            )
        try:
            work = self._pool.submit(self._servicer.answer, request, token)
        except RuntimeError:  # the listener is being detached: its threads are shut down
            self._finished(None)
            await _abort_async(context, grpc.StatusCode.UNAVAILABLE, "the instance's host services are stopping")
        work.add_done_callback(self._finished)
        outcome = asyncio.wrap_future(work)
        outcome.add_done_callback(_retrieved)  # a call whose client left: its refusal is nobody's to log
        try:
            return await asyncio.shield(outcome)
        except CallRefused as refusal:
            await _abort_async(context, refusal.status, refusal.message)

    def _finished(self, _work: futures.Future[pb.ServiceReply] | None) -> None:
        with self._lock:
            self._in_flight -= 1


def _retrieved(outcome: asyncio.Future[Any]) -> None:
    """Mark an outcome's exception as seen (asyncio logs "exception was never retrieved" otherwise)."""
    if not outcome.cancelled():
        outcome.exception()


def _abort(context: grpc.ServicerContext, status: grpc.StatusCode, message: str) -> NoReturn:
    """End the call with `status` (grpc's abort raises)."""
    context.abort(status, message)
    raise AssertionError("unreachable: grpc's abort raises")


class _CheckOnlyHealth(health_pb2_grpc.HealthServicer):  # type: ignore[misc]  # grpc_health ships no types
    """The health service of a listener: Check answers SERVING. Watch, a stream held open per request (with
    its service name, up to the message cap), is not offered: nothing of sysops uses it, and a plugin could
    hold memory with it."""

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        if request.service:
            await _abort_async(context, grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        await _abort_async(context, grpc.StatusCode.UNIMPLEMENTED, "Watch is not offered on host.sock: use Check")
        yield health_pb2.HealthCheckResponse()  # pragma: no cover - unreachable, makes this a stream handler


async def _abort_async(context: grpc.aio.ServicerContext[Any, Any], status: grpc.StatusCode, message: str) -> NoReturn:
    """End an asyncio call with `status` (its abort raises)."""
    await context.abort(status, message)
    raise AssertionError("unreachable: grpc's abort raises")


def instance_caller(instance: InstanceRecord) -> Caller:
    """The identity of calls from `instance`."""
    return Caller(plugin=instance.plugin, instance_id=instance.id, revision=instance.revision)


def token_matches(offered: str, expected: str) -> bool:
    """Constant-time comparison of an offered token with an instance's (an empty one never matches)."""
    return bool(offered) and bool(expected) and hmac.compare_digest(offered.encode(), expected.encode())


def store_identify(store_path: Path) -> Identify:
    """Identify callers by token among the store's instances (the cluster's way: no socket per instance).

    Each serving thread keeps its own store connection.
    """
    local = threading.local()

    def identify(token: str) -> Caller | None:
        if not token:
            return None
        store: Store | None = getattr(local, "store", None)
        if store is None:
            store = local.store = Store(store_path)
        found = None
        for instance in store.instances():
            if token_matches(token, instance.token):
                found = instance  # no early exit: the time taken does not depend on where the token is
        return instance_caller(found) if found is not None else None

    return identify


def add_host_servicer(server: grpc.Server, services: ServiceDispatcher, store_path: Path) -> None:
    """Serve Host on `server` (the cluster's server), identifying callers by token from the store."""
    servicer = HostServicer(services, store_identify(store_path))
    pb_grpc.add_HostServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the socket at `path`, or None when no socket is there."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISSOCK(info.st_mode) else None


@dataclass
class _Listener:
    instance: InstanceRecord
    server: grpc.aio.Server
    pool: futures.ThreadPoolExecutor
    path: Path
    identity: tuple[int, int] | None


class ListenerError(Exception):
    """A listener could not be created (the socket directory is gone or not usable)."""


class InstanceListeners:
    """One gRPC server per local instance on `<socket_dir>/host.sock`, each with its own `workers` threads.

    The servers are asyncio ones (grpc.aio), all on one event loop in a thread of their own: a threaded gRPC
    server keeps a thread that wakes every 200 ms even when idle (grpcio's completion-queue poll), which with
    fifty instances was a third of the host's idle CPU; asyncio servers share one poller that sleeps until
    something happens. Each call still runs on its instance's own threads (see _ListenerServicer).
    """

    def __init__(self, services: ServiceDispatcher, workers: int = WORKERS_PER_INSTANCE) -> None:
        self.services = services
        self.workers = workers
        self._lock = threading.Lock()
        self._listeners: dict[str, _Listener] = {}
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._stopped = False
        #: Held by every attach, detach and sync; hold it across reading the instances to sync with, so a
        #: listener attached meanwhile (a roll's new instance) is not taken for a gone one.
        self.changing = threading.RLock()

    def attached(self) -> set[str]:
        """Ids of the instances that have a listener."""
        with self._lock:
            return set(self._listeners)

    def attach(self, instance: InstanceRecord) -> None:
        """Serve `instance` on `host.sock` in its socket directory (replacing a listener it had); raise
        ListenerError when the directory cannot hold it."""
        if not instance.socket_dir or not instance.endpoint.startswith("unix:"):
            return  # not a local instance: nothing to listen on
        with self.changing:
            self._attach(instance)

    def _attach(self, instance: InstanceRecord) -> None:
        self.detach(instance.id)
        directory = Path(instance.socket_dir)
        try:
            owner = os.lstat(directory)
        except OSError as exc:
            raise ListenerError(f"socket directory of instance {instance.id} is gone: {exc}") from None
        if not stat.S_ISDIR(owner.st_mode):
            raise ListenerError(f"socket directory of instance {instance.id} is not a directory")
        path = directory / HOST_SOCKET
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a stale socket of an earlier host, or anything the plugin put there
        pool = futures.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="sysops-host-services")
        try:
            server = self._in_loop(self._serve(instance, pool, path, owner))
        except BaseException:
            pool.shutdown(wait=False)
            raise
        with self._lock:
            self._listeners[instance.id] = _Listener(instance, server, pool, path, _identity(path))

    async def _serve(
        self, instance: InstanceRecord, pool: futures.ThreadPoolExecutor, path: Path, owner: os.stat_result
    ) -> grpc.aio.Server:
        """Make, bind and start an instance's server (in the event loop: an asyncio server belongs to it)."""

        def identify(token: str) -> Caller | None:
            return instance_caller(instance) if token_matches(token, instance.token) else None

        # Every call counts, from its headers on (one whose message never comes, a health check): more than
        # CALLS_IN_FLIGHT_PER_INSTANCE at once are refused by gRPC itself, before any of them is read.
        server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", MAX_REQUEST_BYTES + 1024)],
            maximum_concurrent_rpcs=CALLS_IN_FLIGHT_PER_INSTANCE,
        )
        listener_servicer = _ListenerServicer(HostServicer(self.services, identify), pool)
        pb_grpc.add_HostServicer_to_server(listener_servicer, server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(_CheckOnlyHealth(), server)
        try:
            try:
                with private_umask(SOCKET_UMASK):  # born 0600: nobody but its owner connects, even for an instant
                    port = server.add_insecure_port(f"unix:{path}")
            except RuntimeError:  # grpc raises where it once returned 0
                port = 0
            if port == 0:
                raise ListenerError(f"cannot listen on {path}")
            if os.geteuid() == 0 and owner.st_uid != 0:
                # The plugin owns its directory (and may swap names in it): never follow a link it planted.
                os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)
            await server.start()
        except BaseException:  # failed, or cancelled by an attach that gave up waiting: nothing left listening
            await server.stop(None)
            raise
        return server

    def _in_loop(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        """Run `coroutine` on the listeners' event loop (started on first use) and return its result; one that
        does not finish within _LOOP_CALL_SECONDS is cancelled (TimeoutError). ListenerError after `stop`."""
        with self._lock:
            if self._stopped:
                coroutine.close()
                raise ListenerError("the host services are stopped")
            if self._event_loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="sysops-host-services-io", daemon=True)
                thread.start()
                self._event_loop, self._loop_thread = loop, thread
            loop = self._event_loop
        running = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            return running.result(_LOOP_CALL_SECONDS)
        except futures.TimeoutError:
            running.cancel()
            raise

    def detach(self, instance_id: str) -> None:
        """Stop serving an instance and remove its socket (if it is still the one we made)."""
        with self.changing, self._lock:
            listener = self._listeners.pop(instance_id, None)
        if listener is None:
            return
        with contextlib.suppress(futures.TimeoutError, RuntimeError):
            self._in_loop(listener.server.stop(None))
        listener.pool.shutdown(wait=False, cancel_futures=True)
        if listener.identity is not None and _identity(listener.path) == listener.identity:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(listener.path)

    def sync(self, instances: Iterable[InstanceRecord]) -> None:
        """Serve exactly `instances`: attach the new ones and those whose socket went away (or whose token
        changed), detach the rest. One failing instance does not stop the others (it is logged)."""
        with self.changing:
            self._sync(instances)

    def _sync(self, instances: Iterable[InstanceRecord]) -> None:
        if self._stopped:
            return  # the host is stopping: nothing to serve
        wanted = {instance.id: instance for instance in instances if instance.socket_dir}
        with self._lock:
            current = dict(self._listeners)
        for instance_id in set(current) - set(wanted):
            self.detach(instance_id)
        for instance_id, instance in wanted.items():
            listener = current.get(instance_id)
            if (
                listener is not None
                and listener.instance.token == instance.token
                and listener.identity is not None
                and _identity(listener.path) == listener.identity
            ):
                continue
            try:
                self.attach(instance)
            except (ListenerError, OSError) as exc:
                LOG.warning("no host services for %s instance %s: %s", instance.plugin, instance_id, exc)

    def stop(self) -> None:
        """Detach every instance (ending its thread pool), then end the event loop's thread; later attaches are
        refused (ListenerError)."""
        with self.changing:
            for instance_id in self.attached():
                self.detach(instance_id)
            with self._lock:
                self._stopped = True
                loop, thread = self._event_loop, self._loop_thread
                self._event_loop = self._loop_thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_LOOP_CALL_SECONDS)
            if not thread.is_alive():
                loop.close()

"""How plugin instances reach the host services: `sysops.host.v1.Host/Call` over gRPC, authenticated.

Locally every instance gets its own small gRPC server on `host.sock` in its socket directory (the
directory its container sees at /run/sysops, so a `network: none` plugin reaches it). The socket is born
0600 and then given to the plugin's uid (the owner of the directory), so only that plugin can connect; the
listener knows which instance it serves, and the instance token must come with every call as well. Each
listener has its own small thread pool (WORKERS_PER_INSTANCE): with one pool for all, a plugin flooding
its socket with calls (48 clients writing 60 KB state values) kept every thread and delayed another
plugin's state.get from 0.6 ms to 180 ms (median); now it waits only for its own threads. And at most
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

import contextlib
import hmac
import json
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from sysops_sdk.protocol.v1 import host_pb2 as pb
from sysops_sdk.protocol.v1 import host_pb2_grpc as pb_grpc

from sysops.private_paths import SOCKET_UMASK, private_umask
from sysops.services.call import Caller, ServiceCallError
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
_AUTHORIZATION = "authorization"
_BEARER = "Bearer "


class ServiceDispatcher(Protocol):
    """What serves a call (services/dispatch.py HostServices)."""

    def call(self, caller: Caller, service: str, method: str, arguments: dict[str, Any]) -> Any:
        """Run one service call for `caller`; raise ServiceCallError with a gRPC status name and a message."""
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
        caller = self.identify(bearer_token(context))
        if caller is None:
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, "missing or wrong sysops instance token")
        with self._running_lock:
            running = self._running.get(caller.instance_id, 0)
            if running < CALLS_RUNNING_PER_INSTANCE:
                self._running[caller.instance_id] = running + 1
        if running >= CALLS_RUNNING_PER_INSTANCE:
            _abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"instance {caller.instance_id} of plugin '{caller.plugin}' already has "
                f"{CALLS_RUNNING_PER_INSTANCE} host calls running; wait for one to finish",
            )
        try:
            return self._call(caller, request, context)
        finally:
            with self._running_lock:
                left = self._running[caller.instance_id] - 1
                if left:
                    self._running[caller.instance_id] = left
                else:
                    del self._running[caller.instance_id]

    def _call(self, caller: Caller, request: pb.ServiceCall, context: grpc.ServicerContext) -> pb.ServiceReply:
        where = f"{request.service}.{request.method}"
        size = request.ByteSize()
        if size > MAX_REQUEST_BYTES:
            message = f"{where}: the call is {size} bytes, more than the {MAX_REQUEST_BYTES} allowed"
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, message)
        try:
            arguments = json.loads(request.arguments_json) if request.arguments_json else {}
        except (ValueError, RecursionError):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"{where}: the arguments are not valid JSON")
        if not isinstance(arguments, dict):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"{where}: the arguments are not a JSON object")
        try:
            result = self.services.call(caller, request.service, request.method, arguments)
        except ServiceCallError as error:
            _abort(context, status_of(error.code), error.message)
        except Exception:  # a bug in a service: logged here, one line to the plugin
            LOG.exception("host service call %s of plugin %r failed", where, caller.plugin)
            _abort(context, grpc.StatusCode.INTERNAL, f"{where}: internal error in the sysops host")
        return pb.ServiceReply(result_json="" if result is None else json.dumps(result))


def _abort(context: grpc.ServicerContext, status: grpc.StatusCode, message: str) -> NoReturn:
    """End the call with `status` (grpc's abort raises)."""
    context.abort(status, message)
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
    server: grpc.Server
    pool: futures.ThreadPoolExecutor
    path: Path
    identity: tuple[int, int] | None


class ListenerError(Exception):
    """A listener could not be created (the socket directory is gone or not usable)."""


class InstanceListeners:
    """One gRPC server per local instance on `<socket_dir>/host.sock`, each with its own `workers` threads."""

    def __init__(self, services: ServiceDispatcher, workers: int = WORKERS_PER_INSTANCE) -> None:
        self.services = services
        self.workers = workers
        self._lock = threading.Lock()
        self._listeners: dict[str, _Listener] = {}
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
        server = self._server(instance, pool)
        with private_umask(SOCKET_UMASK):  # born 0600: nobody but its owner connects, even for an instant
            port = server.add_insecure_port(f"unix:{path}")
        if port == 0:
            pool.shutdown(wait=False)
            raise ListenerError(f"cannot listen on {path}")
        if os.geteuid() == 0 and owner.st_uid != 0:
            # The plugin owns its directory (and may swap names in it): never follow a link it planted.
            os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)
        server.start()
        with self._lock:
            self._listeners[instance.id] = _Listener(instance, server, pool, path, _identity(path))

    def _server(self, instance: InstanceRecord, pool: futures.ThreadPoolExecutor) -> grpc.Server:
        def identify(token: str) -> Caller | None:
            return instance_caller(instance) if token_matches(token, instance.token) else None

        server = grpc.server(
            pool,
            options=[("grpc.max_receive_message_length", MAX_REQUEST_BYTES + 1024)],
            maximum_concurrent_rpcs=CALLS_IN_FLIGHT_PER_INSTANCE,
        )
        pb_grpc.add_HostServicer_to_server(HostServicer(self.services, identify), server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        return server

    def detach(self, instance_id: str) -> None:
        """Stop serving an instance and remove its socket (if it is still the one we made)."""
        with self.changing, self._lock:
            listener = self._listeners.pop(instance_id, None)
        if listener is None:
            return
        listener.server.stop(None)
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
        """Detach every instance (ending its thread pool)."""
        for instance_id in self.attached():
            self.detach(instance_id)

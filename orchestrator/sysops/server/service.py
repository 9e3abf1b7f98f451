"""The control API server behind `sysops serve`: the orchestrator core, reachable over authenticated gRPC.

Each call runs the same Orchestrator operations the local CLI runs, with the configured runtime driver
(Kubernetes in a cluster). Long operations stream their progress lines. A SysopsError becomes a gRPC
status with the CLI exit code in trailing metadata, so the remote CLI exits exactly as a local one would.
A background loop reconciles every few seconds (on Kubernetes, informers name each change instead:
server/plugin_controller.py), so crashed or deleted instances are noticed without a client asking; a failing
pass is logged and the next one runs. Beside it the supervisor (core/supervisor.py)
probes every instance and restarts a wedged one (Docker; on Kubernetes the kubelet does).

A followed log stream (`plugin logs -f`) holds a worker thread for as long as its client listens, so
followers are capped below the worker pool (the rest stay free for every other call), and a follower
whose client goes away ends at once: its log stream is closed, not left waiting for the next line.
Replies never carry instance tokens or socket paths.

Each caller has a role (server/roles.py): the interceptor authenticates the token and refuses Up, Down and
Rollback below admin; Invoke of a command that is not read_only needs operator, and each `Act` kind its own
role (server/operator_api.py), all checked before any plugin is called.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from sysops_sdk.protocol.v1 import plugin_pb2 as plugin_pb
from sysops_sdk.wire import PROTOCOL_METADATA_KEY, output_events, result_events, speaks_batches, speaks_chunks

from sysops.core import router
from sysops.core.client import Abandon, InvocationResult
from sysops.core.manifest import parse_manifest
from sysops.core.names import check_plugin_name, shown
from sysops.core.orchestrator import Orchestrator
from sysops.core.router import check_arguments
from sysops.core.supervisor import Supervisor
from sysops.core.thread_stores import ThreadStores
from sysops.errors import (
    EngineUnavailableError,
    ExitCode,
    ManifestError,
    NotFoundError,
    SysopsError,
    UsageError,
)
from sysops.imaging.plugin_image import plugin_repository
from sysops.private_paths import SOCKET_UMASK, private_umask
from sysops.runtime.base import FollowsEngineEvents, RuntimeDriver, StateMirror, StreamCancel
from sysops.runtime.factory import make_driver
from sysops.server import operator_api
from sysops.server.log_batches import batched_texts, drain_batch
from sysops.server.metrics_http import MetricsEndpoint, start_metrics_endpoint
from sysops.server.pod_fault_reports import DescribesFailures, pod_fault_reader
from sysops.server.protocol.v1 import control_pb2 as pb
from sysops.server.protocol.v1 import control_pb2_grpc as pb_grpc
from sysops.server.roles import (
    EXIT_CODE_METADATA_KEY,
    OWNER,
    Caller,
    CallerLookup,
    Role,
    RoleAuthInterceptor,
    ServerCallers,
    bearer,
    owner_only,
    require,
)
from sysops.server.tls import ServerTls
from sysops.settings import Settings
from sysops.store import InstanceRecord, Route

RECONCILE_SECONDS = 5.0
#: The registry plugin images may come from besides the node's own (chart value plugins.registry).
REGISTRY_ENV = "SYSOPS_REGISTRY"
#: Followed log streams served at once (`sysops serve --max-followers`); one more is refused.
DEFAULT_MAX_FOLLOWERS = 64
#: Worker threads kept for every other call, on top of one per follower.
RESERVED_WORKERS = 32
#: How often a follower checks that its client still listens; lines buffered per follower.
FOLLOW_POLL_SECONDS = 0.2
FOLLOW_BUFFER_LINES = 1000
#: A manifest digest in an image reference (`REPO@sha256:...`).
MANIFEST_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
#: Fields of an instance that stay inside the server (credentials and host paths).
PRIVATE_INSTANCE_FIELDS = frozenset({"token", "socket_dir", "endpoint"})
LOG = logging.getLogger("sysops.server")
_DONE = object()

_STATUS_FOR_EXIT: dict[int, grpc.StatusCode] = {
    ExitCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ExitCode.USAGE: grpc.StatusCode.INVALID_ARGUMENT,
    ExitCode.INVALID_PLUGIN: grpc.StatusCode.INVALID_ARGUMENT,
    ExitCode.CONFLICT: grpc.StatusCode.ALREADY_EXISTS,
    ExitCode.POLICY_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ExitCode.PLUGIN_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ExitCode.ENGINE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ExitCode.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def _abort(context: grpc.ServicerContext, error: SysopsError, status: grpc.StatusCode | None = None) -> None:
    context.set_trailing_metadata(((EXIT_CODE_METADATA_KEY, str(int(error.exit_code))),))
    message = str(error) + (f"\n{error.details}" if error.details else "")
    context.abort(status or _STATUS_FOR_EXIT.get(int(error.exit_code), grpc.StatusCode.FAILED_PRECONDITION), message)


def _checked_name(context: grpc.ServicerContext, name: str) -> str:
    """The request's plugin name, or the call aborted with INVALID_ARGUMENT (exit 2) before any work."""
    try:
        return check_plugin_name(name)
    except SysopsError as error:
        _abort(context, error)
        raise


def decode_json(text: str, what: str, error: type[SysopsError]) -> Any:
    """Parse a JSON field of a request; bad, too deep or oversized JSON raises `error` naming the field."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise error(f"{what} is not valid JSON: {shown(str(exc), 80)}") from None


def public_instance(instance: InstanceRecord) -> dict[str, Any]:
    """An instance as clients see it: without its token, socket directory or endpoint."""
    return {key: value for key, value in dataclasses.asdict(instance).items() if key not in PRIVATE_INSTANCE_FIELDS}


def to_json(value: Any) -> str:
    """Serialize dataclasses (and lists of them) for the wire."""
    if isinstance(value, list):
        return json.dumps([dataclasses.asdict(item) for item in value], default=str)
    if hasattr(value, "as_dict"):
        return json.dumps(value.as_dict(), default=str)
    return json.dumps(dataclasses.asdict(value), default=str)


def check_own_image(image: str, installation_id: str, plugin: str, registry: str | None = None) -> None:
    """Refuse an image reference that is not one of this installation's images of `plugin`.

    The repository must be exactly `sysops-plugins/<installation>-<plugin>`, or the same under the registry the
    server is configured with (`registry`, by default env SYSOPS_REGISTRY; chart value plugins.registry): any
    other registry could serve an attacker's image under that path, which would then run as the plugin (its
    token, its secrets, its calls). Tags carry the installation id, and `down --purge` removes the tags of a
    plugin's revisions: a roll to another installation's tag would let a purge here untag that image.
    The image is named by a tag, by a manifest digest (`REPO@sha256:<64 hex>`, what a roll on Kubernetes runs
    and its revisions keep: core/trust_gate.py pinned_image), or both (`REPO:TAG@sha256:...`).
    """
    registry = os.environ.get(REGISTRY_ENV, "") if registry is None else registry
    name, at, digest = image.partition("@")
    repository, _, tag = name.rpartition(":")
    if "/" in tag:  # the colon was a registry port: no tag
        repository, tag = name, ""
    allowed = {plugin_repository(installation_id, plugin)}
    if registry:
        allowed.add(plugin_repository(installation_id, plugin, registry))
    pinned = bool(at) and MANIFEST_DIGEST.fullmatch(digest) is not None
    if (at and not pinned) or not (tag or pinned) or repository not in allowed:
        expected = plugin_repository(installation_id, plugin, registry)
        raise UsageError(
            f"image {shown(image)} is not a plugin image of this server; expected {expected}:TAG "
            f"or {expected}@sha256:DIGEST",
            hint="roll plugins with `sysops plugin up` against this server",
        )


class ControlServicer(pb_grpc.ControlServicer):
    """Serves the control API with one Orchestrator per call over a shared driver and state directory."""

    def __init__(
        self,
        settings: Settings,
        driver: RuntimeDriver,
        mirror: StateMirror | None,
        max_followers: int = DEFAULT_MAX_FOLLOWERS,
        callers: CallerLookup = owner_only,
    ) -> None:
        self.settings = settings
        self.driver = driver
        self.mirror = mirror
        self.max_followers = max_followers
        self.follower_slots = threading.BoundedSemaphore(max_followers)
        self.callers = callers
        self._stores = ThreadStores(settings.store_path)
        #: The host services (permissions, config, metrics, alerts) and event bus the operator calls answer from.
        self.host_services = operator_api.HostServicesLink()

    def attach_host_services(
        self, services: operator_api.OperatorServices, publish: operator_api.Publish | None = None
    ) -> None:
        """Answer `Query` permissions/config/metrics/alerts and `Act` from these services and event bus."""
        self.host_services = operator_api.HostServicesLink(services, publish)

    def caller(self, context: grpc.ServicerContext) -> Caller:
        """Who makes this call (the interceptor let only known callers through)."""
        caller = self.callers(bearer(context.invocation_metadata()))
        if caller is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or unknown sysops caller token")
            raise AssertionError("unreachable")
        return caller

    def orchestrator(self, progress: Callable[[str], None] | None = None) -> Orchestrator:
        """A fresh Orchestrator (its own store connection) for one call."""
        return Orchestrator(self.settings, self.driver, progress, self.mirror)

    def _stream(self, context: grpc.ServicerContext, operation: Callable[[Orchestrator], Any]) -> Iterator[pb.Progress]:
        """Run an operation in a thread and stream its progress lines, then its JSON result."""
        lines: queue.Queue[object] = queue.Queue()
        outcome: dict[str, Any] = {}

        def run() -> None:
            orchestrator = self.orchestrator(lines.put)
            try:
                outcome["result"] = operation(orchestrator)
            except SysopsError as error:
                outcome["error"] = error
            except Exception as exc:  # reported to the caller, not swallowed
                outcome["error"] = SysopsError(f"server error: {type(exc).__name__}: {exc}")
            finally:
                orchestrator.close()
                lines.put(_DONE)

        threading.Thread(target=run, daemon=True).start()
        while (line := lines.get()) is not _DONE:
            yield pb.Progress(message=str(line))
        if "error" in outcome:
            _abort(context, outcome["error"])
        yield pb.Progress(done=True, result_json=json.dumps(outcome.get("result"), default=str))

    def Up(self, request: pb.UpRequest, context: grpc.ServicerContext) -> Iterator[pb.Progress]:
        """Roll a plugin to a prebuilt image."""

        def up(orchestrator: Orchestrator) -> dict[str, Any]:
            data = decode_json(request.manifest_json, "the manifest", ManifestError)
            manifest = parse_manifest(data, f"{request.source}/plugin.yaml")
            check_own_image(request.image, self.settings.installation_id, manifest.name)
            instance, changed = orchestrator.up_image(
                manifest, request.image, request.fingerprint, request.source, key=request.key
            )
            return {"instance": public_instance(instance), "changed": changed}

        yield from self._stream(context, up)

    def Down(self, request: pb.DownRequest, context: grpc.ServicerContext) -> Iterator[pb.Progress]:
        """Remove a plugin (refused while running plugins require it, unless cascade or force)."""
        _checked_name(context, request.name)
        yield from self._stream(
            context,
            lambda orchestrator: orchestrator.down(
                request.name, purge=request.purge, cascade=request.cascade, force=request.force
            ),
        )

    def Rollback(self, request: pb.RollbackRequest, context: grpc.ServicerContext) -> Iterator[pb.Progress]:
        """Roll back to an earlier revision (or start one under another key of its plugin: `key`)."""
        _checked_name(context, request.name)
        if request.key:
            _checked_name(context, request.key)
        yield from self._stream(
            context,
            lambda orchestrator: public_instance(orchestrator.rollback(request.name, request.to or None, request.key)),
        )

    def plugin_list_json(self) -> str:
        """Every plugin's status as JSON text, after a reconcile pass (Query `list`; the call socket's `list`)."""
        orchestrator = self.orchestrator()
        try:
            orchestrator.reconcile()  # what the engine did since the last pass, so the answer is the truth
            return json.dumps([status.as_dict() for status in orchestrator.list()], default=str)
        finally:
            orchestrator.close()

    def Query(self, request: pb.QueryRequest, context: grpc.ServicerContext) -> pb.QueryReply:
        """Answer list, status, history and catalog queries (and the host-services views)."""
        orchestrator = self.orchestrator()
        try:
            if request.kind in ("status", "history"):
                check_plugin_name(request.name)
            if request.kind == "list":
                return pb.QueryReply(json=self.plugin_list_json())
            if request.kind == "status":
                orchestrator.reconcile()  # what the engine did since the last pass, so the answer is the truth
            if request.kind == "status":
                return pb.QueryReply(json=to_json(orchestrator.status(request.name, limits=True)))
            if request.kind == "history":
                return pb.QueryReply(json=to_json(orchestrator.history(request.name)))
            if request.kind == "catalog":
                return pb.QueryReply(json=json.dumps(orchestrator.catalog()))
            if request.kind == "server":
                server = {"installation_id": self.settings.installation_id, "runtime": self.driver.name}
                return pb.QueryReply(json=json.dumps(server))
            if request.kind in operator_api.VIEWS:
                view = operator_api.view(self.host_services, request.kind, request.name, include_all=request.all)
                return pb.QueryReply(json=json.dumps(view, default=str))
            raise NotFoundError(f"unknown query {shown(request.kind)}")
        except SysopsError as error:
            _abort(context, error)
            raise
        finally:
            orchestrator.close()

    def Act(self, request: pb.ActRequest, context: grpc.ServicerContext) -> pb.ActReply:
        """Change something through the host services (config-set, events-publish, alert-resolve), by role."""
        try:
            arguments = decode_json(request.arguments_json or "{}", f"the arguments of {request.kind!r}", UsageError)
            result = operator_api.act(self.host_services, self.caller(context), request.kind, arguments)
            return pb.ActReply(json=json.dumps(result, default=str))
        except SysopsError as error:
            _abort(context, error)
            raise

    def Logs(self, request: pb.LogsRequest, context: grpc.ServicerContext) -> Iterator[pb.LogLine]:
        """Stream a plugin's log lines; a follow ends as soon as its client goes away."""
        _checked_name(context, request.name)
        if request.structured:
            yield from self._records(request, context)
            return
        if request.follow:
            yield from self._follow(request, context)
            return
        orchestrator = self.orchestrator()
        try:
            for text in batched_texts(orchestrator.logs(request.name, tail=request.tail or None), request.batched):
                yield pb.LogLine(text=text)
        except SysopsError as error:
            _abort(context, error)
        finally:
            orchestrator.close()

    def _take_follower_slot(self, context: grpc.ServicerContext, verb: str, what: str) -> bool:
        """Take a follower slot, or abort the call (RESOURCE_EXHAUSTED, exit 5) when all are taken."""
        if self.follower_slots.acquire(blocking=False):
            return True
        busy = EngineUnavailableError(
            f"the sysops server already {verb} {self.max_followers} {what}",
            hint="stop a `sysops events -f` or `plugin logs -f`, retry later, or start the server with a higher "
            "--max-followers",
        )
        _abort(context, busy, grpc.StatusCode.RESOURCE_EXHAUSTED)
        return False

    def _records(self, request: pb.LogsRequest, context: grpc.ServicerContext) -> Iterator[pb.LogLine]:
        """The plugin's structured log records (the `logs` host service), each a JSON object; a follow takes a
        follower slot and ends within one poll of its client going away."""
        try:
            services = self.host_services.ready()
            if services.manifest(request.name) is None:
                raise NotFoundError(f"no plugin named {request.name!r}", hint="`sysops plugin ls` lists them")
        except SysopsError as error:
            _abort(context, error)
            return
        if request.follow and not self._take_follower_slot(context, "serves", "followed streams"):
            return
        stop = threading.Event()
        if not context.add_callback(stop.set):
            stop.set()
        try:
            records = services.logs.stream(request.name, tail=request.tail or None, follow=request.follow, stop=stop)
            for record in records:
                yield pb.LogLine(text=json.dumps(record.as_dict()))
        finally:
            if request.follow:
                self.follower_slots.release()

    def _follow(self, request: pb.LogsRequest, context: grpc.ServicerContext) -> Iterator[pb.LogLine]:
        """Follow logs in a thread of its own, so this worker notices at once when the client goes away.

        The reading thread blocks on the engine's stream until the plugin writes; the client's cancel
        closes that stream (`StreamCancel`), and this worker polls the buffer and the call's state.
        """
        if not self._take_follower_slot(context, "follows", "log streams"):
            return
        cancel = StreamCancel()
        buffered: queue.Queue[str] = queue.Queue(maxsize=FOLLOW_BUFFER_LINES)
        ended = threading.Event()
        outcome: dict[str, SysopsError] = {}

        def offer(line: str) -> bool:
            while not cancel.cancelled:
                try:
                    buffered.put(line, timeout=FOLLOW_POLL_SECONDS)
                    return True
                except queue.Full:
                    continue
            return False

        def read() -> None:
            orchestrator = self.orchestrator()
            try:
                for line in orchestrator.logs(request.name, follow=True, tail=request.tail or None, cancel=cancel):
                    if not offer(line):
                        break
            except SysopsError as error:
                outcome["error"] = error
            except Exception as exc:  # reported to the caller and logged, not swallowed
                LOG.exception("following the logs of %r failed", request.name)
                outcome["error"] = SysopsError(f"server error: {type(exc).__name__}: {exc}")
            finally:
                orchestrator.close()
                self.follower_slots.release()
                ended.set()

        if not context.add_callback(cancel.cancel):
            cancel.cancel()
        threading.Thread(target=read, name="sysops-follow", daemon=True).start()
        try:
            while True:
                try:
                    line = buffered.get(timeout=FOLLOW_POLL_SECONDS)
                except queue.Empty:
                    if (ended.is_set() and buffered.empty()) or not context.is_active():
                        break
                    continue
                yield pb.LogLine(text=drain_batch(line, buffered) if request.batched else line)
        finally:
            cancel.cancel()
        if "error" in outcome:
            _abort(context, outcome["error"])

    def Events(self, request: pb.EventsRequest, context: grpc.ServicerContext) -> Iterator[pb.Event]:
        """Stream lifecycle events; a follow takes a follower slot and ends as soon as its client goes away.

        The follow polls the store by id in this worker, waiting on an event the client's cancel sets, so a
        cancelled follow returns its worker and slot within one poll, never later.
        """
        plugin = _checked_name(context, request.plugin) if request.plugin else None
        if request.follow and not self._take_follower_slot(context, "serves", "followed streams"):
            return
        stop = threading.Event()
        if not context.add_callback(stop.set):
            stop.set()
        orchestrator = self.orchestrator()
        try:
            for event in orchestrator.events(plugin, follow=request.follow, after=request.after_id, stop=stop):
                yield pb.Event(
                    id=event.id, time=event.time, plugin=event.plugin, kind=event.kind, message=event.message
                )
        except SysopsError as error:
            _abort(context, error)
        finally:
            orchestrator.close()
            if request.follow:
                self.follower_slots.release()

    def Routes(self, request: pb.RoutesRequest, context: grpc.ServicerContext) -> pb.RoutesReply:
        """Return the command table."""
        orchestrator = self.orchestrator()
        try:
            routes = orchestrator.store.routes()
        finally:
            orchestrator.close()
        return pb.RoutesReply(
            routes=[pb.Route(command=route.command, plugin=route.plugin, spec=route.spec) for route in routes]
        )

    def _route(self, command: str) -> Route | None:
        """The command's route now (read again while a call waits for a roll's hand-over), from this worker
        thread's open store: opening one per call cost 9-12 ms of each routed call (bench/bench_k8s_call.py)."""
        return self._stores.get().route(command)

    def Invoke(self, request: pb.InvokeRequest, context: grpc.ServicerContext) -> Iterator[pb.InvokeChunk]:
        """Forward a command to a ready instance and stream its events back, as the local CLI does.

        The call goes through the same router as `sysops <command>` on a host (a call an instance refused
        during a roll is re-sent to its successor); large lines and results go in pieces to 1.1+ callers.
        Bad arguments are INVALID_ARGUMENT with exit code 2, and logged. A client that goes away (Ctrl-C,
        its own deadline) cancels the plugin's call: the command is cancelled in the plugin, not left running.
        """
        version = dict(context.invocation_metadata()).get(PROTOCOL_METADATA_KEY, "")
        speaks = speaks_chunks(version), speaks_batches(version)
        abandon = Abandon()
        if not context.add_callback(abandon):
            abandon()
        try:
            arguments = decode_json(request.arguments_json or "{}", "the command's argument object", UsageError)
            if not isinstance(arguments, dict):
                raise UsageError("the command's arguments are not a JSON object")
            check_arguments(request.command, arguments)
            route = self._route(request.command)
            if route is None:
                raise NotFoundError(f"no plugin provides command {shown(request.command)}")
            caller = self.caller(context)
            if caller.role < Role.OPERATOR and not plugin_pb.CommandSpec.FromString(route.spec).read_only:
                require(caller, Role.OPERATOR, f"run command {shown(request.command)}")
            principal = "" if caller is OWNER else caller.principal  # "": the host names its local user
            output_format = request.output_format or "text"
            for item in router.call(route, arguments, output_format, self._route, abandon, principal=principal):
                for event in _events(item, speaks):
                    yield pb.InvokeChunk(event=event.SerializeToString())
        except SysopsError as error:
            if error.exit_code == ExitCode.USAGE:
                LOG.warning("Invoke of %s refused: %s", shown(request.command), shown(str(error)))
            _abort(context, error)


def _events(item: str | InvocationResult, speaks: tuple[bool, bool]) -> Iterator[plugin_pb.InvokeEvent]:
    """The events of an item for a caller that joins continued pieces (1.1) and takes batched lines (1.4):
    a batch of lines from the plugin (joined by newlines) goes on as it is, or line by line to older callers."""
    chunked, batched = speaks
    if isinstance(item, str):
        if batched or "\n" not in item:
            return output_events(item, chunked)
        return (event for line in item.split("\n") for event in output_events(line, chunked))
    return result_events(
        chunked,
        kind=plugin_pb.Result.Kind.Value(item.kind.upper()),
        text=item.text,
        data_json=json.dumps(item.data) if item.data is not None else "",
        exit_code=item.exit_code,
        error=item.error,
    )


class ControlServer:
    """A running control server and its reconcile loop (and `/metrics` endpoint, if any); `stop` ends them."""

    def __init__(
        self,
        server: grpc.Server,
        port: int,
        stop_reconciling: threading.Event,
        servicer: ControlServicer | None = None,
        metrics: MetricsEndpoint | None = None,
    ) -> None:
        self.server = server
        self.port = port
        self._stop_reconciling = stop_reconciling
        self.servicer = servicer
        self.metrics = metrics

    def stop(self, grace: float | None) -> threading.Event:
        """Stop reconciling and serving (in-flight calls get `grace` seconds); return the server's stop event."""
        self._stop_reconciling.set()
        if self.metrics is not None:
            self.metrics.stop()
        stopped: threading.Event = self.server.stop(grace)
        return stopped


def reconcile_forever(servicer: ControlServicer, stop: threading.Event, interval: float) -> None:
    """Reconcile every `interval` seconds until `stop`; a failing pass is logged once, and the next runs."""
    failing = ""
    while not stop.wait(interval):
        try:
            orchestrator = servicer.orchestrator()
            try:
                orchestrator.reconcile()
            finally:
                orchestrator.close()
        except Exception as exc:  # whatever one pass hits (an odd object, a lost engine), the next pass runs
            summary = f"{type(exc).__name__}: {exc}"
            if summary != failing:
                LOG.exception("reconcile failed (retrying every %gs): %s", interval, summary)
            failing = summary
            continue
        if failing:
            LOG.warning("reconcile works again")
            failing = ""


def serve(
    listen: str | None,
    runtime: str,
    token: str,
    settings: Settings | None = None,
    *,
    unix_socket: Path | None = None,
    max_followers: int = DEFAULT_MAX_FOLLOWERS,
    reconcile_seconds: float = RECONCILE_SECONDS,
    driver: RuntimeDriver | None = None,
    metrics_port: int | None = None,
    tls: ServerTls | None = None,
) -> ControlServer:
    """Start the control server (after restoring state and re-adopting instances); return it running.

    It listens on TCP at `listen` (every call but health and plugins' host calls needs a caller's bearer
    token: `token` is admin, the policy's `callers` have their roles) or, for the resident host, on the Unix
    socket `unix_socket`, created 0600 (its permissions are the authentication, as with the Docker socket;
    no token, admin). Its pool has a worker per follower slot plus RESERVED_WORKERS, so
    followers never starve other calls. `driver` replaces the runtime's (tests run it on the fake driver).
    With `metrics_port`, the host's metrics are served over HTTP at /metrics on that port of the `listen`
    host (server/metrics_http.py; 0 picks a free port). With `tls` the TCP port speaks only TLS (server/tls.py).
    """
    if (listen is None) == (unix_socket is None):
        raise UsageError("the control server listens on TCP or on a Unix socket: give exactly one")
    if max_followers < 1:
        raise UsageError(f"--max-followers must be at least 1, not {max_followers}")
    settings = settings or Settings()
    driver, mirror = (driver, None) if driver is not None else make_driver(runtime)
    callers = owner_only if unix_socket is not None else ServerCallers(token, settings.home)
    servicer = ControlServicer(settings, driver, mirror, max_followers, callers)

    def own_image(image: str, plugin: str) -> None:  # what a Plugin spec or the mirror may name
        check_own_image(image, settings.installation_id, plugin)

    startup = servicer.orchestrator()
    try:
        driver.ping()
        if mirror is not None and driver.name == "kubernetes":
            from sysops.runtime.kubernetes.migration import migrate_configmaps  # needs the kubernetes client

            migrate_configmaps(driver)
        if mirror is not None:
            startup.restore_from_mirror(check_image=own_image)
        else:
            startup.reconcile()
    finally:
        startup.close()
    if isinstance(driver, DescribesFailures):  # a pod that broke a call is named in the call's error
        router.set_remote_fault_reader(pod_fault_reader(driver, mirror))
    workers = futures.ThreadPoolExecutor(max_workers=max_followers + RESERVED_WORKERS, thread_name_prefix="sysops-rpc")
    server = grpc.server(workers, interceptors=[] if unix_socket is not None else [RoleAuthInterceptor(callers)])
    pb_grpc.add_ControlServicer_to_server(servicer, server)
    address = f"unix:{unix_socket}" if unix_socket is not None else str(listen)
    with private_umask(SOCKET_UMASK):  # gRPC creates the socket file: 0600 from its first moment
        port = server.add_secure_port(address, tls.credentials()) if tls else server.add_insecure_port(address)
    if port == 0:
        raise SysopsError(f"cannot listen on {address}")
    stop = threading.Event()
    from sysops.services.hosting import start_hosting  # host services and event bus, until `stop`

    hosting = start_hosting(settings, driver.name, server, stop)
    servicer.attach_host_services(hosting.services, hosting.bus.publish)
    server.start()
    if mirror is not None and driver.name == "kubernetes":  # informers name what changed: no polling
        from sysops.server.plugin_controller import start_controller

        start_controller(
            servicer.orchestrator,
            str(getattr(driver, "namespace", "default")),
            settings.installation_id,
            stop,
            check_image=own_image,
        )
    else:
        if isinstance(driver, FollowsEngineEvents):  # a quiet installation's reconcile passes ask the engine nothing
            driver.follow_engine_events(settings.installation_id, stop)
        threading.Thread(
            target=reconcile_forever, args=(servicer, stop, reconcile_seconds), name="sysops-reconcile", daemon=True
        ).start()
    if driver.name != "kubernetes":  # there the kubelet's livenessProbe restarts a wedged pod
        supervisor = Supervisor(settings, driver)
        threading.Thread(target=supervisor.run, args=(stop,), name="sysops-supervisor", daemon=True).start()
    metrics = None
    if metrics_port is not None:
        metrics_host = (listen or "127.0.0.1").rpartition(":")[0].strip("[]") or "0.0.0.0"
        metrics = start_metrics_endpoint(metrics_host, metrics_port, lambda: servicer.host_services)
    return ControlServer(server, port, stop, servicer, metrics)

"""The host services inside a running host (`sysops host run` locally, `sysops serve` in a cluster).

`start_hosting` builds, for one installation: the services (dispatch.py) and the event bus (bus.py) over the
store's file; the transport (transport.py: a listener per local instance, or the Host servicer on the
cluster server's own gRPC server); and the hooks through which the core tells them what happens:
- instance hooks (core/instance_hooks.py): a listener right after an instance's container starts, gone
  when the instance is removed, SYSOPS_HOST_ENDPOINT for new instances, and the plugin's event
  subscriptions (from Describe) once it serves; without the `events.subscribe` grant it is not subscribed
  and a `refused` lifecycle event says so;
- routing hooks (core/router.py): a command whose `@requires_permission` the policy does not grant is
  refused before its plugin is called (exit 9), the plugin is told who calls and what it was granted, and
  every call is counted in the host's metrics;
- the bus's deliver callback: PluginService.Deliver to a ready instance of the subscriber (none ready, or it
  did not take the event: `Undeliverable`, retried by the bus); the bus's backlog limit per subscriber is
  SYSOPS_BUS_BACKLOG (default 1000).
A loop every SYNC_SECONDS makes the listeners match the store (re-adoption at start, a socket that went
away) and the subscriptions match the plugins that serve (and drops those of plugins gone). Everything
stops when the server's stop event is set.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import random
import threading
from collections.abc import Mapping, Sequence

import grpc
from sysops_sdk.protocol.v1 import plugin_pb2 as pb

from sysops.core import events, instance_hooks, router
from sysops.core.client import PluginClient
from sysops.core.client_pool import ClientPool
from sysops.core.events import EventKind
from sysops.errors import PluginUnavailableError, PolicyDeniedError, SysopsError
from sysops.services.bus import BusEvent, EventBus, Undeliverable
from sysops.services.dispatch import HostServices
from sysops.services.permissions import SUBSCRIBE_PERMISSION
from sysops.services.transport import (
    LOCAL_ENDPOINT,
    InstanceListeners,
    ListenerError,
    add_host_servicer,
)
from sysops.settings import Settings
from sysops.store import InstanceRecord, Route, Store

LOG = logging.getLogger("sysops.services")
#: How often listeners and subscriptions are brought in line with the store.
SYNC_SECONDS = 2.0
#: Seconds a plugin's event handlers get for one event.
DELIVER_TIMEOUT_SECONDS = 30.0
#: Seconds a serving instance gets to answer the Describe that reads its subscriptions (retried next pass).
DESCRIBE_TIMEOUT_SECONDS = 2.0
#: Cluster: an explicit endpoint for plugins, else the server's Service (its name; Kubernetes' service env).
ENDPOINT_ENV = "SYSOPS_HOST_ENDPOINT"
SERVICE_ENV = "SYSOPS_SERVER_SERVICE"
#: Pending events a subscriber may have before its oldest are dead-lettered (the bus's backlog_limit).
BACKLOG_ENV = "SYSOPS_BUS_BACKLOG"
DEFAULT_BACKLOG = 1000
#: Caller identities kept ready to send with routed calls (one per caller and grant set; all dropped when full).
_IDENTITIES_KEPT = 1024


def cluster_endpoint(environ: Mapping[str, str] | None = None) -> str:
    """Where plugin pods reach the server's Host service: SYSOPS_HOST_ENDPOINT if set, else the ClusterIP and
    port of the Service named by SYSOPS_SERVER_SERVICE, as Kubernetes' `<NAME>_SERVICE_HOST/_PORT` variables
    give them, else the API's answer for that Service ('' when none is known)."""
    environ = os.environ if environ is None else environ
    explicit = environ.get(ENDPOINT_ENV, "").strip()
    if explicit:
        return explicit
    service = environ.get(SERVICE_ENV, "").strip()
    if not service:
        return ""
    prefix = service.upper().replace("-", "_")
    host, port = environ.get(f"{prefix}_SERVICE_HOST", ""), environ.get(f"{prefix}_SERVICE_PORT", "")
    if host and port:
        return f"{host}:{port}"
    try:
        from sysops.runtime.kubernetes.driver import service_endpoint

        return service_endpoint(service)
    except (ImportError, SysopsError) as exc:
        LOG.warning("plugins get no host services endpoint: Service %s not found (%s)", service, exc)
        return ""


def bus_backlog(environ: Mapping[str, str] | None = None) -> int:
    """The bus's backlog limit: SYSOPS_BUS_BACKLOG (an integer >= 2), else DEFAULT_BACKLOG (a bad value is
    logged and ignored: a tuning knob must not keep the host from starting)."""
    raw = (os.environ if environ is None else environ).get(BACKLOG_ENV, "").strip()
    if not raw:
        return DEFAULT_BACKLOG
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 2:
        LOG.warning("%s=%r is not an integer >= 2; the backlog limit stays %d", BACKLOG_ENV, raw, DEFAULT_BACKLOG)
        return DEFAULT_BACKLOG
    return value


def local_principal() -> str:
    """`cli:NAME` of the user the host runs as (only that user reaches its sockets)."""
    try:
        return f"cli:{pwd.getpwuid(os.geteuid()).pw_name}"
    except KeyError:
        return f"cli:{os.geteuid()}"


class Hosting:
    """The host services of one running host and the hooks that connect them to the core."""

    def __init__(self, settings: Settings, cluster: bool, server: grpc.Server | None) -> None:
        self.settings = settings
        self.store_path = settings.store_path
        self.cluster = cluster
        self.services = HostServices(settings, self.store_path)
        self.bus = EventBus(self.store_path, self.deliver, backlog_limit=bus_backlog())
        self.services.set_publish(self.bus.publish)
        self.listeners: InstanceListeners | None = None
        if cluster:
            if server is not None:
                add_host_servicer(server, self.services, self.store_path)
            self._endpoint = cluster_endpoint()
        else:
            self.listeners = InstanceListeners(self.services)
            self._endpoint = LOCAL_ENDPOINT
        self._principal = local_principal()
        self._identities: dict[tuple[str, tuple[str, ...]], pb.CallerIdentity] = {}
        self._local = threading.local()
        self._pool = ClientPool()
        self._subscribed: dict[str, tuple[tuple[str, ...], bool]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        #: Set once everything stopped (after the stop event, see `run`).
        self.closed = threading.Event()
        self._closing = False

    def _store(self) -> Store:
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = Store(self.store_path)
        return store

    # core/instance_hooks.py
    def host_endpoint(self) -> str:
        """SYSOPS_HOST_ENDPOINT of new instances (in a cluster, looked up again while it is not known)."""
        if not self._endpoint and self.cluster:
            self._endpoint = cluster_endpoint()
        return self._endpoint

    def started(self, instance: InstanceRecord) -> None:
        """Listen for the new instance's host calls (a failure is logged; the sync loop tries again)."""
        if self.listeners is None:
            return
        try:
            self.listeners.attach(instance)
        except (ListenerError, OSError) as exc:
            LOG.warning("no host services yet for %s instance %s: %s", instance.plugin, instance.id, exc)

    def removed(self, instance: InstanceRecord) -> None:
        """Stop listening for a removed instance."""
        if self.listeners is not None:
            self.listeners.detach(instance.id)

    def activated(self, plugin: str) -> None:
        """A plugin serves now: look at its subscriptions in the sync loop, at once."""
        with self._lock:
            self._subscribed.pop(plugin, None)
        self.wake()

    def purged(self, plugin: str) -> None:
        """`plugin down --purge`: forget its host-service data and its subscription (with what it missed)."""
        self.services.forget_plugin(plugin)
        self.bus.unsubscribe(plugin)
        with self._lock:
            self._subscribed.pop(plugin, None)

    # core/router.py
    def admit(self, route: Route, permissions: Sequence[str], principal: str) -> pb.CallerIdentity:
        """Refuse a command needing a permission its plugin was not granted; else the identity to send."""
        if permissions:
            refusal = self.services.command_refusal(route.plugin, list(permissions), route.command)
            if refusal is not None:
                raise PolicyDeniedError(refusal)
        key = (principal or self._principal, self.services.granted_lately(route.plugin))
        identity = self._identities.get(key)
        if identity is None:  # one per caller and grant set: making it costs more than looking it up
            if len(self._identities) >= _IDENTITIES_KEPT:
                self._identities.clear()
            identity = pb.CallerIdentity(principal=key[0], granted_permissions=key[1])  # sorted already
            self._identities[key] = identity
        return identity

    def finished(self, route: Route, seconds: float, ok: bool) -> None:
        """Count a routed call in the host's metrics."""
        self.services.metrics.record_call(route.plugin, route.command, seconds, ok)

    # bus
    def deliver(self, plugin: str, event: BusEvent) -> None:
        """Hand `event` to a ready instance of `plugin`; Undeliverable when none took it."""
        instances = self._store().active_instances(plugin)
        if not instances:
            raise Undeliverable(f"plugin {plugin!r} has no ready instance")
        instance = random.choice(instances)
        client = self._pool.client(instance.endpoint, plugin, instance.token)
        delivery = pb.EventDelivery(
            id=event.id,
            topic=event.topic,
            payload_json=json.dumps(event.payload),
            publisher=event.publisher,
            time=event.time,
        )
        try:
            client.deliver(delivery, timeout=DELIVER_TIMEOUT_SECONDS)
        except PluginUnavailableError as exc:  # a CommandFailedError (a handler failed) counts against the event
            self._pool.drop(instance.endpoint)
            raise Undeliverable(str(exc)) from None

    # core/events.py
    def lifecycle(self, plugin: str, kind: str, message: str) -> None:
        """A lifecycle event was recorded: count restarts (the supervisor's, reconciliation's, the engine's
        as observed) in the host's metrics, and publish it as `sysops.lifecycle`."""
        if kind == EventKind.RESTARTED:
            self.services.metrics.record_restart(plugin)
        self.bus.publish_lifecycle(plugin, kind, message)

    # the sync loop
    def sync(self) -> None:
        """Listeners for exactly the store's instances; subscriptions for the plugins that serve."""
        self.sync_listeners()
        store = self._store()
        plugins = set(store.plugin_names())
        for plugin in sorted(plugins):
            try:
                self._sync_subscriptions(store, plugin)
            except Exception:  # e.g. a policy file that does not parse: the other plugins go on
                LOG.exception("subscriptions of %s not synced", plugin)
        with contextlib.suppress(Exception):  # a bus without stored subscribers yet, or a busy database
            for gone in set(self.bus.subscribers()) - plugins:
                self.bus.unsubscribe(gone)
                with self._lock:
                    self._subscribed.pop(gone, None)

    def sync_listeners(self) -> None:
        """A listener for every local instance in the store, none for the others (fast: no plugin is asked)."""
        if self.listeners is not None:
            with self.listeners.changing:  # the store read too: a roll's new instance is attached, not dropped
                self.listeners.sync(self._store().instances())

    def _sync_subscriptions(self, store: Store, plugin: str) -> None:
        instances = store.active_instances(plugin)
        if not instances:
            return
        may = SUBSCRIBE_PERMISSION in self.services.granted(plugin)
        key = (tuple(sorted(instance.id for instance in instances)), may)
        with self._lock:
            if self._subscribed.get(plugin) == key:
                return
        instance = instances[0]
        try:
            with PluginClient(instance.endpoint, plugin, instance.token) as client:
                patterns = list(client.describe(timeout=DESCRIBE_TIMEOUT_SECONDS).subscriptions)
        except SysopsError:
            return  # not ready yet: the next pass asks again
        if patterns and not may:
            self.bus.unsubscribe(plugin)
            refusal = self.services.subscription_refusal(plugin) or f"needs permission '{SUBSCRIBE_PERMISSION}'"
            events.record(store, plugin, EventKind.REFUSED, f"not subscribed to {', '.join(patterns)}: {refusal}")
        else:
            try:
                self.bus.subscribe(plugin, patterns)
            except ValueError as exc:
                events.record(store, plugin, EventKind.REFUSED, f"not subscribed: {exc}")
        with self._lock:
            self._subscribed[plugin] = key

    def run(self, stop: threading.Event) -> None:
        """Sync every SYNC_SECONDS (or when woken) until `stop`, then stop everything."""
        try:
            while not stop.is_set():
                try:
                    self.sync()
                except Exception:  # one failing pass is logged; the next one runs
                    LOG.exception("host services sync failed")
                self._wake.wait(SYNC_SECONDS)
                self._wake.clear()
        finally:
            self.close()

    def wake(self) -> None:
        """Run the sync loop's next pass now (after a stop: end it now)."""
        self._wake.set()

    def close(self) -> None:
        """Unhook from the core and stop the listeners and the bus (once)."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        instance_hooks.unregister(self.store_path, self)
        previous = router.set_routing_hooks(None)
        if previous is not self:  # another host's (tests serve several in one process): put it back
            router.set_routing_hooks(previous)
        events.clear_lifecycle_publisher(self.lifecycle)
        if self.listeners is not None:
            self.listeners.stop()
        self.bus.stop()
        self.services.close()
        self.closed.set()  # only now: whoever waits for it may start another host in this process


def start_hosting(settings: Settings, driver_name: str, server: grpc.Server | None, stop: threading.Event) -> Hosting:
    """Build the host services for `settings`' installation, hook them into the core, listen for every
    instance the store has, and keep them in line until `stop` is set (call before `server.start()`)."""
    hosting = Hosting(settings, driver_name == "kubernetes", server)
    instance_hooks.register(hosting.store_path, hosting)
    router.set_routing_hooks(hosting)
    events.set_lifecycle_publisher(hosting.lifecycle)  # every lifecycle event: metrics, `sysops.lifecycle`
    hosting.bus.start()
    hosting.sync_listeners()  # at once (re-adoption); subscriptions ask the plugins: in the loop
    threading.Thread(target=hosting.run, args=(stop,), name="sysops-host-services", daemon=True).start()
    return hosting

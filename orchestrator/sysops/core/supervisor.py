"""Supervision: probe every serving instance's health and restart one that stopped answering.

The engine's restart policy restarts an instance that crashes; nothing restarted one that runs but no
longer answers (a command that wedged its own server). `decide` is the rule, free of I/O: probe results in,
`Action`s out. After `liveness.failures` failed probes in a row the instance is restarted in place (same
id, socket and token, so routes keep working), the restarts spaced by an exponential backoff (1 s doubling
to a cap); a restarted instance (by us, or by the engine after a crash) gets the readiness timeout to
start before failures count again; a run of `stability_window()` healthy seconds makes the budget whole;
once MAX_RESTARTS restarts did not help, it gives up: the instance is taken out of routing and removed,
and the plugin is Failed with the reason (as when reconciliation finds its container gone); `sysops plugin up`
starts it again. A routed call that overran its deadline marks its instance suspect (core/suspects.py): it is
probed at the next tick, and if that probe fails the failures count as reached. While it restarts an
instance, the supervisor marks it restarting until a probe finds it serving, and calls that cannot reach it
wait for that instead of failing.

`Supervisor` is the loop that applies it to every plugin of an installation; the resident host (and `sysops serve`,
the same code) runs it in a thread beside reconciliation. It acts only while it can take
the plugin's lock without waiting, so a roll or `plugin down` in progress is never disturbed. On Kubernetes
the kubelet supervises instead (the manifest's `liveness:` becomes the pod's livenessProbe).

Supervision is not free, and it runs four times a second for every plugin: a pass reads the plugins and
their active instances in two queries, and only when the store changed since the last pass (its change
token, one pragma: fifty plugins' rows read four times a second were half of an idle host's supervision),
parses a stored manifest only when it changed (pydantic validation of fifty manifests four times a second
was most of an idle host's CPU), and probes over a connection kept per instance (`KeptProbes`; a new gRPC
channel per probe was the rest). A failed probe drops its connection, so the next one connects afresh: a
kept channel in gRPC's reconnect backoff must never make a restarted instance look dead.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass
from enum import StrEnum

from sysops.core import events
from sysops.core.catalog import parse_stored_manifest
from sysops.core.client import PluginClient
from sysops.core.client_pool import ClientPool
from sysops.core.events import EventKind
from sysops.core.manifest import Liveness, Manifest
from sysops.core.orchestrator import Orchestrator
from sysops.core.rollout import limits_for
from sysops.core.suspects import REGISTRY, Suspects
from sysops.errors import SysopsError
from sysops.runtime.base import RuntimeDriver
from sysops.runtime.faults import MAX_RESTARTS, engine_timestamp, stability_window
from sysops.settings import Settings
from sysops.store import InstanceRecord, PluginRecord

LOG = logging.getLogger("sysops.supervisor")
#: How often the loop looks for instances due a probe (each has its own `liveness.interval_s`).
TICK_SECONDS = 0.25
#: Seconds a restarted or given-up instance gets to stop on SIGTERM before it is killed.
STOP_SECONDS = 1.0
#: Probes run at once (a wedged instance holds its probe for `timeout_s`; the others are not held up).
PROBE_WORKERS = 8
#: A failed probe whose plugin was held by something else (a reconcile pass holds it for a moment, a roll for
#: longer) is tried again this soon instead of a whole `liveness.interval_s` later.
BUSY_RETRY_SECONDS = 1.0
SERVING = "SERVING"


class Action(StrEnum):
    """What the supervisor does about an instance after a probe."""

    KEEP = "keep"
    RESTART = "restart"
    GIVE_UP = "give-up"


@dataclass(frozen=True)
class Backoff:
    """Seconds between supervisor restarts of one instance: `first_s` doubling up to `cap_s`."""

    first_s: float = 1.0
    cap_s: float = 60.0

    def delay(self, restarts: int) -> float:
        """The least time after restart number `restarts` (1, 2, ...) before the next one."""
        return min(self.cap_s, self.first_s * 2.0 ** max(0, restarts - 1))


@dataclass(frozen=True)
class Watch:
    """What the supervisor remembers about one instance between probes (monotonic seconds)."""

    failures: int = 0
    restarts: int = 0
    reason: str = ""
    #: Failed probes before this time do not count: the instance is starting (ended by a healthy probe).
    starting_until: float = 0.0
    #: No restart before this time (the backoff after the previous one).
    not_before: float = 0.0
    healthy_since: float | None = None


@dataclass(frozen=True)
class Rules:
    """The supervision parameters of one plugin."""

    liveness: Liveness
    start_s: float = 30.0
    budget: int = MAX_RESTARTS
    stable_s: float = 600.0
    backoff: Backoff = Backoff()


def decide(watch: Watch, answer: str, now: float, rules: Rules, *, suspect: bool = False) -> tuple[Watch, Action]:
    """The watch after a probe that got `answer` ("SERVING", or why not) at `now`, and what to do; the probe of
    a `suspect` (a call to it overran its deadline) that fails counts as `liveness.failures` failures."""
    if answer == SERVING:
        since = watch.healthy_since if watch.healthy_since is not None else now
        whole = watch.restarts and now - since >= rules.stable_s
        healthy = Watch(restarts=0 if whole else watch.restarts, not_before=watch.not_before, healthy_since=since)
        return healthy, Action.KEEP
    if now < watch.starting_until:
        return dataclasses.replace(watch, healthy_since=None), Action.KEEP
    failures = max(watch.failures + 1, rules.liveness.failures if suspect else 0)
    failing = dataclasses.replace(watch, failures=failures, reason=answer, healthy_since=None)
    if failing.failures < rules.liveness.failures or now < watch.not_before:
        return failing, Action.KEEP
    if watch.restarts >= rules.budget:
        return failing, Action.GIVE_UP
    restarts = watch.restarts + 1
    restarted = Watch(
        restarts=restarts,
        reason=answer,
        starting_until=now + rules.start_s,
        not_before=now + rules.backoff.delay(restarts),
    )
    return restarted, Action.RESTART


def probe(instance: InstanceRecord, timeout: float) -> str:
    """The instance's answer to a health check within `timeout` seconds ("SERVING", or why not), on a new
    connection."""
    with PluginClient(instance.endpoint, instance.plugin, instance.token) as client:
        return client.health(timeout)


class KeptProbes:
    """Health probes over one connection kept per instance; a failed probe forgets its connection."""

    #: Connections kept at most (one per instance endpoint).
    LIMIT = 4096

    def __init__(self) -> None:
        self._pool = ClientPool(self.LIMIT)

    def __call__(self, instance: InstanceRecord, timeout: float) -> str:
        """The instance's answer to a health check within `timeout` seconds ("SERVING", or why not)."""
        client = self._pool.client(instance.endpoint, instance.plugin, instance.token)
        answer = client.health(timeout)
        if answer != SERVING:
            self._pool.drop(instance.endpoint)  # the next probe connects afresh (see the module docstring)
        return answer

    def retain(self, endpoints: set[str]) -> None:
        """Forget the connections to instances no longer supervised."""
        self._pool.retain(endpoints)

    def endpoints(self) -> set[str]:
        """The endpoints with a kept connection."""
        return self._pool.endpoints()


@dataclass
class _Due:
    plugin: str
    manifest: Manifest
    instance: InstanceRecord
    #: A routed call to it overran its deadline (core/suspects.py): probed at once, and a failure is final.
    suspect: bool = False


class Supervisor:
    """Probes the serving instances of one installation and restarts the wedged ones (see the module doc)."""

    def __init__(
        self,
        settings: Settings,
        driver: RuntimeDriver,
        *,
        clock: Callable[[], float] = time.monotonic,
        prober: Callable[[InstanceRecord, float], str] | None = None,
        backoff: Backoff = Backoff(),
        suspects: Suspects = REGISTRY,
    ) -> None:
        self.settings = settings
        self.driver = driver
        self.clock = clock
        self.probes = KeptProbes() if prober is None else None
        self.prober: Callable[[InstanceRecord, float], str] = prober or self.probes or probe
        self.backoff = backoff
        self.suspects = suspects
        self.watches: dict[str, Watch] = {}
        self._next_probe: dict[str, float] = {}
        #: The parsed manifest of each plugin, with the stored form it was parsed from.
        self._manifests: dict[str, tuple[dict[str, object], Manifest]] = {}
        #: Suspects whose failed probe could not be acted on (their plugin's lock was held): probed again soon.
        self._undecided_suspects: set[str] = set()
        #: What the last pass read from the store, with the store's change token then (`_read`).
        self._store_read: tuple[tuple[int, int, int], dict[str, list[InstanceRecord]], list[PluginRecord]] | None = None

    def run(self, stop: threading.Event, tick: float = TICK_SECONDS) -> None:
        """Supervise until `stop`; a failing pass is logged once (until one works again) and the next runs."""
        orchestrator = Orchestrator(self.settings, self.driver)
        failing = False
        try:
            with futures.ThreadPoolExecutor(PROBE_WORKERS, thread_name_prefix="sysops-probe") as pool:
                while not stop.wait(tick):
                    try:
                        self.supervise(orchestrator, pool)
                    except Exception as exc:  # a broken pass must not end supervision
                        if not failing:
                            LOG.exception("supervision failed (retrying every %gs): %s", tick, exc)
                        failing = True
                        continue
                    if failing:
                        LOG.warning("supervision works again")
                    failing = False
        finally:
            orchestrator.close()

    def supervise(self, orchestrator: Orchestrator, pool: futures.Executor) -> None:
        """One pass: probe every instance whose interval is up, and act on the answers."""
        now = self.clock()
        due: list[_Due] = []
        serving: set[str] = set()
        endpoints: set[str] = set()
        active, plugins = self._read(orchestrator)
        for plugin in plugins:
            manifest = self._manifest(plugin.name, plugin.manifest)
            if manifest is None:
                continue
            for instance in active.get(plugin.name, []):
                serving.add(instance.id)
                endpoints.add(instance.endpoint)
                suspect = self.suspects.take_suspect(instance.endpoint)
                urgent = suspect or self.suspects.is_restarting(instance.endpoint)
                if urgent or self._next_probe.get(instance.id, 0.0) <= now:
                    suspect = suspect or instance.id in self._undecided_suspects
                    self._undecided_suspects.discard(instance.id)
                    due.append(_Due(plugin.name, manifest, instance, suspect))
        self.suspects.forget(endpoints)
        for gone in set(self.watches) - serving:
            del self.watches[gone]
        for gone in set(self._next_probe) - serving:
            del self._next_probe[gone]
        self._undecided_suspects &= serving
        for gone in set(self._manifests) - {plugin.name for plugin in plugins}:
            del self._manifests[gone]
        if self.probes is not None:
            self.probes.retain(endpoints)
        answers = pool.map(lambda item: self.prober(item.instance, item.manifest.liveness.timeout_s), due)
        for item, answer in zip(due, answers, strict=True):
            self._next_probe[item.instance.id] = self.clock() + item.manifest.liveness.interval_s
            self._judge(orchestrator, item, answer)

    def _read(self, orchestrator: Orchestrator) -> tuple[dict[str, list[InstanceRecord]], list[PluginRecord]]:
        """The plugins and their active instances, read from the store again only when it changed."""
        token = orchestrator.store.change_token()
        if self._store_read is None or self._store_read[0] != token:
            active: dict[str, list[InstanceRecord]] = {}
            for record in orchestrator.store.instances():
                if record.active:
                    active.setdefault(record.plugin, []).append(record)
            self._store_read = (token, active, orchestrator.store.plugins())
        return self._store_read[1], self._store_read[2]

    def _manifest(self, plugin: str, stored: dict[str, object]) -> Manifest | None:
        """The parsed manifest of `plugin` (parsed again only when its stored form changed); None if it is bad."""
        held = self._manifests.get(plugin)
        if held is not None and held[0] == stored:
            return held[1]
        try:
            manifest = parse_stored_manifest(stored, f"stored manifest of {plugin}")
        except SysopsError:
            self._manifests.pop(plugin, None)
            return None
        self._manifests[plugin] = (stored, manifest)
        return manifest

    def _judge(self, orchestrator: Orchestrator, item: _Due, answer: str) -> None:
        instance = item.instance
        watch = self.watches.get(instance.id, Watch())
        if answer == SERVING or self.clock() >= watch.starting_until:
            self.suspects.restarted(instance.endpoint)  # serving again, or its start time is up: calls stop waiting
        if answer != SERVING:
            status = self.driver.inspect(instance.handle)
            if status is None or not status.running:  # crashed or stopped: the engine's and reconcile's case
                return  # its restarts so far still count (a crash between wedges made the budget whole)
            started = engine_timestamp(status.started_at) if status.restart_count else None
            if started is not None and time.time() - started < item.manifest.readiness.timeout_seconds:
                return  # the engine restarted it after a crash: starting, as after our own restarts
        rules = Rules(
            item.manifest.liveness,
            start_s=item.manifest.readiness.timeout_seconds,
            stable_s=stability_window(),
            backoff=self.backoff,
        )
        after, action = decide(watch, answer, self.clock(), rules, suspect=item.suspect)
        if action is Action.KEEP:
            self.watches[instance.id] = after
            return
        with orchestrator.plugin_lock(item.plugin, blocking=False) as acquired:
            current = orchestrator.store.instance(instance.id)
            if current is None or not current.active:
                return  # a roll or `plugin down` replaced or removed it: nothing to act on
            if not acquired:  # a roll, a `plugin down` or a reconcile pass holds the plugin: judge it again soon
                self._next_probe[instance.id] = self.clock() + BUSY_RETRY_SECONDS
                if item.suspect:
                    self._undecided_suspects.add(instance.id)
                return
            self._act(orchestrator, item, watch, after, action, rules)
        self.watches[instance.id] = after

    def _act(
        self, orchestrator: Orchestrator, item: _Due, before: Watch, after: Watch, action: Action, rules: Rules
    ) -> None:
        instance, store = item.instance, orchestrator.store
        failed = before.failures + 1
        why = f"health check failed {failed} time{'s' * (failed != 1)} in a row ({after.reason})"
        if item.suspect:
            why = f"a command overran its deadline and the health check then failed ({after.reason})"
        why += self._observed(item)
        if action is Action.RESTART:
            events.record(
                store, item.plugin, EventKind.UNRESPONSIVE, f"{why}; restart {after.restarts} of {rules.budget}"
            )
            LOG.warning("%s is unresponsive: %s; restarting it", item.plugin, why)
            self.suspects.restarting(instance.endpoint)  # until a probe finds it serving (see `_judge`)
            try:
                self.driver.restart(instance.handle, STOP_SECONDS)
            except Exception:
                self.suspects.restarted(instance.endpoint)
                raise
            message = (
                f"instance {instance.id} restarted by the supervisor (restart {after.restarts} of {rules.budget}; "
                f"no next one within {rules.backoff.delay(after.restarts):g}s)"
            )
            events.record(store, item.plugin, EventKind.RESTARTED, message)
            return
        events.record(store, item.plugin, EventKind.UNRESPONSIVE, why)
        orchestrator.give_up(item.plugin, instance, f"Failed after {before.restarts} restarts: unresponsive: {why}")
        self.suspects.restarted(instance.endpoint)

    def _observed(self, item: _Due) -> str:
        """What the runtime counted that may explain a wedge: "; pids limit hit 61 times; 1 OOM kill"."""
        try:
            usage: Mapping[str, object] = self.driver.resources(item.instance.handle, limits_for(item.manifest)).usage
        except Exception:  # the explanation is a bonus; the restart must not wait on it
            return ""
        text = ""
        for key, what in (("pids_limit_hits", "pids limit hit"), ("memory_limit_hits", "memory limit hit")):
            count = usage.get(key)
            if isinstance(count, int) and count:
                text += f"; {what} {count} time{'s' * (count != 1)}"
        kills = usage.get("oom_kills")
        if isinstance(kills, int) and kills:
            text += f"; {kills} process{'es' * (kills != 1)} OOM-killed"
        return text

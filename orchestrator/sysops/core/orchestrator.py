"""The orchestrator: what `sysops plugin ...` does, over a store, a runtime driver and the rollout.

Every operation starts by reconciling the store with what the engine runs (containers labelled with
this installation's id), so a later process re-adopts running plugins instead of starting duplicates,
and the leftovers of an interrupted roll are removed. Operations on one plugin hold a file lock, so two
`sysops` processes never roll the same plugin at once. The dependency checks of `up`, `rollback` and `down` hold
the installation's dependencies lock (`dependencies_lock`), always taken before a plugin lock.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import Version
from sysops_sdk.healthcheck import UNRESPONSIVE

from sysops.core import events, recovery
from sysops.core.catalog import candidate, catalog_entries, parse_stored_manifest, running_candidates
from sysops.core.client import PluginClient
from sysops.core.compatibility import check_image, check_sysops
from sysops.core.dependencies import Candidate, dependents, plugin_name_of, side_by_side_key, unmet
from sysops.core.events import EventKind
from sysops.core.lifecycle import Observation, PluginState, derive_state
from sysops.core.locks import held_lock, held_shared_lock
from sysops.core.manifest import Manifest, load_manifest
from sysops.core.names import check_plugin_name, is_plugin_name, shown
from sysops.core.observations import InstanceObservation, observe, observe_all
from sysops.core.policy import apply_policy, load_policy
from sysops.core.rating_inputs import rating_of
from sysops.core.restored_revisions import BadRevision, ImageCheck, restored_revision
from sysops.core.roll_gates import roll_gates
from sysops.core.rollout import Progress, Rollout, RollTarget, limits_for
from sysops.core.service_status import service_state
from sysops.core.spares import LABEL_SPARE, is_spare, reclaim
from sysops.core.trust_gate import pinned_image
from sysops.errors import DependencyError, ManifestError, NotFoundError, SysopsError, UsageError
from sysops.imaging.dev_code import is_dev_fingerprint, prune_code, remove_code
from sysops.imaging.plugin_image import plugin_build
from sysops.private_paths import ensure_private_dir
from sysops.runtime.base import (
    LABEL_FINGERPRINT,
    LABEL_INSTALLATION,
    LABEL_INSTANCE,
    LABEL_PLUGIN,
    LABEL_REVISION,
    LABEL_VERSION,
    FollowsEngineEvents,
    InstanceStatus,
    RuntimeDriver,
    StateMirror,
    StreamCancel,
)
from sysops.runtime.conditions import condition
from sysops.runtime.faults import MAX_RESTARTS, describe_fault, engine_timestamp, given_up, last_error, stability_window
from sysops.runtime.socket_dirs import remove_socket_dir
from sysops.settings import Settings
from sysops.store import EventRecord, InstanceRecord, RevisionRecord, Store

#: A socket directory no container or record uses is removed once idle this long (a start may be creating it).
_ORPHAN_SOCKET_DIR_AGE = 120.0
#: Log lines `status` reads to find an instance's last error.
_LAST_ERROR_LINES = 50
#: Seconds an instance started again by reconciliation gets to stop on SIGTERM first (it is stopped already).
_RESTART_STOP_SECONDS = 1.0
#: Events of a plugin read to count reconciliation's restarts within the stability window.
_RESTART_EVENTS = 200
#: The dependencies lock's file in the locks directory: no plugin's ('_' is not allowed in a plugin name).
_DEPENDENCIES_LOCK = "_dependencies.lock"


@dataclass
class PluginStatus:
    """Everything `sysops plugin status` shows about one plugin."""

    name: str
    state: PluginState
    version: str = ""
    revision: int = 0
    source: str = ""
    runtime: str = ""
    image: str = ""
    image_digest: str = ""
    container_id: str = ""
    health: str = "unknown"
    replicas: str = "0/1"
    last_error: str = ""
    commands: list[str] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    #: What killed or restarted the instance ("OOMKilled (memory limit ...)", "Failed after 3 restarts: ...").
    fault: str = ""
    #: With `status(..., limits=True)`: asked, applied (read back), usage, mismatches.
    limits: dict[str, Any] = field(default_factory=dict)
    #: A service plugin's loop: "running" or "stopped (reason)" (core/service_status.py); "" for other types.
    service: str = ""
    #: Requirements of the manifest no running plugin satisfies (after `down --force` of one it needs).
    missing: list[str] = field(default_factory=list)
    #: Security rating 1-6 and why it is not 6 (core/rating.py); 0 when it could not be computed.
    rating: int = 0
    rating_reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "name": self.name,
            "state": str(self.state),
            "version": self.version,
            "revision": self.revision,
            "source": self.source,
            "runtime": self.runtime,
            "image": self.image,
            "image_digest": self.image_digest,
            "container_id": self.container_id,
            "health": self.health,
            "replicas": self.replicas,
            "last_error": self.last_error,
            "commands": self.commands,
            "events": [{"id": e.id, "time": e.time, "kind": e.kind, "message": e.message} for e in self.events],
            "fault": self.fault,
            "limits": self.limits,
            "service": self.service,
            "missing": self.missing,
            "rating": self.rating,
            "rating_reasons": self.rating_reasons,
        }


def _touching(others: list[Candidate], new: Candidate, replaced: list[Candidate]) -> list[Candidate]:
    """The running plugins whose dependency check may change when `new` replaces `replaced`: those with a
    requirement or conflict naming it, and those a conflict of `new` or of `replaced` names. For any other, the
    plugins its rules match are the same before and after, so are its unmet lines."""
    named = {rule.name for c in (new, *replaced) for rule in c.conflicts}
    return [
        other
        for other in others
        if other.name in named or any(rule.name == new.name for rule in (*other.requires, *other.conflicts))
    ]


LOG = logging.getLogger("sysops.reconcile")
#: Labels already reported as not being plugin names (each is logged once per process).
_IGNORED_LABELS: set[str] = set()


class Orchestrator:
    """Brings plugins up and down and reports on them."""

    def __init__(
        self,
        settings: Settings,
        driver: RuntimeDriver,
        progress: Progress | None = None,
        mirror: StateMirror | None = None,
    ) -> None:
        self.settings = settings
        self.driver = driver
        self.mirror = mirror
        self.store = Store(settings.store_path)
        self.progress: Progress = progress or (lambda message: None)
        self.rollout = Rollout(settings, self.store, driver, self.progress)
        #: Operations reconcile only the plugin they act on (an informer-driven server), not every plugin.
        self.per_plugin = False
        #: During `list`: every active instance observed at once, and the running plugins (for `_missing`).
        self._observed: dict[str, InstanceObservation] = {}
        self._candidates: list[Candidate] | None = None

    def close(self) -> None:
        """Release the store."""
        self.store.close()

    @contextmanager
    def plugin_lock(self, name: str, *, blocking: bool = True) -> Iterator[bool]:
        """Hold the per-plugin lock (its file exists only while held); yield False if non-blocking and taken."""
        check_plugin_name(name)  # the name becomes a path: never let `../x` or `/srv/x` through
        with held_lock(self._locks_dir() / f"{name}.lock", blocking=blocking) as acquired:
            yield acquired

    @contextmanager
    def dependencies_lock(self, *, exclusive: bool = False) -> Iterator[None]:
        """Hold the installation's dependencies lock (its file is kept): shared by an Up or rollback from its
        dependency check until its roll ends, so ups roll side by side; `exclusive` for a `down` from its
        dependents check until its downs end, so it never takes a requirement from under a plugin being rolled
        (nor an Up passes its check on a plugin being taken down). Taken before a plugin lock, never inside one."""
        with held_shared_lock(self._locks_dir() / _DEPENDENCIES_LOCK, exclusive=exclusive):
            yield

    def _locks_dir(self) -> Path:
        lock_dir = self.settings.home / "locks"
        ensure_private_dir(lock_dir)
        return lock_dir

    # reconciliation
    def reconcile(self) -> None:
        """Adopt running instances the store lost, forget vanished ones, remove orphans of interrupted rolls."""
        running = {c.handle: c for c in self.driver.list_instances({LABEL_INSTALLATION: self.settings.installation_id})}
        by_plugin: dict[str, list[InstanceStatus]] = {}
        for container in running.values():
            by_plugin.setdefault(container.labels.get(LABEL_PLUGIN, ""), []).append(container)
        names = set(by_plugin) | set(self.store.plugin_names())
        for name in names - {""} - _IGNORED_LABELS:
            if not is_plugin_name(name):
                _IGNORED_LABELS.add(name)
                LOG.warning("ignoring instances labelled %s=%s: not a valid plugin name", LABEL_PLUGIN, shown(name))
        failures: list[Exception] = []
        if running:  # after a reboot emptied /tmp, the run directory of the /tmp fallback is made again
            self.settings.ensure_run_dir()
        for name in sorted(filter(is_plugin_name, names)):  # a forged label never becomes a lock path
            try:
                with self.plugin_lock(name, blocking=False) as acquired:
                    if acquired:
                        self.driver.maintain({LABEL_INSTALLATION: self.settings.installation_id, LABEL_PLUGIN: name})
                        self._reconcile_plugin(name, by_plugin.get(name, []))
            except Exception as exc:  # one plugin's failure must not stop the others' reconciliation
                failures.append(exc)
        self._sweep_socket_dirs({c.labels.get(LABEL_INSTANCE, "") for c in running.values()})
        if failures:
            raise failures[0]

    def reconcile_plugin(self, name: str) -> None:
        """Reconcile one plugin only (an informer named it): its instances are listed by its label, and no other
        plugin's record, container or socket directory is read (the per-change path of a cluster's server)."""
        labels = {LABEL_INSTALLATION: self.settings.installation_id, LABEL_PLUGIN: name}
        containers = self.driver.list_instances(labels)
        if containers:
            self.settings.ensure_run_dir()
        with self.plugin_lock(name, blocking=False) as acquired:
            if acquired:
                self.driver.maintain(labels)
                self._reconcile_plugin(name, containers)

    def _reconcile_before(self, name: str) -> None:
        """What an operation on `name` reconciles first: everything, or only `name` when `per_plugin`."""
        if self.per_plugin:
            self.reconcile_plugin(name)
        else:
            self.reconcile()

    def forget(self, name: str, reason: str) -> bool:
        """Forget a plugin whose desired state was deleted outside sysops (`kubectl delete plugin`): its records,
        routes and revisions go, its instances are removed (the cluster deletes what the object owned anyway);
        return whether there was anything to forget. A plugin without a record is left alone: `plugin down`
        removed it (and deleted its object) and keeps its revisions for a later start."""
        with self.plugin_lock(name):
            if self.store.plugin(name) is None:
                return False
            self.store.deactivate(name)
            events.record(self.store, name, EventKind.STOPPING, reason)
            for instance in self.store.instances(name):
                self.rollout.discard(instance)
            self.store.delete_plugin(name, revisions=True)
            events.record(self.store, name, EventKind.UNLOADED, "removed")
            return True

    def _reconcile_plugin(self, name: str, containers: list[InstanceStatus]) -> None:
        recorded = {instance.handle: instance for instance in self.store.instances(name)}
        present = {container.handle for container in containers}
        lost: InstanceRecord | None = None
        for instance in recorded.values():
            if instance.handle not in present and not self._listed_late(instance):
                self.store.switch(name, add=[], remove=[instance])
                self.store.delete_instance(instance.id)
                remove_socket_dir(instance.socket_dir)
                if instance.active:
                    lost = instance
                    events.record(self.store, name, EventKind.FAILED, f"container of {instance.version} disappeared")
                    if not self.store.active_instances(name):
                        self.store.deactivate(name)
                        self.store.set_last_error(name, "its container was removed outside sysops")
        adopting = not self.store.active_instances(name)
        for container in containers:
            known = recorded.get(container.handle)
            if known is not None and known.active:
                continue
            if known is not None and is_spare(known) and LABEL_SPARE in container.labels and container.running:
                continue  # kept for the next development roll
            if adopting and container.running and self._adopt(name, container, known):
                continue
            # Left over by an interrupted roll, or a duplicate: it never served, or was replaced.
            self.driver.remove(container.handle)
            if known is not None:
                self.rollout.discard(known)
            elif (instance_id := container.labels.get(LABEL_INSTANCE, "")).isalnum():  # never a forged path
                remove_socket_dir(self.settings.run_dir / instance_id)
        by_handle = {container.handle: container for container in containers}
        self._record_serving_revision(name, by_handle)
        self._reclaim_spares(name, by_handle)
        if self.driver.restarts_stopped_instances:
            self._restart_stopped(name, {container.handle for container in containers if not container.running})
        if lost is not None and self.driver.replaces_lost_instances:
            self._replace_lost(lost)

    def _listed_late(self, instance: InstanceRecord) -> bool:
        """Whether a recorded instance that a listing from the engine's events left out is there after all (the
        listing trailed its create): asked of the engine before it is forgotten, the one destructive outcome."""
        return isinstance(self.driver, FollowsEngineEvents) and self.driver.inspect(instance.handle) is not None

    def _replace_lost(self, lost: InstanceRecord) -> None:
        """Roll the lost instance's revision again (a deleted or drained pod: nothing else re-creates it); if
        that fails, the roll leaves the plugin Failed (or serving on its other instances) with the reason."""
        plugin = self.store.plugin(lost.plugin)
        revision = next((r for r in self.store.revisions(lost.plugin) if r.revision == lost.revision), None)
        if plugin is None or revision is None:
            return
        LOG.warning("%s: instance %s of revision %d was lost; starting another", lost.plugin, lost.id, lost.revision)
        try:
            self.rollout.roll(self._revision_target(revision, plugin.source), rollback_of=revision.revision)
        except SysopsError as exc:
            LOG.warning("%s: the lost instance was not replaced: %s", lost.plugin, exc.message)

    def _revision_target(self, revision: RevisionRecord, source: str) -> RollTarget:
        """What rolling `revision` again starts: its image and its manifest under the current policy."""
        where = f"revision {revision.revision} of {revision.plugin}"
        manifest = apply_policy(parse_stored_manifest(revision.manifest, where), load_policy(self.settings.home), where)
        return RollTarget(manifest, revision.image, revision.image_id, revision.fingerprint, source)

    def _restart_stopped(self, name: str, stopped: set[str]) -> None:
        """Start again the active instances the engine stopped cleanly (core/recovery.py), or give up on one."""
        window = stability_window()
        for instance in self.store.active_instances(name):
            if instance.handle not in stopped:
                continue
            status = self.driver.inspect(instance.handle)  # `maintain` may have started it since the listing
            if status is None:
                continue
            now = time.time()
            earlier = recovery.restarts_since(self.store.events(name, _RESTART_EVENTS), instance.id, now - window)
            verdict = recovery.judge(status, now, earlier)
            if verdict is recovery.Verdict.GIVE_UP:
                self.give_up(name, instance, recovery.give_up_reason(earlier, status.exit_code, window))
            elif verdict is recovery.Verdict.RESTART:
                LOG.warning("%s: instance %s stopped (exit code %s); starting it", name, instance.id, status.exit_code)
                attempt = recovery.Attempt(instance.id, status.exit_code, earlier + 1, window, MAX_RESTARTS)
                try:
                    self.driver.restart(instance.handle, _RESTART_STOP_SECONDS)
                except SysopsError as exc:  # an attempt all the same: the budget ends in give-up, never a stuck loop
                    events.record(self.store, name, EventKind.FAILED, attempt.failed(exc.message))
                    continue
                events.record(self.store, name, EventKind.RESTARTED, attempt.restarted())
                self._await_serving(instance)

    def _await_serving(self, instance: InstanceRecord) -> None:
        """Wait (up to the ready timeout) until a restarted instance answers its health check, so the listing
        that follows says Active; one that does not is the supervisor's and the engine's to judge."""
        deadline = time.monotonic() + self.settings.ready_timeout
        with PluginClient(instance.endpoint, instance.plugin, instance.token) as client:
            while not client.healthy(timeout=0.5) and time.monotonic() < deadline:
                status = self.driver.inspect(instance.handle)
                if status is None or not status.running:
                    return
                time.sleep(0.1)

    def give_up(self, name: str, instance: InstanceRecord, reason: str) -> None:
        """Take an instance that restarts did not help out of routing and remove it; the plugin is Failed with
        `reason` once none of its instances serves (the supervisor's and reconciliation's last resort)."""
        LOG.warning("%s: %s; removing the instance", name, reason)
        self.store.switch(name, add=[], remove=[instance])
        self.rollout.discard(instance)
        if not self.store.active_instances(name):
            self.store.deactivate(name)
        self.store.set_last_error(name, reason)
        events.record(self.store, name, EventKind.FAILED, f"{reason} (instance {instance.id})")

    def _adopt(self, name: str, container: InstanceStatus, known: InstanceRecord | None) -> bool:
        """Put a running instance that nothing serves beside into service (a lost store, or an `up` killed
        before its switch), only once it passes what a roll checks: health, Describe, the self-test,
        command conflicts and the limit read-back; return False to have it removed."""
        labels = container.labels
        if LABEL_SPARE in labels:  # a spare (or one claimed by a roll that never finished): never verified to serve
            return False
        instance_id = labels.get(LABEL_INSTANCE, "")
        revision = labels.get(LABEL_REVISION, "0")
        manifest = self._manifest_of(name, int(revision) if revision.isdecimal() else 0, labels)
        if manifest is None or not instance_id.isalnum():
            return False
        socket_dir = self.settings.run_dir / instance_id
        record = known or InstanceRecord(
            id=instance_id,
            plugin=name,
            revision=int(revision) if revision.isdecimal() else 0,
            version=labels.get(LABEL_VERSION, ""),
            handle=container.handle,
            image=container.image,
            image_id=container.image,
            endpoint=container.endpoint or f"unix://{socket_dir}/plugin.sock",
            socket_dir=str(socket_dir),
            created=time.time(),
            token=container.token,
        )
        try:
            routes = self.rollout.verify_ready(record, manifest)
        except SysopsError as exc:
            message = f"unverified container {container.handle[:12]}: {exc.message}"
            events.record(self.store, name, EventKind.DISCARDED, message)
            return False
        if self.store.plugin(name) is None:
            source = labels.get("sysops.source", "")
            self.store.save_plugin(name, source, self.driver.name, manifest.model_dump(mode="json"))
        if known is None:
            self.store.add_instance(record)
        adopted = self.store.instance(instance_id)
        assert adopted is not None
        self.store.switch(name, add=[adopted], remove=[], routes=routes)
        message = f"verified and adopted running container {container.handle[:12]}"
        events.record(self.store, name, EventKind.ADOPTED, message)
        if self.rollout.hooks is not None:
            self.rollout.hooks.activated(name)
        return True

    def _manifest_of(self, name: str, revision: int, labels: Mapping[str, str]) -> Manifest | None:
        """The manifest an instance was started with: its revision's, the plugin's, or its source's (policy applied)."""
        recorded = {r.revision: r.manifest for r in self.store.revisions(name)}
        plugin = self.store.plugin(name)
        data = recorded.get(revision) or (plugin.manifest if plugin else None)
        try:
            if data and data.get("version") == labels.get(LABEL_VERSION):
                return parse_stored_manifest(data, f"stored manifest of {name}")
            source = Path(labels.get("sysops.source", ""))
            manifest = load_manifest(source)
            if manifest.name != name or manifest.version != labels.get(LABEL_VERSION):
                return None
            return apply_policy(manifest, load_policy(self.settings.home), str(source / "plugin.yaml"))
        except SysopsError:
            return None

    def _reclaim_spares(self, name: str, containers: Mapping[str, InstanceStatus]) -> None:
        """Tell a serving claimed spare its code again when it waits for it (core/spares.py `reclaim`)."""
        if not any(LABEL_SPARE in container.labels for container in containers.values()):
            return  # no store read on a reconcile pass of a plugin that has no spare
        for instance in self.store.active_instances(name):
            container = containers.get(instance.handle)
            if container is None or not container.running or LABEL_SPARE not in container.labels:
                continue
            if code := self.store.claimed_code(instance.id):
                reclaim(Path(instance.socket_dir), code)

    def _fingerprint_of(self, instance: InstanceRecord, status: InstanceStatus) -> str:
        """What an instance runs: its container's label, or, for a claimed spare (whose label has none), its claim."""
        return status.labels.get(LABEL_FINGERPRINT, "") or self.store.claimed_code(instance.id)

    def _record_serving_revision(self, name: str, containers: Mapping[str, InstanceStatus]) -> None:
        """Give a serving revision its history row when the roll that started it was killed before writing it."""
        rows = {r.revision for r in self.store.revisions(name)}
        for instance in self.store.active_instances(name):
            container = containers.get(instance.handle)
            if instance.revision in rows or container is None:
                continue
            manifest = self._manifest_of(name, instance.revision, container.labels)
            if manifest is None:
                continue
            stored = manifest.model_dump(mode="json")
            self.store.add_revision(
                RevisionRecord(
                    plugin=name,
                    revision=instance.revision,
                    version=instance.version,
                    image=instance.image,
                    image_id=instance.image_id,
                    fingerprint=self._fingerprint_of(instance, container),
                    manifest=stored,
                    created=instance.created,
                )
            )
            plugin = self.store.plugin(name)
            self.store.save_plugin(name, plugin.source if plugin else "", self.driver.name, stored)
            message = f"{instance.version} (revision {instance.revision}) serving"
            events.record(self.store, name, EventKind.RECOVERED, message)
            rows.add(instance.revision)

    def _sweep_socket_dirs(self, running_ids: set[str]) -> None:
        """Remove socket directories no container or record uses (an up killed before its container started)."""
        used = running_ids | {instance.id for instance in self.store.instances()}
        try:
            entries = list(self.settings.run_dir.iterdir())
        except OSError:
            return
        for entry in entries:
            try:
                idle = time.time() - entry.lstat().st_mtime > _ORPHAN_SOCKET_DIR_AGE
            except OSError:
                continue
            if entry.name not in used and idle and entry.is_dir() and not entry.is_symlink():
                remove_socket_dir(entry)

    # operations
    def up(self, path: Path) -> tuple[InstanceRecord, bool]:
        """Build and start a plugin, or roll it to a new version; return (instance, changed).

        The build is imaging/plugin_image.py's, the one the CLI runs before it asks the host; here it is
        skipped when the fingerprint shows nothing changed.
        """
        from sysops.core.code_checks import check_plugin_code  # bandit loads on the first build, not at host start

        plugin_dir = path.resolve()
        manifest = self._admit(load_manifest(plugin_dir), str(plugin_dir / "plugin.yaml"))
        check_plugin_code(self.settings.home, plugin_dir, manifest, self.progress)
        with self.dependencies_lock():  # from the check until the roll ends
            self._check_dependencies(manifest)
            self.progress(f"preparing {manifest.name} {manifest.version} from {plugin_dir}")
            with plugin_build(
                self.driver,
                plugin_dir,
                manifest,
                base_image=self.settings.base_image,
                installation_id=self.settings.installation_id,
                cache_dir=self.settings.cache_dir,
                progress=self.progress,
            ) as prepared:

                def build() -> RollTarget:
                    built = prepared.build()  # the engine has the tar once the build returns: removed before the roll
                    return RollTarget(
                        manifest, prepared.tag, built.id, prepared.fingerprint, str(plugin_dir), built=True
                    )

                return self._roll_if_changed(manifest, str(plugin_dir), prepared.fingerprint, build)

    def up_image(
        self, manifest: Manifest, image: str, fingerprint: str, source: str, key: str = ""
    ) -> tuple[InstanceRecord, bool]:
        """Roll a plugin to an image built elsewhere (the CLI, for a server); return (instance, changed).

        `key` runs it under a side-by-side key (`NAME--vMAJOR`) instead of its name. The client built the
        image for this roll, so a refused or failed roll removes it (unless a revision uses it), as it does a
        local build's. A runtime that pulls images by reference (Kubernetes: its image id is the reference) runs
        a registry tag by the manifest digest the tag names now (core/trust_gate.py pinned_image), which the
        gates verify and the revision keeps.
        """
        image_id = self.driver.image_id(image)
        if image_id == image:
            image_id = pinned_image(self.settings.home, manifest, image)
        target = RollTarget(manifest, image, image_id or image, fingerprint, source, built=True)
        return self._roll_under_key(target, key)

    def _roll_under_key(self, target: RollTarget, key: str) -> tuple[InstanceRecord, bool]:
        """Admit `target`'s manifest (named after its plugin) under store key `key` (its name when empty), check
        its dependencies, then roll that key to it unless it runs already; a refused image this roll built goes."""
        with self.dependencies_lock():  # from the check until the roll ends
            try:
                admitted = self._under_key(self._admit(target.manifest, f"{target.source}/plugin.yaml"), key)
                self._check_dependencies(admitted)
                target = dataclasses.replace(target, manifest=admitted)
            except SysopsError:
                if target.built:
                    self.rollout.remove_unused_image(target)
                raise
            return self._roll_if_changed(target.manifest, target.source, target.fingerprint, lambda: target)

    def _admit(self, manifest: Manifest, manifest_path: str) -> Manifest:
        """Check compatibility and policy, and that the engine answers; return the manifest to run."""
        check_sysops(manifest, manifest_path)
        manifest = apply_policy(manifest, load_policy(self.settings.home), manifest_path)
        self.driver.ping()
        self._reconcile_before(manifest.name)
        return manifest

    @staticmethod
    def _under_key(manifest: Manifest, key: str) -> Manifest:
        """The manifest to run under store key `key`: itself for its own name, renamed for its side-by-side key."""
        if not key or key == manifest.name:
            return manifest
        expected = side_by_side_key(manifest.name, Version(manifest.version).major)
        if key != expected:
            raise UsageError(
                f"plugin {manifest.name} {manifest.version} cannot run under key {shown(key)}",
                hint=f"its side-by-side key is {expected!r}",
            )
        return manifest.model_copy(update={"name": key})

    def _check_dependencies(self, manifest: Manifest) -> None:
        """Refuse, before anything starts, a plugin whose requirements no running plugin satisfies, that conflicts
        with a running one either way, or whose new version breaks a running plugin's requirement (whatever the
        client planned); requirements a running plugin missed already (a forced down) do not count."""
        everyone = running_candidates(self.store)
        others = [other for other in everyone if other.running_key != manifest.name]
        new = candidate(manifest.model_dump(mode="json"), f"directory {manifest.name}", manifest.name)
        problems = unmet(new, others)
        replaced = [c for c in everyone if c.running_key == manifest.name]
        for other in _touching(others, new, replaced):  # no other's check can change: O(plugins), not O(plugins²)
            before = set(unmet(other, [c for c in everyone if c is not other]))
            after = unmet(other, [*(c for c in others if c is not other), new])
            problems += [line for line in after if line not in before]
        if problems:
            raise DependencyError(
                "; ".join(dict.fromkeys(problems)),
                hint="`sysops plugin up` of a plugin's directory or name brings up what it requires first",
            )

    def _roll_if_changed(
        self, manifest: Manifest, source: str, fingerprint: str, target: Callable[[], RollTarget]
    ) -> tuple[InstanceRecord, bool]:
        with self.plugin_lock(manifest.name):
            existing = self.store.plugin(manifest.name)
            if (
                existing
                and existing.source
                and existing.source != source
                and self.store.active_instances(manifest.name)
            ):
                raise ManifestError(
                    f"{source}/plugin.yaml: plugin name {manifest.name!r} is already used by {existing.source}",
                    hint="give this plugin another name, or `sysops plugin down` the other one first",
                )
            current = self._serving(manifest.name)
            if len(current) == manifest.replicas and all(
                self._fingerprint_of(instance, status) == fingerprint for instance, status in current
            ):
                self.progress(f"{manifest.name} {manifest.version} is up to date (revision {current[0][0].revision})")
                return current[0][0], False
            with self._fault_mirrored(manifest.name):
                instance = self.rollout.roll(self._check_image(target()))
            self._mirror_save(manifest.name)
            if is_dev_fingerprint(fingerprint):  # the code of earlier failed development rolls goes
                prune_code(
                    self.settings.home.resolve(), plugin_name_of(manifest.name), self.store.revision_fingerprints()
                )
            return instance, True

    def _mirror_save(self, name: str) -> None:
        """Write the plugin's desired state (the revision serving marked `serving`) and its status to the mirror."""
        plugin = self.store.plugin(name)
        if self.mirror is None or plugin is None:
            return
        serving = {instance.revision for instance in self.store.active_instances(name)}
        revisions = [
            {
                "revision": r.revision,
                "version": r.version,
                "image": r.image,
                "image_id": r.image_id,
                "fingerprint": r.fingerprint,
                "manifest": r.manifest,
                "created": r.created,
                **({"serving": True} if r.revision in serving else {}),
            }
            for r in self.store.revisions(name)
        ]
        self.mirror.save(name, plugin.source, plugin.manifest, revisions)
        self.mirror_status(name, fault="")  # the roll succeeded: no fault stands

    def status_fields(self, name: str, *, fault: str | None = None) -> dict[str, Any] | None:
        """What serves of `name`, as a Plugin object's status says it (phase, ready replicas, revision, the last
        fault: `fault`, or the store's last error when None, and conditions), from the store alone (no engine
        call); None for a plugin the store does not know."""
        plugin = self.store.plugin(name)
        if plugin is None:
            return None
        active = self.store.active_instances(name)
        fault = plugin.last_error if fault is None else fault
        phase = "Active" if active else ("Failed" if fault else "Stopped")
        conditions = [condition("Ready", bool(active), "Serving" if active else "NotServing")]
        if fault:
            conditions.append(condition("Degraded", True, "RolledBack" if active else "Failed", fault))
        return {
            "phase": phase,
            "ready_replicas": len(active),
            "revision": active[0].revision if active else 0,
            "last_fault": fault,
            "conditions": conditions,
        }

    def mirror_status(self, name: str, *, fault: str | None = None, **extra: Any) -> None:
        """Write `status_fields` of `name` (and `extra` fields) to the mirror's status, if it keeps one."""
        write_status = getattr(self.mirror, "write_status", None)
        fields = self.status_fields(name, fault=fault)
        if write_status is not None and fields is not None:
            write_status(name, **fields, **extra)

    @contextmanager
    def _fault_mirrored(self, name: str) -> Iterator[None]:
        """Around a roll: a failure (rolled back or not) is written to the mirror's status with its reason."""
        try:
            yield
        except SysopsError as exc:
            try:
                self.mirror_status(name, fault=exc.message)
            except SysopsError as mirrored:
                LOG.warning("%s: the roll's failure was not written to its status: %s", name, mirrored.message)
            raise

    def restore_from_mirror(self, check_image: ImageCheck | None = None) -> None:
        """Rebuild plugins and revisions from the mirror (a restarted server), then re-adopt what runs.

        The mirror is input (core/restored_revisions.py): a plugin whose manifest does not parse, and a revision
        that is malformed or names an image `check_image` refuses, are logged and skipped, never restored and
        never a failed startup."""
        if self.mirror is None:
            return
        for mirrored in self.mirror.load():
            try:
                parse_stored_manifest(mirrored.manifest, f"Plugin {mirrored.name}'s manifest")
            except SysopsError as exc:
                LOG.warning("restore: plugin %s skipped: %s", mirrored.name, exc.message)
                continue
            revisions = []
            for raw in mirrored.revisions:
                try:
                    revisions.append(restored_revision(mirrored.name, raw, check_image))
                except BadRevision as exc:
                    LOG.warning("restore: a revision of plugin %s skipped: %s", mirrored.name, exc)
            if self.store.plugin(mirrored.name) is None:
                self.store.save_plugin(mirrored.name, mirrored.source, self.driver.name, dict(mirrored.manifest))
            for revision in revisions:
                self.store.add_revision(revision)
        self.reconcile()

    def _check_image(self, target: RollTarget) -> RollTarget:
        """Refuse an image whose Python, SDK or protocol does not fit (core/compatibility.py) or that a roll gate
        refuses (core/roll_gates.py: trust, held upgrades), before anything starts, removing it as a refused
        roll's build; compatibility is unchecked where the driver cannot read labels."""
        try:
            check_image(target.manifest, self.driver.image_labels(target.image), target.source)
            stored = self.store.plugin(target.manifest.name)
            serving = None
            if stored is not None and self.store.active_instances(target.manifest.name):
                serving = parse_stored_manifest(stored.manifest, f"stored manifest of {target.manifest.name}")
            for gate in roll_gates(self.settings):
                gate(target, serving)
        except SysopsError:
            if target.built:  # a revision's image (another key's) stays
                self.rollout.remove_unused_image(target)
            raise
        return target

    def _serving(self, name: str) -> list[tuple[InstanceRecord, InstanceStatus]]:
        """Active instances whose containers run, with their status."""
        serving = []
        for instance in self.store.active_instances(name):
            status = self.driver.inspect(instance.handle)
            if status is not None and status.running:
                serving.append((instance, status))
        return serving

    def down(self, name: str, *, purge: bool = False, cascade: bool = False, force: bool = False) -> None:
        """Drain and remove a plugin's instances; with `purge`, also its images, revisions and data volume.

        Without `purge` the revisions stay (`history` lists them), so a later `down --purge` of the same
        name still finds and removes their images. A plugin running plugins require is refused (naming them)
        unless `cascade` (they go down first, the furthest first) or `force` (only it goes down; their status
        names the requirement they miss).
        """
        self.reconcile()
        if force:
            self._down(name, purge=purge)
            return
        with self.dependencies_lock(exclusive=True):  # from the dependents check until the downs end
            for dependent in self._dependents(name, cascade=cascade):
                self.progress(f"taking {dependent.running_key} down first (it requires {name})")
                self._down(dependent.running_key, purge=False)
            self._down(name, purge=purge)

    def _dependents(self, name: str, *, cascade: bool) -> list[Candidate]:
        """The running plugins that need `name`, the furthest first; refused (DependencyError) unless `cascade`."""
        needing = dependents(name, running_candidates(self.store))
        if needing and not cascade:
            shown_dependents = ", ".join(f"{c.running_key} {c.version}" for c in needing)
            raise DependencyError(
                f"plugin {name} is required by running plugins: {shown_dependents}",
                hint=f"`sysops plugin down {name} --cascade` takes them down first; `--force` takes only {name} down",
            )
        return needing

    def _down(self, name: str, *, purge: bool) -> None:
        with self.plugin_lock(name):
            plugin = self.store.plugin(name)
            revisions = self.store.revisions(name)
            labels = {LABEL_INSTALLATION: self.settings.installation_id, LABEL_PLUGIN: name}
            if plugin is None and not (purge and revisions) and not self._remove_leftovers(labels, purge=purge):
                raise NotFoundError(f"no plugin named {name!r}", hint="`sysops plugin ls` lists them")
            if plugin is not None:
                self.store.deactivate(name)
                events.record(self.store, name, EventKind.STOPPING, "sysops plugin down")
                for instance in self.store.instances(name):
                    self.rollout.retire(instance)
                for container in self.driver.list_instances(
                    {LABEL_INSTALLATION: self.settings.installation_id, LABEL_PLUGIN: name}
                ):
                    self.driver.remove(container.handle)
            if purge:
                for revision in revisions:
                    self.driver.remove_image(revision.image)
                self.driver.remove_volume(self.rollout.data_volume(name))
                self.driver.remove_labelled(labels)  # builds of interrupted rolls have no revision
                if self.rollout.hooks is not None:  # its state, config values, alerts, records and metrics
                    self.rollout.hooks.purged(name)
            self.store.delete_plugin(name, revisions=purge)
            if purge:  # its development-mode code, but what another key's revisions run
                remove_code(self.settings.home.resolve(), plugin_name_of(name), self.store.revision_fingerprints())
            if self.mirror is not None:
                self.mirror.delete(name)
            events.record(self.store, name, EventKind.UNLOADED, "removed")

    def _remove_leftovers(self, labels: Mapping[str, str], *, purge: bool) -> int:
        """Remove what a plugin without a record left (its containers; with `purge` also images and volume)."""
        if purge:
            return self.driver.remove_labelled(labels)
        containers = self.driver.list_instances(labels)
        for container in containers:
            self.driver.remove(container.handle)
        return len(containers)

    def rollback(self, name: str, to: int | None = None, key: str = "") -> InstanceRecord:
        """Roll back to an earlier revision's image (the previous one by default), without rebuilding; also starts
        a revision of a plugin that is down (its revisions stay). Refused as an Up is when its requirements do not
        run (`_check_dependencies`).

        With `key` other than `name` (a dependency plan's step: the plugin's plain name or its other side-by-side
        key), revision `to` of `name` starts under `key` instead, as `key`'s new revision (`_revision_under_key`).
        """
        if key and key != name:
            return self._revision_under_key(name, to, key)
        self._reconcile_before(name)
        with self.dependencies_lock(), self.plugin_lock(name):  # from the check until the roll ends
            plugin = self.store.plugin(name)
            revisions = self.store.revisions(name)
            if plugin is None and not revisions:
                raise NotFoundError(f"no plugin named {name!r}", hint="`sysops plugin ls` lists them")
            current = next(iter(self.store.active_instances(name)), None)
            target = self._rollback_target(name, revisions, current, to)
            if self.driver.image_id(target.image_id) is None:
                raise NotFoundError(
                    f"image of {name} revision {target.revision} is gone", hint="run `sysops plugin up`"
                )
            roll_target = self._revision_target(target, plugin.source if plugin is not None else "")
            self._check_dependencies(roll_target.manifest)
            self.progress(f"rolling {name} back to revision {target.revision} ({target.version})")
            with self._fault_mirrored(name):
                instance = self.rollout.roll(roll_target, rollback_of=target.revision)
            self._mirror_save(name)
            return instance

    def _revision_under_key(self, name: str, to: int | None, key: str) -> InstanceRecord:
        """Roll `key` to the image and manifest of revision `to` (the latest by default) of store key `name`,
        checked as an Up is (compatibility, policy, `key` being the version's plain name or side-by-side key,
        dependencies); the revision's image, the installation's own, is shared, never removed by this roll."""
        revisions = self.store.revisions(name)
        if not revisions:
            raise NotFoundError(f"no plugin named {name!r}", hint="`sysops plugin ls` lists them")
        revision = self._rollback_target(name, revisions, None, to)
        if self.driver.image_id(revision.image_id) is None:
            raise NotFoundError(f"image of {name} revision {revision.revision} is gone", hint="run `sysops plugin up`")
        plugin = self.store.plugin(name)
        where = f"revision {revision.revision} of {name}"
        manifest = parse_stored_manifest(revision.manifest, where)
        manifest = manifest.model_copy(update={"name": plugin_name_of(name)})
        source = plugin.source if plugin is not None else ""
        target = RollTarget(manifest, revision.image, revision.image_id, revision.fingerprint, source)
        self.progress(f"starting {where} ({revision.version}) as {key}")
        instance, _ = self._roll_under_key(target, key)
        return instance

    @staticmethod
    def _rollback_target(
        name: str, revisions: list[RevisionRecord], current: InstanceRecord | None, to: int | None
    ) -> RevisionRecord:
        if to is not None:
            for revision in revisions:
                if revision.revision == to:
                    return revision
            raise NotFoundError(f"plugin {name!r} has no revision {to}", hint=f"`sysops plugin history {name}`")
        earlier = [r for r in revisions if current is None or r.revision < current.revision]
        if not earlier:
            raise NotFoundError(f"plugin {name!r} has no earlier revision to roll back to")
        return earlier[-1]

    def history(self, name: str) -> list[RevisionRecord]:
        """Revisions of a plugin, oldest first."""
        check_plugin_name(name)
        if self.store.plugin(name) is None and not self.store.revisions(name):
            raise NotFoundError(f"no plugin named {name!r}", hint="`sysops plugin ls` lists them")
        return self.store.revisions(name)

    def catalog(self) -> list[dict[str, Any]]:
        """Every plugin version the store knows, per key (core/catalog.py)."""
        self.reconcile()
        return catalog_entries(self.store)

    def status(self, name: str, *, limits: bool = False) -> PluginStatus:
        """Observe one plugin; with `limits`, also read back its limits and sample live usage (0.5 s)."""
        check_plugin_name(name)
        plugin = self.store.plugin(name)
        if plugin is None:
            raise NotFoundError(f"no plugin named {name!r}", hint="`sysops plugin ls` lists them")
        result = PluginStatus(name=name, state=PluginState.UNLOADED, source=plugin.source, runtime=plugin.runtime)
        result.last_error = plugin.last_error
        result.missing = self._missing(name)
        result.events = self.store.events(name)
        result.commands = [route.command for route in self.store.routes() if route.plugin == name]
        active = self.store.active_instances(name)
        seen = [self._observed.get(instance.id) or observe(self.driver, instance) for instance in active]
        observed = [(instance, status) for instance, (status, _) in zip(active, seen, strict=True)]
        ready = [healthy for _, healthy in seen]
        self._rate(result, plugin.manifest, active[0].image_id if active else "")
        result.replicas = f"{sum(ready)}/{plugin.manifest.get('replicas', 1)}"
        if not observed:
            result.state = PluginState.FAILED if plugin.last_error else PluginState.UNLOADED
            return result
        (instance, status), healthy = observed[0], ready[0]
        result.state = derive_state(
            Observation(
                exists=status is not None,
                running=bool(status and status.running),
                healthy=healthy,
                exit_code=status.exit_code if status else None,
            )
        )
        if status is not None and (not status.running or status.restart_count):
            memory_mb = int((plugin.manifest.get("limits") or {}).get("memory_mb") or 0)
            lines = list(self.driver.logs(instance.handle, tail=_LAST_ERROR_LINES))
            result.last_error = last_error(status, lines, memory_mb * 1024 * 1024) or result.last_error
        if status is not None:
            self._observe_limits(result, plugin.manifest, instance, status, sample=limits)
        result.version, result.revision = instance.version, instance.revision
        result.image, result.image_digest = instance.image, instance.image_id
        result.container_id = instance.handle[:12] if len(instance.handle) == 64 else instance.handle
        result.health = "SERVING" if healthy else "NOT_SERVING"
        if "service" in plugin.manifest.get("types", []):
            result.service = service_state(
                instance, healthy, lambda: self.driver.logs(instance.handle, tail=_LAST_ERROR_LINES)
            )
        return result

    def _rate(self, result: PluginStatus, data: dict[str, Any], image_id: str) -> None:
        """Fill the plugin's security rating (core/rating.py) from its stored manifest; left 0 if unreadable."""
        try:
            manifest = parse_stored_manifest(data, f"stored manifest of {result.name}")
            rating = rating_of(self.settings.home, manifest, image_id)
        except SysopsError:
            return
        result.rating, result.rating_reasons = rating.score, list(rating.reasons)

    def _missing(self, key: str) -> list[str]:
        """The requirements the plugin running under `key` misses now (empty when it is not running)."""
        everyone = running_candidates(self.store) if self._candidates is None else self._candidates
        mine = [c for c in everyone if c.running_key == key]
        return unmet(mine[0], [c for c in everyone if c.running_key != key]) if mine else []

    def _observe_limits(
        self, result: PluginStatus, data: dict[str, Any], instance: InstanceRecord, status: InstanceStatus, sample: bool
    ) -> None:
        """Name the instance's fault (recording it as an event once), and read back limits and usage if asked."""
        try:
            manifest = parse_stored_manifest(data, f"stored manifest of {result.name}")
        except ManifestError:
            return
        asked = limits_for(manifest)
        result.fault = describe_fault(status, asked.memory_bytes)
        if result.fault:
            self._record_fault(result, status)
        if sample:
            report = self.driver.resources(instance.handle, asked, sample_seconds=0.5 if status.running else 0.0)
            result.limits = {
                "asked": manifest.limits.model_dump(mode="json")
                | {"network": manifest.model_dump(mode="json")["network"]},
                "applied": dict(report.applied),
                "usage": dict(report.usage),
                "mismatches": list(report.mismatches),
            }

    def _record_fault(self, result: PluginStatus, status: InstanceStatus) -> None:
        """Record, once each, what the engine did to an instance: an OOM kill, a restart, giving up (Failed)."""
        container = status.handle[:12]
        observed: list[tuple[EventKind, str]] = []
        if status.oom_killed:
            observed.append((EventKind.OOM_KILLED, f"(container {container})"))
        if status.error.startswith(UNRESPONSIVE):  # its livenessProbe had the kubelet kill it (Kubernetes)
            observed.append((EventKind.UNRESPONSIVE, f"(container {container}, restart {status.restart_count})"))
        if status.running and status.restart_count:
            observed.append((EventKind.RESTARTED, f"(container {container}, restart {status.restart_count})"))
        if given_up(status):
            observed.append((EventKind.FAILED, f"(container {container})"))
        # A restart counts as recorded only by an event since the container's current start: a supervisor
        # restart or a stable run zeroes the engine's count, so a later crash is "restart 1" again (and was
        # taken for the one recorded before). An OOM kill stays flagged across the restart that follows it.
        started = engine_timestamp(status.started_at) or 0.0
        for kind, where in observed:
            since = started if kind is EventKind.RESTARTED else 0.0
            if not any(e.kind == kind and e.message.endswith(where) and e.time >= since for e in result.events):
                events.record(self.store, result.name, kind, f"{result.fault} {where}")
                result.events = self.store.events(result.name)

    def list(self) -> list[PluginStatus]:
        """Observe every plugin (the engine and health checks of all their instances asked at once)."""
        plugins = self.store.plugins()
        active = [instance for plugin in plugins for instance in self.store.active_instances(plugin.name)]
        self._observed, self._candidates = observe_all(self.driver, active), running_candidates(self.store)
        try:
            return [self.status(plugin.name) for plugin in plugins]
        finally:
            self._observed, self._candidates = {}, None

    def events(
        self,
        plugin: str | None = None,
        *,
        follow: bool = False,
        after: int = 0,
        stop: threading.Event | None = None,
    ) -> Iterator[EventRecord]:
        """Stored lifecycle events (of one plugin or all) with an id above `after`, oldest first; with `follow`,
        then new ones until `stop`.

        A name that is not a plugin name is UsageError (exit 2); without `follow`, a plugin with neither a
        record nor events is NotFoundError (exit 8); a follow waits for it to appear.
        """
        if plugin is not None:
            check_plugin_name(plugin)
            if not follow and self.store.plugin(plugin) is None and not self.store.events(plugin, limit=1):
                raise NotFoundError(f"no plugin named {plugin!r}", hint="`sysops plugin ls` lists them")
        return events.read_events(self.store, plugin, after=after, follow=follow, stop=stop)

    def logs(
        self, name: str, *, follow: bool = False, tail: int | None = None, cancel: StreamCancel | None = None
    ) -> Iterator[str]:
        """Log lines of a plugin's active instance; `cancel` can end a follow from another thread."""
        check_plugin_name(name)
        plugin = self.store.plugin(name)
        if plugin is None:
            raise NotFoundError(f"no plugin named {name!r}", hint="`sysops plugin ls` lists them")
        instances = self.store.instances(name)
        chosen = next((i for i in instances if i.active), instances[-1] if instances else None)
        if chosen is None:
            raise NotFoundError(f"plugin {name!r} has no instance to show logs of")
        return self.driver.logs(chosen.handle, follow=follow, tail=tail, cancel=cancel)

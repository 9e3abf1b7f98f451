"""The orchestrator: what `sysops plugin ...` does, over a store, a runtime driver and the rollout.

Every operation starts by reconciling the store with what the engine runs (containers labelled with
this installation's id), so a later process re-adopts running plugins instead of starting duplicates,
and the leftovers of an interrupted roll are removed. Operations on one plugin hold a file lock, so two
`sysops` processes never roll the same plugin at once.
"""

from __future__ import annotations

import fcntl
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sysops import __version__
from sysops.build.image import make_context
from sysops.core.client import PluginClient
from sysops.core.lifecycle import Observation, PluginState, derive_state
from sysops.core.manifest import Manifest, load_manifest, parse_manifest
from sysops.core.rollout import Progress, Rollout, RollTarget
from sysops.errors import ManifestError, NotFoundError, StartFailedError
from sysops.runtime.base import (
    LABEL_FINGERPRINT,
    LABEL_INSTALLATION,
    LABEL_INSTANCE,
    LABEL_PLUGIN,
    LABEL_REVISION,
    LABEL_VERSION,
    BuildRequest,
    InstanceStatus,
    RuntimeDriver,
)
from sysops.settings import Settings
from sysops.store import EventRecord, InstanceRecord, RevisionRecord, Store


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
            "events": [{"time": e.time, "kind": e.kind, "message": e.message} for e in self.events],
        }


class Orchestrator:
    """Brings plugins up and down and reports on them."""

    def __init__(self, settings: Settings, driver: RuntimeDriver, progress: Progress | None = None) -> None:
        self.settings = settings
        self.driver = driver
        self.store = Store(settings.store_path)
        self.progress: Progress = progress or (lambda message: None)
        self.rollout = Rollout(settings, self.store, driver, self.progress)

    def close(self) -> None:
        """Release the store."""
        self.store.close()

    @contextmanager
    def plugin_lock(self, name: str, *, blocking: bool = True) -> Iterator[bool]:
        """Hold the per-plugin lock; yield False if non-blocking and another process holds it."""
        lock_dir = self.settings.home / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / f"{name}.lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # reconciliation
    def reconcile(self) -> None:
        """Adopt running instances the store lost, forget vanished ones, remove orphans of interrupted rolls."""
        running = {c.handle: c for c in self.driver.list_instances({LABEL_INSTALLATION: self.settings.installation_id})}
        by_plugin: dict[str, list[InstanceStatus]] = {}
        for container in running.values():
            by_plugin.setdefault(container.labels.get(LABEL_PLUGIN, ""), []).append(container)
        names = set(by_plugin) | {plugin.name for plugin in self.store.plugins()}
        for name in sorted(names - {""}):
            with self.plugin_lock(name, blocking=False) as acquired:
                if acquired:
                    self._reconcile_plugin(name, by_plugin.get(name, []))

    def _reconcile_plugin(self, name: str, containers: list[InstanceStatus]) -> None:
        recorded = {instance.handle: instance for instance in self.store.instances(name)}
        present = {container.handle for container in containers}
        for instance in recorded.values():
            if instance.handle not in present:
                self.store.switch(name, add=[], remove=[instance])
                self.store.delete_instance(instance.id)
                shutil.rmtree(instance.socket_dir, ignore_errors=True)
                if instance.active:
                    self.store.add_event(name, "failed", f"container of {instance.version} disappeared")
                    if not self.store.active_instances(name):
                        self.store.deactivate(name)
                        self.store.set_last_error(name, "its container was removed outside sysops")
        adopting = not self.store.active_instances(name)
        for container in containers:
            known = recorded.get(container.handle)
            if known is not None and known.active:
                continue
            if known is None and adopting and container.running and self._adopt(name, container):
                continue
            # Left over by an interrupted roll, or a duplicate: it never served, or was replaced.
            self.driver.remove(container.handle)
            if known is not None:
                self.rollout.discard(known)

    def _adopt(self, name: str, container: InstanceStatus) -> bool:
        labels = container.labels
        instance_id = labels.get(LABEL_INSTANCE, "")
        socket_dir = self.settings.run_dir / instance_id
        endpoint = f"unix://{socket_dir}/plugin.sock"
        with PluginClient(endpoint, name) as client:
            if not client.healthy(timeout=1.0):
                return False
            descriptor = client.describe()
        plugin = self.store.plugin(name)
        if plugin is None:
            source = labels.get("sysops.source", "")
            try:
                manifest = load_manifest(Path(source)).model_dump(mode="json")
            except ManifestError:
                manifest = {}
            self.store.save_plugin(name, source, self.driver.name, manifest)
        self.store.add_instance(
            InstanceRecord(
                id=instance_id,
                plugin=name,
                revision=int(labels.get(LABEL_REVISION, "0")),
                version=labels.get(LABEL_VERSION, ""),
                handle=container.handle,
                image="",
                image_id=self.driver.image_id(container.handle) or "",
                endpoint=endpoint,
                socket_dir=str(socket_dir),
                created=time.time(),
            )
        )
        routes = {command.name: command.SerializeToString() for command in descriptor.commands}
        adopted = self.store.instance(instance_id)
        assert adopted is not None
        self.store.switch(name, add=[adopted], remove=[], routes=routes)
        self.store.add_event(name, "adopted", f"re-adopted running container {container.handle[:12]}")
        return True

    # operations
    def up(self, path: Path) -> tuple[InstanceRecord, bool]:
        """Build and start a plugin, or roll it to a new version; return (instance, changed)."""
        plugin_dir = path.resolve()
        manifest = load_manifest(plugin_dir)
        self._check_compatibility(manifest, plugin_dir)
        self.driver.ping()
        self.reconcile()
        with self.plugin_lock(manifest.name):
            existing = self.store.plugin(manifest.name)
            running_elsewhere = (
                existing and existing.source != str(plugin_dir) and self.store.active_instances(manifest.name)
            )
            if existing and existing.source and running_elsewhere:
                raise ManifestError(
                    f"{plugin_dir / 'plugin.yaml'}: plugin name {manifest.name!r} is already used by {existing.source}",
                    hint="give this plugin another name, or `sysops plugin down` the other one first",
                )
            base_image_id = self.driver.image_id(self.settings.base_image)
            if base_image_id is None:
                raise StartFailedError(
                    f"base image {self.settings.base_image} not found",
                    hint="build it with plugin-base-image/build.sh (scripts/bootstrap.sh does it)",
                )
            self.progress(f"preparing {manifest.name} {manifest.version} from {plugin_dir}")
            image_labels = {
                LABEL_INSTALLATION: self.settings.installation_id,
                LABEL_PLUGIN: manifest.name,
                LABEL_VERSION: manifest.version,
            }
            context = make_context(plugin_dir, manifest, base_image_id, self.settings.cache_dir, image_labels)
            current = self._serving(manifest.name)
            if len(current) == manifest.replicas and all(
                status.labels.get(LABEL_FINGERPRINT) == context.fingerprint for _, status in current
            ):
                self.progress(f"{manifest.name} {manifest.version} is up to date (revision {current[0][0].revision})")
                return current[0][0], False
            repository = f"sysops-plugins/{self.settings.installation_id}-{manifest.name}"
            tag = f"{repository}:{manifest.version}-{context.fingerprint[:12]}"
            self.progress(f"building image {tag}")
            built = self.driver.build_image(BuildRequest(context=context.tar, tag=tag), self.progress)
            target = RollTarget(manifest, tag, built.id, context.fingerprint, str(plugin_dir))
            return self.rollout.roll(target), True

    def _check_compatibility(self, manifest: Manifest, plugin_dir: Path) -> None:
        from packaging.specifiers import SpecifierSet

        if __version__ not in SpecifierSet(manifest.compatibility.sysops, prereleases=True):
            raise ManifestError(
                f"{plugin_dir / 'plugin.yaml'}: key 'compatibility.sysops': plugin {manifest.name} needs sysops "
                f"{manifest.compatibility.sysops}, this is sysops {__version__}"
            )

    def _serving(self, name: str) -> list[tuple[InstanceRecord, InstanceStatus]]:
        """Active instances whose containers run, with their status."""
        serving = []
        for instance in self.store.active_instances(name):
            status = self.driver.inspect(instance.handle)
            if status is not None and status.running:
                serving.append((instance, status))
        return serving

    def down(self, name: str, *, purge: bool = False) -> None:
        """Drain and remove a plugin's instances; with `purge`, also its images and data volume."""
        self.reconcile()
        with self.plugin_lock(name):
            plugin = self.store.plugin(name)
            if plugin is None:
                raise NotFoundError(f"no plugin named {name!r}", hint="`sysops plugin ls` lists them")
            self.store.deactivate(name)
            self.store.add_event(name, "stopping", "sysops plugin down")
            for instance in self.store.instances(name):
                self.rollout.retire(instance)
            for container in self.driver.list_instances(
                {LABEL_INSTALLATION: self.settings.installation_id, LABEL_PLUGIN: name}
            ):
                self.driver.remove(container.handle)
            if purge:
                for revision in self.store.revisions(name):
                    self.driver.remove_image(revision.image)
                self.driver.remove_volume(self.rollout.data_volume(name))
            self.store.delete_plugin(name)
            self.store.add_event(name, "unloaded", "removed")

    def rollback(self, name: str, to: int | None = None) -> InstanceRecord:
        """Roll back to an earlier revision's image (the previous one by default), without rebuilding."""
        self.reconcile()
        with self.plugin_lock(name):
            plugin = self.store.plugin(name)
            if plugin is None:
                raise NotFoundError(f"no plugin named {name!r}", hint="`sysops plugin ls` lists them")
            revisions = self.store.revisions(name)
            current = next(iter(self.store.active_instances(name)), None)
            target = self._rollback_target(name, revisions, current, to)
            if self.driver.image_id(target.image_id) is None:
                raise NotFoundError(
                    f"image of {name} revision {target.revision} is gone", hint="run `sysops plugin up`"
                )
            manifest = parse_manifest(target.manifest, f"revision {target.revision} of {name}")
            self.progress(f"rolling {name} back to revision {target.revision} ({target.version})")
            return self.rollout.roll(
                RollTarget(manifest, target.image, target.image_id, target.fingerprint, plugin.source),
                rollback_of=target.revision,
            )

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
        if self.store.plugin(name) is None and not self.store.revisions(name):
            raise NotFoundError(f"no plugin named {name!r}", hint="`sysops plugin ls` lists them")
        return self.store.revisions(name)

    def status(self, name: str) -> PluginStatus:
        """Observe one plugin."""
        plugin = self.store.plugin(name)
        if plugin is None:
            raise NotFoundError(f"no plugin named {name!r}", hint="`sysops plugin ls` lists them")
        result = PluginStatus(name=name, state=PluginState.UNLOADED, source=plugin.source, runtime=plugin.runtime)
        result.last_error = plugin.last_error
        result.events = self.store.events(name)
        result.commands = [route.command for route in self.store.routes() if route.plugin == name]
        active = self.store.active_instances(name)
        result.replicas = f"{len(active)}/{plugin.manifest.get('replicas', 1)}"
        instance = active[0] if active else None
        if instance is None:
            result.state = PluginState.FAILED if plugin.last_error else PluginState.UNLOADED
            return result
        status = self.driver.inspect(instance.handle)
        healthy = False
        if status is not None and status.running:
            with PluginClient(instance.endpoint, name) as client:
                healthy = client.healthy(timeout=1.0)
        result.state = derive_state(
            Observation(
                exists=status is not None,
                running=bool(status and status.running),
                healthy=healthy,
                exit_code=status.exit_code if status else None,
            )
        )
        if status is not None and not status.running:
            result.last_error = str(self.rollout.failure(instance, status))
        result.version, result.revision = instance.version, instance.revision
        result.image, result.image_digest = instance.image, instance.image_id
        result.container_id = instance.handle[:12]
        result.health = "SERVING" if healthy else "NOT_SERVING"
        return result

    def list(self) -> list[PluginStatus]:
        """Observe every plugin."""
        return [self.status(plugin.name) for plugin in self.store.plugins()]

    def logs(self, name: str, *, follow: bool = False, tail: int | None = None) -> Iterator[str]:
        """Log lines of a plugin's active instance."""
        plugin = self.store.plugin(name)
        if plugin is None:
            raise NotFoundError(f"no plugin named {name!r}", hint="`sysops plugin ls` lists them")
        instances = self.store.instances(name)
        chosen = next((i for i in instances if i.active), instances[-1] if instances else None)
        if chosen is None:
            raise NotFoundError(f"plugin {name!r} has no instance to show logs of")
        return self.driver.logs(chosen.handle, follow=follow, tail=tail)

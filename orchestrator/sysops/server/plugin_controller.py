"""The server's controller on Kubernetes: Plugin objects and plugin pods are watched, not polled.

Two informers (runtime/kubernetes/informer.py) name what changed; each change queues the one plugin it
concerns, and a few workers handle queued plugins (never one plugin in two workers at once):

- A Plugin object whose spec is newer than its status says (metadata.generation > status.observedGeneration:
  `kubectl apply`, not the server's own writes, which mark their generation observed) is compared with what
  serves (`decide`): another known revision is rolled back to, a new image or manifest is rolled forward,
  through the same Orchestrator operations as the CLI's (readiness, automatic rollback). Whatever the outcome,
  the generation is then marked observed, so a spec that failed is not tried again until it changes; the
  status says why it failed.
- A Plugin object deleted (`kubectl delete plugin X`) makes the server forget X; the cluster deletes its pods,
  policies and Secrets by ownership.
- A plugin pod that changed (crashed, OOMKilled, deleted) reconciles that plugin only
  (Orchestrator.reconcile_plugin) and writes its status when it differs.

Nothing on these paths lists or reads another plugin. Every resync period the informers deliver every object
again, which heals what a failed handler missed; a plugin whose object and pods did not change since it was
last handled without error is skipped then (1,000 plugins do not mean 1,000 pod lists per resync).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sysops.core.catalog import parse_stored_manifest
from sysops.core.manifest import Manifest, parse_manifest
from sysops.core.orchestrator import Orchestrator
from sysops.core.policy import Policy, apply_policy, load_policy
from sysops.errors import ManifestError, SysopsError
from sysops.runtime.base import LABEL_INSTALLATION, LABEL_PLUGIN
from sysops.runtime.kubernetes.informer import DELETED, SYNC, Informer
from sysops.runtime.kubernetes.plugin_resource import GROUP, PLURAL, STATUS_FIELDS, VERSION, PluginApi
from sysops.runtime.kubernetes.pod_faults import pod_fault
from sysops.store import RevisionRecord

LOG = logging.getLogger("sysops.controller")
#: Workers handling queued plugins (each one plugin at a time).
WORKERS = 4
#: Seconds between two deliveries of every object (the informers' resync).
RESYNC_SECONDS = 300.0
#: The key of a plugin's own object among the versions the controller remembers (its pods: pod/<name>).
OBJECT_KEY = "object"
#: Status fields compared before a pod change writes the status again (conditions carry timestamps).
_COMPARED = ("phase", "ready_replicas", "revision", "last_fault")


@dataclass(frozen=True)
class Decision:
    """What a Plugin object's spec asks: nothing, a rollback to a known revision, or a roll to its image."""

    action: str  # "none", "rollback", "up"
    reason: str
    revision: int = 0


NOTHING_OBSERVED = Decision("none", "generation observed")


def decide(
    obj: Mapping[str, Any], serving: int, revisions: Mapping[int, RevisionRecord], home_policy: Policy
) -> Decision:
    """Compare a Plugin object's spec with what serves (`serving`: its revision, 0 when none) and the known
    `revisions`. `home_policy` is the installation's policy (the manifest is compared as the store keeps it)."""
    spec = obj.get("spec") or {}
    generation = int((obj.get("metadata") or {}).get("generation", 0) or 0)
    observed = int((obj.get("status") or {}).get("observedGeneration", 0) or 0)
    if observed >= generation:
        return NOTHING_OBSERVED
    image = str(spec.get("image", "") or "")
    if not image and not spec.get("revision"):
        return Decision("none", "no image yet (an owner created before its first roll)")
    wanted = int(spec.get("revision", 0) or 0)
    current = revisions.get(serving)
    if wanted and wanted != serving and wanted in revisions:
        unchanged_images = {"", revisions[wanted].image, current.image if current else ""}
        if image in unchanged_images:
            return Decision("rollback", f"revision {wanted} asked, {serving or 'none'} serves", wanted)
    if not image:
        return Decision("none", f"revision {wanted} is unknown and no image is given")
    if current is None:
        return Decision("up", "nothing serves")
    if image != current.image:
        return Decision("up", f"image {image} asked, {current.image} serves")
    if normalized(wanted_manifest(spec), home_policy) != normalized(current.manifest, home_policy):
        return Decision("up", "the manifest changed (or spec.replicas)")
    return Decision("none", "what serves is what the spec asks")


def wanted_manifest(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest a spec asks for: spec.manifest with spec.replicas, when given, as its `replicas` (a
    `kubectl apply` changing only spec.replicas rolls to that many instances, as a manifest's replicas does)."""
    manifest = dict(spec.get("manifest") or {})
    if spec.get("replicas"):
        manifest["replicas"] = spec["replicas"]
    return manifest


def normalized(manifest: Mapping[str, Any], policy: Policy) -> dict[str, Any] | None:
    """A manifest as the store keeps it (defaults filled, policy applied), for comparison; None if invalid."""
    try:
        return apply_policy(parse_stored_manifest(manifest, "Plugin spec"), policy, "Plugin spec").model_dump(
            mode="json"
        )
    except SysopsError:
        return None


def spec_fingerprint(image: str, manifest: Mapping[str, Any]) -> str:
    """The fingerprint of a roll asked by a spec: its image and manifest (a change of either rolls)."""
    digest = hashlib.sha256(json.dumps([image, manifest], sort_keys=True, default=str).encode()).hexdigest()
    return f"spec-{digest[:24]}"


class PluginController:
    """Queues the plugins that informers name and reconciles each with its own Orchestrator."""

    def __init__(
        self,
        orchestrator: Callable[[], Orchestrator],
        api: PluginApi,
        installation_id: str,
        *,
        check_image: Callable[[str, str], None] = lambda image, plugin: None,
    ) -> None:
        self.orchestrator = orchestrator
        self.api = api
        self.installation_id = installation_id
        self.check_image = check_image
        self._lock = threading.Condition()
        #: plugin -> what to look at ("spec", "deleted", "pods"); the latest object and pod fault per plugin.
        self._pending: dict[str, set[str]] = {}
        self._busy: set[str] = set()
        self.objects: dict[str, Mapping[str, Any]] = {}
        #: plugin -> pod name -> what the kubelet reports went wrong with it ('' when nothing).
        self._faults: dict[str, dict[str, str]] = {}
        #: plugin -> object/pod key -> resourceVersion: as last delivered, and as when last handled without error
        #: (a resync's SYNC of a plugin whose object and pods did not change since is skipped: no pod list).
        self._seen: dict[str, dict[str, str]] = {}
        self._handled: dict[str, dict[str, str]] = {}
        self._taken: dict[str, dict[str, str]] = {}
        #: Called with (plugin, seconds) after each handled change (the scale benchmark measures it).
        self.on_handled: Callable[[str, float], None] | None = None

    # events
    def on_plugin(self, kind: str, obj: Mapping[str, Any]) -> None:
        """A Plugin object's event: remember it; queue its plugin when its spec may need a roll, or it went."""
        name = str((obj.get("metadata") or {}).get("name", ""))
        if not name or not self.api.owns(obj):  # another installation's object
            return
        with self._lock:
            if kind == DELETED:
                self.objects.pop(name, None)
                self._seen.get(name, {}).pop(OBJECT_KEY, None)
                self._queue(name, "deleted")
                return
            self.objects[name] = obj
            if self._unchanged(kind, name, OBJECT_KEY, obj):
                return
        generation = int((obj.get("metadata") or {}).get("generation", 0) or 0)
        observed = int((obj.get("status") or {}).get("observedGeneration", 0) or 0)
        if generation > observed:
            with self._lock:
                self._queue(name, "spec")

    def on_pod(self, kind: str, pod: Mapping[str, Any]) -> None:
        """A plugin pod's event: remember its fault (none for a pod being deleted: sysops or the cluster stops
        it), and queue its plugin's reconcile."""
        metadata = pod.get("metadata") or {}
        labels = metadata.get("labels") or {}
        name = str(labels.get(LABEL_PLUGIN, ""))
        if not name or labels.get(LABEL_INSTALLATION) != self.installation_id:
            return
        with self._lock:
            if kind != DELETED and self._unchanged(kind, name, f"pod/{metadata.get('name', '')}", pod):
                return
            if kind == DELETED:
                self._seen.get(name, {}).pop(f"pod/{metadata.get('name', '')}", None)
            faults = self._faults.setdefault(name, {})
            if kind == DELETED or metadata.get("deletionTimestamp"):
                faults.pop(str(metadata.get("name", "")), None)
            else:
                faults[str(metadata.get("name", ""))] = pod_fault(pod)
            self._queue(name, "pods")

    def _unchanged(self, kind: str, name: str, key: str, obj: Mapping[str, Any]) -> bool:
        """Remember the version of `obj` (its plugin's `key`); True for a resync's SYNC that changes nothing
        since the plugin was last handled without error (the lock is held)."""
        seen = self._seen.setdefault(name, {})
        seen[key] = str((obj.get("metadata") or {}).get("resourceVersion", ""))
        return kind == SYNC and self._handled.get(name) == seen

    def _queue(self, name: str, what: str) -> None:
        self._pending.setdefault(name, set()).add(what)
        self._lock.notify()

    # workers
    def run(self, stop: threading.Event, workers: int = WORKERS) -> list[threading.Thread]:
        """Start `workers` threads handling queued plugins until `stop`."""
        threads = [
            threading.Thread(target=self._work, args=(stop,), name=f"sysops-controller-{n}", daemon=True)
            for n in range(workers)
        ]
        for thread in threads:
            thread.start()

        def wake() -> None:
            stop.wait()
            with self._lock:
                self._lock.notify_all()

        threading.Thread(target=wake, name="sysops-controller-stop", daemon=True).start()
        return threads

    def _take(self, stop: threading.Event) -> tuple[str, set[str]] | None:
        with self._lock:
            while not stop.is_set():
                name = next((n for n in self._pending if n not in self._busy), None)
                if name is not None:
                    self._busy.add(name)
                    self._taken[name] = dict(self._seen.get(name, {}))  # what this handling sees
                    return name, self._pending.pop(name)
                self._lock.wait(1.0)
        return None

    def _work(self, stop: threading.Event) -> None:
        while (taken := self._take(stop)) is not None:
            name, what = taken
            handled = False
            try:
                self.handle(name, what)
                handled = True
            except Exception:  # one plugin's failure is logged; the next event or resync tries again
                LOG.exception("controller: handling %s (%s) failed", name, ", ".join(sorted(what)))
            finally:
                with self._lock:
                    versions = self._taken.pop(name, {})
                    if handled:
                        self._handled[name] = versions
                    else:
                        self._handled.pop(name, None)
                    self._busy.discard(name)
                    if name in self._pending:
                        self._lock.notify()

    # handling one plugin
    def handle(self, name: str, what: set[str]) -> None:
        """Reconcile one plugin for the changes `what` names."""
        started = time.perf_counter()
        orchestrator = self.orchestrator()
        orchestrator.per_plugin = True
        try:
            if "deleted" in what and name not in self.objects:
                self._forget(orchestrator, name)
            elif "spec" in what:
                self._apply_spec(orchestrator, name)
            if "pods" in what and name in self.objects:
                self._pods_changed(orchestrator, name)
        finally:
            orchestrator.close()
        if self.on_handled is not None:
            self.on_handled(name, time.perf_counter() - started)

    def _forget(self, orchestrator: Orchestrator, name: str) -> None:
        if self.api.get(name) is not None:  # deleted and created again since: not gone
            return
        if orchestrator.forget(name, "its Plugin object was deleted (kubectl delete plugin)"):
            LOG.info("%s: Plugin object deleted; forgotten", name)

    def _apply_spec(self, orchestrator: Orchestrator, name: str) -> None:
        with orchestrator.plugin_lock(name):  # a roll of the CLI ends (and writes its generation observed) first
            obj = self.api.get(name)
            if obj is None:
                return
            serving = next(iter(orchestrator.store.active_instances(name)), None)
            revisions = {r.revision: r for r in orchestrator.store.revisions(name)}
            policy = load_policy(orchestrator.settings.home)
            decision = decide(obj, serving.revision if serving else 0, revisions, policy)
        if decision is NOTHING_OBSERVED:
            return
        generation = int(obj["metadata"].get("generation", 0) or 0)
        LOG.info("%s: spec generation %d: %s (%s)", name, generation, decision.action, decision.reason)
        fault: str | None = None
        self.api.patch_status(name, {"phase": "Rolling"})  # until the roll's own status write
        try:
            if decision.action == "rollback":
                target = revisions[decision.revision]
                for reference in dict.fromkeys((target.image, target.image_id)):
                    self.check_image(reference, name)  # checked when restored; again before it runs
                orchestrator.rollback(name, decision.revision)
            elif decision.action == "up":
                spec = obj.get("spec") or {}
                manifest = self._manifest(name, spec)
                image = str(spec["image"])
                self.check_image(image, manifest.name)
                plugin = orchestrator.store.plugin(name)
                source = plugin.source if plugin is not None else str(spec.get("source", "") or "kubectl")
                fingerprint = spec_fingerprint(image, manifest.model_dump(mode="json"))
                orchestrator.up_image(manifest, image, fingerprint, source)
        except SysopsError as exc:
            fault = exc.message
            LOG.warning("%s: the spec of generation %d was not applied: %s", name, generation, fault)
        self._observed(orchestrator, name, generation, fault)

    @staticmethod
    def _manifest(name: str, spec: Mapping[str, Any]) -> Manifest:
        manifest = parse_manifest(wanted_manifest(spec), f"Plugin {name} spec.manifest")
        if manifest.name != name:
            raise ManifestError(f"Plugin {name}: spec.manifest names plugin {manifest.name!r}")
        return manifest

    def _observed(self, orchestrator: Orchestrator, name: str, generation: int, fault: str | None) -> None:
        """Mark `generation` observed (unless a newer one was written meanwhile) with the status of what serves."""
        current = self.api.get(name)
        if current is None:
            return
        if int((current.get("status") or {}).get("observedGeneration", 0) or 0) >= int(
            current["metadata"].get("generation", 0) or 0
        ):
            return  # a successful roll wrote its spec and marked it observed
        fields = orchestrator.status_fields(name, fault=fault) or {
            "phase": "Failed",
            "ready_replicas": 0,
            "revision": 0,
            "last_fault": fault or "",
        }
        self.api.patch_status(name, _camel({**fields, "observed_generation": max(generation, 1)}))

    def _pods_changed(self, orchestrator: Orchestrator, name: str) -> None:
        orchestrator.reconcile_plugin(name)
        with self._lock:
            fault = next((fault for fault in self._faults.get(name, {}).values() if fault), None)
        fields = orchestrator.status_fields(name, fault=fault)
        obj = self.objects.get(name)
        if fields is None or obj is None:
            return
        status = obj.get("status") or {}
        if all((status.get(STATUS_FIELDS[key]) or None) == (fields[key] or None) for key in _COMPARED):
            return
        self.api.patch_status(name, _camel(fields))


def _camel(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {STATUS_FIELDS[key]: value for key, value in fields.items()}


def start_controller(
    orchestrator: Callable[[], Orchestrator],
    namespace: str,
    installation_id: str,
    stop: threading.Event,
    *,
    check_image: Callable[[str, str], None] = lambda image, plugin: None,
    watch_pods: bool = True,
    resync_seconds: float = RESYNC_SECONDS,
) -> tuple[PluginController, list[Informer]]:
    """Start the controller's workers and its informers (Plugin objects; plugin pods unless not `watch_pods`)."""
    from kubernetes import client

    api = PluginApi(namespace, installation_id=installation_id)
    controller = PluginController(orchestrator, api, installation_id, check_image=check_image)
    informers = [
        Informer(
            "Plugin",
            api.custom.list_namespaced_custom_object,
            controller.on_plugin,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            resync_seconds=resync_seconds,
            label_selector=api.selector,
        )
    ]
    if watch_pods:
        informers.append(
            Informer(
                "plugin pod",
                client.CoreV1Api().list_namespaced_pod,
                controller.on_pod,
                namespace,
                resync_seconds=resync_seconds,
                label_selector=f"{LABEL_INSTALLATION}={installation_id},{LABEL_PLUGIN}",
            )
        )
    controller.run(stop)
    for informer in informers:
        threading.Thread(
            target=informer.run, args=(stop,), name=f"sysops-informer-{informer.what}", daemon=True
        ).start()
    return controller, informers

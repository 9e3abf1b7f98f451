"""Desired state in the cluster: each plugin is a `Plugin` custom object (plugins.sysops.dev/v1alpha1).

The orchestrator's SQLite store is only a cache inside its pod. A restarted orchestrator rebuilds it from
these objects (`load`) and re-adopts the running plugin pods by label, so nothing is lost. The Plugin object
owns the plugin's pods, NetworkPolicies and token Secrets, so `kubectl delete plugin NAME` deletes them. Its
spec is what should serve (the CLI's rolls write it; `kubectl apply` may too: server/plugin_controller.py
rolls it), its status what serves (`write_status`, a patch of the status subresource). The CRD is
charts/sysops/crds/plugins.sysops.dev.yaml.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sysops.errors import RuntimeOperationError
from sysops.runtime.base import LABEL_INSTALLATION, LABEL_PLUGIN, MirroredPlugin
from sysops.settings import Settings

GROUP = "sysops.dev"
VERSION = "v1alpha1"
PLURAL = "plugins"
KIND = "Plugin"
API_VERSION = f"{GROUP}/{VERSION}"
LOG = logging.getLogger("sysops.plugin_resource")
#: Revisions kept per plugin (the oldest are dropped first): the CRD allows at most 20.
MAX_REVISIONS = 20
#: Reads and writes of a spec that `save` tries while status writes move the object's resourceVersion.
SAVE_ATTEMPTS = 5
#: The revision dict key that marks the one serving now (set by the orchestrator; not stored).
SERVING_KEY = "serving"
#: status fields `write_status` accepts (Python name -> the object's camelCase name).
STATUS_FIELDS = {
    "phase": "phase",
    "ready_replicas": "readyReplicas",
    "revision": "revision",
    "observed_generation": "observedGeneration",
    "last_fault": "lastFault",
    "conditions": "conditions",
}


def plugin_owner_reference(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The ownerReference that makes a pod, NetworkPolicy or Secret belong to the Plugin object `obj`."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def plugin_labels(plugin: str) -> dict[str, str]:
    """Labels of a plugin's Plugin object."""
    return {"app.kubernetes.io/managed-by": "sysops", LABEL_PLUGIN: plugin}


def empty_plugin(plugin: str, spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The body of a new Plugin object (an owner before the first roll completes: no image yet)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": plugin, "labels": plugin_labels(plugin)},
        "spec": dict(spec or {}),
    }


def _short(exc: ApiException) -> str:
    return f"{exc.status} {exc.reason}".strip()


class SpecConflict(RuntimeOperationError):
    """The Plugin object changed between the read and a spec write that required it unchanged."""


class PluginApi:
    """The Plugin objects of one namespace through the custom objects API (errors as sysops errors)."""

    def __init__(self, namespace: str, custom: Any = None, installation_id: str | None = None) -> None:
        self.namespace = namespace
        self._custom: Any = custom
        #: The installation whose objects these are: it labels those it creates and lists only those.
        self.installation_id = Settings().installation_id if installation_id is None else installation_id

    @property
    def selector(self) -> str:
        """The label selector of this installation's Plugin objects."""
        return f"{LABEL_INSTALLATION}={self.installation_id}"

    def owns(self, obj: Mapping[str, Any]) -> bool:
        """Whether a Plugin object is this installation's (another release in the namespace has its own)."""
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return bool(labels.get(LABEL_INSTALLATION) == self.installation_id)

    @property
    def custom(self) -> Any:
        """The custom objects API client, configured on first use."""
        if self._custom is None:
            from sysops.runtime.kubernetes.driver import load_client_config

            load_client_config()
            self._custom = client.CustomObjectsApi()
        return self._custom

    def get(self, name: str) -> dict[str, Any] | None:
        """The Plugin object `name`, or None when there is none."""
        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise RuntimeOperationError(f"cannot read Plugin {name}: {_short(exc)}") from exc
        return found

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a Plugin object labelled with this installation; one created meanwhile is read instead."""
        name = str(body["metadata"]["name"])
        labels = {**(body["metadata"].get("labels") or {}), LABEL_INSTALLATION: self.installation_id}
        body = {**body, "metadata": {**body["metadata"], "labels": labels}}
        try:
            created: dict[str, Any] = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body
            )
        except ApiException as exc:
            if exc.status == 409 and (existing := self.get(name)) is not None:
                return existing
            raise RuntimeOperationError(f"cannot create Plugin {name}: {_short(exc)}") from exc
        return created

    def ensure(self, name: str) -> dict[str, Any]:
        """The Plugin object `name`, created empty if missing."""
        return self.get(name) or self.create(empty_plugin(name))

    def replace_spec(self, name: str, spec: Mapping[str, Any], resource_version: str = "") -> dict[str, Any]:
        """Replace the object's spec as a whole (a JSON patch: keys a new manifest dropped go too); return the
        object (its new generation). With `resource_version`, only if the object is still at that version
        (a JSON-patch `test`): SpecConflict when it changed meanwhile. The spec must have no empty strings in its
        typed fields (`spec_of`)."""
        patch: list[dict[str, Any]] = [{"op": "add", "path": "/spec", "value": dict(spec)}]
        if resource_version:
            patch.insert(0, {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version})
        try:
            patched: dict[str, Any] = self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, patch, _content_type="application/json-patch+json"
            )
        except ApiException as exc:
            if resource_version and exc.status in (409, 422):
                raise SpecConflict(f"Plugin {name} changed since version {resource_version}") from exc
            raise RuntimeOperationError(f"cannot update Plugin {name}: {_short(exc)}") from exc
        return patched

    def patch_status(self, name: str, status: Mapping[str, Any]) -> dict[str, Any] | None:
        """Merge `status` into the status subresource (an empty string removes the field); None when the object
        is gone."""
        merged = {key: (None if value == "" else value) for key, value in status.items()}
        try:
            patched: dict[str, Any] = self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, self.namespace, PLURAL, name, {"status": merged}
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise RuntimeOperationError(f"cannot update the status of Plugin {name}: {_short(exc)}") from exc
        return patched

    def delete(self, name: str) -> None:
        """Delete the object (the cluster deletes what it owns in the background); gone already is fine."""
        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, propagation_policy="Background"
            )
        except ApiException as exc:
            if exc.status != 404:
                raise RuntimeOperationError(f"cannot delete Plugin {name}: {_short(exc)}") from exc

    def list(self, **options: Any) -> dict[str, Any]:
        """The raw list of this installation's Plugin objects (its items and metadata.resourceVersion)."""
        options.setdefault("label_selector", self.selector)
        try:
            listed: dict[str, Any] = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, **options
            )
        except ApiException as exc:
            hint = "install the CRD: kubectl apply -f charts/sysops/crds/" if exc.status == 404 else ""
            raise RuntimeOperationError(f"cannot list Plugin objects: {_short(exc)}", hint=hint) from exc
        return listed

    def adopt_unlabelled(self) -> tuple[str, ...]:
        """Label the Plugin objects that carry no installation label (made before objects were labelled) as this
        installation's; return their names. Objects of other installations are left alone."""
        adopted: tuple[str, ...] = ()
        for item in self.list(label_selector=f"!{LABEL_INSTALLATION}").get("items") or []:
            name = str(item["metadata"]["name"])
            body = {"metadata": {"labels": {LABEL_INSTALLATION: self.installation_id}}}
            try:
                self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, body)
            except ApiException as exc:
                if exc.status != 404:
                    raise RuntimeOperationError(f"cannot label Plugin {name}: {_short(exc)}") from exc
                continue
            adopted += (name,)
        return adopted


def spec_of(source: str, manifest: Mapping[str, object], revisions: Sequence[Mapping[str, object]]) -> dict[str, Any]:
    """The spec that says a plugin serves its `serving` revision (the newest when none is marked)."""
    kept = [{k: v for k, v in r.items() if k != SERVING_KEY} for r in revisions[-MAX_REVISIONS:]]
    serving = next((r for r in revisions if r.get(SERVING_KEY)), revisions[-1] if revisions else None)
    spec: dict[str, Any] = {"manifest": dict(manifest), "source": source, "revisions": kept}
    if serving is not None:
        spec["manifest"] = dict(serving.get("manifest") or manifest)  # type: ignore[call-overload]
        spec["image"] = str(serving.get("image", ""))
        spec["imageDigest"] = str(serving.get("image_id", ""))
        spec["revision"] = int(str(serving.get("revision", 0)))
    spec["replicas"] = int(str(spec["manifest"].get("replicas", 1) or 1))  # what serves: the controller rolls a change
    # The test cluster's API server refuses an empty string in a typed field (it decodes it as null): omit them.
    return {key: value for key, value in spec.items() if value != ""}


class PluginResourceMirror:
    """Mirrors plugins, their revisions and what serves into Plugin objects (runtime/base.py StateMirror)."""

    def __init__(self, namespace: str, api: PluginApi | None = None) -> None:
        self.api = api or PluginApi(namespace)

    def save(
        self, name: str, source: str, manifest: Mapping[str, object], revisions: Sequence[Mapping[str, object]]
    ) -> None:
        """Write the plugin's manifest, source, revision history and serving revision into its spec, and
        mark that generation observed (the server's own write is not a change for the controller to roll).

        The spec is written only over the object as read (a resourceVersion precondition): a status write
        meanwhile is read again and retried; a spec someone applied meanwhile (a new generation) is left
        pending for the controller, not overwritten and not marked observed."""
        spec = spec_of(source, manifest, revisions)
        for _ in range(SAVE_ATTEMPTS):
            obj = self.api.get(name) or self.api.create(empty_plugin(name, spec))
            if obj.get("spec") != spec:
                read = obj["metadata"]
                try:
                    obj = self.api.replace_spec(name, spec, str(read.get("resourceVersion", "")))
                except SpecConflict as conflict:
                    current = (self.api.get(name) or {}).get("metadata") or {}
                    if current.get("resourceVersion") == read.get("resourceVersion"):  # refused for another reason
                        raise RuntimeOperationError(f"cannot update Plugin {name}: {conflict.__cause__}") from conflict
                    if current.get("generation") != read.get("generation"):
                        LOG.warning("Plugin %s: a spec applied meanwhile is left for the controller", name)
                        return
                    continue
            self.api.patch_status(name, {"observedGeneration": int(obj["metadata"].get("generation", 1))})
            return
        raise RuntimeOperationError(f"cannot update Plugin {name}: it kept changing ({SAVE_ATTEMPTS} attempts)")

    def delete(self, name: str) -> None:
        """Delete the Plugin object; the cluster deletes the pods, policies and Secrets it owns."""
        self.api.delete(name)

    def load(self) -> list[MirroredPlugin]:
        """Read every plugin's state (objects without an image never completed a roll, and are skipped)."""
        return [mirrored for item in self.api.list().get("items", []) if (mirrored := mirrored_plugin(item))]

    def write_status(self, name: str, **fields: Any) -> None:
        """Patch the Plugin object's status: phase, ready_replicas, revision, observed_generation, last_fault,
        conditions (the Python names; others are refused). A plugin whose object is gone is skipped."""
        unknown = set(fields) - set(STATUS_FIELDS)
        if unknown:
            raise ValueError(f"unknown Plugin status fields: {', '.join(sorted(unknown))}")
        self.api.patch_status(name, {STATUS_FIELDS[key]: value for key, value in fields.items()})


def mirrored_plugin(item: Mapping[str, Any]) -> MirroredPlugin | None:
    """A Plugin object as the store restores it, or None when it never completed a roll or is not even shaped
    like one. Its revisions are passed on as they are: the orchestrator validates each before restoring it
    (core/restored_revisions.py), since anyone with RBAC on Plugin objects may have written them."""
    spec = item.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    manifest, revisions = spec.get("manifest"), spec.get("revisions")
    if not isinstance(manifest, Mapping) or not manifest or not isinstance(revisions, list) or not revisions:
        return None
    return MirroredPlugin(
        name=str(item["metadata"]["name"]),
        source=str(spec.get("source", "")),
        manifest=dict(manifest),
        revisions=tuple(dict(r) if isinstance(r, Mapping) else r for r in revisions),
    )

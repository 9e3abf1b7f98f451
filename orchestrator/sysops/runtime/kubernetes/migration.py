"""Moving an older server's plugin state from ConfigMaps to Plugin objects, with no plugin pod restarted.

Before the Plugin custom resource, each plugin's desired state was a ConfigMap `sysops-plugin-<name>`
(label sysops.dev/role=plugin-state; data manifest.json, revisions.json, source) that owned the plugin's pods
and NetworkPolicies. At server start, each such ConfigMap becomes a Plugin object with the same data, its pods
and policies are re-owned by that object (a patch of their ownerReferences: the pod keeps its UID and its
container keeps running), and the ConfigMap is deleted with propagationPolicy Orphan, so the garbage collector
takes nothing with it. Every step can be repeated: a run interrupted anywhere is finished by the next.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from sysops.core.names import is_plugin_name
from sysops.errors import RuntimeOperationError
from sysops.runtime.base import LABEL_PLUGIN, LABEL_REVISION
from sysops.runtime.kubernetes.plugin_resource import (
    SERVING_KEY,
    PluginApi,
    empty_plugin,
    plugin_owner_reference,
    spec_of,
)

LOG = logging.getLogger("sysops.migration")
#: The label (and value) of the ConfigMaps an older server kept plugin state in.
STATE_ROLE_LABEL = "sysops.dev/role"
STATE_ROLE = "plugin-state"


def _short(exc: ApiException) -> str:
    return f"{exc.status} {exc.reason}".strip()


def configmap_spec(data: Mapping[str, str], serving: set[str]) -> dict[str, Any]:
    """The Plugin spec holding what a state ConfigMap held ({} for one that never completed a roll); the revision
    its pods run (labels `serving`; the newest when none) is the one the spec asks."""
    if "manifest.json" not in data:
        return {}
    revisions = [
        {**r, SERVING_KEY: True} if str(r.get("revision")) in serving else r
        for r in json.loads(data.get("revisions.json", "[]"))
    ]
    manifest = json.loads(data["manifest.json"])
    if not isinstance(manifest, dict) or not all(isinstance(r, dict) for r in revisions):
        raise ValueError("manifest.json and revisions.json must hold an object and a list of objects")
    return spec_of(str(data.get("source", "")), manifest, revisions)


def reowned(references: list[Mapping[str, Any]], old_uid: str, new: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The ownerReferences with the ConfigMap's (`old_uid`) replaced by the Plugin object's `new`; None when
    there is nothing to change (owned by the Plugin object already, or not by the ConfigMap)."""
    if not any(ref.get("uid") == old_uid for ref in references):
        return None
    kept = [dict(ref) for ref in references if ref.get("uid") not in (old_uid, new["uid"])]
    return [*kept, dict(new)]


@dataclass(frozen=True)
class Listed:
    """A state ConfigMap as listed: its name and uid."""

    name: str
    uid: str


class ConfigMapMigration:
    """Migrates every state ConfigMap of one namespace (core and networking are the client APIs)."""

    def __init__(self, core: Any, networking: Any, plugins: PluginApi) -> None:
        self.core = core
        self.networking = networking
        self.plugins = plugins
        self.namespace = plugins.namespace

    def run(self) -> list[str]:
        """Migrate each state ConfigMap; return the plugins migrated. A ConfigMap that cannot be migrated (not
        JSON, not a plugin's, an API error) is logged and left: any one who may create ConfigMaps here can make
        one, and it must not stop the server from starting."""
        try:
            listed: Any = self.core.list_namespaced_config_map(
                self.namespace, label_selector=f"{STATE_ROLE_LABEL}={STATE_ROLE}"
            )
        except ApiException as exc:
            raise RuntimeOperationError(f"cannot list the ConfigMaps of plugin state: {_short(exc)}") from exc
        migrated = []
        for configmap in listed.items:
            name = str(configmap.metadata.name)
            plugin = str((configmap.metadata.labels or {}).get(LABEL_PLUGIN, ""))
            try:
                if not is_plugin_name(plugin):
                    raise ValueError(f"its label {LABEL_PLUGIN}={plugin!r} names no plugin")
                self.migrate(plugin, Listed(name, str(configmap.metadata.uid)), configmap.data or {})
            except Exception as exc:  # whatever is wrong with it, the next ConfigMap and the server go on
                LOG.warning("ConfigMap %s not migrated (left as it is): %s: %s", name, type(exc).__name__, exc)
                continue
            migrated.append(plugin)
        return migrated

    def migrate(self, plugin: str, configmap: Listed, data: Mapping[str, str]) -> None:
        """The Plugin object first (its data), then its pods and policies re-owned, then the ConfigMap deleted.
        A Plugin object that exists already is left as it is (spec and status: a `kubectl apply` it holds that
        the controller has not handled yet stays pending); only one this run creates is marked observed."""
        selector = f"{LABEL_PLUGIN}={plugin}"
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        policies = self.networking.list_namespaced_network_policy(self.namespace, label_selector=selector).items
        serving = {str((pod.metadata.labels or {}).get(LABEL_REVISION, "")) for pod in pods}
        obj = self.plugins.get(plugin)
        if obj is None:
            spec = configmap_spec(data, serving)
            obj = self.plugins.create(empty_plugin(plugin, spec))
            fresh = obj.get("spec") == spec and not (obj.get("status") or {}).get("observedGeneration")
            if fresh:  # ours, just created (not one someone created meanwhile): what serves is this spec
                generation = int(obj["metadata"].get("generation", 1) or 1)
                self.plugins.patch_status(plugin, {"observedGeneration": generation})
        owner = plugin_owner_reference(obj)
        for kind, items, patch in (
            ("pod", pods, self.core.patch_namespaced_pod),
            ("NetworkPolicy", policies, self.networking.patch_namespaced_network_policy),
        ):
            for item in items:
                references = [ref.to_dict() for ref in item.metadata.owner_references or []]
                new = reowned([_camel_reference(ref) for ref in references], configmap.uid, owner)
                if new is None:
                    continue
                body = [{"op": "replace", "path": "/metadata/ownerReferences", "value": new}]
                try:
                    patch(item.metadata.name, self.namespace, body, _content_type="application/json-patch+json")
                except ApiException as exc:
                    if exc.status != 404:
                        raise RuntimeOperationError(
                            f"cannot re-own {kind} {item.metadata.name} by Plugin {plugin}: {_short(exc)}"
                        ) from exc
        try:  # exactly the ConfigMap listed: its name, and its uid as a precondition
            self.core.delete_namespaced_config_map(
                configmap.name,
                self.namespace,
                body={"propagationPolicy": "Orphan", "preconditions": {"uid": configmap.uid}},
            )
        except ApiException as exc:
            if exc.status != 404:
                raise RuntimeOperationError(f"cannot delete ConfigMap {configmap.name}: {_short(exc)}") from exc
        LOG.warning("plugin %s: state moved from its ConfigMap to its Plugin object (no pod restarted)", plugin)


def _camel_reference(reference: Mapping[str, Any]) -> dict[str, Any]:
    """An ownerReference of the client's model (snake_case) as the API writes it."""
    names = {"api_version": "apiVersion", "block_owner_deletion": "blockOwnerDeletion"}
    return {names.get(key, key): value for key, value in reference.items() if value is not None}


def migrate_configmaps(driver: Any) -> list[str]:
    """Move an older server's ConfigMap state of `driver`'s namespace to Plugin objects, and label the Plugin
    objects made before objects carried an installation label as this installation's (at serve() start)."""
    plugins = PluginApi(driver.namespace)
    for name in plugins.adopt_unlabelled():
        LOG.warning("Plugin %s had no installation label: labelled as this installation's", name)
    return ConfigMapMigration(driver.core, driver.networking, plugins).run()

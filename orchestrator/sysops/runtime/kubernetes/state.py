"""Desired state in the cluster: each plugin's manifest and revisions live in a ConfigMap of its own.

The orchestrator's SQLite store is only a cache inside its pod. A restarted orchestrator rebuilds it from
these ConfigMaps (`load`) and re-adopts the running plugin pods by label, so nothing is lost. The
ConfigMap owns the plugin's pods and NetworkPolicies, so deleting it deletes them too.

Why not a `Plugin` custom resource: the Kubernetes v1.20 API server these tests run on (built with Go
1.19 and reflect2 1.0.1) crashes decoding any custom object; a ConfigMap carries the same data safely.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes.client.exceptions import ApiException

from sysops.errors import RuntimeOperationError
from sysops.runtime.base import MirroredPlugin
from sysops.runtime.kubernetes.driver import (
    STATE_ROLE_LABEL,
    KubernetesDriver,
    state_configmap_name,
)

#: Revisions kept per plugin (the oldest are dropped first); a ConfigMap holds at most 1 MiB.
MAX_REVISIONS = 20


class PluginStateMirror:
    """Mirrors plugins and their revisions into labelled ConfigMaps."""

    def __init__(self, driver: KubernetesDriver) -> None:
        self.driver = driver

    def save(
        self, name: str, source: str, manifest: Mapping[str, object], revisions: Sequence[Mapping[str, object]]
    ) -> None:
        """Write the plugin's manifest, source and revision history."""
        self.driver.ensure_owner(name)
        data = {
            "manifest.json": json.dumps(manifest, sort_keys=True),
            "revisions.json": json.dumps([dict(r) for r in revisions[-MAX_REVISIONS:]], default=str),
            "source": source,
        }
        try:
            self.driver.core.patch_namespaced_config_map(
                state_configmap_name(name), self.driver.namespace, {"data": data}
            )
        except ApiException as exc:
            raise RuntimeOperationError(f"cannot update the state of plugin {name}: {exc.status} {exc.reason}") from exc

    def delete(self, name: str) -> None:
        """Delete the state ConfigMap; the cluster deletes the pods and policies it owns."""
        try:
            self.driver.core.delete_namespaced_config_map(
                state_configmap_name(name), self.driver.namespace, propagation_policy="Background"
            )
        except ApiException as exc:
            if exc.status != 404:
                raise RuntimeOperationError(
                    f"cannot delete the state of plugin {name}: {exc.status} {exc.reason}"
                ) from exc

    def load(self) -> list[MirroredPlugin]:
        """Read every plugin's state."""
        try:
            listed: Any = self.driver.core.list_namespaced_config_map(
                self.driver.namespace, label_selector=f"{STATE_ROLE_LABEL}=plugin-state"
            )
        except ApiException as exc:
            raise RuntimeOperationError(f"cannot list plugin state: {exc.status} {exc.reason}") from exc
        plugins = []
        for item in listed.items:
            data = item.data or {}
            if "manifest.json" not in data:
                continue  # created as an owner, never completed a roll
            plugins.append(
                MirroredPlugin(
                    name=str(item.metadata.labels.get("sysops.plugin", "")),
                    source=str(data.get("source", "")),
                    manifest=json.loads(data["manifest.json"]),
                    revisions=tuple(json.loads(data.get("revisions.json", "[]"))),
                )
            )
        return plugins

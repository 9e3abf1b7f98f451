"""Desired state in the cluster: each plugin's manifest and revisions live in its `Plugin` resource.

The orchestrator's SQLite store is only a cache inside its pod. A restarted orchestrator rebuilds it from
the Plugin resources (`load`) and re-adopts the running plugin pods by label, so nothing is lost.
Deleting a Plugin resource deletes its pods and NetworkPolicies too (they carry owner references).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes.client.exceptions import ApiException

from sysops.errors import RuntimeOperationError
from sysops.runtime.base import MirroredPlugin
from sysops.runtime.kubernetes_driver import CRD_GROUP, CRD_PLURAL, CRD_VERSION, KubernetesDriver

#: Revisions kept in a Plugin's status (the oldest are dropped first).
MAX_REVISIONS = 20


class PluginResourceMirror:
    """Mirrors plugins and their revisions into `plugins.sysops.dev` objects."""

    def __init__(self, driver: KubernetesDriver) -> None:
        self.driver = driver

    @property
    def namespace(self) -> str:
        """Namespace of the Plugin resources (the driver's)."""
        return self.driver.namespace

    def save(
        self, name: str, source: str, manifest: Mapping[str, object], revisions: Sequence[Mapping[str, object]]
    ) -> None:
        """Write the plugin's spec (manifest, current image) and its revision history."""
        self.driver.ensure_owner(name)
        kept = [dict(revision) for revision in revisions[-MAX_REVISIONS:]]
        current = kept[-1] if kept else {}
        spec = {
            "manifest": dict(manifest),
            "image": str(current.get("image_id") or current.get("image") or ""),
            "fingerprint": str(current.get("fingerprint", "")),
            "source": source,
        }
        status = {
            "state": "Active",
            "version": str(current.get("version", "")),
            "revision": int(str(current.get("revision", 0))),
            "lastError": "",
            "revisions": kept,
        }
        custom = self.driver.custom
        try:
            custom.patch_namespaced_custom_object(
                CRD_GROUP, CRD_VERSION, self.namespace, CRD_PLURAL, name, {"spec": spec}
            )
            custom.patch_namespaced_custom_object_status(
                CRD_GROUP, CRD_VERSION, self.namespace, CRD_PLURAL, name, {"status": status}
            )
        except ApiException as exc:
            raise RuntimeOperationError(f"cannot update Plugin {name}: {exc.status} {exc.reason}") from exc

    def delete(self, name: str) -> None:
        """Delete the Plugin resource; the cluster deletes what it owns."""
        try:
            self.driver.custom.delete_namespaced_custom_object(
                CRD_GROUP, CRD_VERSION, self.namespace, CRD_PLURAL, name, propagation_policy="Foreground"
            )
        except ApiException as exc:
            if exc.status != 404:
                raise RuntimeOperationError(f"cannot delete Plugin {name}: {exc.status} {exc.reason}") from exc

    def load(self) -> list[MirroredPlugin]:
        """Read every Plugin resource of the namespace."""
        try:
            listed: dict[str, Any] = self.driver.custom.list_namespaced_custom_object(
                CRD_GROUP, CRD_VERSION, self.namespace, CRD_PLURAL
            )
        except ApiException as exc:
            raise RuntimeOperationError(f"cannot list Plugins: {exc.status} {exc.reason}") from exc
        plugins = []
        for item in listed.get("items", []):
            spec, status = item.get("spec") or {}, item.get("status") or {}
            plugins.append(
                MirroredPlugin(
                    name=item["metadata"]["name"],
                    source=str(spec.get("source", "")),
                    manifest=spec.get("manifest") or {},
                    revisions=tuple(status.get("revisions") or ()),
                )
            )
        return plugins


def in_cluster() -> bool:
    """Say whether this process runs in a Kubernetes pod."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))

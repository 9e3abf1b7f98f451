"""The node agent's loop: watch the plugin pods on this node and bring each one's limits into force.

One namespace (the release's), plugin pods only (label selector), this node only (field selector
spec.nodeName): a list, then a watch from the list's resourceVersion, resumed from the last event's
version when the server ends it, and a fresh list after 410 Gone. A pod is acted on only when it carries
`sysops.dev/limits` and its running container's read-back (the pod condition `sysops.dev/limits-applied`)
does not match: then the limits are written to the container's cgroup and the pod's network namespace, read
back from the kernel, and the read-back written to the pod's status (`pods/status` patch: the agent cannot
change a pod's spec). A restarted container has a new id (and cgroup): the watch event of the kubelet's
containerStatuses update shows it, its pod no longer matches and is done again at once; the agent's own patch
matches, so it causes no second pass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from sysops.nodeagent.annotations import (
    APPLIED_CONDITION,
    LIMITS_ANNOTATION,
    AppliedLimits,
    NodeLimits,
    condition_body,
    mismatches,
    read_applied,
)
from sysops.nodeagent.cgroup_limits import CgroupError, CgroupLimiter
from sysops.nodeagent.connections import ConnectionLimiter, FirewallError
from sysops.nodeagent.pod_netns import NamespaceError, container_network_namespace

log = logging.getLogger("sysops.nodeagent")
#: Seconds a watch request lasts before it is resumed (the API server ends it anyway after a while).
WATCH_SECONDS = 300


def running_container_id(pod: Any) -> str:
    """The containerID (`docker://…`) of the pod's first container while it runs, else ''."""
    statuses = (pod.status.container_statuses if pod.status else None) or []
    first = statuses[0] if statuses else None
    if first is None or first.state is None or first.state.running is None:
        return ""
    return str(first.container_id or "")


@dataclass
class Enforcer:
    """Applies a pod container's limits on this node and reads them back."""

    cgroups: CgroupLimiter
    firewall: ConnectionLimiter

    def enforce(self, container_id: str, wanted: NodeLimits) -> AppliedLimits:
        """Apply `wanted` to the container and return what the kernel then enforces (`error` when it failed)."""
        try:
            cgroup = self.cgroups.find(container_id)
            self.cgroups.apply(cgroup, wanted.pids, wanted.io_bytes_per_sec)
            with container_network_namespace(cgroup.pid, container_id, self.cgroups.proc) as namespace:
                self.firewall.apply(namespace, wanted.network_connections)
                connections = self.firewall.read(namespace)
            found = self.cgroups.read(cgroup)
        except (CgroupError, FirewallError, NamespaceError) as exc:
            return AppliedLimits(container_id=container_id, error=str(exc))
        return AppliedLimits(container_id, found.pids, found.read_bps, found.write_bps, connections)


class NodeAgent:
    """Watches one namespace's plugin pods on one node and enforces their `sysops.dev/limits`."""

    def __init__(self, core: Any, namespace: str, node: str, selector: str, enforcer: Enforcer) -> None:
        self.core = core
        self.namespace = namespace
        self.node = node
        self.selector = selector
        self.enforcer = enforcer

    def reconcile(self, pod: Any) -> None:
        """Enforce one pod's limits if it asks for them and its read-back does not match yet."""
        metadata = pod.metadata
        annotations = dict(metadata.annotations or {})
        if LIMITS_ANNOTATION not in annotations or metadata.deletion_timestamp is not None:
            return
        if metadata.namespace != self.namespace or (pod.spec and pod.spec.node_name != self.node):
            return
        container_id = running_container_id(pod)
        if not container_id:
            return  # not running yet: the event of its start comes next
        try:
            wanted = NodeLimits.from_json(annotations[LIMITS_ANNOTATION])
            if pod.spec and pod.spec.host_network:  # plugin pods never are: anyone else's must not steer the agent
                raise ValueError("the pod uses the node's network (hostNetwork): its firewall is the node's, refused")
        except ValueError as exc:
            result = AppliedLimits(container_id=container_id, error=str(exc))
            problems = [result.error]
        else:
            if not mismatches(wanted, read_applied(pod), container_id):
                return
            result = self.enforcer.enforce(container_id, wanted)
            problems = mismatches(wanted, result, container_id)
        self._write(metadata.name, condition_body(pod, result, problems))
        if problems:
            log.warning(
                "pod %s (container %s): limits NOT applied: %s", metadata.name, container_id[-12:], "; ".join(problems)
            )
        else:
            log.info(
                "pod %s (container %s): applied pids.max %s, blkio read %s write %s, connlimit %s",
                metadata.name,
                container_id[-12:],
                result.pids if result.pids is not None else "max",
                result.read_bps or "none",
                result.write_bps or "none",
                result.network_connections if result.network_connections is not None else "none",
            )

    def _write(self, pod: str, body: dict[str, Any]) -> None:
        try:
            self.core.patch_namespaced_pod_status(
                pod, self.namespace, body, _content_type="application/strategic-merge-patch+json"
            )
        except ApiException as exc:
            if exc.status != 404:  # a pod deleted meanwhile needs nothing
                log.warning("pod %s: cannot write %s: %s %s", pod, APPLIED_CONDITION, exc.status, exc.reason)

    def _list(self) -> str:
        """Reconcile every plugin pod on this node; return the list's resourceVersion."""
        pods = self.core.list_namespaced_pod(
            self.namespace, label_selector=self.selector, field_selector=f"spec.nodeName={self.node}"
        )
        for pod in pods.items:
            self.reconcile(pod)
        return str(pods.metadata.resource_version)

    def run(self, stop: threading.Event, on_watch: Callable[[], None] | None = None) -> None:
        """List, then watch and reconcile, until `stop` is set."""
        log.info("watching pods (%s) on node %s in namespace %s", self.selector or "all", self.node, self.namespace)
        version = ""
        while not stop.is_set():
            try:
                if not version:
                    version = self._list()
                if on_watch is not None:
                    on_watch()
                version = self._watch(version, stop)
            except ApiException as exc:
                if exc.status == 410:
                    log.info("watch expired (410 Gone): listing again")
                else:
                    log.warning("API error %s %s: listing again in 5 s", exc.status, exc.reason)
                    stop.wait(5)
                version = ""
            except Exception as exc:  # connection lost: the API server restarts, the network blips
                log.warning("watch failed (%s: %s): listing again in 5 s", type(exc).__name__, exc)
                stop.wait(5)
                version = ""

    def _watch(self, version: str, stop: threading.Event) -> str:
        """Reconcile watched pods from `version` on; return the last version seen. An expired version (410 Gone)
        comes out as ApiException (the client raises a watch's ERROR event when it has a timeout)."""
        stream: Any = watch.Watch()  # type: ignore[no-untyped-call]
        for event in stream.stream(
            self.core.list_namespaced_pod,
            self.namespace,
            label_selector=self.selector,
            field_selector=f"spec.nodeName={self.node}",
            resource_version=version,
            timeout_seconds=WATCH_SECONDS,
        ):
            pod = event["object"]
            version = str(pod.metadata.resource_version or version)
            if event["type"] in ("ADDED", "MODIFIED"):
                self.reconcile(pod)
            if stop.is_set():
                stream.stop()
                break
        return version

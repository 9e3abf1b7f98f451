"""The Kubernetes driver's side of the node agent: accept or refuse the limits only the agent enforces, wait
for a new pod's read-back before the roll goes on, and report it.

Kubernetes has no block-I/O throttle, no connection limit, and (1.20) only a node-wide pids limit. With the
chart's node agent DaemonSet (`nodeAgent.enabled`, which gives the server SYSOPS_NODE_AGENT=1) a plugin pod
carries its `disk_io_mb_per_sec`, `network_connections` and `pids` in the annotation `sysops.dev/limits` and a
readiness gate on the condition `sysops.dev/limits-applied`; the agent enforces them on the node and writes
that condition to the pod's status with the read-back (sysops/nodeagent), so the kubelet keeps the pod unready
until the agent says True. Without the agent a plugin asking for the first two is refused, naming the chart
value; `pids` then stays node-wide.
"""

from __future__ import annotations

import os
import time
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from sysops.errors import RuntimeOperationError, StartFailedError
from sysops.nodeagent.annotations import APPLIED_CONDITION, LIMITS_ANNOTATION, NodeLimits, mismatches, read_applied
from sysops.runtime.base import ResourceLimits

NODE_AGENT_ENV = "SYSOPS_NODE_AGENT"
#: Seconds a roll waits for the agent's read-back of a new pod (env SYSOPS_NODE_AGENT_TIMEOUT).
NODE_AGENT_TIMEOUT_ENV = "SYSOPS_NODE_AGENT_TIMEOUT"
DEFAULT_TIMEOUT = 30.0
AGENT_SELECTOR = "app.kubernetes.io/component=node-agent"


def node_agent_enabled() -> bool:
    """Whether the chart runs the node agent next to this server (SYSOPS_NODE_AGENT=1)."""
    return os.environ.get(NODE_AGENT_ENV, "").strip() == "1"


def wanted_node_limits(plugin: str, limits: ResourceLimits) -> NodeLimits | None:
    """The limits to hand the node agent (None without one); without the agent, refuse the limits only it
    can enforce, naming the chart value that turns it on."""
    if node_agent_enabled():
        return NodeLimits.of(limits)
    asked = [
        key
        for key, value in (
            ("limits.disk_io_mb_per_sec", limits.io_bytes_per_sec),
            ("limits.network_connections", limits.network_connections),
        )
        if value is not None
    ]
    if asked:
        raise RuntimeOperationError(
            f"plugin {plugin!r}: {' and '.join(asked)} cannot be enforced by Kubernetes itself; the chart's node "
            "agent enforces them: install or upgrade the chart with --set nodeAgent.enabled=true, or remove them "
            "from plugin.yaml (see docs/kubernetes.md)"
        )
    return None


def gate_on_node_agent(pod_body: dict[str, Any]) -> None:
    """Give a pod body the readiness gate on the agent's condition: the kubelet keeps the pod unready (no
    calls) until the node agent says its limits hold."""
    pod_body["spec"]["readinessGates"] = [{"conditionType": APPLIED_CONDITION}]


def _timeout() -> float:
    raw = os.environ.get(NODE_AGENT_TIMEOUT_ENV, "").strip()
    try:
        return max(1.0, float(raw)) if raw else DEFAULT_TIMEOUT
    except ValueError:
        return DEFAULT_TIMEOUT


def container_id(pod: Any) -> str:
    """The pod's first container's id while it runs, else ''."""
    statuses = (pod.status.container_statuses if pod.status else None) or []
    first = statuses[0] if statuses else None
    running = first is not None and first.state is not None and first.state.running is not None
    return str(first.container_id or "") if running and first is not None else ""


def _terminated(pod: Any) -> bool:
    statuses = (pod.status.container_statuses if pod.status else None) or []
    return bool(statuses) and statuses[0].state is not None and statuses[0].state.terminated is not None


def _settled(pod: Any, wanted: NodeLimits) -> bool:
    """Whether a roll may go on with this pod: its container stopped (the readiness check names why) or the
    agent's read-back matches; StartFailedError when the agent says it could not apply the limits."""
    if _terminated(pod):
        return True
    running = container_id(pod)
    applied = read_applied(pod)
    if applied is not None and applied.error and running and applied.container_id == running:
        raise StartFailedError(
            f"pod {pod.metadata.name}: the sysops node agent could not apply its limits: {applied.error}"
        )
    return bool(running) and not mismatches(wanted, applied, running)


def await_node_limits(core: Any, namespace: str, name: str, wanted: NodeLimits) -> None:
    """Wait, watching the pod, until the node agent's read-back on pod `name` matches `wanted`.

    Returns early when the container stopped or the pod is gone (the roll's readiness check names why);
    raises StartFailedError when the agent could not apply them, or after the timeout, naming the agent.
    """
    deadline = time.monotonic() + _timeout()
    pod: Any = None
    while time.monotonic() < deadline:
        try:
            if pod is None:
                pod = core.read_namespaced_pod(name, namespace)
                if _settled(pod, wanted):
                    return
            watcher: Any = watch.Watch()  # type: ignore[no-untyped-call]
            events = watcher.stream(
                core.list_namespaced_pod,
                namespace,
                field_selector=f"metadata.name={name}",
                resource_version=str(pod.metadata.resource_version),
                timeout_seconds=max(1, int(deadline - time.monotonic())),
            )
            for event in events:
                if event["type"] == "DELETED":
                    return
                pod = event["object"]
                if _settled(pod, wanted):
                    return
        except ApiException as exc:
            if exc.status == 404:
                return
            pod = None  # 410 Gone, or the watch ended badly: read the pod again
            time.sleep(0.5)
    problems = mismatches(wanted, read_applied(pod), container_id(pod)) if pod else []
    node = str(pod.spec.node_name or "?") if pod is not None and pod.spec else "?"
    raise StartFailedError(
        f"pod {name}: the sysops node agent did not apply its limits within {_timeout():g}s"
        + (f" ({'; '.join(problems)})" if problems else ""),
        hint=f"is the node agent DaemonSet running on node {node}? kubectl -n {namespace} get pods -l "
        f"{AGENT_SELECTOR} (chart value nodeAgent.enabled)",
    )


def node_agent_report(pod: Any, limits: ResourceLimits) -> tuple[dict[str, object], list[str]]:
    """The agent's read-back of a pod as `applied` keys (pids, disk_io_mb_per_sec, network_connections) and
    how it differs from `limits`; nothing for a pod the agent was not asked to limit."""
    annotations = dict(getattr(getattr(pod, "metadata", None), "annotations", None) or {})
    if LIMITS_ANNOTATION not in annotations:
        return {}, []
    applied = read_applied(pod)
    found = mismatches(NodeLimits.of(limits), applied, container_id(pod))
    if applied is None:
        return {"pids": None, "disk_io_mb_per_sec": None, "network_connections": None}, found
    return {
        "pids": applied.pids,
        "disk_io_mb_per_sec": applied.io_mb_per_sec(),
        "network_connections": applied.network_connections,
    }, found

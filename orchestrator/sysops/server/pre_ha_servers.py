"""Before an HA leader serves: wait until no server pod of its release runs without leader election.

A release upgraded from one server replica (no Lease) to HA runs, for a moment, the old server, which ignores the
Lease, alongside the new pods: the new leader would restore and reconcile the same plugin pods as the old server
still does. The chart labels HA server pods `sysops.dev/leader-elect: "true"`; pods from before HA lack it. So the
new leader, after taking the Lease and before serving, lists the server pods of its own release (its pod's
`app.kubernetes.io/{name,instance,component}` labels) that lack that label and waits until none runs (the
Deployment stops the old pod as it rolls), logging which pods it waits for.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

ELECT_LABEL = "sysops.dev/leader-elect"
RELEASE_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component")
_ENDED = ("Succeeded", "Failed")

log = logging.getLogger("sysops.leader")


class PodListApi(Protocol):
    """The part of kubernetes.client.CoreV1Api read here."""

    def read_namespaced_pod(self, name: str, namespace: str, *, _request_timeout: float) -> Any:
        """The pod."""

    def list_namespaced_pod(self, namespace: str, *, label_selector: str, _request_timeout: float) -> Any:
        """Pods matching the selector (`.items`)."""


def pre_ha_selector(own_labels: dict[str, str]) -> str | None:
    """The label selector of this release's server pods without leader election; None when this pod is not an HA
    server pod of the chart (no release labels or no election label: nothing to tell apart)."""
    if own_labels.get(ELECT_LABEL) != "true" or not all(key in own_labels for key in RELEASE_LABELS):
        return None
    return ",".join([*(f"{key}={own_labels[key]}" for key in RELEASE_LABELS), f"!{ELECT_LABEL}"])


def running_pods(api: PodListApi, namespace: str, selector: str, timeout: float) -> list[str]:
    """Names of the pods matching `selector` that have not ended (terminating ones still run)."""
    items = api.list_namespaced_pod(namespace, label_selector=selector, _request_timeout=timeout).items
    return sorted(pod.metadata.name for pod in items if getattr(pod.status, "phase", None) not in _ENDED)


def wait_until_no_pre_ha_server_runs(
    api: PodListApi, namespace: str, pod: str, *, timeout: float, stop: threading.Event
) -> bool:
    """Block until no server pod of this release without leader election runs (True), or `stop` (False).
    API failures are logged and retried every `timeout` seconds."""
    selector: str | None = None
    waiting_for: list[str] = []
    while not stop.is_set():
        try:
            if selector is None:
                labels = api.read_namespaced_pod(pod, namespace, _request_timeout=timeout).metadata.labels or {}
                selector = pre_ha_selector(dict(labels))
                if selector is None:
                    return True
            running = running_pods(api, namespace, selector, timeout)
        except Exception as exc:  # any API or network failure: retried
            log.warning(
                "cannot list server pods without leader election: %s", str(exc).splitlines()[0] if str(exc) else exc
            )
            stop.wait(timeout)
            continue
        if not running:
            if waiting_for:
                log.info("server pods without leader election gone (%s): serving", ", ".join(waiting_for))
            return True
        if running != waiting_for:
            log.warning(
                "leading, but waiting before serving until these server pods without leader election (from before "
                "HA: they ignore the Lease) stop: %s",
                ", ".join(running),
            )
            waiting_for = running
        stop.wait(timeout)
    return False

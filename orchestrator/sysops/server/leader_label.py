"""The `sysops.dev/leader` label on an HA server replica's own pod: the chart's Service selects only the leader.

Every healthy replica is Ready (its readiness probe is the liveness port), so that a rolling update of the
Deployment can go on while a standby waits for the Lease. What keeps the Service's traffic on the leader is this
label, which only the Service's selector (not the Deployment's) asks for: the leader sets it on its own pod right
after taking the Lease, before it serves, and a process that starts as standby first removes it from its pod
(a restarted container of a former leader's pod would otherwise still carry it).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

LEADER_LABEL = "sysops.dev/leader"

log = logging.getLogger("sysops.leader")


class PodPatchApi(Protocol):
    """The part of kubernetes.client.CoreV1Api used here."""

    def patch_namespaced_pod(
        self, name: str, namespace: str, body: Any, *, _content_type: str, _request_timeout: float
    ) -> Any:
        """Patch the pod."""


def set_leader_label(api: PodPatchApi, namespace: str, pod: str, *, leading: bool, timeout: float) -> None:
    """Label `pod` `sysops.dev/leader: "true"` (leading) or remove the label (a JSON merge patch; raises on failure)."""
    body = {"metadata": {"labels": {LEADER_LABEL: "true" if leading else None}}}
    api.patch_namespaced_pod(
        pod, namespace, body, _content_type="application/merge-patch+json", _request_timeout=timeout
    )


def label_until_done(
    api: PodPatchApi, namespace: str, pod: str, *, leading: bool, timeout: float, stop: threading.Event
) -> bool:
    """`set_leader_label` retried every `timeout` seconds until it succeeds (True) or `stop` is set (False)."""
    while not stop.is_set():
        try:
            set_leader_label(api, namespace, pod, leading=leading, timeout=timeout)
            return True
        except Exception as exc:  # any API or network failure: retried
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            action = "set" if leading else "remove"
            log.warning("cannot %s label %s on pod %s: %s", action, LEADER_LABEL, pod, first_line)
            stop.wait(timeout)
    return False

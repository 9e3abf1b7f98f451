"""Leader election for `sysops serve --leader-elect`: only the holder of a Lease runs the server.

The chart runs two server replicas; both own the same plugin pods, so only one may restore state, adopt
pods, reconcile and answer at a time. They agree through a `coordination.k8s.io/v1` Lease
`<fullname>-leader` in their namespace, as Kubernetes' own controllers do (client-go's leaderelection):

- `wait_for_leadership` blocks until this process holds the Lease: it creates it, takes it when it is free
  (no holder: the last leader released it) or when its record has not changed for its `leaseDurationSeconds`
  as timed on this process's own clock (the holder stopped renewing; no clock sync between nodes needed).
  Every write is an update carrying the resourceVersion read, so of two candidates only one wins (the other
  gets 409 Conflict and stays standby).
- `keep_renewing` renews every RENEW_SECONDS in a thread; when no renewal has succeeded for
  RENEW_DEADLINE_SECONDS (below the lease's duration, so that nobody else may already hold it), or another
  holder is seen, it calls `on_lost` — `sysops serve` exits non-zero then, and the kubelet restarts it as a
  standby: it never keeps serving without the Lease.
- Every Lease call carries `_request_timeout` (the renew period), and a renewal counts from the moment it
  was sent, not answered: an API server that answers late must not stretch the leader's belief past the
  moment a standby may take over. A watchdog thread exits the process (os._exit) once no renewal was sent
  successfully for the lease's duration less WATCHDOG_MARGIN_SECONDS, whatever the renew thread is blocked on.
- `release` (on SIGTERM, after the server stopped) clears the holder, so the standby takes over at its next
  try instead of waiting out the lease. A candidate that has never seen another holder renew the Lease (a pod
  that just started: the Deployment's replacement of the deleted leader) leaves a released Lease for
  two renew periods (`fresh_candidate_wait`) to the standby that watched the leader, which takes it at its next try: the
  warm standby leads, not whichever pod polled first (the replacement won that race now and then).
- The Service routes to the leader by the label `sysops.dev/leader` (leader_label.py): a standby removes it
  from its own pod before waiting, the leader sets it right after taking the Lease, before it serves.

This module and the runtime driver are where the kubernetes client is imported (lazily, in
`kubernetes_lease_api`); the elector itself talks to anything with the three CoordinationV1Api methods it
uses (tests give it a fake).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sysops.errors import ExitCode
from sysops.server.leader_label import LEADER_LABEL, PodPatchApi, label_until_done
from sysops.server.liveness_port import serve_liveness
from sysops.server.pre_ha_servers import PodListApi, wait_until_no_pre_ha_server_runs

LEASE_SECONDS = 10
RENEW_SECONDS = 2.0
#: A leader that could not renew for this long gives up (exits) before its lease can have expired elsewhere.
RENEW_DEADLINE_SECONDS = LEASE_SECONDS - RENEW_SECONDS
#: The watchdog exits the process this long before the lease, counted from the last successful renewal's sending,
#: could expire on a standby's clock (which starts no earlier than that sending).
WATCHDOG_MARGIN_SECONDS = 1.0
WATCHDOG_POLL_SECONDS = 0.2
_CONFLICT = 409
_NOT_FOUND = 404

log = logging.getLogger("sysops.leader")


class LeaseApi(Protocol):
    """The part of kubernetes.client.CoordinationV1Api the elector uses (bodies are plain dicts)."""

    def read_namespaced_lease(self, name: str, namespace: str, *, _request_timeout: float) -> Any:
        """The Lease (raises ApiException 404 when absent)."""

    def create_namespaced_lease(self, namespace: str, body: Any, *, _request_timeout: float) -> Any:
        """Create it (409 when it exists)."""

    def replace_namespaced_lease(self, name: str, namespace: str, body: Any, *, _request_timeout: float) -> Any:
        """Update it (409 when body's resourceVersion is not the stored one)."""


def kubernetes_lease_api() -> LeaseApi:
    """The cluster's CoordinationV1Api (in-cluster service account, else the kubeconfig)."""
    from kubernetes import client

    from sysops.runtime.kubernetes.driver import load_client_config

    load_client_config()
    api: LeaseApi = client.CoordinationV1Api()
    return api


class ServerPodsApi(PodPatchApi, PodListApi, Protocol):
    """The part of kubernetes.client.CoreV1Api used on the server's own pod and its release's server pods."""


def kubernetes_pod_api() -> ServerPodsApi:
    """The cluster's CoreV1Api (in-cluster service account, else the kubeconfig)."""
    from kubernetes import client

    from sysops.runtime.kubernetes.driver import load_client_config

    load_client_config()
    api: ServerPodsApi = client.CoreV1Api()
    return api


def micro_time(moment: datetime) -> str:
    """A MicroTime as the API server parses it (RFC 3339 with exactly six fractional digits, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _status(exc: Exception) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def _as_dict(obj: Any) -> dict[str, Any]:
    """A Lease read from the API as its JSON shape (the client returns a model; fakes return dicts)."""
    if isinstance(obj, dict):
        return obj
    from kubernetes.client import ApiClient

    converted: dict[str, Any] = ApiClient().sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
    return converted


@dataclass
class _Observed:
    """The last Lease record seen (its resourceVersion and holder) and when this process first saw it (monotonic)."""

    resource_version: str = ""
    since: float = 0.0
    holder: str = ""


@dataclass
class LeaderElector:
    """Acquire, renew and release the Lease `name` in `namespace` as `identity` (the pod's name)."""

    api: LeaseApi
    namespace: str
    name: str
    identity: str
    lease_seconds: int = LEASE_SECONDS
    renew_seconds: float = RENEW_SECONDS
    renew_deadline_seconds: float = RENEW_DEADLINE_SECONDS
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    _observed: _Observed = field(default_factory=_Observed)
    #: When the last successful write of ours was sent (monotonic), while we lead; None when not leading.
    _last_renewed: float | None = None
    #: The holder seen by the last attempt (for log lines: no API call on the way out).
    last_holder: str = ""
    #: Whether this process has seen another holder renew the Lease (it is a standby that watched a leader; the
    #: name of a leader that is draining, which renews no more, does not count).
    _watched_a_leader: bool = False

    @property
    def request_timeout(self) -> float:
        """Every Lease call gives up after this long (the renew period), so a hung call never outlives a renewal."""
        return self.renew_seconds

    @property
    def fresh_candidate_wait(self) -> float:
        """A candidate that never saw another holder renew the Lease takes a released Lease only once it stayed free
        this long on its own clock: two of a standby's tries, so the standby that watched the leader takes it first."""
        return 2 * self.renew_seconds

    @property
    def is_leader(self) -> bool:
        """Whether the last attempt found or made this process the holder."""
        return self._last_renewed is not None

    def try_acquire_or_renew(self) -> bool:
        """One attempt: create the Lease, renew it, or take it when free or expired. True if we hold it now.

        API errors other than a lost race are logged and count as not holding it (the caller retries).
        """
        try:
            return self._attempt()
        except Exception as exc:  # any API or network failure is one failed attempt
            if _status(exc) != _CONFLICT:
                log.warning("lease %s/%s: %s", self.namespace, self.name, str(exc).splitlines()[0] if str(exc) else exc)
            return False

    def _attempt(self) -> bool:
        sent = self.clock()  # before anything is sent: the lease runs from no later than this on every clock
        timeout = self.request_timeout
        try:
            lease = _as_dict(self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=timeout))
        except Exception as exc:
            if _status(exc) != _NOT_FOUND:
                raise
            body = self._body(None, transitions=0, acquired=None)
            self.api.create_namespaced_lease(self.namespace, body, _request_timeout=timeout)
            return self._holding(sent)
        metadata, spec = lease.get("metadata") or {}, lease.get("spec") or {}
        version = str(metadata.get("resourceVersion") or "")
        holder = spec.get("holderIdentity") or ""
        self.last_holder = str(holder)
        if version != self._observed.resource_version:
            if holder and holder != self.identity and holder == self._observed.holder:
                self._watched_a_leader = True  # seen renewing: a leader that is draining renews no more
            self._observed = _Observed(version, self.clock(), str(holder))
        duration = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
        if holder and holder != self.identity:
            if self.clock() - self._observed.since < duration:
                self._last_renewed = None
                return False  # someone else holds it and renews it
        elif not holder and self._waits_for_a_standby():
            return False  # released: left to the standby that watched the leader, if there is one
        # Our own name on it while we do not lead: this pod's previous container, which is gone.
        renewing = holder == self.identity and self._last_renewed is not None
        acquired = spec.get("acquireTime") if renewing else None
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        body = self._body(version, transitions, acquired)
        self.api.replace_namespaced_lease(self.name, self.namespace, body, _request_timeout=timeout)
        return self._holding(sent)

    def _waits_for_a_standby(self) -> bool:
        """Whether this candidate leaves a released Lease alone for now: it does not lead, never saw another
        leader renew it, and has seen it released for less than `fresh_candidate_wait`."""
        unchanged_for = self.clock() - self._observed.since
        return self._last_renewed is None and not self._watched_a_leader and unchanged_for < self.fresh_candidate_wait

    def _holding(self, sent: float) -> bool:
        self._last_renewed = sent
        self.last_holder = self.identity
        return True

    def _body(
        self, resource_version: str | None, transitions: int, acquired: str | None, *, holding: bool = True
    ) -> dict[str, Any]:
        """The Lease as we write it: held by us (renewed now), or released (no holder, 1 s duration)."""
        now = micro_time(self.wall_clock())
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version  # optimistic concurrency: 409 if it changed since
        spec: dict[str, Any] = {
            "leaseDurationSeconds": self.lease_seconds if holding else 1,
            "acquireTime": acquired or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }
        if holding:
            spec["holderIdentity"] = self.identity
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}

    def wait_for_leadership(self, stop: threading.Event) -> bool:
        """Block until this process holds the Lease (True) or `stop` is set (False), trying every renew period."""
        logged_holder = None
        while not stop.is_set():
            if self.try_acquire_or_renew():
                return True
            holder = self.last_holder
            if holder != logged_holder:
                log.info("standby: lease %s/%s is held by %s", self.namespace, self.name, holder or "nobody")
                logged_holder = holder
            stop.wait(self.renew_seconds)
        return False

    def renew_once(self) -> bool:
        """Renew now; False once the Lease is lost: another holder took it, or no renewal succeeded for the
        renew deadline (so we must stop before anyone else may legitimately take it)."""
        if self._last_renewed is None:
            return False
        last = self._last_renewed
        if self.try_acquire_or_renew():
            return True
        if self._last_renewed is None:  # another holder
            return False
        if self.clock() - last >= self.renew_deadline_seconds:
            self._last_renewed = None
            return False
        return True

    def keep_renewing(self, stop: threading.Event, on_lost: Callable[[], None]) -> threading.Thread:
        """Renew every renew period in a daemon thread until `stop`; call `on_lost` once if the Lease is lost."""

        def run() -> None:
            while not stop.wait(self.renew_seconds):
                if not self.renew_once():
                    if not stop.is_set():
                        on_lost()
                    return

        thread = threading.Thread(target=run, name="sysops-leader-renew", daemon=True)
        thread.start()
        return thread

    def overdue(self, since_sent: float) -> bool:
        """Whether a renewal last sent at `since_sent` leaves us too close to the lease's end to go on leading."""
        return self.clock() - since_sent > self.lease_seconds - WATCHDOG_MARGIN_SECONDS

    def start_watchdog(self, stop: threading.Event, on_overdue: Callable[[], None]) -> threading.Thread:
        """A daemon thread that calls `on_overdue` once if no renewal was sent successfully for the lease's duration
        less the margin (the renew thread may be stuck in a call: this thread makes no API call)."""
        leading_since = self._last_renewed

        def run() -> None:
            while not stop.wait(WATCHDOG_POLL_SECONDS):
                last = self._last_renewed if self._last_renewed is not None else leading_since
                if last is not None and self.overdue(last):
                    on_overdue()
                    return

        thread = threading.Thread(target=run, name="sysops-leader-watchdog", daemon=True)
        thread.start()
        return thread

    def release(self) -> bool:
        """Give the Lease up if we hold it (holder cleared, duration 1 s), so a standby takes it at once.
        True when released; False when not ours or the update failed (then it simply expires)."""
        if self._last_renewed is None:
            return False
        self._last_renewed = None
        try:
            timeout = self.request_timeout
            lease = _as_dict(self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=timeout))
            metadata, spec = lease.get("metadata") or {}, lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return False
            transitions = int(spec.get("leaseTransitions") or 0)
            body = self._body(str(metadata.get("resourceVersion") or ""), transitions, None, holding=False)
            self.api.replace_namespaced_lease(self.name, self.namespace, body, _request_timeout=timeout)
        except Exception as exc:  # the lease then expires on its own
            log.warning("releasing lease %s/%s failed: %s", self.namespace, self.name, exc)
            return False
        return True


def lease_name() -> str:
    """`<fullname>-leader`: the chart's Service name (SYSOPS_SERVER_SERVICE) with `-leader`, or SYSOPS_LEADER_LEASE."""
    return os.environ.get("SYSOPS_LEADER_LEASE") or f"{os.environ.get('SYSOPS_SERVER_SERVICE') or 'sysops'}-leader"


def _exit_lost(elector: LeaderElector, why: str) -> None:
    """Exit at once (no API call, no cleanup that might serve on), from the renew or the watchdog thread."""
    log.error(
        "lost lease %s/%s (%s; last holder seen: %s): exiting so that only the leader serves",
        elector.namespace,
        elector.name,
        why,
        elector.last_holder or "nobody",
    )
    logging.shutdown()
    os._exit(int(ExitCode.ENGINE_UNAVAILABLE))


def become_leader(
    stopped: threading.Event, api: LeaseApi | None = None, pods: ServerPodsApi | None = None
) -> LeaderElector | None:
    """Block until this replica holds the Lease, then keep renewing it until `stopped` (exiting the process with
    ExitCode.ENGINE_UNAVAILABLE if it is lost). None if `stopped` was set while waiting (SIGTERM of a standby).

    Namespace from SYSOPS_NAMESPACE, identity from POD_NAME (the downward API; the host name otherwise, which
    is the pod's name too). The liveness port (SYSOPS_LIVENESS_PORT) opens first: a standby is alive (and Ready)
    though it does not listen on the control port. The pod's `sysops.dev/leader` label is removed before waiting
    and set once leading (retried until done), so the Service sends nothing to a standby. Before that, the leader
    waits until no server pod of its release from before HA (without leader election) runs (pre_ha_servers.py).
    """
    liveness = os.environ.get("SYSOPS_LIVENESS_PORT")
    if liveness:
        serve_liveness(int(liveness))
    elector = LeaderElector(
        api or kubernetes_lease_api(),
        os.environ.get("SYSOPS_NAMESPACE") or "default",
        lease_name(),
        os.environ.get("POD_NAME") or socket.gethostname(),
    )
    pod_api = pods or kubernetes_pod_api()
    timeout = elector.request_timeout
    if not label_until_done(pod_api, elector.namespace, elector.identity, leading=False, timeout=timeout, stop=stopped):
        return None
    log.info("waiting to lead: lease %s/%s as %s", elector.namespace, elector.name, elector.identity)
    if not elector.wait_for_leadership(stopped):
        return None
    log.info("leading: %s holds lease %s/%s", elector.identity, elector.namespace, elector.name)
    deadline = f"not renewed for {elector.renew_deadline_seconds:g}s or taken by another"
    elector.keep_renewing(stopped, lambda: _exit_lost(elector, deadline))
    overdue = f"no renewal sent successfully for {elector.lease_seconds - WATCHDOG_MARGIN_SECONDS:g}s (watchdog)"
    elector.start_watchdog(stopped, lambda: _exit_lost(elector, overdue))
    ready = wait_until_no_pre_ha_server_runs(
        pod_api, elector.namespace, elector.identity, timeout=timeout, stop=stopped
    )
    if not ready or not label_until_done(
        pod_api, elector.namespace, elector.identity, leading=True, timeout=timeout, stop=stopped
    ):
        elector.release()  # stopped (SIGTERM) before it served: the next replica takes over at once
        return None
    log.info("labelled pod %s %s=true: the Service routes to it", elector.identity, LEADER_LABEL)
    return elector

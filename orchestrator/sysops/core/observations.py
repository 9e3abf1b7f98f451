"""What the engine and a health check say of instances, asked for many instances at once.

`plugin ls` observes every plugin: an engine inspect and a health check per active instance. One after
another that was 50 round trips of each (about 2 s with fifty plugins on this 2-core machine); asked side by
side in a few threads they overlap. An instance's health is the supervisor's last probe answer when that is
recent (PROBES, recorded by core/supervisor.py in the host, which answers `plugin ls`): only the others get
a health check. (The Docker SDK's listing inspects each container it lists, one after another, so a listing
would not spare the inspects.)
Only the driver and the instances' sockets are touched here (the store's SQLite connection belongs to one
thread).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent import futures

from sysops.core.client import PluginClient
from sysops.runtime.base import InstanceStatus, RuntimeDriver
from sysops.store import InstanceRecord

#: Instances observed at once.
WORKERS = 8
#: Seconds a health check of `plugin ls` waits for its answer.
HEALTH_TIMEOUT = 1.0
#: A probe answer of the supervisor this old (seconds) or older is not taken for the instance's health
#: (the default liveness interval is 10 s: two missed probes make it stale).
PROBE_ANSWER_SECONDS = 25.0

#: The engine's status of an instance (None: gone) and whether it answered its health check with SERVING.
InstanceObservation = tuple[InstanceStatus | None, bool]


class ProbeAnswers:
    """The last health probe answer of each supervised instance (SERVING or not), with when it came."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[bool, float]] = {}

    def record(self, instance_id: str, serving: bool) -> None:
        """The supervisor probed `instance_id` just now."""
        with self._lock:
            self._answers[instance_id] = (serving, time.monotonic())

    def retain(self, instance_ids: set[str]) -> None:
        """Forget the instances no longer supervised."""
        with self._lock:
            for gone in set(self._answers) - instance_ids:
                del self._answers[gone]

    def recent(self, instance_id: str, max_age: float = PROBE_ANSWER_SECONDS) -> bool | None:
        """Whether the last probe (within `max_age` seconds) found it serving; None if there is no such probe."""
        with self._lock:
            answer = self._answers.get(instance_id)
        if answer is None or time.monotonic() - answer[1] >= max_age:
            return None
        return answer[0]


#: The probe answers of this process's supervisor (the host's; empty in a CLI).
PROBES = ProbeAnswers()


def observe(driver: RuntimeDriver, instance: InstanceRecord) -> InstanceObservation:
    """Ask the engine about `instance` and, if it runs, its health check."""
    return _with_health(instance, driver.inspect(instance.handle))


def _with_health(instance: InstanceRecord, status: InstanceStatus | None) -> InstanceObservation:
    """`status` and, if it runs, the supervisor's recent answer or else a health check."""
    if status is None or not status.running:
        return status, False
    recent = PROBES.recent(instance.id)
    if recent is not None:
        return status, recent
    with PluginClient(instance.endpoint, instance.plugin, instance.token) as client:
        return status, client.healthy(timeout=HEALTH_TIMEOUT)


def observe_all(driver: RuntimeDriver, instances: Sequence[InstanceRecord]) -> dict[str, InstanceObservation]:
    """`observe` of every instance, side by side, by instance id."""
    if len(instances) < 2:
        return {instance.id: observe(driver, instance) for instance in instances}
    with futures.ThreadPoolExecutor(min(WORKERS, len(instances)), thread_name_prefix="sysops-observe") as pool:
        seen = pool.map(lambda instance: observe(driver, instance), instances)
        return {instance.id: observation for instance, observation in zip(instances, seen, strict=True)}

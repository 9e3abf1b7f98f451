"""What the engine and a health check say of instances, asked for many instances at once.

`plugin ls` observes every plugin: an engine inspect and a health check per active instance. One after
another that was 50 round trips of each (about 2 s with fifty plugins on this 2-core machine); asked side by
side in a few threads they overlap. Only the driver and the instances' sockets are touched here (the store's
SQLite connection belongs to one thread).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent import futures

from sysops.core.client import PluginClient
from sysops.runtime.base import InstanceStatus, RuntimeDriver
from sysops.store import InstanceRecord

#: Instances observed at once.
WORKERS = 8
#: Seconds a health check of `plugin ls` waits for its answer.
HEALTH_TIMEOUT = 1.0

#: The engine's status of an instance (None: gone) and whether it answered its health check with SERVING.
InstanceObservation = tuple[InstanceStatus | None, bool]


def observe(driver: RuntimeDriver, instance: InstanceRecord) -> InstanceObservation:
    """Ask the engine about `instance` and, if it runs, its health check."""
    status = driver.inspect(instance.handle)
    if status is None or not status.running:
        return status, False
    with PluginClient(instance.endpoint, instance.plugin, instance.token) as client:
        return status, client.healthy(timeout=HEALTH_TIMEOUT)


def observe_all(driver: RuntimeDriver, instances: Sequence[InstanceRecord]) -> dict[str, InstanceObservation]:
    """`observe` of every instance, side by side, by instance id."""
    if len(instances) < 2:
        return {instance.id: observe(driver, instance) for instance in instances}
    with futures.ThreadPoolExecutor(min(WORKERS, len(instances)), thread_name_prefix="sysops-observe") as pool:
        seen = pool.map(lambda instance: observe(driver, instance), instances)
        return {instance.id: observation for instance, observation in zip(instances, seen, strict=True)}

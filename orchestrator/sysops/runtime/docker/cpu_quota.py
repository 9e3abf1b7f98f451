"""The CFS period and quota that a plugin's `limits.cpu_percent` becomes on Docker.

Docker's `--cpus` (NanoCpus) always uses a 100 ms period, so a plugin at `cpu_percent: 50` may run for 50 ms
and must then wait 50 ms. Starting a Python instance (the interpreter, gRPC, the SDK) takes about 90 ms of
CPU, so it was throttled once at every start, which added 40-50 ms to a cold start (issue 15 item 2:
0.33 s, goal 0.3). Here a plugin under 1.5 cores gets a longer period instead, long enough that each period
grants MIN_BURST_US (100 ms) of CPU, up to the kernel's limit of 1 s. Over each period it gets exactly the
manifest's share, but a burst of up to 100 ms (a start, a short command) runs without a pause. The cost is
that a plugin that stays busy waits longer between its runs (`cpu_percent: 50`: 100 ms instead of 50 ms).
A plugin of 1.5 cores or more keeps the 100 ms period. Kubernetes sets the period for the whole node (the
kubelet's `--cpu-cfs-quota-period`), so pods keep theirs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

#: CPU time each period grants at least (when the kernel's longest period allows it).
MIN_BURST_US = 150_000
#: The period Docker and the kubelet use; kept for a plugin of 1.5 cores or more.
STANDARD_PERIOD_US = 100_000
#: The longest period the kernel accepts.
MAX_PERIOD_US = 1_000_000
#: Periods are whole milliseconds: a `cpu_percent` with one decimal then has an exact quota.
_PERIOD_STEP_US = 1_000
_ONE_CORE_NANO = 1_000_000_000


class CfsSettings(NamedTuple):
    """docker-py's `cpu_period` and `cpu_quota` of a container, in microseconds."""

    period: int
    quota: int


def cfs_settings(nano_cpus: int) -> CfsSettings:
    """The period and quota for `nano_cpus` (10**9 is one core)."""
    period = STANDARD_PERIOD_US
    if nano_cpus > 0:
        needed = -(-MIN_BURST_US * _ONE_CORE_NANO // nano_cpus)  # ceiling division
        period = min(MAX_PERIOD_US, max(STANDARD_PERIOD_US, -(-needed // _PERIOD_STEP_US) * _PERIOD_STEP_US))
    return CfsSettings(period, max(1_000, round(nano_cpus * period / _ONE_CORE_NANO)))


def applied_percent(host_config: Mapping[str, object]) -> float:
    """The CPU share a container's HostConfig applies, in percent of one core (0 when unlimited).

    From its quota and period, or from NanoCpus for a container made before this module (or by hand).
    """
    nano = host_config.get("NanoCpus")
    if isinstance(nano, int) and nano > 0:
        return round(nano / 10_000_000, 3)
    quota, period = host_config.get("CpuQuota"), host_config.get("CpuPeriod")
    if isinstance(quota, int) and isinstance(period, int) and quota > 0 and period > 0:
        return round(quota * 100 / period, 3)
    return 0.0

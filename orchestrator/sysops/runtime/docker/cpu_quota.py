"""The CFS period and quota that a plugin's `limits.cpu_percent` becomes on Docker.

Docker's `--cpus` (NanoCpus) always uses a 100 ms period, so a plugin at `cpu_percent: 50` may run for 50 ms and
must then wait 50 ms. Starting an instance takes 105-120 ms of CPU in its cgroup here (runc's init, the
interpreter, gRPC, the SDK), so it was throttled at every start, which added 40-50 ms to a cold start
(issue 15 item 2: 0.33 s, goal 0.3). Here the period is lengthened, when needed, until each period grants
MIN_BURST_US (150 ms: that start with a margin) of CPU, but never beyond MAX_PERIOD_US (300 ms). Over each
period the plugin gets exactly the manifest's share; a burst of up to 150 ms (a start, a short command) runs
without a pause from `cpu_percent: 50` up. The cost is that a plugin that stays busy pauses longer between
its runs: at most 300 ms less its quota (`cpu_percent: 50`: 150 ms, was 50; `cpu_percent: 10`: 270 ms, was
90), which keeps every pause well inside the 1 s health checks of `plugin ls` and the default liveness
timeout (2 s). A plugin of 1.5 cores or more keeps the 100 ms period. Kubernetes sets the period for the whole
node (the kubelet's `--cpu-cfs-quota-period`), so pods keep theirs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

#: CPU time each period grants at least, where MAX_PERIOD_US allows it.
MIN_BURST_US = 150_000
#: The period Docker and the kubelet use; kept for a plugin of 1.5 cores or more.
STANDARD_PERIOD_US = 100_000
#: The longest period used: a busy plugin never pauses longer than this less its quota.
MAX_PERIOD_US = 300_000
#: Periods are whole milliseconds: a `cpu_percent` with one decimal then has an exact quota.
_PERIOD_STEP_US = 1_000
_ONE_CORE_NANO = 1_000_000_000


class CfsSettings(NamedTuple):
    """docker-py's `cpu_period` and `cpu_quota` of a container, in microseconds."""

    period: int
    quota: int

    @property
    def percent(self) -> float:
        """The share this applies, in percent of one core, as the engine and the cgroup report it back."""
        return round(self.quota * 100 / self.period, 3)


def cfs_settings(nano_cpus: int) -> CfsSettings:
    """The period and quota for `nano_cpus` (10**9 is one core; more than 0)."""
    needed = -(-MIN_BURST_US * _ONE_CORE_NANO // max(1, nano_cpus))  # ceiling division
    period = min(MAX_PERIOD_US, max(STANDARD_PERIOD_US, -(-needed // _PERIOD_STEP_US) * _PERIOD_STEP_US))
    return CfsSettings(period, max(1_000, round(nano_cpus * period / _ONE_CORE_NANO)))


def applied_settings(host_config: Mapping[str, object]) -> CfsSettings | None:
    """The period and quota a container's HostConfig applies; None when it has none (NanoCpus, or no limit)."""
    quota, period = host_config.get("CpuQuota"), host_config.get("CpuPeriod")
    if isinstance(quota, int) and isinstance(period, int) and quota > 0 and period > 0:
        return CfsSettings(period, quota)
    return None


def nano_percent(nano_cpus: int) -> float:
    """`nano_cpus` in percent of one core, as `limits.cpu_percent` is written and read back."""
    return round(nano_cpus / 10_000_000, 3)


def applied_percent(host_config: Mapping[str, object]) -> float:
    """The CPU share a container's HostConfig applies, in percent of one core (0 when unlimited).

    From its quota and period, or from NanoCpus for a container made before this module (or by hand).
    """
    nano = host_config.get("NanoCpus")
    if isinstance(nano, int) and nano > 0:
        return nano_percent(nano)
    settings = applied_settings(host_config)
    return settings.percent if settings is not None else 0.0

"""The CFS period and quota of `limits.cpu_percent` on Docker (runtime/docker/cpu_quota.py)."""

from __future__ import annotations

import pytest
from sysops.runtime.docker.cpu_quota import MAX_PERIOD_US, MIN_BURST_US, applied_percent, cfs_settings


@pytest.mark.parametrize(
    ("cpu_percent", "period", "quota"),
    [
        (50, 300_000, 150_000),
        (20, 750_000, 150_000),
        (15, 1_000_000, 150_000),
        (10, 1_000_000, 100_000),  # the kernel's longest period: less than 150 ms per period is all there is
        (1, 1_000_000, 10_000),
        (35, 429_000, 150_150),
        (75, 200_000, 150_000),
        (100, 150_000, 150_000),
        (150, 100_000, 150_000),
        (250, 100_000, 250_000),
    ],
)
def test_each_period_grants_150_ms_of_cpu_or_the_longest_period_allows(cpu_percent: int, period: int, quota: int) -> None:
    assert cfs_settings(cpu_percent * 10_000_000) == (period, quota)


def test_every_percent_with_one_decimal_is_applied_exactly_with_its_burst() -> None:
    for tenths in range(10, 64_001):
        nano = tenths * 1_000_000
        period, quota = cfs_settings(nano)
        assert quota * 1_000_000_000 == nano * period, tenths  # the share is exact, not rounded
        assert 100_000 <= period <= MAX_PERIOD_US and period % 1_000 == 0
        assert quota >= min(MIN_BURST_US, nano * MAX_PERIOD_US // 1_000_000_000), tenths
        assert applied_percent({"CpuPeriod": period, "CpuQuota": quota, "NanoCpus": 0}) == tenths / 10


def test_the_applied_share_is_read_from_nanocpus_of_an_older_container_and_is_0_when_unlimited() -> None:
    assert applied_percent({"NanoCpus": 500_000_000, "CpuPeriod": 0, "CpuQuota": 0}) == 50.0
    assert applied_percent({"NanoCpus": 0, "CpuPeriod": 0, "CpuQuota": 0}) == 0.0
    assert applied_percent({"CpuQuota": -1, "CpuPeriod": 100_000}) == 0.0

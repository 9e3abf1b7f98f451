"""The CFS period and quota of `limits.cpu_percent` on Docker (runtime/docker/cpu_quota.py)."""

from __future__ import annotations

import pytest
from sysops.runtime.docker.cpu_quota import MAX_PERIOD_US, MIN_BURST_US, applied_percent, cfs_settings


@pytest.mark.parametrize(
    ("cpu_percent", "period", "quota"),
    [
        (50, 300_000, 150_000),
        (20, 300_000, 60_000),  # the longest period, 300 ms: less than 150 ms per period is all there is
        (10, 300_000, 30_000),
        (1, 300_000, 3_000),
        (35, 300_000, 105_000),
        (75, 200_000, 150_000),
        (60, 250_000, 150_000),
        (100, 150_000, 150_000),
        (150, 100_000, 150_000),
        (250, 100_000, 250_000),
    ],
)
def test_each_period_grants_150_ms_where_a_period_of_300_ms_at_most_allows(
    cpu_percent: int, period: int, quota: int
) -> None:
    assert cfs_settings(cpu_percent * 10_000_000) == (period, quota)


def test_every_percent_with_one_decimal_is_applied_exactly_with_its_burst() -> None:
    for tenths in range(10, 64_001):
        nano = tenths * 1_000_000
        settings = cfs_settings(nano)
        period, quota = settings
        assert quota * 1_000_000_000 == nano * period, tenths  # the share is exact, not rounded
        assert 100_000 <= period <= MAX_PERIOD_US and period % 1_000 == 0
        assert quota >= min(MIN_BURST_US, nano * MAX_PERIOD_US // 1_000_000_000), tenths
        assert period - quota <= 300_000 - 3_000  # the longest pause of a busy plugin
        assert (
            settings.percent == applied_percent({"CpuPeriod": period, "CpuQuota": quota, "NanoCpus": 0}) == tenths / 10
        )


def test_a_share_with_more_decimals_is_read_back_as_what_was_applied() -> None:
    settings = cfs_settings(533_746_000)  # cpu_percent 53.3746: the quota is whole microseconds
    assert settings.percent == applied_percent({"CpuPeriod": settings.period, "CpuQuota": settings.quota})
    assert abs(settings.percent - 53.3746) < 0.001


def test_the_applied_share_is_read_from_nanocpus_of_an_older_container_and_is_0_when_unlimited() -> None:
    assert applied_percent({"NanoCpus": 500_000_000, "CpuPeriod": 0, "CpuQuota": 0}) == 50.0
    assert applied_percent({"NanoCpus": 0, "CpuPeriod": 0, "CpuQuota": 0}) == 0.0
    assert applied_percent({"CpuQuota": -1, "CpuPeriod": 100_000}) == 0.0

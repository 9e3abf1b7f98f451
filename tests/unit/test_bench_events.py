"""bench/bench_events.py's bus run: a worker held back while the events are published still gets every one.

The run it replays failed as "bus: not all delivered within 300.0 s: [5000, 2677, 5000, 5000, 5000]...": under
CPU load one subscriber's worker fell more than the bus's default backlog limit (1,000) behind the publisher,
the bus dead-lettered its oldest pending events as designed, and the bench waited for events that would never
come. Here one worker is blocked in its first delivery until every event is published, which is that starved
worker made certain.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_events  # noqa: E402  (bench/ on sys.path, as the bench runner has it)
from sysops.services.bus import EventBus  # noqa: E402

EVENTS = 1500  # more than the bus's default backlog limit (1000)


class _CountingBus(EventBus):
    """The bench's EventBus, setting `published_all` once EVENTS events were published."""

    published_all = threading.Event()
    forced_backlog_limit: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if self.forced_backlog_limit is not None:
            kwargs["backlog_limit"] = self.forced_backlog_limit
        super().__init__(*args, **kwargs)
        self._published = 0

    def publish(self, topic: str, payload: Any, publisher: str) -> int:
        event_id = super().publish(topic, payload, publisher)
        if topic == bench_events.TOPIC:
            self._published += 1
            if self._published == EVENTS:
                self.published_all.set()
        return event_id


@pytest.fixture
def starved_worker(monkeypatch: pytest.MonkeyPatch) -> type[_CountingBus]:
    """Subscriber 0's worker blocks in its first delivery until every event is published."""

    class Bus(_CountingBus):  # a fresh class per test: its own published_all
        published_all = threading.Event()

    monkeypatch.setattr(bench_events, "EventBus", Bus)
    monkeypatch.setattr(bench_events, "TIMEOUT_SECONDS", 30.0)
    received = bench_events.Tally.received

    def held_received(self: bench_events.Tally, index: int) -> None:
        if index == 0 and self.counts[0] == 0:
            assert Bus.published_all.wait(30), "the publisher did not finish"
        received(self, index)

    monkeypatch.setattr(bench_events.Tally, "received", held_received)
    return Bus


def test_bench_bus_run_survives_a_worker_starved_past_the_default_backlog(starved_worker: type[_CountingBus]) -> None:
    # Before the fix: subscriber 0 got ~1,000 of 1,500 (the rest dead-lettered): "not all delivered" SystemExit.
    seconds = bench_events._bus_seconds(3, EVENTS)
    assert seconds > 0


def test_bench_bus_run_fails_at_once_when_events_are_dead_lettered(
    starved_worker: type[_CountingBus], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(starved_worker, "forced_backlog_limit", 10)
    started = time.monotonic()
    with pytest.raises(SystemExit, match="events dead-lettered for sub-"):
        bench_events._bus_seconds(3, EVENTS)
    assert time.monotonic() - started < 15  # not TIMEOUT_SECONDS (300 in a real run, 30 here)

"""Event fan-out of the host's bus (services/bus.py) to 1, 10 and 50 subscribers, beside a baseline in the same run.

For each subscriber count, BENCH_EVENTS events (default 5000, a small JSON payload each) are published on
one topic every subscriber matches, and the clock runs from the first publish until every subscriber has
received every event. Measured:
  the bus: a real EventBus on a SQLite file in a temporary directory (each event persisted, one worker thread
      per subscriber, cursors saved; a worker that keeps up gets the events from memory, as in the host),
      in-process deliver callbacks that only record, and a backlog limit of the whole burst (a subscriber more
      than the host's 1000 behind would have its oldest events dead-lettered, by design);
  the baseline: a plain fan-out over queue.Queue (one queue and one consumer thread per subscriber, the
      publisher puts each event in every queue), nothing persisted.
Each side runs BENCH_ROUNDS times (default 3), interleaved; the median is printed as events/s (events
published and delivered to all subscribers per second) and deliveries/s, with the ratio bus/baseline.
Goal: at least 5,000 events/s to 10 subscribers. measure(smoke) returns the figures to the runner (bench/run.py;
smoke: 200 events, one round); main() prints them. Asserts nothing (figures vary with the machine).
"""

from __future__ import annotations

import os
import queue
import statistics
import tempfile
import threading
import time
from pathlib import Path

from figures import Figure
from sysops.services.bus import BusEvent, EventBus

TOPIC = "bench.tick"
SUBSCRIBER_COUNTS = (1, 10, 50)
GOAL_EVENTS_PER_SECOND = 5000
TIMEOUT_SECONDS = 300.0
#: How often the wait for the subscribers looks for dead letters (a run with one never completes).
CHECK_SECONDS = 0.5


class Tally:
    """Counts what each subscriber received; `done` is set when all got `expected`."""

    def __init__(self, subscribers: int, expected: int) -> None:
        self.expected = expected
        self.counts = [0] * subscribers
        self.remaining = subscribers
        self.lock = threading.Lock()
        self.done = threading.Event()

    def received(self, index: int) -> None:
        # Only the subscriber's own worker touches counts[index]; the lock guards the shared remaining count.
        self.counts[index] += 1
        if self.counts[index] == self.expected:
            with self.lock:
                self.remaining -= 1
                if self.remaining == 0:
                    self.done.set()


def _bus_seconds(subscribers: int, events: int) -> float:
    """Seconds from the first publish until every subscriber of a real EventBus received every event."""
    tally = Tally(subscribers, events)
    names = [f"sub-{index}" for index in range(subscribers)]
    index_of = {name: index for index, name in enumerate(names)}

    def deliver(plugin: str, event: BusEvent) -> None:
        tally.received(index_of[plugin])

    with tempfile.TemporaryDirectory(prefix="sysops-bench-events-") as directory:
        # A backlog limit of the whole burst: a subscriber the machine starves for a moment falls behind by more
        # than the default 1000, and the bus then dead-letters its oldest events by design (docs/events.md), which
        # this benchmark of fan-out would report as events never delivered.
        bus = EventBus(Path(directory) / "state" / "state.db", deliver, backlog_limit=max(events, 2))
        try:
            for name in names:
                bus.subscribe(name, ["bench.*"])
            bus.start()
            started = time.perf_counter()
            for number in range(events):
                bus.publish(TOPIC, {"n": number, "host": "web-1", "ok": True}, "bench")
            deadline = time.monotonic() + TIMEOUT_SECONDS
            while not tally.done.wait(min(CHECK_SECONDS, max(0.0, deadline - time.monotonic()))):
                dead = bus.dead_letters(limit=1)
                if dead:  # those events never come: say so now, not after TIMEOUT_SECONDS
                    raise SystemExit(
                        f"bus: events dead-lettered for {dead[0].plugin} ({dead[0].reason}): {tally.counts[:5]}..."
                    )
                if time.monotonic() >= deadline:
                    raise SystemExit(f"bus: not all delivered within {TIMEOUT_SECONDS} s: {tally.counts[:5]}...")
            return time.perf_counter() - started
        finally:
            bus.stop(timeout=5)


def _queue_seconds(subscribers: int, events: int) -> float:
    """The same fan-out over plain queue.Queue: one queue and one consumer thread per subscriber."""
    tally = Tally(subscribers, events)
    queues: list[queue.Queue[dict[str, object] | None]] = [queue.Queue() for _ in range(subscribers)]

    def consume(index: int) -> None:
        inbox = queues[index]
        while inbox.get() is not None:
            tally.received(index)

    consumers = [threading.Thread(target=consume, args=(index,), daemon=True) for index in range(subscribers)]
    for consumer in consumers:
        consumer.start()
    started = time.perf_counter()
    for number in range(events):
        payload: dict[str, object] = {"n": number, "host": "web-1", "ok": True}
        for inbox in queues:
            inbox.put(payload)
    if not tally.done.wait(TIMEOUT_SECONDS):
        raise SystemExit("queue baseline: not all delivered")
    elapsed = time.perf_counter() - started
    for inbox in queues:
        inbox.put(None)
    for consumer in consumers:
        consumer.join(5)
    return elapsed


def _median_rates(subscribers: int, events: int, rounds: int) -> tuple[float, float]:
    """Events/s of the bus and of the queue baseline (medians of interleaved rounds)."""
    ours: list[float] = []
    theirs: list[float] = []
    for round_number in range(rounds):
        order = (
            ((_bus_seconds, ours), (_queue_seconds, theirs))
            if round_number % 2 == 0
            else ((_queue_seconds, theirs), (_bus_seconds, ours))
        )
        for run, samples in order:
            samples.append(run(subscribers, events))
    return events / statistics.median(ours), events / statistics.median(theirs)


def measure(smoke: bool) -> list[Figure]:
    """Events/s to 1, 10 and 50 subscribers beside the queue.Queue baseline (smoke: 200 events, one round)."""
    events = 200 if smoke else int(os.environ.get("BENCH_EVENTS", "5000"))
    rounds = 1 if smoke else int(os.environ.get("BENCH_ROUNDS", "3"))
    figures: list[Figure] = []
    for subscribers in SUBSCRIBER_COUNTS:
        bus_rate, queue_rate = _median_rates(subscribers, events, rounds)
        judged = subscribers == 10
        figures.append(
            Figure(
                metric=f"event fan-out to {subscribers} subscriber(s)",
                ours=bus_rate,
                unit="events/s",
                baseline=queue_rate,
                baseline_name="queue.Queue fan-out",
                goal=f">= {GOAL_EVENTS_PER_SECOND:,} events/s" if judged else "",
                passed=None if smoke or not judged else bus_rate >= GOAL_EVENTS_PER_SECOND,
                detail={"events": events, "rounds": rounds, "deliveries_per_second": bus_rate * subscribers},
            )
        )
    return figures


def main() -> int:
    print("event fan-out: events/s published and delivered to every subscriber (median of interleaved runs)")
    for figure in measure(smoke=False):
        goal = f"  (goal {figure.goal})" if figure.goal else ""
        print(
            f"  {figure.metric:<36} bus {figure.ours:10,.0f} events/s  baseline {figure.baseline or 0:10,.0f}"
            f"  ratio {figure.ratio or 0:5.2f}x{goal}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The host's event bus (services/bus.py) on a real SQLite file with its real threads; no containers.

Each test is bounded in time (pytest-timeout, and every wait has a deadline). Deliver callbacks are
in-process: they record, block, refuse (`Undeliverable`) or raise, as a plugin instance would.
"""

from __future__ import annotations

import json
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sysops.core import events
from sysops.core.events import EventKind
from sysops.services.bus import DEAD_LETTER_TOPIC, BusEvent, BusInputError, EventBus, Undeliverable
from sysops.store import Store

pytestmark = pytest.mark.timeout(60)

BusFactory = Callable[..., EventBus]


class Recorder:
    """A deliver callback that records (plugin, event id) and can refuse, fail or block per plugin."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: dict[str, list[BusEvent]] = {}
        self.down: set[str] = set()
        self.attempts: dict[tuple[str, int], int] = {}
        self.gates: dict[str, threading.Event] = {}
        self.poison: set[int] = set()

    def __call__(self, plugin: str, event: BusEvent) -> None:
        with self.lock:
            self.attempts[plugin, event.id] = self.attempts.get((plugin, event.id), 0) + 1
            gate = self.gates.get(plugin)
        if gate is not None:
            gate.wait(30)
        if plugin in self.down:
            raise Undeliverable(f"{plugin} has no ready instance")
        if event.id in self.poison:
            raise RuntimeError(f"handler of {plugin} cannot take event {event.id}")
        with self.lock:
            self.received.setdefault(plugin, []).append(event)

    def ids(self, plugin: str) -> list[int]:
        with self.lock:
            return [event.id for event in self.received.get(plugin, [])]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s")
        time.sleep(0.01)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    for gate in recorder.gates.values():  # let blocked workers end
        gate.set()


@pytest.fixture
def make_bus(store_path: Path, recorder: Recorder) -> Iterator[BusFactory]:
    buses: list[EventBus] = []

    def make(**options: Any) -> EventBus:
        options.setdefault("retry_seconds", 0.02)
        bus = EventBus(store_path, options.pop("deliver", recorder), **options)
        buses.append(bus)
        return bus

    yield make
    for gate in recorder.gates.values():
        gate.set()
    for bus in buses:
        bus.stop(timeout=5)


def stored_event_ids(store_path: Path) -> list[int]:
    with sqlite3.connect(store_path) as db:
        return [row[0] for row in db.execute("SELECT id FROM bus_events ORDER BY id")]


def test_each_subscriber_gets_its_topics_in_order(make_bus: BusFactory, recorder: Recorder, store_path: Path) -> None:
    bus = make_bus()
    bus.subscribe("deploy-watcher", ["deploy.*"])
    bus.subscribe("exact", ["backup.done"])
    bus.subscribe("everything", ["*"])
    bus.start()
    published: dict[str, list[int]] = {"deploy": [], "backup": [], "all": []}
    for index in range(300):
        topic = ("deploy.started", "deploy.done", "backup.done", "backup.done.late", "deployment")[index % 5]
        event_id = bus.publish(topic, {"n": index}, "deploy")
        published["all"].append(event_id)
        if topic.startswith("deploy."):
            published["deploy"].append(event_id)
        if topic == "backup.done":
            published["backup"].append(event_id)
    wait_until(lambda: len(recorder.ids("everything")) == 300)
    wait_until(lambda: len(recorder.ids("deploy-watcher")) == len(published["deploy"]))
    wait_until(lambda: len(recorder.ids("exact")) == len(published["backup"]))
    assert recorder.ids("everything") == published["all"]
    assert recorder.ids("deploy-watcher") == published["deploy"]
    assert recorder.ids("exact") == published["backup"]
    first = recorder.received["everything"][0]
    assert (first.topic, first.payload, first.publisher) == ("deploy.started", {"n": 0}, "deploy")
    assert bus.pending("everything") == 0
    assert stat.S_IMODE(store_path.stat().st_mode) == 0o600


def test_a_new_subscriber_gets_no_history_and_resubscribing_keeps_the_cursor(
    make_bus: BusFactory, recorder: Recorder
) -> None:
    bus = make_bus()
    bus.publish("old.news", {}, "a")
    bus.subscribe("late", ["news.*"])
    assert bus.pending("late") == 0
    recorder.down.add("late")
    bus.start()
    kept = bus.publish("news.one", {}, "a")
    bus.subscribe("late", ["news.*", "other"])  # a reload with one more subscription
    assert bus.pending("late") == 1
    recorder.down.discard("late")
    wait_until(lambda: recorder.ids("late") == [kept])
    assert bus.subscribers() == {"late": ("news.*", "other")}
    bus.unsubscribe("late")
    assert bus.subscribers() == {}
    assert bus.pending("late") == 0


def test_nothing_lost_or_skipped_across_a_host_restart(make_bus: BusFactory, recorder: Recorder) -> None:
    first = make_bus()
    first.subscribe("sub", ["t"])
    first.start()
    ids = [first.publish("t", {"n": n}, "pub") for n in range(20)]
    wait_until(lambda: len(recorder.ids("sub")) == 20)
    recorder.down.add("sub")  # the plugin goes down: the next events stay pending
    ids += [first.publish("t", {"n": n}, "pub") for n in range(20, 40)]
    first.stop(timeout=5)
    recorder.down.discard("sub")
    second = make_bus()  # a new host on the same file
    assert second.subscribers() == {"sub": ("t",)}
    assert second.pending("sub") == 20
    ids += [second.publish("t", {"n": n}, "pub") for n in range(40, 50)]
    second.start()
    wait_until(lambda: len(recorder.ids("sub")) == 50)
    assert recorder.ids("sub") == ids  # each exactly once here, in order


def test_a_subscriber_that_was_down_gets_what_it_missed(make_bus: BusFactory, recorder: Recorder) -> None:
    bus = make_bus(max_attempts=2)
    bus.subscribe("rolling", ["deploy.*"])
    bus.start()
    recorder.down.add("rolling")
    ids = [bus.publish("deploy.step", {"n": n}, "deploy") for n in range(30)]
    time.sleep(1.0)  # far more refused attempts than max_attempts: refusals are not handler failures
    assert recorder.attempts["rolling", ids[0]] > 2
    recorder.down.discard("rolling")
    wait_until(lambda: len(recorder.ids("rolling")) == 30)
    assert recorder.ids("rolling") == ids
    assert bus.dead_letters("rolling") == []


def test_a_stuck_subscriber_does_not_delay_another(make_bus: BusFactory, recorder: Recorder) -> None:
    recorder.gates["stuck"] = threading.Event()  # its deliver blocks until the test ends
    bus = make_bus()
    bus.subscribe("stuck", ["work.*"])
    bus.subscribe("fast", ["work.*"])
    bus.start()
    count = 500
    started = time.monotonic()
    ids = [bus.publish("work.item", {"n": n}, "producer") for n in range(count)]
    wait_until(lambda: len(recorder.ids("fast")) == count, timeout=5.0)
    elapsed = time.monotonic() - started
    assert recorder.ids("fast") == ids
    assert elapsed < 3.0, f"the fast subscriber took {elapsed:.2f} s for {count} events"
    assert recorder.ids("stuck") == []
    assert bus.pending("stuck") == count


def test_backlog_overflow_dead_letters_the_oldest_and_says_so_once(make_bus: BusFactory, recorder: Recorder) -> None:
    recorder.gates["stuck"] = threading.Event()
    bus = make_bus(backlog_limit=10)
    bus.subscribe("stuck", ["*"])  # it would get the dead-letter event too: that must not feed on itself
    bus.subscribe("operator", [DEAD_LETTER_TOPIC])
    bus.start()
    ids = [bus.publish("jobs.done", {"n": n}, "jobs") for n in range(35)]
    assert bus.pending("stuck") <= 10
    wait_until(lambda: len(recorder.ids("operator")) >= 1)
    time.sleep(0.2)
    notices = recorder.received["operator"]
    assert len(notices) == 1, [notice.payload for notice in notices]
    notice = notices[0].payload
    assert notice["plugin"] == "stuck"
    assert notice["first_id"] == ids[0]
    assert notice["count"] == notice["last_id"] - notice["first_id"] + 1
    assert "backlog over 10" in notice["reason"]
    assert notice["topics"] == ["jobs.done"]
    assert notices[0].publisher == "sysops"
    dead = bus.dead_letters("stuck", limit=1000)
    dead_ids = [letter.event.id for letter in dead]
    assert dead_ids == sorted(dead_ids) and dead_ids[0] == ids[0]
    assert dead[0].event.payload == {"n": 0}
    recorder.gates["stuck"].set()  # it comes back: it gets the newest, in order, nothing it lost twice
    wait_until(lambda: bus.pending("stuck") == 0)
    received = recorder.ids("stuck")
    assert received == sorted(received)
    assert set(received) | set(dead_ids) >= set(ids)
    assert set(received[1:]).isdisjoint(dead_ids)  # (the first was in its handler when it was dead-lettered)


def test_a_poison_event_is_dead_lettered_after_max_attempts(make_bus: BusFactory, recorder: Recorder) -> None:
    bus = make_bus(max_attempts=3)
    bus.subscribe("picky", ["orders"])
    bus.start()
    before = bus.publish("orders", {"n": 1}, "shop")
    poison = bus.publish("orders", {"n": 2}, "shop")
    recorder.poison.add(poison)
    after = bus.publish("orders", {"n": 3}, "shop")
    wait_until(lambda: recorder.ids("picky") == [before, after])
    assert recorder.attempts["picky", poison] == 3
    (letter,) = bus.dead_letters("picky")
    assert letter.event.id == poison
    assert "handler failed 3 times" in letter.reason and "cannot take event" in letter.reason
    assert bus.dead_letters("nobody") == []


def test_bad_publishes_are_refused_with_one_line(make_bus: BusFactory, store_path: Path) -> None:
    bus = make_bus()
    with pytest.raises(ValueError, match="published by the host") as refused:
        bus.publish("sysops.lifecycle", {}, "deploy")
    assert isinstance(refused.value, BusInputError) and refused.value.code == "permission_denied"
    assert bus.publish("sysops.lifecycle", {"plugin": "x"}, "sysops") > 0
    for topic in ("", "Upper", "-dash", "a" * 129, "a b", 7):
        with pytest.raises(ValueError, match="must match"):
            bus.publish(topic, {}, "deploy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="above 65536"):
        bus.publish("big", "x" * 65_537, "deploy")
    with pytest.raises(ValueError, match="not JSON"):
        bus.publish("odd", {1, 2}, "deploy")
    with pytest.raises(ValueError, match="publisher"):
        bus.publish("fine", {}, "")
    for patterns in (["Deploy"], ["deploy.**"], ["de*"], ["a.*.b"]):
        with pytest.raises(ValueError, match="subscription"):
            bus.subscribe("p", patterns)
    assert len(stored_event_ids(store_path)) == 1  # only the host's


def test_retention_deletes_what_everyone_passed_and_caps_the_log(
    make_bus: BusFactory, recorder: Recorder, store_path: Path
) -> None:
    bus = make_bus(retained_events=50, retention_seconds=3600)  # retention run by hand here
    for n in range(10):
        bus.publish("nobody.listens", {"n": n}, "p")
    bus.retain()
    assert stored_event_ids(store_path) == []  # no subscriber: nothing is kept
    recorder.gates["stuck"] = threading.Event()
    bus.subscribe("quick", ["t"])
    bus.subscribe("stuck", ["rare"])
    bus.subscribe("operator", [DEAD_LETTER_TOPIC])
    bus.start()
    rare = bus.publish("rare", {}, "p")
    ids = [bus.publish("t", {"n": n}, "p") for n in range(120)]
    wait_until(lambda: len(recorder.ids("quick")) == 120)
    wait_until(lambda: bus.pending("quick") == 0)
    bus.retain()
    kept = stored_event_ids(store_path)
    assert [event_id for event_id in kept if event_id <= ids[-1]] == ids[-50:]
    assert len(kept) <= 51  # and the sysops.dead-letter notice published by this retention
    assert rare not in kept
    assert [letter.event.id for letter in bus.dead_letters("stuck")] == [rare]
    assert "more than 50 events behind" in bus.dead_letters("stuck")[0].reason
    wait_until(lambda: len(recorder.ids("operator")) == 1)
    recorder.gates["stuck"].set()
    bus.unsubscribe("stuck")
    time.sleep(0.3)  # the quick subscriber's cursor is saved
    bus.retain()
    passed = stored_event_ids(store_path)
    assert all(event_id > ids[-1] for event_id in passed)  # only the dead-letter notice may be left


def test_lifecycle_events_are_published_when_a_bus_is_registered(
    make_bus: BusFactory, recorder: Recorder, tmp_path: Path
) -> None:
    bus = make_bus()
    bus.subscribe("watcher", ["sysops.lifecycle"])
    bus.start()
    store = Store(tmp_path / "lifecycle.db")
    events.record(store, "deploy", EventKind.LOADED, "before the bus")
    events.set_lifecycle_publisher(bus.publish_lifecycle)
    try:
        events.record(store, "deploy", EventKind.ACTIVE, "1.0.0 (revision 1) serving")
    finally:
        events.set_lifecycle_publisher(None)
    events.record(store, "deploy", EventKind.STOPPING, "after the bus")
    wait_until(lambda: len(recorder.ids("watcher")) == 1)
    time.sleep(0.1)
    (event,) = recorder.received["watcher"]
    assert event.payload == {"plugin": "deploy", "kind": "active", "message": "1.0.0 (revision 1) serving"}
    assert event.publisher == "sysops"
    store.close()
    assert json.dumps(event.payload)


def test_stop_does_not_wait_for_a_stuck_handler_and_the_next_host_delivers_again(
    make_bus: BusFactory, recorder: Recorder, store_path: Path
) -> None:
    gate = recorder.gates["slow"] = threading.Event()
    first = make_bus()
    first.subscribe("slow", ["t"])
    first.start()
    event_id = first.publish("t", {"n": 1}, "pub")
    wait_until(lambda: recorder.attempts.get(("slow", event_id), 0) == 1)
    started = time.monotonic()
    first.stop(timeout=0.5)
    assert time.monotonic() - started < 1.5
    gate.set()  # the old worker's handler returns after its host stopped: it writes nothing any more
    wait_until(lambda: recorder.ids("slow") == [event_id])
    del recorder.gates["slow"]
    second = make_bus()
    assert second.pending("slow") == 1  # its cursor was not saved past the event: delivered again (at least once)
    second.start()
    wait_until(lambda: recorder.ids("slow") == [event_id, event_id])

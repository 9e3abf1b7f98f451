"""The engine view's rules, on a scripted event stream: it answers only while subscribed and for its own
installation, never keeps what was fetched while an event arrived, forgets everything after its refresh
period, and a broken stream makes it stop answering until it subscribes again."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from sysops.runtime.base import LABEL_INSTALLATION, LABEL_PLUGIN
from sysops.runtime.docker.engine_view import EngineView

_END = object()


class _Stream:
    """Events put by the test; `close` ends the iteration."""

    def __init__(self) -> None:
        self.events: queue.Queue[object] = queue.Queue()

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        while (event := self.events.get()) is not _END:
            assert isinstance(event, dict)
            yield event

    def close(self) -> None:
        self.events.put(_END)


class _Engine:
    """Two containers of installation `inst`; counts the calls, and can send an event during an inspect."""

    def __init__(self) -> None:
        self.calls = 0
        self.during_inspect: _Stream | None = None
        self.running = {"c1": True, "c2": True}

    def list_ids(self) -> list[str]:
        self.calls += 1
        return list(self.running)

    def inspect(self, container_id: str) -> dict[str, Any] | None:
        self.calls += 1
        if self.during_inspect is not None:
            stream, self.during_inspect = self.during_inspect, None
            stream.events.put({"Action": "die", "Actor": {"ID": "c2"}})
            time.sleep(0.2)  # the view reads it before this inspect returns
        plugin = "a" if container_id == "c1" else "b"
        labels = {LABEL_INSTALLATION: "inst", LABEL_PLUGIN: plugin}
        return {"Id": container_id, "Config": {"Labels": labels}, "State": {"Running": self.running[container_id]}}


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _subscribed(clock: _Clock | None = None) -> tuple[EngineView, list[_Stream], threading.Event]:
    streams: list[_Stream] = []

    def subscribe(filters: Mapping[str, object]) -> _Stream:
        assert filters["label"] == f"{LABEL_INSTALLATION}=inst" and filters["type"] == "container"
        streams.append(_Stream())
        return streams[-1]

    view = EngineView(subscribe, "inst", refresh_seconds=60.0, clock=clock or time.monotonic)
    stop = threading.Event()
    threading.Thread(target=view.run, args=(stop,), daemon=True).start()
    deadline = time.monotonic() + 5
    while not view.live and time.monotonic() < deadline:
        time.sleep(0.01)
    assert view.live
    return view, streams, stop


def _wait(condition: Any) -> None:
    deadline = time.monotonic() + 5
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert condition()


def test_answers_from_what_it_holds_only_while_subscribed_and_for_its_installation() -> None:
    engine = _Engine()
    view = EngineView(lambda filters: _Stream(), "inst")
    assert view.labelled({LABEL_INSTALLATION: "inst"}, engine) is None  # not subscribed yet
    view, streams, stop = _subscribed()
    try:
        assert view.labelled({LABEL_INSTALLATION: "other"}, engine) is None
        assert [a["Id"] for a in view.labelled({LABEL_INSTALLATION: "inst", LABEL_PLUGIN: "b"}, engine) or []] == ["c2"]
        calls = engine.calls
        assert len(view.labelled({LABEL_INSTALLATION: "inst"}, engine) or []) == 2
        assert engine.calls == calls  # held
        engine.running["c1"] = False
        streams[0].events.put({"Action": "die", "Actor": {"ID": "c1"}})

        def a_running() -> bool:
            return bool(
                (view.labelled({LABEL_INSTALLATION: "inst", LABEL_PLUGIN: "a"}, engine) or [{}])[0]["State"]["Running"]
            )

        _wait(lambda: not a_running())
        assert engine.calls == calls + 1  # c1 alone was asked again
        streams[0].close()  # the stream broke: no answer until subscribed again
        _wait(lambda: len(streams) == 2 and view.live)
        assert view.labelled({LABEL_INSTALLATION: "inst"}, engine) is not None
    finally:
        stop.set()
    _wait(lambda: not view.live)
    assert view.labelled({LABEL_INSTALLATION: "inst"}, engine) is None


def test_what_was_fetched_while_an_event_arrived_is_not_kept() -> None:
    engine = _Engine()
    view, streams, stop = _subscribed()
    try:
        engine.during_inspect = streams[0]
        view.labelled({LABEL_INSTALLATION: "inst"}, engine)
        calls = engine.calls
        view.labelled({LABEL_INSTALLATION: "inst"}, engine)
        assert engine.calls > calls, "an inspect that raced an event was kept"
        calls = engine.calls
        view.labelled({LABEL_INSTALLATION: "inst"}, engine)
        assert engine.calls == calls
    finally:
        stop.set()


def test_everything_is_forgotten_after_the_refresh_period() -> None:
    engine, clock = _Engine(), _Clock()
    view, _streams, stop = _subscribed(clock)
    try:
        view.labelled({LABEL_INSTALLATION: "inst"}, engine)
        calls = engine.calls
        clock.now += 59
        view.labelled({LABEL_INSTALLATION: "inst"}, engine)
        assert engine.calls == calls
        clock.now += 2
        view.labelled({LABEL_INSTALLATION: "inst"}, engine)
        assert engine.calls == calls + 3  # the listing and both inspects
        assert view.derived("c1", "device", lambda: "/dev/x") == "/dev/x"
        assert view.derived("c1", "device", lambda: "/dev/y") == "/dev/x"  # held while c1 has no event
    finally:
        stop.set()


def test_a_derived_value_outlives_the_refresh_while_its_container_is_listed() -> None:
    engine, clock = _Engine(), _Clock()
    view, _streams, stop = _subscribed(clock)
    try:
        view.labelled({LABEL_INSTALLATION: "inst"}, engine)
        assert view.derived("c1", "device", lambda: "/dev/x") == "/dev/x"
        assert view.derived("c2", "device", lambda: "/dev/z") == "/dev/z"
        clock.now += 61
        del engine.running["c2"]
        view.labelled({LABEL_INSTALLATION: "inst"}, engine)  # the refresh: listing and inspects asked again
        assert view.derived("c1", "device", lambda: "/dev/y") == "/dev/x"  # a volume inspect per pass saved
        assert view.derived("c2", "device", lambda: "/dev/w") == "/dev/w"  # c2 left the listing: asked again
    finally:
        stop.set()


class _CountingLookups(dict[str, Any]):
    """The view's held inspect JSON, counting the lookups of it."""

    lookups = 0

    def get(self, key: str, default: Any = None) -> Any:
        type(self).lookups += 1
        return super().get(key, default)


def test_a_selector_asked_again_is_answered_without_going_over_the_containers() -> None:
    engine = _Engine()
    view, streams, stop = _subscribed()
    selector = {LABEL_INSTALLATION: "inst", LABEL_PLUGIN: "a"}
    try:
        assert [a["Id"] for a in view.labelled(selector, engine) or []] == ["c1"]
        view._attrs = _CountingLookups(view._attrs)  # a pass asks once per plugin: n plugins, n containers each
        _CountingLookups.lookups = 0
        assert [a["Id"] for a in view.labelled(selector, engine) or []] == ["c1"]
        assert _CountingLookups.lookups == 0
        view.labelled(selector, engine).clear()  # type: ignore[union-attr]  # a caller's list is its own
        assert [a["Id"] for a in view.labelled(selector, engine) or []] == ["c1"]
        engine.running["c1"] = False
        streams[0].events.put({"Action": "die", "Actor": {"ID": "c1"}})
        _wait(lambda: not (view.labelled(selector, engine) or [{}])[0]["State"]["Running"])  # the event drops it
    finally:
        stop.set()


def test_a_container_in_transition_is_asked_again_each_time() -> None:
    engine = _Engine()
    real_inspect = engine.inspect

    def restarting(container_id: str) -> dict[str, Any] | None:
        attrs = real_inspect(container_id)
        assert attrs is not None
        # The engine's policy restart may fail to start it: it ends stopped without an event.
        return {**attrs, "State": {"Running": True, "Restarting": container_id == "c1"}}

    engine.inspect = restarting  # type: ignore[method-assign]
    view, _streams, stop = _subscribed()
    try:
        view.labelled({LABEL_INSTALLATION: "inst"}, engine)
        calls = engine.calls
        view.labelled({LABEL_INSTALLATION: "inst"}, engine)
        assert engine.calls == calls + 1, "the restarting container (alone) is inspected again"
        assert view.held("c1") is None and view.held("c2") is not None
    finally:
        stop.set()


def test_a_stop_while_subscribing_ends_the_stream_it_got() -> None:
    stop = threading.Event()
    streams: list[_Stream] = []

    def subscribe(filters: Mapping[str, object]) -> _Stream:
        stop.set()  # the server stops while the engine answers the subscription...
        time.sleep(0.3)  # ...and the view's closer ran before there was a stream to close
        streams.append(_Stream())
        return streams[-1]

    view = EngineView(subscribe, "inst")
    runner = threading.Thread(target=view.run, args=(stop,), daemon=True)
    runner.start()
    runner.join(5)
    assert not runner.is_alive(), "the view's thread waited on a stream nobody will close"
    assert not view.live

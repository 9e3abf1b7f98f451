"""The informer (runtime/kubernetes/informer.py) over a scripted API: it lists then watches from the list's
resourceVersion, lists again on 410 Gone (either way the API says it) and delivers only the difference,
resumes a watch that ended from the last version, resyncs every cached object on schedule, backs off and
lists again after an error, and returns when stopped."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from sysops.runtime.kubernetes import informer as informer_module
from sysops.runtime.kubernetes.informer import Informer


def _obj(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": version}}


class Response:
    def __init__(self, listed: dict[str, Any]) -> None:
        self.data = json.dumps(listed).encode()


class ScriptedApi:
    """Lists return the next of `lists`; each watch plays the next script (events, or an exception to raise)."""

    def __init__(self, lists: list[list[dict[str, Any]]], watches: list[list[Any]], stop: threading.Event) -> None:
        self.lists = lists
        self.watches = watches
        self.stop = stop
        self.listed = 0
        self.watched_from: list[str] = []

    def list_call(self, *args: Any, **kwargs: Any) -> Response:
        items = self.lists[min(self.listed, len(self.lists) - 1)]
        self.listed += 1
        version = max((int(i["metadata"]["resourceVersion"]) for i in items), default=1)
        return Response({"items": items, "metadata": {"resourceVersion": str(version)}})

    def watch(self) -> Any:
        api = self

        class Watch:
            def stream(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[Any]:
                api.watched_from.append(kwargs["resource_version"])
                if not api.watches:
                    api.stop.set()
                    return
                for step in api.watches.pop(0):
                    if isinstance(step, Exception):
                        raise step
                    yield step

            def stop(self) -> None:
                pass

        return Watch()


def _run(api: ScriptedApi, stop: threading.Event, **options: Any) -> list[tuple[str, str, str]]:
    seen: list[tuple[str, str, str]] = []
    informer = Informer(
        "thing",
        api.list_call,
        lambda kind, obj: seen.append((kind, obj["metadata"]["name"], obj["metadata"]["resourceVersion"])),
        watch_factory=api.watch,
        **options,
    )
    informer.run(stop)
    return seen


def test_410_gone_lists_again_and_delivers_only_the_difference() -> None:
    stop = threading.Event()
    first = [_obj("a", "10"), _obj("b", "11")]
    second = [_obj("a", "12"), _obj("c", "14")]  # a changed while the watch was gone, b deleted, c added
    watches: list[list[Any]] = [
        [{"type": "MODIFIED", "raw_object": _obj("b", "12")}, ApiException(status=410, reason="Gone")],
        [{"type": "ERROR", "raw_object": {"code": 410, "reason": "Expired", "message": "too old"}}],
    ]
    api = ScriptedApi([first, second, second], watches, stop)
    seen = _run(api, stop)
    assert seen == [
        ("ADDED", "a", "10"),
        ("ADDED", "b", "11"),
        ("MODIFIED", "b", "12"),
        ("DELETED", "b", "12"),
        ("MODIFIED", "a", "12"),
        ("ADDED", "c", "14"),
    ]  # the third list (after the ERROR 410) found nothing new
    assert api.listed == 3
    assert api.watched_from == ["11", "14", "14"]


def test_a_watch_that_ends_resumes_from_the_last_version_without_listing() -> None:
    stop = threading.Event()
    watches: list[list[Any]] = [
        [{"type": "ADDED", "raw_object": _obj("b", "21")}],
        [{"type": "BOOKMARK", "raw_object": {"metadata": {"resourceVersion": "30"}}}],
        [],
    ]
    api = ScriptedApi([[_obj("a", "20")]], watches, stop)
    seen = _run(api, stop)
    assert seen == [("ADDED", "a", "20"), ("ADDED", "b", "21")]
    assert api.listed == 1
    assert api.watched_from == ["20", "21", "30", "30"]


def test_resync_delivers_every_cached_object_again() -> None:
    stop = threading.Event()
    now = [0.0]

    def tick() -> float:
        now[0] += 1.0
        return now[0]

    watches: list[list[Any]] = [[{"type": "MODIFIED", "raw_object": _obj("a", "31")}], [], []]
    api = ScriptedApi([[_obj("a", "30"), _obj("b", "30")]], watches, stop)
    seen = _run(api, stop, resync_seconds=3.0, clock=tick)
    syncs = [event for event in seen if event[0] == "SYNC"]
    assert syncs and syncs[:2] == [("SYNC", "a", "31"), ("SYNC", "b", "30")]
    assert api.listed == 1


def test_errors_back_off_list_again_and_are_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(informer_module, "BACKOFF_SECONDS", (0.01, 0.02))
    stop = threading.Event()
    lost = ConnectionResetError("connection reset by peer")
    api = ScriptedApi([[_obj("a", "1")]], [[lost], [lost], [lost]], stop)
    with caplog.at_level(logging.WARNING, logger="sysops.informer"):
        seen = _run(api, stop)
    assert api.listed == 4  # the first list, and one after each error
    assert seen == [("ADDED", "a", "1")]
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1 and "connection reset by peer" in failures[0].getMessage()


def test_a_set_stop_event_ends_run_at_once() -> None:
    stop = threading.Event()
    stop.set()
    api = ScriptedApi([[_obj("a", "1")]], [[{"type": "ADDED", "raw_object": _obj("b", "2")}]], stop)
    assert _run(api, stop) == []
    assert api.listed == 0


def test_stop_during_a_watch_ends_it_after_the_current_event() -> None:
    stop = threading.Event()
    events = [{"type": "ADDED", "raw_object": _obj(name, str(n))} for n, name in enumerate("bcd", start=2)]
    api = ScriptedApi([[_obj("a", "1")]], [events], stop)
    seen: list[str] = []

    def handler(kind: str, obj: dict[str, Any]) -> None:
        seen.append(obj["metadata"]["name"])
        if obj["metadata"]["name"] == "b":
            stop.set()

    Informer("thing", api.list_call, handler, watch_factory=api.watch).run(stop)
    assert seen == ["a", "b"]


def test_an_event_a_handler_failed_on_is_delivered_again_by_the_next_list() -> None:
    stop = threading.Event()
    api = ScriptedApi(
        [[_obj("a", "10"), _obj("b", "11")], [_obj("a", "10"), _obj("b", "12")]],
        [[{"type": "MODIFIED", "raw_object": _obj("b", "12")}]],
        stop,
    )
    seen: list[tuple[str, str]] = []

    def handler(kind: str, obj: Any) -> None:
        seen.append((kind, obj["metadata"]["resourceVersion"]))
        if seen.count(("MODIFIED", "12")) == 1:
            raise RuntimeError("the handler failed once")

    Informer("thing", api.list_call, handler, watch_factory=api.watch).run(stop)
    assert seen == [("ADDED", "10"), ("ADDED", "11"), ("MODIFIED", "12"), ("MODIFIED", "12")]

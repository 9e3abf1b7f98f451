"""A host that stops unhooks only its own lifecycle publisher: one started after it in the same process (tests
serve several hosts in one process) keeps publishing lifecycle events (`sysops.lifecycle`, restart metrics)."""

from __future__ import annotations

import threading
from pathlib import Path

from sysops.core import events
from sysops.core.events import EventKind
from sysops.services.hosting import start_hosting
from sysops.settings import Settings
from sysops.store import Store


def test_stopping_an_older_host_keeps_the_newer_hosts_publisher(tmp_path: Path) -> None:
    older_stop, newer_stop = threading.Event(), threading.Event()
    older = start_hosting(Settings(home=tmp_path / "older"), "docker", None, older_stop)
    newer = start_hosting(Settings(home=tmp_path / "newer"), "docker", None, newer_stop)
    try:
        older_stop.set()
        older.wake()
        assert older.closed.wait(5)
        store = Store(Settings(home=tmp_path / "newer").store_path)
        try:
            events.record(store, "keeper", EventKind.RESTARTED, "instance x restarted")
        finally:
            store.close()
        assert 'sysops_restarts_total{plugin="keeper"} 1.0' in newer.services.metrics.render().decode()
    finally:
        newer_stop.set()
        newer.wake()
        assert newer.closed.wait(5)
    assert events._lifecycle_publisher is None  # the last host to stop unhooked its own


def test_clear_leaves_another_publisher_in_place() -> None:
    seen: list[str] = []

    def first(plugin: str, kind: str, message: str) -> None:
        seen.append("first")

    def second(plugin: str, kind: str, message: str) -> None:
        seen.append("second")

    events.set_lifecycle_publisher(first)
    events.set_lifecycle_publisher(second)
    events.clear_lifecycle_publisher(first)
    assert events._lifecycle_publisher is second
    events.clear_lifecycle_publisher(second)
    assert events._lifecycle_publisher is None

"""The call socket's route cache: a route is read once, and again after any commit to the store by anyone."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from sysops.core.thread_stores import ThreadStores
from sysops.host.route_cache import RouteCache
from sysops.store import InstanceRecord, Route, Store


def _instance(instance_id: str) -> InstanceRecord:
    return InstanceRecord(instance_id, "echo", 1, "1.0.0", instance_id, "img", "img", f"unix:///{instance_id}", "", 0.0)


@pytest.fixture
def writer(tmp_path: Path) -> Store:
    """The orchestrator's connection, which writes (the cache reads through others)."""
    store = Store(tmp_path / "state.db")
    first = _instance("first")
    store.add_instance(first)
    store.switch("echo", add=[first], remove=[], routes={"echo": b""})
    return store


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The commands looked up in the store itself."""
    looked: list[str] = []
    original = Store.route

    def counted(self: Store, command: str) -> Route | None:
        looked.append(command)
        return original(self, command)

    monkeypatch.setattr(Store, "route", counted)
    return looked


def test_a_route_is_read_once_while_nothing_commits(writer: Store, lookups: list[str]) -> None:
    cache = RouteCache(ThreadStores(writer.path))
    for _ in range(3):
        route = cache.route("echo")
        assert route is not None and route.endpoints == ("unix:///first",)
    assert lookups == ["echo"]


def test_a_roll_committed_by_another_connection_is_seen_by_the_next_call(writer: Store, lookups: list[str]) -> None:
    cache = RouteCache(ThreadStores(writer.path))
    assert cache.route("echo") is not None
    second = _instance("second")
    writer.add_instance(second)
    writer.switch("echo", add=[second], remove=[_instance("first")])
    route = cache.route("echo")
    assert route is not None and route.endpoints == ("unix:///second",)
    writer.set_shares("echo", {"second": 1.0})  # a rollout analysis's weights are a commit too
    assert cache.route("echo") is not None
    assert lookups == ["echo", "echo", "echo"]


def test_a_command_without_a_route_finds_the_one_a_later_up_adds(writer: Store) -> None:
    cache = RouteCache(ThreadStores(writer.path))
    assert cache.route("greet") is None
    assert cache.route("greet") is None
    writer.switch("echo", add=[], remove=[], routes={"echo": b"", "greet": b""})
    route = cache.route("greet")
    assert route is not None and route.plugin == "echo"


def test_a_store_file_replaced_under_the_host_is_read_afresh(writer: Store, tmp_path: Path) -> None:
    cache = RouteCache(ThreadStores(writer.path))
    assert cache.route("echo") is not None
    writer.close()
    os.unlink(writer.path)
    fresh = Store(writer.path)  # a new, empty store at the same path
    fresh.db  # noqa: B018 - creates it
    assert cache.route("echo") is None


def test_each_thread_keeps_its_own(writer: Store, lookups: list[str]) -> None:
    cache = RouteCache(ThreadStores(writer.path))
    assert cache.route("echo") is not None
    found: list[Route | None] = []
    other = threading.Thread(target=lambda: found.append(cache.route("echo")))
    other.start()
    other.join()
    assert found[0] is not None and found[0].endpoints == ("unix:///first",)
    assert lookups == ["echo", "echo"]  # the other thread's connection read it itself

"""The call socket's route cache: a route is read once, and again after a write by the host itself (at once) or by
another process (at most RECHECK_SECONDS later, without asking the store in between)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from sysops import store as store_module
from sysops.core.thread_stores import ThreadStores
from sysops.host import route_cache
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


@pytest.fixture
def other_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's writes look like another process's: this process's routing_changes() stays as it was."""
    monkeypatch.setattr(route_cache, "routing_changes", lambda: 0)


@pytest.fixture
def no_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every call asks the store whether anything committed (RECHECK_SECONDS is 0)."""
    monkeypatch.setattr(route_cache, "RECHECK_SECONDS", 0.0)


def _roll_is_seen(writer: Store, cache: RouteCache) -> None:
    """Roll echo from instance first to second; the cache's next lookup names second."""
    second = _instance("second")
    writer.add_instance(second)
    writer.switch("echo", add=[second], remove=[_instance("first")])
    route = cache.route("echo")
    assert route is not None and route.endpoints == ("unix:///second",)


def test_a_roll_written_by_this_process_is_seen_by_the_next_call(writer: Store, lookups: list[str]) -> None:
    cache = RouteCache(ThreadStores(writer.path))
    assert cache.route("echo") is not None
    _roll_is_seen(writer, cache)
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


@pytest.mark.usefixtures("other_process", "no_window")
def test_a_roll_committed_by_another_process_is_seen_once_the_store_is_asked(writer: Store, lookups: list[str]) -> None:
    cache = RouteCache(ThreadStores(writer.path))
    assert cache.route("echo") is not None
    assert cache.route("echo") is not None
    _roll_is_seen(writer, cache)
    assert lookups == ["echo", "echo"]


@pytest.mark.usefixtures("other_process")
def test_within_the_window_another_process_s_write_is_not_asked_for(
    writer: Store, lookups: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stores = ThreadStores(writer.path)
    cache = RouteCache(stores)
    assert cache.route("echo") is not None
    asked: list[int] = []
    original = ThreadStores.get
    monkeypatch.setattr(ThreadStores, "get", lambda self: asked.append(1) or original(self))
    writer.set_shares("echo", {"first": 1.0})
    for _ in range(5):
        assert cache.route("echo") is not None
    assert asked == [] and lookups == ["echo"]  # no system call: neither the file's identity nor data_version
    monkeypatch.setattr(route_cache.time, "monotonic", lambda: 1e12)  # the window is over
    assert cache.route("echo") is not None
    assert asked == [1] and lookups == ["echo", "echo"]


def test_fresh_reads_the_store_and_drops_what_was_kept(writer: Store, lookups: list[str]) -> None:
    cache = RouteCache(ThreadStores(writer.path))
    assert cache.route("echo") is not None
    assert cache.fresh("echo") is not None
    assert cache.route("echo") is not None
    assert lookups == ["echo", "echo"]


@pytest.mark.parametrize(
    "write",
    [
        lambda store: store.add_instance(_instance("third")),
        lambda store: store.delete_instance("first"),
        lambda store: store.claim(_instance("first"), "fingerprint"),
        lambda store: store.switch("echo", add=[], remove=[]),
        lambda store: store.deactivate("echo"),
        lambda store: store.set_shares("echo", {}),
        lambda store: store.delete_plugin("echo"),
    ],
    ids=["add_instance", "delete_instance", "claim", "switch", "deactivate", "set_shares", "delete_plugin"],
)
def test_every_write_of_what_routes_read_changes_routing_changes(writer: Store, write: object) -> None:
    before = store_module.routing_changes()
    write(writer)  # type: ignore[operator]
    assert store_module.routing_changes() != before


@pytest.mark.usefixtures("no_window")
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

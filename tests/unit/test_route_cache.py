"""host/route_cache.py: a call-socket worker reads a route from the store once, until anyone commits again.

Real SQLite stores in a temporary directory: the worker's connection and another one (another thread of the
host, or another process) that switches the routes, as a roll does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sysops.host.route_cache import RouteCache
from sysops.store import Store


class CountingStore(Store):
    """A store that counts its route queries."""

    queries = 0

    def route(self, command: str):  # type: ignore[no-untyped-def]
        self.queries += 1
        return super().route(command)


@pytest.fixture
def stores(tmp_path: Path) -> tuple[CountingStore, Store]:
    path = tmp_path / "home" / "state.db"
    other = Store(path)
    other.save_plugin("hello", "/src/hello", "docker", {})
    other.switch("hello", add=[], remove=[], routes={"greet": b"v1"})
    return CountingStore(path), other


def test_a_route_is_read_once_while_nothing_is_committed(stores: tuple[CountingStore, Store]) -> None:
    worker, _ = stores
    cache = RouteCache()
    routes = [cache.route(worker, "greet") for _ in range(5)]
    assert [route.spec if route else None for route in routes] == [b"v1"] * 5
    assert cache.route(worker, "nothing") is None
    assert cache.route(worker, "nothing") is None
    assert worker.queries == 2


def test_a_commit_by_another_connection_is_seen_by_the_next_lookup(stores: tuple[CountingStore, Store]) -> None:
    worker, other = stores
    cache = RouteCache()
    assert cache.route(worker, "greet") is not None
    other.switch("hello", add=[], remove=[], routes={"greet": b"v2", "wave": b"w"})
    route, new = cache.route(worker, "greet"), cache.route(worker, "wave")
    assert route is not None and route.spec == b"v2"
    assert new is not None and new.spec == b"w"
    other.switch("hello", add=[], remove=[], routes={})
    assert cache.route(worker, "greet") is None


def test_another_store_connection_is_read_afresh(stores: tuple[CountingStore, Store], tmp_path: Path) -> None:
    worker, _ = stores
    cache = RouteCache()
    assert cache.route(worker, "greet") is not None
    replaced = CountingStore(tmp_path / "elsewhere" / "state.db")  # e.g. the store file was replaced
    assert cache.route(replaced, "greet") is None
    assert replaced.queries == 1

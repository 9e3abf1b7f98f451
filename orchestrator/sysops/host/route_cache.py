"""The routes a call-socket worker read from the store, kept until anyone commits to the store again.

Reading a route on the routed-call path cost ~0.1 ms of the host's CPU per call under load (a query joining
routes and instances; throughput through the host is bound by its CPU, issue 15 item 4). SQLite's
`PRAGMA data_version` changes, on a connection, whenever another connection (any thread or process) has
committed since it was last asked, and costs a fraction of that query: a worker keeps the routes it read
while it reads the same version on the same store connection, so a roll, a `plugin down` or a new route is
seen by the next call exactly as before. Each worker thread has its own store connection (core/thread_stores.py)
and so its own cache; a worker only reads the store through it.
"""

from __future__ import annotations

import threading

from sysops.store import Route, Store

#: Commands kept per worker at most (the cache starts again when full).
ROUTES_KEPT = 1024


class RouteCache:
    """Routes by command, per thread, valid while its store connection reads the same data version."""

    def __init__(self) -> None:
        self._local = threading.local()

    def route(self, store: Store, command: str) -> Route | None:
        """`store.route(command)`, from the cache while nothing was committed to the store since it was read."""
        local = self._local
        version = store.db.execute("PRAGMA data_version").fetchone()[0]
        routes: dict[str, Route | None] | None = getattr(local, "routes", None)
        if routes is None or local.store is not store or local.version != version or len(routes) >= ROUTES_KEPT:
            routes = local.routes = {}
            local.store, local.version = store, version
        if command in routes:
            return routes[command]
        route = routes[command] = store.route(command)
        return route

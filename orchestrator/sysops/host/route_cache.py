"""The routes the call socket's workers looked up, kept until anything commits to the store.

Looking a command's route up in the store (a join of routes, instances and shares, made into a Route) was
the host's largest cost per routed call outside gRPC under load (about 7 % of its time at 8 concurrent
clients). SQLite says whether another connection committed since it last asked (PRAGMA data_version) for a
fraction of that, so each worker keeps the routes it read until then: a roll, a restart, `plugin down` or a
rollout analysis's new shares is a commit, and the next call reads afresh. This holds only for connections that
never write (a connection's own commits leave its data_version alone): the call socket's (core/thread_stores.py)
only read. Kept per thread, as the connections are.
"""

from __future__ import annotations

import threading

from sysops.core.thread_stores import ThreadStores
from sysops.store import Route

#: Commands whose route one worker keeps (all are dropped when it is full).
ROUTES_KEPT = 1024


class RouteCache:
    """Routes by command, read through this thread's store connection and kept until the store changes."""

    def __init__(self, stores: ThreadStores) -> None:
        self._stores = stores
        self._local = threading.local()

    def route(self, command: str) -> Route | None:
        """The route of `command` now (None when no plugin provides it), as the store has it."""
        store = self._stores.get()
        version = store.db.execute("PRAGMA data_version").fetchone()[0]
        kept: tuple[object, int, dict[str, Route | None]] | None = getattr(self._local, "kept", None)
        if kept is None or kept[0] is not store or kept[1] != version:
            kept = self._local.kept = (store, version, {})
        routes = kept[2]
        if command not in routes:
            if len(routes) >= ROUTES_KEPT:
                routes.clear()
            routes[command] = store.route(command)
        return routes[command]

"""The routes the call socket's workers looked up, kept until anything commits to the store.

Looking a command's route up in the store (a join of routes, instances and shares, made into a Route) was
the host's largest cost per routed call outside gRPC under load (about 7 % of its time at 8 concurrent
clients). SQLite says whether another connection committed since it last asked (PRAGMA data_version) for a
fraction of that, so each worker keeps the routes it read until then: a roll, a restart, `plugin down` or a
rollout analysis's new shares is a commit, and a call after it reads afresh. This holds only for connections
that never write (a connection's own commits leave its data_version alone): the call socket's
(core/thread_stores.py) only read. Kept per thread, as the connections are.

Even asking is not free under load: the question (and the check that the store file was not replaced) are
system calls, each of which hands the host's interpreter lock to another thread and waits to get it back, and a
routed call made about ten such hand-offs. So a worker asks at most every RECHECK_SECONDS, and in between only
compares store.routing_changes(), which the host's own writes change (the host makes the rolls, restarts and
rollout analyses: they are seen by the next call). A write by another process is seen within RECHECK_SECONDS; a
call in that window that goes to an instance already retired is refused before it runs, and the router sends it
again after `fresh` (a read of the store itself, which also drops what this worker kept).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from sysops.core.thread_stores import ThreadStores
from sysops.store import Route, Store, routing_changes

#: Commands whose route one worker keeps (all are dropped when it is full).
ROUTES_KEPT = 1024
#: How long a worker uses the routes it kept without asking the store whether anything committed.
RECHECK_SECONDS = 0.05


@dataclass
class _Kept:
    """One worker's routes, as of `version` of `store` (which it asked at `checked`) and this process's `changes`."""

    store: Store
    version: int
    changes: int
    checked: float
    routes: dict[str, Route | None] = field(default_factory=dict)


class RouteCache:
    """Routes by command, read through this thread's store connection and kept until the store changes."""

    def __init__(self, stores: ThreadStores) -> None:
        self._stores = stores
        self._local = threading.local()

    def route(self, command: str) -> Route | None:
        """The route of `command` (None when none provides it): as of this process's last write, and of other
        processes' writes at most RECHECK_SECONDS ago."""
        kept: _Kept | None = getattr(self._local, "kept", None)
        now, changes = time.monotonic(), routing_changes()
        if kept is None or kept.changes != changes or now - kept.checked >= RECHECK_SECONDS:
            store = self._stores.get()
            version = store.db.execute("PRAGMA data_version").fetchone()[0]
            if kept is None or kept.store is not store or kept.version != version or kept.changes != changes:
                kept = self._local.kept = _Kept(store, version, changes, now)
            kept.checked = now
        routes = kept.routes
        if command not in routes:
            if len(routes) >= ROUTES_KEPT:
                routes.clear()
            routes[command] = kept.store.route(command)
        return routes[command]

    def fresh(self, command: str) -> Route | None:
        """The route of `command` read from the store now (a call refused by an instance a roll retires asks this);
        what this worker kept is dropped, so its next calls read afresh too."""
        self._local.kept = None
        return self.route(command)

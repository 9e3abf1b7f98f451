"""Open plugin clients kept across routed calls, so a call through the host does not pay for a new connection.

Keyed by endpoint: a client is replaced when the instance behind its endpoint changes (another token),
forgotten when a call through it fails (the instance may be gone) and when its endpoint is no longer routed
(`retain`), and the least recently used one goes when more than `limit` are open. gRPC channels are
thread-safe: concurrent calls share one. A forgotten client is never closed by the pool: another call may
still be streaming through it (closing it failed that call with "Channel closed!" when a roll changed the
routes under load); its channel closes when the last call using it lets it go. Their Invoke streams are
not read single-threaded (grpc's SingleThreadedUnaryStream): an invocation returns at its result without
reading the stream to its end, and such a call then stayed referenced in the channel (~18 KB a call).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from sysops.core.client import PluginClient

#: Clients kept open at most (one per instance endpoint): fifty plugins of several replicas each fit.
DEFAULT_LIMIT = 1024


class ClientPool:
    """Plugin clients by endpoint."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._clients: OrderedDict[str, tuple[str, PluginClient]] = OrderedDict()

    def client(self, endpoint: str, plugin: str, token: str) -> PluginClient:
        """The open client of `endpoint` for the instance holding `token` (a new one if the instance changed)."""
        with self._lock:
            held = self._clients.get(endpoint)
            if held is not None and held[0] == token and held[1].plugin == plugin:
                self._clients.move_to_end(endpoint)
                return held[1]
            client = PluginClient(endpoint, plugin, token)  # a replaced one is not closed (module docstring)
            self._clients[endpoint] = (token, client)
            while len(self._clients) > self._limit:
                self._clients.popitem(last=False)
        return client

    def drop(self, endpoint: str) -> None:
        """Forget the client of `endpoint` (a call through it failed: its instance may be gone)."""
        with self._lock:
            self._clients.pop(endpoint, None)

    def retain(self, endpoints: set[str]) -> None:
        """Forget the clients of endpoints no route names any more."""
        with self._lock:
            gone = [endpoint for endpoint in self._clients if endpoint not in endpoints]
            for endpoint in gone:
                del self._clients[endpoint]

    def endpoints(self) -> set[str]:
        """The endpoints with an open client."""
        with self._lock:
            return set(self._clients)

    def close(self) -> None:
        """Forget every client."""
        self.retain(set())

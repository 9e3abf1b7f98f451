"""Open plugin clients kept across routed calls, so a call through the host does not pay for a new connection.

Keyed by endpoint: a client is replaced when the instance behind its endpoint changes (another token),
closed when a call through it fails (the instance may be gone) and when its endpoint is no longer routed
(`retain`), and the least recently used one goes when more than `limit` are open. gRPC channels are
thread-safe: concurrent calls share one. Their Invoke streams are not read single-threaded
(grpc's SingleThreadedUnaryStream): an invocation returns at its result without reading the stream to its
end, and such a call then stayed referenced in the channel (~18 KB a call, never freed).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from sysops.core.client import PluginClient

#: Clients kept open at most (one per instance endpoint).
DEFAULT_LIMIT = 64


class ClientPool:
    """Plugin clients by endpoint."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._clients: OrderedDict[str, tuple[str, PluginClient]] = OrderedDict()

    def client(self, endpoint: str, plugin: str, token: str) -> PluginClient:
        """The open client of `endpoint` for the instance holding `token` (a new one if the instance changed)."""
        stale: list[PluginClient] = []
        with self._lock:
            held = self._clients.get(endpoint)
            if held is not None and held[0] == token and held[1].plugin == plugin:
                self._clients.move_to_end(endpoint)
                return held[1]
            if held is not None:
                stale.append(held[1])
            client = PluginClient(endpoint, plugin, token)
            self._clients[endpoint] = (token, client)
            while len(self._clients) > self._limit:
                stale.append(self._clients.popitem(last=False)[1][1])
        for old in stale:
            old.close()
        return client

    def drop(self, endpoint: str) -> None:
        """Close the client of `endpoint` (a call through it failed: its instance may be gone)."""
        with self._lock:
            held = self._clients.pop(endpoint, None)
        if held is not None:
            held[1].close()

    def retain(self, endpoints: set[str]) -> None:
        """Close the clients of endpoints no route names any more."""
        with self._lock:
            gone = [endpoint for endpoint in self._clients if endpoint not in endpoints]
            closing = [self._clients.pop(endpoint)[1] for endpoint in gone]
        for client in closing:
            client.close()

    def endpoints(self) -> set[str]:
        """The endpoints with an open client."""
        with self._lock:
            return set(self._clients)

    def close(self) -> None:
        """Close every client."""
        self.retain(set())

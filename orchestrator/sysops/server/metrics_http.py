"""`/metrics` of `sysops serve --metrics-port PORT`: the host's Prometheus text over plain HTTP for a scraper.

prometheus_client serves it (its WSGI app and server: content negotiation, `name[]` filters, gzip), from
the registry of the host services' metrics (host metrics and every plugin's). The services are attached to
the control server after it starts, so the collector looks them up on each scrape; before that a scrape
is an empty page, not an error. The endpoint has no token (scrapers rarely carry one): it listens on its
own port so a NetworkPolicy or firewall can limit who reaches it (docs/cli.md#sysops-serve).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from sysops.server.operator_api import HostServicesLink


class LinkedCollector:
    """A prometheus_client collector that reads whatever metrics registry the host services have now."""

    def __init__(self, link: Callable[[], HostServicesLink]) -> None:
        self._link = link

    def collect(self) -> Iterable[Any]:
        """The families of the host services' registry (none while no services are attached)."""
        services = self._link().services
        return [] if services is None else services.metrics.registry.collect()

    def restricted_registry(self, names: Iterable[str]) -> Any:
        """Only the named families (`/metrics?name[]=...`)."""
        services = self._link().services
        if services is None:
            from prometheus_client.registry import CollectorRegistry

            return CollectorRegistry()
        return services.metrics.registry.restricted_registry(names)


class MetricsEndpoint:
    """A running `/metrics` HTTP server; `stop` closes it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self.server = server
        self.thread = thread
        self.port: int = server.server_port

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_endpoint(address: str, port: int, link: Callable[[], HostServicesLink]) -> MetricsEndpoint:
    """Serve the host's metrics at http://ADDRESS:PORT/metrics (port 0: any free port, see `.port`)."""
    from prometheus_client.exposition import start_wsgi_server

    server, thread = start_wsgi_server(port, address, registry=LinkedCollector(link))
    return MetricsEndpoint(server, thread)

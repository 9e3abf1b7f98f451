"""`sysops serve` and `sysops context ...`: run the orchestrator as a server, and point the CLI at one."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Annotated

import typer

from sysops.cli.output import emit
from sysops.cli.plugin_cmd import Output, OutputOption, RuntimeName, progress
from sysops.errors import UsageError

context_app = typer.Typer(
    help="Choose which orchestrator the CLI talks to (like kubectl contexts).", no_args_is_help=True
)


def serve(
    listen: Annotated[str, typer.Option("--listen", help="host:port of the gRPC control API")] = "127.0.0.1:7443",
    runtime: Annotated[RuntimeName, typer.Option("--runtime", help="Where plugins run")] = RuntimeName.DOCKER,
    max_followers: Annotated[
        int,
        typer.Option(
            "--max-followers",
            envvar="SYSOPS_SERVER_MAX_FOLLOWERS",
            help="Followed streams (`plugin logs -f`, `events -f`) served at once; more are refused",
        ),
    ] = 64,
    leader_elect: Annotated[
        bool,
        typer.Option(
            "--leader-elect",
            envvar="SYSOPS_LEADER_ELECT",
            help="Serve only while holding the Lease <service>-leader (Kubernetes HA replicas): wait for it before "
            "restoring state or listening; exit 5 if it is lost",
        ),
    ] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            envvar="SYSOPS_METRICS_PORT",
            min=0,
            max=65535,
            help="Also serve the host's Prometheus metrics over HTTP at :PORT/metrics (on the --listen host; "
            "no token: keep the port to the scraper). Off by default",
        ),
    ] = None,
    tls_cert: Annotated[
        str | None,
        typer.Option(
            "--tls-cert",
            envvar="SYSOPS_TLS_CERT",
            help="PEM certificate (chain) to serve TLS with on --listen; with --tls-key. Plaintext without",
        ),
    ] = None,
    tls_key: Annotated[
        str | None, typer.Option("--tls-key", envvar="SYSOPS_TLS_KEY", help="PEM private key of --tls-cert")
    ] = None,
) -> None:
    """Run the orchestrator as a long-lived server with an authenticated gRPC control API."""
    from sysops.server.service import serve as start_server
    from sysops.server.tls import load_server_tls

    token = os.environ.get("SYSOPS_SERVER_TOKEN", "")
    if len(token) < 16:
        raise UsageError("SYSOPS_SERVER_TOKEN must be set to a secret of at least 16 characters")
    tls = load_server_tls(tls_cert, tls_key)
    logging.basicConfig(format="sysops serve: %(levelname)s %(message)s", level=logging.INFO)
    stopped = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    elector = None
    if leader_elect:  # before the store is opened, pods adopted or the port opened
        from sysops.server.leader import become_leader

        elector = become_leader(stopped)
        if elector is None:
            return  # stopped while standby
    server = start_server(listen, runtime.value, token, max_followers=max_followers, metrics_port=metrics_port, tls=tls)
    progress(f"sysops control API on {listen} (runtime {runtime.value}, {'TLS' if tls else 'plaintext'})")
    if server.metrics is not None:
        progress(f"metrics at http://{listen.rpartition(':')[0]}:{server.metrics.port}/metrics")
    stopped.wait()
    server.stop(grace=5).wait()
    if elector is not None:
        elector.release()  # after the drain: the standby takes over at once


@context_app.command("ls")
def context_ls(output: OutputOption = Output.TEXT) -> None:
    """List contexts; the current one is marked with *, and `tls` says how each verifies its server."""
    from sysops.cli import contexts

    emit(contexts.list_contexts(), output, ["current", "name", "server", "tls"])


@context_app.command("set")
def context_set(
    name: Annotated[str, typer.Argument(help="Context name")],
    server: Annotated[str, typer.Option("--server", help="host:port of a `sysops serve`")],
    token: Annotated[str, typer.Option("--token", help="Its bearer token", envvar="SYSOPS_TOKEN")],
    ca: Annotated[
        str, typer.Option("--ca", help="PEM CA file that verifies the server's TLS certificate (default: system CAs)")
    ] = "",
    server_name: Annotated[
        str,
        typer.Option("--server-name", help="Name the server's certificate must carry (default: the host of --server)"),
    ] = "",
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Talk plaintext to this server (no TLS): only by explicit choice")
    ] = False,
) -> None:
    """Add or change a context."""
    from sysops.cli import contexts

    contexts.set_context(name, server, token, ca=ca, server_name=server_name, insecure=insecure)
    progress(f"context {name} -> {server}{' (plaintext)' if insecure else ''}")


@context_app.command("use")
def context_use(name: Annotated[str, typer.Argument(help="Context name, or 'local'")]) -> None:
    """Make a context current."""
    from sysops.cli import contexts

    contexts.use_context(name)
    progress(f"using context {name}")

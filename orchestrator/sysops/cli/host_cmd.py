"""`sysops host run|status|stop|logs`: the resident host of this installation, as `systemctl` shows a service.

The CLI starts the host by itself when a command needs it; these commands run it in the foreground (for
systemd, contrib/systemd/sysops-host.service), show whether it runs, stop it (plugins keep running and the
next host re-adopts them) and print its log.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Annotated

import typer

from sysops.cli.output import emit
from sysops.cli.plugin_cmd import Output, OutputOption, RuntimeName, progress
from sysops.errors import NotFoundError

host_app = typer.Typer(
    help="The resident host that supervises plugins and serves the CLI: run, status, stop, logs.",
    no_args_is_help=True,
)


@host_app.command("run")
def run(
    runtime: Annotated[RuntimeName, typer.Option("--runtime", help="Where plugins run")] = RuntimeName.DOCKER,
) -> None:
    """Run the host in the foreground (the CLI starts it in the background when a command needs it)."""
    from sysops.host.process import run_host

    logging.basicConfig(format="%(asctime)s sysops host: %(levelname)s %(message)s", level=logging.INFO)
    run_host(runtime=runtime.value)


@host_app.command("status")
def status(output: OutputOption = Output.TEXT) -> None:
    """Say whether the host runs, with its pid, uptime and sockets; exit 8 when it does not run."""
    from sysops.host.launcher import running_host
    from sysops.host.paths import host_paths

    paths = host_paths()
    record = running_host()
    row = {
        "state": "running" if record else "stopped",
        "pid": record.pid if record else None,
        "uptime_s": round(time.time() - record.started, 1) if record else None,
        "protocol": record.protocol if record else None,
        "runtime": record.runtime if record else None,
        "control_socket": str(paths.control_socket),
        "call_socket": str(paths.call_socket),
        "log": str(paths.log),
    }
    if output.is_data:
        emit(row, output)
    else:
        for key, value in row.items():
            typer.echo(f"{key.replace('_', ' '):<15} {'-' if value is None else value}")
    if record is None:
        raise typer.Exit(8)


@host_app.command("stop")
def stop() -> None:
    """Stop the host (SIGTERM, then SIGKILL after 20 s). Plugins keep running; the next host re-adopts them."""
    from sysops.host.launcher import stop_host

    record = stop_host()
    if record is None:
        raise NotFoundError("no sysops host runs for this installation", hint="`sysops host status` shows it")
    progress(f"host (pid {record.pid}) stopped; plugins keep running")


@host_app.command("logs")
def logs(
    tail: Annotated[int | None, typer.Option("--tail", min=0, help="Only the last N lines")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines")] = False,
) -> None:
    """Print the host's log (SYSOPS_HOME/host.log)."""
    from sysops.cli.log_tail import print_file
    from sysops.host.paths import host_paths

    path = host_paths().log
    if not path.exists():
        raise NotFoundError(f"{path}: no host log yet", hint="the host writes it once a command has started it")
    print_file(path, tail=tail, follow=follow, out=sys.stdout)

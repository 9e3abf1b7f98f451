"""`sysops plugin ...`: bring plugins up and down, and see what they are doing."""

from __future__ import annotations

import json
import sys
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from sysops.cli.completion import plugin_names
from sysops.cli.output import DATA_FORMATS, emit, when
from sysops.cli.plugin_ls import print_ls
from sysops.cli.progress import Report, progress_line, progress_reporter
from sysops.core.names import check_plugin_name
from sysops.errors import UsageError
from sysops.safe_text import escape_controls

if TYPE_CHECKING:
    from pathlib import Path

    from sysops.cli.remote import RemoteClient
    from sysops.core.operations import PluginOperations

plugin_app = typer.Typer(
    help="Manage plugins: up, down, ls, status, logs, history, rollback, permissions, config.", no_args_is_help=True
)


class Output(StrEnum):
    """Output formats of commands that print tables (cli/output.py OUTPUT_FORMATS)."""

    TEXT = "text"
    JSON = "json"
    YAML = "yaml"
    WIDE = "wide"

    @property
    def is_data(self) -> bool:
        """Whether this format prints the whole data (json, yaml) rather than a table."""
        return self.value in DATA_FORMATS


class RuntimeName(StrEnum):
    """Runtimes a plugin can be scheduled on."""

    DOCKER = "docker"
    KUBERNETES = "kubernetes"


STATUS_FIELDS = (
    "name", "state", "version", "revision", "replicas", "health", "runtime", "container_id", "image", "image_digest",
    "source", "rating",
)  # fmt: skip
#: Events `plugin status` prints (the latest; `sysops events --plugin NAME` prints them all).
STATUS_EVENTS = 10
#: A plugin-name argument; Tab completes it from the local store (cli/completion.py).
PluginName = Annotated[str, typer.Argument(help="Plugin name", autocompletion=plugin_names)]
OutputOption = Annotated[
    Output, typer.Option("--output", "-o", help="Print a table (text), a table with more columns (wide), JSON or YAML.")
]
#: One plain progress line on stderr (for a single message; long operations use `progress_reporter`).
progress = progress_line


def orchestrator_for_cli(runtime: RuntimeName | None = None, report: Report = progress) -> PluginOperations:
    """The door to the orchestrator of the current context: this installation's host (started if needed) or a
    `sysops serve` of another context. The one place the CLI chooses (core/operations.py)."""
    return control_client(runtime, report)


def control_client(
    runtime: RuntimeName | None = None, report: Report = progress, *, dev: Path | None = None
) -> RemoteClient:
    """The control-API client of the current context (the host services' views and actions need it whole);
    `dev`: the plugin directory that runs in development mode (`plugin up --dev`)."""
    from sysops.cli import contexts
    from sysops.cli.remote import RemoteClient

    context = contexts.current()
    if context is None:
        if runtime is RuntimeName.KUBERNETES:
            raise UsageError(
                "--runtime kubernetes needs a sysops server in the cluster",
                hint="install the Helm chart, then set SYSOPS_SERVER and SYSOPS_TOKEN or `sysops context use` "
                "(docs/kubernetes.md)",
            )
        context = contexts.local_host()
    return RemoteClient(context, report, dev=dev)


@plugin_app.command("up")
def up(
    target: Annotated[
        str, typer.Argument(metavar="PATH|NAME", help="Plugin directory (with plugin.yaml), or a discovered plugin")
    ],
    watch: Annotated[bool, typer.Option("--watch", help="Stay in the foreground and roll on every change")] = False,
    runtime: Annotated[
        RuntimeName | None, typer.Option("--runtime", help="docker (local) or kubernetes (through a sysops server)")
    ] = None,
    dev: Annotated[
        bool,
        typer.Option(
            "--dev",
            help="Development mode: mount the code read-only instead of building it into the image "
            "(a code-only change rolls without a build; local host only)",
        ),
    ] = False,
) -> None:
    """Build a plugin, start what it requires first (in dependency order), start it (or roll to the new
    version) and wait until each is ready."""
    from sysops.cli.dependency_plan import describe, plan_up, plugin_directory, run_steps
    from sysops.core.manifest import load_manifest

    path = plugin_directory(target)
    manifest = load_manifest(path)  # bad input is refused before a host is started or anything is built
    with progress_reporter() as report:
        orchestrator = control_client(runtime, report, dev=path if dev else None)
        started = time.monotonic()
        steps, origins = plan_up(orchestrator, path, manifest)
        if len(steps) > 1:
            for step in steps:
                report(f"plan: {describe(step, origins)}")
        instance, changed = run_steps(orchestrator, steps, origins, report)
        verb = "ready" if changed else "already running"
        seconds = time.monotonic() - started
        report(f"{instance.plugin} {instance.version} {verb} (revision {instance.revision}, {seconds:.1f}s)")
        if watch:
            from sysops.core.watch import watch_and_roll

            watch_and_roll(orchestrator, path, report)


@plugin_app.command("down")
def down(
    name: Annotated[
        str, typer.Argument(help="Plugin name (or side-by-side key NAME--vMAJOR)", autocompletion=plugin_names)
    ],
    purge: Annotated[bool, typer.Option("--purge", help="Also remove its images and data volume")] = False,
    cascade: Annotated[
        bool, typer.Option("--cascade", help="First take down the running plugins that require it, furthest first")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Take it down even though running plugins require it (they keep running)")
    ] = False,
) -> None:
    """Drain and stop a plugin and remove its containers (refused while running plugins require it)."""
    check_plugin_name(name)
    if cascade and force:
        raise UsageError("--cascade and --force exclude each other")
    with progress_reporter() as report:
        orchestrator_for_cli(report=report).down(name, purge=purge, cascade=cascade, force=force)
        report(f"{name} is down")


@plugin_app.command("ls")
def ls(
    output: OutputOption = Output.TEXT,
    outdated: Annotated[
        bool, typer.Option("--outdated", help="List installed plugins whose source offers a newer version")
    ] = False,
) -> None:
    """List plugins with their state, version and health (or, with --outdated, the installed ones to upgrade)."""
    if outdated:
        from sysops.cli.install_cmd import print_outdated

        print_outdated(output)
        return
    print_ls([status.as_dict() for status in orchestrator_for_cli().list()], output)


@plugin_app.command("status")
def status(name: PluginName, output: OutputOption = Output.TEXT) -> None:
    """Show a plugin's state, version, image, container, health, last error and recent events."""
    check_plugin_name(name)
    orchestrator = orchestrator_for_cli()
    result = orchestrator.status(name, limits=True).as_dict()
    if output.is_data:
        emit(result, output)
        return
    for key in STATUS_FIELDS:
        typer.echo(f"{key.replace('_', ' '):<13} {result[key]}")
    typer.echo(f"{'commands':<13} {' '.join(result['commands'])}")
    typer.echo(f"{'rating why':<13} {'; '.join(result.get('rating_reasons') or []) or '-'}")
    if result.get("service"):
        typer.echo(escape_controls(f"{'service':<13} {result['service']}"))
    typer.echo(escape_controls(f"{'last error':<13} {result['last_error'] or '-'}"))
    typer.echo(escape_controls(f"{'fault':<13} {result['fault'] or '-'}"))
    typer.echo(escape_controls(f"{'missing':<13} {'; '.join(result.get('missing') or []) or '-'}"))
    for key in ("asked", "applied", "usage"):
        values = result["limits"].get(key) or {}
        shown = ", ".join(f"{k} {'-' if v is None else v}" for k, v in values.items())
        typer.echo(f"{'limits ' + key if key != 'usage' else 'usage':<13} {shown or '-'}")
    for mismatch in result["limits"].get("mismatches") or []:
        typer.echo(f"{'MISMATCH':<13} {mismatch}")
    typer.echo("events:")
    from sysops.cli.events_cmd import event_line

    for event in result["events"][-STATUS_EVENTS:]:
        typer.echo("  " + event_line(event["time"], event["kind"], event["message"]))


@plugin_app.command("logs")
def logs(
    name: PluginName,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines")] = False,
    tail: Annotated[int | None, typer.Option("--tail", help="Only the last N lines")] = None,
    structured: Annotated[
        bool, typer.Option("--structured", help="The records the plugin wrote through the `logs` host service")
    ] = False,
    output: OutputOption = Output.TEXT,
) -> None:
    """Print the logs of a plugin's active instance (or, with --structured, its structured log records)."""
    check_plugin_name(name)
    if structured:
        records = control_client().logs(name, follow=follow, tail=tail, structured=True)
        if output is Output.YAML:  # one list item per record: a follow is one growing YAML list
            for record in records:
                emit([json.loads(record)], output)
                sys.stdout.flush()
            return
        from sysops.cli.log_records import print_records

        print_records(records, output, follow=follow)
        return
    from sysops.cli.log_tail import print_batches  # streamed in batches of lines: memory stays bounded

    print_batches(control_client().log_batches(name, follow=follow, tail=tail), follow=follow, out=sys.stdout)


@plugin_app.command("history")
def history(name: PluginName, output: OutputOption = Output.TEXT) -> None:
    """List the revisions of a plugin."""
    check_plugin_name(name)
    rows = [
        {
            "revision": r.revision,
            "version": r.version,
            "image": r.image,
            "digest": r.image_id,
            "created": when(r.created),
        }
        for r in orchestrator_for_cli().history(name)
    ]
    emit(rows, output, ["revision", "version", "created", "image", "digest"])


@plugin_app.command("rollback")
def rollback(
    name: PluginName,
    to: Annotated[int | None, typer.Option("--to", help="Revision to roll back to (default: the previous one)")] = None,
) -> None:
    """Roll a plugin back to an earlier revision's image, without rebuilding."""
    check_plugin_name(name)
    with progress_reporter() as report:
        instance = orchestrator_for_cli(report=report).rollback(name, to)
        report(f"{name} {instance.version} ready (revision {instance.revision})")

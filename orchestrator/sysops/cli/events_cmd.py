"""`sysops events`: the plugins' lifecycle events, as aligned text, JSON Lines or YAML, optionally followed.

The rows come from the local store or, in a remote context, from the server's Events stream; either way
they are printed one at a time (a follow never holds more than one batch). Messages quote plugins (their
errors and log lines), so text is always escaped onto one line; JSON escapes every control character. YAML
is one sequence item per event, so a followed stream is one growing YAML list.
`plugin status` prints its last events with the same `event_line`. `sysops events publish` is
cli/services_cmd.py's (a subcommand of this group).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from sysops.cli.output import format_yaml, when
from sysops.cli.plugin_cmd import Output, orchestrator_for_cli
from sysops.core.events import KIND_WIDTH
from sysops.core.names import check_plugin_name
from sysops.safe_text import for_terminal
from sysops.store import EventRecord

#: Width of the PLUGIN column (a longer name widens its own row only); with --plugin, that name's length.
PLUGIN_WIDTH = 16
#: Keys of a JSON line, in this order (stable: scripts rely on them).
JSON_KEYS = ("id", "time", "unix_time", "plugin", "kind", "message")


def event_line(time: float, kind: str, message: str, plugin: str | None = None, plugin_width: int = 0) -> str:
    """One aligned text row, TIME  [PLUGIN]  KIND  MESSAGE, the message capped and escaped onto one line."""
    columns = [when(time)]
    if plugin is not None:
        columns.append(plugin.ljust(plugin_width))
    columns += [kind.ljust(KIND_WIDTH), for_terminal(message)]
    return "  ".join(columns).rstrip()


def header(plugin_width: int) -> str:
    """The header row of the text output."""
    columns = ["TIME".ljust(len(when(0))), "PLUGIN".ljust(plugin_width), "KIND".ljust(KIND_WIDTH), "MESSAGE"]
    return "  ".join(columns)


def event_row(event: EventRecord) -> dict[str, Any]:
    """An event as data: `time` is ISO 8601 UTC to the second (jq's `fromdate` reads it), `unix_time` exact."""
    iso = datetime.fromtimestamp(event.time, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    row: dict[str, Any] = {
        "id": event.id,
        "time": iso,
        "unix_time": event.time,
        "plugin": event.plugin,
        "kind": event.kind,
        "message": event.message,
    }
    return {key: row[key] for key in JSON_KEYS}


def event_json(event: EventRecord) -> str:
    """One JSON Lines row (`event_row`)."""
    return json.dumps(event_row(event))


def event_text(event: EventRecord, output: Output, plugin_width: int) -> str:
    """One event as `output` prints it, with its newline: a JSON line, a YAML list item, or an aligned row."""
    if output is Output.JSON:
        return event_json(event) + "\n"
    if output is Output.YAML:
        return format_yaml([event_row(event)])
    return event_line(event.time, event.kind, event.message, event.plugin, plugin_width) + "\n"


events_app = typer.Typer(
    help="Lifecycle events of the plugins; `events publish TOPIC JSON` publishes on the host's bus.",
    invoke_without_command=True,
)


@events_app.callback()
def events(
    context: typer.Context,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events as they are stored")] = False,
    plugin: Annotated[str | None, typer.Option("--plugin", help="Only this plugin's events")] = None,
    output: Annotated[
        Output,
        typer.Option("--output", "-o", help="Aligned text (text, wide), JSON Lines (one object per event) or YAML."),
    ] = Output.TEXT,
) -> None:
    """Print the lifecycle events of every plugin (or one), oldest first; Ctrl-C ends a follow (exit 130)."""
    if context.invoked_subcommand is not None:
        return
    if plugin is not None:
        check_plugin_name(plugin)
    width = len(plugin) if plugin is not None else PLUGIN_WIDTH
    headed = output.is_data
    if follow and not headed:  # at once, so a follower shows it is there
        sys.stdout.write(header(width) + "\n")
        sys.stdout.flush()
        headed = True
    for event in orchestrator_for_cli().events(plugin, follow=follow):
        if not headed:  # with the first event: a refused --plugin prints its one error line only
            sys.stdout.write(header(width) + "\n")
            headed = True
        sys.stdout.write(event_text(event, output, width))
        if follow:
            sys.stdout.flush()
    if not headed:
        sys.stdout.write(header(width) + "\n")

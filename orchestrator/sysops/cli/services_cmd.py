"""The operator's commands over the host services: what plugins were granted, their config, metrics, alerts,
and events published by hand.

    sysops plugin permissions NAME            asked permissions, granted or refused, the grant that matched
    sysops plugin config NAME                 each config key: value, source (default/policy/set), help
    sysops plugin config NAME set KEY VALUE   store an operator value (VALUE is JSON if it parses, else text)
    sysops metrics [--plugin NAME]            the host's Prometheus text (host and plugin metrics)
    sysops alerts [--all] [--plugin NAME]     open alerts (with --all, resolved ones too)
    sysops alerts resolve PLUGIN NAME         resolve a plugin's alert
    sysops events publish TOPIC JSON          publish an event as "operator"

All of them ask the control API (server/operator_api.py) of the current context; the host or server checks
the caller's role and validates values. Help texts, config values, metric labels and alert messages come
from plugins, so text output goes through cli/output.py (escaped on a terminal).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from sysops.cli.output import emit, when, write_result
from sysops.cli.plugin_cmd import Output, OutputOption, control_client, progress
from sysops.core.names import check_plugin_name, shown
from sysops.errors import UsageError
from sysops.safe_text import for_terminal

PluginArgument = Annotated[str, typer.Argument(help="Plugin name")]
alerts_app = typer.Typer(help="Alerts raised by plugins: list and resolve.", invoke_without_command=True)


def permissions(name: PluginArgument, output: OutputOption = Output.TEXT) -> None:
    """Show the permissions a plugin asks for, which the policy grants or refuses, and the grant that matched."""
    check_plugin_name(name)
    report = control_client().view("permissions", name)
    if output.is_data:
        emit(report, output)
        return
    rows = [
        {**row, "asked": "yes" if row["asked"] else "no", "grant": row["grant"] or "-"} for row in report["permissions"]
    ]
    if not rows:
        progress(f"{name} asks for no permissions (manifest key permissions:)")
    emit(rows, "text", ["permission", "asked", "status", "grant"])


def config(
    name: PluginArgument,
    action: Annotated[str | None, typer.Argument(help="'set' to store a value", show_default=False)] = None,
    key: Annotated[str | None, typer.Argument(help="Config key (with set)", show_default=False)] = None,
    value: Annotated[str | None, typer.Argument(help="Value (with set): JSON if it parses, else text")] = None,
    output: OutputOption = Output.TEXT,
) -> None:
    """Show a plugin's configuration (key, value, source, help), or `set KEY VALUE` (validated by the host)."""
    check_plugin_name(name)
    if action is None:
        show_config(name, output)
        return
    if action != "set":
        raise UsageError(
            f"plugin config: unknown action {shown(action)}", hint="use `sysops plugin config NAME set KEY VALUE`"
        )
    if key is None or value is None:
        raise UsageError("plugin config set: give KEY and VALUE", hint="`sysops plugin config NAME set KEY VALUE`")
    result = control_client().act("config-set", {"plugin": name, "key": key, "value": value})  # the host parses it
    if output.is_data:
        emit(result, output)
        return
    progress(f"{name}: config {for_terminal(key)} = {for_terminal(json.dumps(result.get('value')))}")


def show_config(name: str, output: Output) -> None:
    """Print every config key of a plugin."""
    data = control_client().view("config", name)
    if output.is_data:
        emit(data, output)
        return
    rows = [
        {
            "key": row.get("key"),
            "value": json.dumps(row.get("value")),
            "source": row.get("source"),
            "help": row.get("help") or "",
        }
        for row in data["keys"]
    ]
    if not rows:
        progress(f"{name} declares no config (manifest key config:)")
    emit(rows, "text", ["key", "value", "source", "help"])


def metrics(
    plugin: Annotated[str | None, typer.Option("--plugin", help="Only this plugin's series")] = None,
) -> None:
    """Print the host's metrics in the Prometheus text format: its own and every plugin's."""
    if plugin is not None:
        check_plugin_name(plugin)
    write_result(control_client().view("metrics", plugin or "")["text"])


ALERT_COLUMNS = ["plugin", "name", "severity", "state", "raised", "resolved", "message"]


@alerts_app.callback()
def alerts(
    context: typer.Context,
    include_all: Annotated[bool, typer.Option("--all", help="Resolved alerts too")] = False,
    plugin: Annotated[str | None, typer.Option("--plugin", help="Only this plugin's alerts")] = None,
    output: OutputOption = Output.TEXT,
) -> None:
    """List open alerts (`--all`: resolved ones too); `sysops alerts resolve PLUGIN NAME` resolves one."""
    if context.invoked_subcommand is not None:
        return
    if plugin is not None:
        check_plugin_name(plugin)
    found = control_client().view("alerts", plugin or "", include_all=include_all)["alerts"]
    if output.is_data:
        emit(found, output)
        return
    emit([alert_row(alert) for alert in found], output, ALERT_COLUMNS)


def alert_row(alert: dict[str, Any]) -> dict[str, Any]:
    """One alert as a table row (times as the CLI shows them; the message on one line)."""
    raised, resolved = alert.get("raised"), alert.get("resolved")
    return {
        "plugin": alert.get("plugin"),
        "name": alert.get("name"),
        "severity": alert.get("severity"),
        "state": "open" if alert.get("open") else "resolved",
        "raised": when(raised) if raised else "-",
        "resolved": when(resolved) if resolved else "-",
        "message": " ".join(str(alert.get("message", "")).split()),
    }


@alerts_app.command("resolve")
def resolve(
    plugin: PluginArgument,
    name: Annotated[str, typer.Argument(help="Alert name")],
) -> None:
    """Resolve a plugin's open alert (operator role on a server)."""
    check_plugin_name(plugin)
    result = control_client().act("alert-resolve", {"plugin": plugin, "name": name})
    resolved = bool(result.get("resolved")) if isinstance(result, dict) else bool(result)
    state = "resolved" if resolved else "was not open"
    progress(f"{plugin}: alert {for_terminal(name)} {state}")


def publish(
    topic: Annotated[str, typer.Argument(help="Topic, like 'deploy.done' (sysops.* is the host's)")],
    payload: Annotated[str, typer.Argument(help='The payload as JSON, like \'{"service": "web"}\'')],
) -> None:
    """Publish an event on the host's bus as "operator" (operator role on a server); prints its id."""
    from sysops.services.limits import check_topic

    check_topic(topic)
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise UsageError(
            f"events publish {shown(topic)}: the payload is not valid JSON ({for_terminal(str(exc), 120)})",
            hint="quote it for the shell, e.g. '{\"key\": 1}'",
        ) from None
    result = control_client().act("events-publish", {"topic": topic, "payload": data})
    sys.stdout.write(f"{result['id']}\n")

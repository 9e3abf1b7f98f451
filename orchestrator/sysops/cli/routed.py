"""Plugin commands as click commands, built from the CommandSpecs stored when each plugin became active.

This is the hot path of `sysops <command>`: it reads the route from SQLite, builds one click command,
parses the command line, and streams the Invoke call over the instance's socket. It imports neither
docker nor kubernetes nor pydantic.
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any

import click
from sysops_sdk.protocol.v1 import plugin_pb2 as pb

from sysops.cli.contexts import REMOTE_ENDPOINT
from sysops.cli.output import emit
from sysops.core.client import InvocationResult, PluginClient
from sysops.errors import CommandFailedError, PluginUnavailableError
from sysops.store import Route

_TYPES: dict[str, click.ParamType] = {
    "str": click.STRING,
    "int": click.INT,
    "float": click.FLOAT,
    "bool": click.BOOL,
}
OUTPUT_FORMATS = ("text", "json")
_MAX_REROUTES = 3
#: How gRPC reports a call that never reached the command: the instance drains, or its socket is gone.
_NOT_STARTED_MARKERS = ("plugin is shutting down", "failed to connect to all addresses")


class PluginCommand(click.Command):
    """A click command whose help lists positional arguments with their help texts."""

    def __init__(self, *args: Any, plugin: str = "", argument_help: list[tuple[str, str]] | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.plugin = plugin
        self.argument_help = argument_help or []

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Write an Arguments section before the options."""
        if self.argument_help:
            with formatter.section("Arguments"):
                formatter.write_dl(self.argument_help)
        super().format_options(ctx, formatter)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Say which plugin provides the command."""
        formatter.write_paragraph()
        formatter.write_text(f"Provided by plugin '{self.plugin}'.")


def _param_type(spec: pb.ParamSpec) -> click.ParamType:
    if spec.type == "choice":
        return click.Choice(list(spec.choices))
    return _TYPES.get(spec.type, click.STRING)


def _click_param(spec: pb.ParamSpec) -> click.Parameter:
    default = json.loads(spec.default_json) if spec.default_json else None
    if spec.kind == pb.ParamSpec.ARGUMENT:
        return click.Argument(
            [spec.name],
            type=_param_type(spec),
            required=spec.required,
            default=default,
            metavar=spec.metavar or spec.name.upper(),
        )
    return click.Option(
        [*spec.flags, spec.name],
        show_default=bool(spec.default_json) and not spec.is_flag,
        type=None if spec.is_flag else _param_type(spec),
        is_flag=spec.is_flag,
        default=default,
        required=spec.required and not spec.is_flag,
        multiple=spec.multiple,
        help=spec.help,
        metavar=spec.metavar or None,
    )


def build_command(route: Route, leaf_name: str) -> click.Command:
    """Build the click command for one route."""
    spec = pb.CommandSpec.FromString(route.spec)
    params = [_click_param(param) for param in spec.params]
    if not any(param.name == "output" for param in params):
        taken = {flag for param in spec.params for flag in param.flags}
        params.append(
            click.Option(
                ["--output"] if "-o" in taken else ["--output", "-o"],
                type=click.Choice(OUTPUT_FORMATS),
                default="text",
                help="Print a dict or list result as a table (text) or as JSON.",
            )
        )
    argument_help = [
        (param.metavar or param.name.upper(), param.help)
        for param in spec.params
        if param.kind == pb.ParamSpec.ARGUMENT
    ]

    def callback(**kwargs: Any) -> None:
        output = kwargs.pop("output", "text") if "output" not in {p.name for p in spec.params} else "text"
        invoke(route, kwargs, output)

    return PluginCommand(
        leaf_name,
        params=params,
        callback=callback,
        help=spec.help,
        short_help=(spec.help.splitlines() or [""])[0],
        plugin=route.plugin,
        argument_help=argument_help,
    )


def invoke(route: Route, arguments: dict[str, Any], output: str) -> None:
    """Call the plugin; if its instance went away before answering, follow the route to its successor."""
    tried: set[str] = set()
    endpoint = route.endpoint
    if not endpoint:
        raise PluginUnavailableError(
            f"plugin {route.plugin!r} has no ready instance for command {route.command!r}",
            hint=f"see `sysops plugin status {route.plugin}`",
        )
    for _attempt in range(_MAX_REROUTES):
        try:
            _invoke_once(route, endpoint, arguments, output)
            return
        except _NotStarted as not_started:
            tried.add(endpoint)
            successor = _current_route(route.command)
            candidates = [e for e in successor.endpoints if e not in tried] if successor else []
            if successor is None or not candidates:
                raise not_started.error from None
            route, endpoint = successor, random.choice(candidates)
    _invoke_once(route, endpoint, arguments, output)


class _NotStarted(Exception):
    """The instance refused the call before running it (draining, or gone): safe to send elsewhere."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def known_routes(prefix: str = "") -> list[Route]:
    """Routes of the current context: the local store's, or a server's."""
    from sysops.cli import contexts

    context = contexts.current()
    if context is not None:
        from sysops.cli.remote import RemoteClient

        client = RemoteClient(context)
        try:
            return client.routes(prefix)
        finally:
            client.close()
    from sysops.settings import Settings
    from sysops.store import Store

    settings = Settings()
    if not settings.store_path.exists():
        return []
    store = Store(settings.store_path)
    try:
        return store.routes(prefix)
    finally:
        store.close()


def _current_route(command: str) -> Route | None:
    return next((route for route in known_routes(command) if route.command == command), None)


def _invoke_once(route: Route, endpoint: str, arguments: dict[str, Any], output: str) -> None:
    if endpoint == REMOTE_ENDPOINT:
        _invoke_remote(route, arguments, output)
        return
    received = False
    since = time.time()
    with PluginClient(endpoint, route.plugin, route.token_for(endpoint)) as client:
        try:
            for item in client.invoke(route.command, arguments, output_format=output):
                received = True
                _print_item(item, route, output)
        except PluginUnavailableError as exc:
            if not received and any(marker in str(exc) for marker in _NOT_STARTED_MARKERS):
                raise _NotStarted(exc) from exc  # draining or gone before it ran: safe to send elsewhere
            raise _failure(route, endpoint, since, exc) from exc


def _failure(route: Route, endpoint: str, since: float, error: PluginUnavailableError) -> PluginUnavailableError:
    """Name why the instance broke the call (e.g. OOMKilled), asking the engine without its SDK."""
    if endpoint.startswith("unix://"):
        from sysops.runtime.faults import describe_instance_failure

        fault = describe_instance_failure(endpoint, since, wait=1.5)
        if fault:
            return PluginUnavailableError(
                f"plugin {route.plugin!r} died during command {route.command!r}: {fault}",
                hint=f"see `sysops plugin status {route.plugin}`",
            )
    return error


def _invoke_remote(route: Route, arguments: dict[str, Any], output: str) -> None:
    from sysops.cli import contexts
    from sysops.cli.remote import RemoteClient

    context = contexts.current()
    assert context is not None
    client = RemoteClient(context)
    try:
        for item in client.invoke(route.command, arguments, output):
            _print_item(item, route, output)
    finally:
        client.close()


def _print_item(item: str | InvocationResult, route: Route, output: str) -> None:
    """Print one streamed line, or the final result (raising if the command failed)."""
    if isinstance(item, InvocationResult):
        if item.exit_code != 0:
            raise CommandFailedError(f"{route.plugin}: {route.command}: {item.error}")
        if item.kind == "text":
            sys.stdout.write(item.text + ("\n" if not item.text.endswith("\n") else ""))
        elif item.kind == "data":
            emit(item.data, output)
    else:
        sys.stdout.write(item + "\n")
        sys.stdout.flush()


def add_routes(group: click.Group, routes: list[Route]) -> None:
    """Add commands (and command groups, for names with spaces) to a click group."""
    for route in routes:
        *parents, leaf = route.command.split(" ")
        target = group
        for word in parents:
            existing = target.commands.get(word)
            if not isinstance(existing, click.Group):
                existing = click.Group(word, help=f"Commands of plugin '{route.plugin}'.")
                target.add_command(existing)
            target = existing
        target.add_command(build_command(route, leaf))

"""Plugin commands as click commands, built from the CommandSpecs stored when each plugin became active.

This is the hot path of `sysops <command>`: it reads the route from SQLite, builds one click command,
parses the command line, and streams the Invoke call over the instance's socket (core/router.py, which
re-sends a call refused during a roll). It imports neither docker nor kubernetes nor pydantic.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from sysops_sdk.protocol.v1 import plugin_pb2 as pb

from sysops.cli.contexts import REMOTE_ENDPOINT
from sysops.cli.output import emit, write_result
from sysops.core import router
from sysops.core.client import InvocationResult
from sysops.core.router import check_arguments
from sysops.errors import CallInterruptedError, CommandFailedError
from sysops.safe_text import escape_controls
from sysops.store import Route

_TYPES: dict[str, click.ParamType] = {
    "str": click.STRING,
    "int": click.INT,
    "float": click.FLOAT,
    "bool": click.BOOL,
}
OUTPUT_FORMATS = ("text", "json")
# Re-sending a call refused during a roll (and waiting for the hand-over) is core/router.py's job, shared
# with the server's Invoke.


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
    spec.help = escape_controls(spec.help)  # the plugin wrote its help texts: `--help` must not obey them
    for param in spec.params:
        param.help, param.metavar = escape_controls(param.help), escape_controls(param.metavar)
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
    """Check the arguments, call the plugin (directly, or through the context's server) and print what it says.

    Ctrl-C cancels the call in the plugin (the gRPC call is cancelled as it is abandoned) and is one line.
    """
    check_arguments(route.command, arguments)
    try:
        if route.endpoint == REMOTE_ENDPOINT:
            _invoke_remote(route, arguments, output)
            return
        for item in router.call(route, arguments, output, _current_route):
            _print_item(item, route, output)
    except KeyboardInterrupt:
        raise CallInterruptedError(
            f"{route.plugin}: {route.command}: interrupted (Ctrl-C); the call was cancelled in the plugin"
        ) from None


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


def _invoke_remote(route: Route, arguments: dict[str, Any], output: str) -> None:
    from sysops.cli import contexts
    from sysops.cli.remote import RemoteClient

    context = contexts.current()
    assert context is not None
    client = RemoteClient(context)
    try:
        for item in client.invoke(route.command, arguments, output, route.plugin):
            _print_item(item, route, output)
    finally:
        client.close()


def _print_item(item: str | InvocationResult, route: Route, output: str) -> None:
    """Print one streamed line, or the final result (raising if the command failed)."""
    if isinstance(item, InvocationResult):
        if item.exit_code != 0:
            raise CommandFailedError(f"{route.plugin}: {route.command}: {item.error}")
        if item.kind == "text":
            write_result(item.text)  # not joined to its newline: a result can be 64 MiB
            if not item.text.endswith("\n"):
                sys.stdout.write("\n")
        elif item.kind == "data":
            emit(item.data, output)
    else:
        write_result(item + "\n")
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

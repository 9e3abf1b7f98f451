"""Plugin commands as click commands, built from command shapes (core/command_shape.py), and run where they live.

This is the hot path of `sysops <command>`. In the local context the shapes come from the resident host
over its call socket (cli/host_call.py), which also runs the call: the CLI imports neither gRPC nor
protobuf, docker, kubernetes, typer or pydantic. In a remote context (SYSOPS_SERVER) the shapes come from
the control server's Routes reply and the call goes through its Invoke, over gRPC.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from sysops.cli.output import emit, write_result
from sysops.core.command_shape import ARGUMENT, CommandShape, ParamShape
from sysops.errors import CallInterruptedError, CommandFailedError
from sysops.safe_text import escape_controls

if TYPE_CHECKING:
    from sysops.core.client import InvocationResult

_TYPES: dict[str, click.ParamType] = {
    "str": click.STRING,
    "int": click.INT,
    "float": click.FLOAT,
    "bool": click.BOOL,
}
OUTPUT_FORMATS = ("text", "json")
#: Runs a command with its parsed arguments and output format, printing what it says.
Invoker = Callable[[CommandShape, dict[str, Any], str], None]


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


def _param_type(param: ParamShape) -> click.ParamType:
    if param.type == "choice":
        return click.Choice(list(param.choices))
    return _TYPES.get(param.type, click.STRING)


def _click_param(param: ParamShape) -> click.Parameter:
    help_text, metavar = escape_controls(param.help), escape_controls(param.metavar)  # the plugin wrote them
    if param.kind == ARGUMENT:
        return click.Argument(
            [param.name],
            type=_param_type(param),
            required=param.required,
            default=param.default,
            metavar=metavar or param.name.upper(),
        )
    return click.Option(
        [*param.flags, param.name],
        show_default=param.has_default and not param.is_flag,
        type=None if param.is_flag else _param_type(param),
        is_flag=param.is_flag,
        default=param.default,
        required=param.required and not param.is_flag,
        multiple=param.multiple,
        help=help_text,
        metavar=metavar or None,
    )


def build_command(shape: CommandShape, leaf_name: str, invoker: Invoker) -> click.Command:
    """Build the click command for one routed command, run by `invoker`."""
    params = [_click_param(param) for param in shape.params]
    declares_output = any(param.name == "output" for param in shape.params)
    if not declares_output:
        taken = {flag for param in shape.params for flag in param.flags}
        params.append(
            click.Option(
                ["--output"] if "-o" in taken else ["--output", "-o"],
                type=click.Choice(OUTPUT_FORMATS),
                default="text",
                help="Print a dict or list result as a table (text) or as JSON.",
            )
        )
    argument_help = [
        (escape_controls(param.metavar) or param.name.upper(), escape_controls(param.help))
        for param in shape.params
        if param.kind == ARGUMENT
    ]

    def callback(**kwargs: Any) -> None:
        output = "text" if declares_output else kwargs.pop("output", "text")
        invoker(shape, kwargs, output)

    help_text = escape_controls(shape.help)  # the plugin wrote its help texts: `--help` must not obey them
    return PluginCommand(
        leaf_name,
        params=params,
        callback=callback,
        help=help_text,
        short_help=(help_text.splitlines() or [""])[0],
        plugin=shape.plugin,
        argument_help=argument_help,
    )


@dataclass
class Commands:
    """The routed commands of the current context, and how to run them; `close` ends the host connection."""

    shapes: list[CommandShape]
    invoker: Invoker
    close: Callable[[], None] = field(default=lambda: None)


def context_commands(prefix: str = "") -> Commands:
    """The commands named `prefix` (or in its group; all if empty) of the current context: the local host's or a
    server's. Locally, the connection that fetched them stays open for the call (`close` it after)."""
    from sysops.cli import contexts

    context = contexts.current()
    if context is not None:
        return Commands(_remote_shapes(context, prefix), _invoke_remote)
    from sysops.settings import Settings

    settings = Settings()
    if not settings.store_path.exists():  # nothing was ever up here: no host to start for that
        return Commands([], _no_invoker)
    from sysops.cli.host_call import HostCall

    host = HostCall(settings)
    try:
        return Commands(host.routes(prefix), host.invoke, host.close)
    except BaseException:
        host.close()
        raise


def _no_invoker(shape: CommandShape, arguments: dict[str, Any], output: str) -> None:
    raise AssertionError(f"no command {shape.name!r} to run")  # pragma: no cover - no shape to call it with


def _remote_shapes(context: Any, prefix: str) -> list[CommandShape]:
    from sysops.cli.remote import RemoteClient
    from sysops.core.command_shape import shape_from_spec

    client = RemoteClient(context)
    try:
        return [shape_from_spec(route.command, route.plugin, route.spec) for route in client.routes(prefix)]
    finally:
        client.close()


def _invoke_remote(shape: CommandShape, arguments: dict[str, Any], output: str) -> None:
    """Check the arguments and call the command through the context's server; Ctrl-C is one line."""
    from sysops.cli import contexts
    from sysops.cli.remote import RemoteClient
    from sysops.core.router import check_arguments

    check_arguments(shape.name, arguments)
    context = contexts.current()
    assert context is not None
    client = RemoteClient(context)
    try:
        for item in client.invoke(shape.name, arguments, output, shape.plugin):
            _print_item(item, shape, output)
    except KeyboardInterrupt:
        raise CallInterruptedError(
            f"{shape.plugin}: {shape.name}: interrupted (Ctrl-C); the call was cancelled in the plugin"
        ) from None
    finally:
        client.close()


def _print_item(item: str | InvocationResult, shape: CommandShape, output: str) -> None:
    """Print one streamed line, or the final result (raising if the command failed)."""
    if isinstance(item, str):
        write_result(item + "\n")
        sys.stdout.flush()
        return
    if item.exit_code != 0:
        raise CommandFailedError(f"{shape.plugin}: {shape.name}: {item.error}")
    if item.kind == "text":
        write_result(item.text)  # not joined to its newline: a result can be 64 MiB
        if not item.text.endswith("\n"):
            sys.stdout.write("\n")
    elif item.kind == "data":
        emit(item.data, output)


def add_routes(group: click.Group, commands: Commands) -> None:
    """Add commands (and command groups, for names with spaces) to a click group."""
    for shape in commands.shapes:
        *parents, leaf = shape.name.split(" ")
        target = group
        for word in parents:
            existing = target.commands.get(word)
            if not isinstance(existing, click.Group):
                existing = click.Group(word, help=f"Commands of plugin '{escape_controls(shape.plugin)}'.")
                target.add_command(existing)
            target = existing
        target.add_command(build_command(shape, leaf, commands.invoker))

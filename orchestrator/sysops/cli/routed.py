"""Plugin commands as click commands, built from command shapes (core/command_shape.py).

`sysops <command>` with options, `--help` or anything unusual is parsed by the command built here (plain
arguments skip click: cli/plain_args.py). Where the shapes come from and how a call is run, locally through
the resident host or through a remote context's server, is cli/routed_source.py: the CLI imports neither
gRPC nor protobuf, docker, kubernetes, typer or pydantic for a local call.
"""

from __future__ import annotations

from typing import Any

import click

from sysops.cli.routed_source import Commands, Invoker, context_commands
from sysops.core.command_shape import ARGUMENT, CommandShape, ParamShape
from sysops.safe_text import escape_controls

__all__ = ["OUTPUT_FORMATS", "Commands", "PluginCommand", "add_routes", "build_command", "context_commands"]

_TYPES: dict[str, click.ParamType] = {
    "str": click.STRING,
    "int": click.INT,
    "float": click.FLOAT,
    "bool": click.BOOL,
}
OUTPUT_FORMATS = ("text", "json")


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

"""Shell completion: `sysops completion bash|zsh|fish` prints the script, and the shell's callback completes.

The scripts are click's: on each Tab the shell runs `sysops` with `_SYSOPS_COMPLETE=<shell>_complete` and
`COMP_WORDS`/`COMP_CWORD` in the environment. cli/main.py hands that call to `complete` before anything
else. The tree completed is the built-in commands plus the plugin commands, with their options and choices,
read from the routes stored in this installation's state database: a Tab starts no host and no container
and opens no connection. In a remote context (SYSOPS_SERVER or a context's server) only the built-in
commands are completed, since asking the server would put a network round trip on every Tab.
"""

from __future__ import annotations

import sqlite3
import sys
from enum import StrEnum
from typing import Annotated, Any

import typer

from sysops.cli.main import COMPLETE_VARIABLE
from sysops.core.command_shape import CommandShape
from sysops.errors import SysopsError

PROG_NAME = "sysops"


class Shell(StrEnum):
    """Shells `sysops completion` writes a script for."""

    BASH = "bash"
    ZSH = "zsh"
    FISH = "fish"


def completion(
    shell: Annotated[Shell, typer.Argument(help="bash, zsh or fish")],
) -> None:
    """Print the completion script of a shell: `source <(sysops completion bash)`, `sysops completion fish |
    source`; completes plugin commands and their options from the stored routes, without starting anything."""
    import click
    from click.shell_completion import get_completion_class

    script_class = get_completion_class(shell.value)
    assert script_class is not None  # click ships bash, zsh and fish
    script = script_class(click.Group(PROG_NAME), {}, PROG_NAME, COMPLETE_VARIABLE).source()
    sys.stdout.write(script if script.endswith("\n") else script + "\n")


def stored_shapes() -> list[CommandShape]:
    """The routed commands' shapes from the local store; none in a remote context, before the first `up`, or
    when the store cannot be read (a Tab never prints an error)."""
    from sysops.cli import contexts
    from sysops.settings import Settings

    try:
        if contexts.current() is not None:
            return []
        settings = Settings()
        if not settings.store_path.exists():
            return []
        from sysops.core.command_shape import shape_from_spec
        from sysops.store import Store

        store = Store(settings.store_path)
        try:
            return [shape_from_spec(route.command, route.plugin, route.spec) for route in store.routes()]
        finally:
            store.close()
    except (SysopsError, sqlite3.Error, OSError, ValueError):
        return []


def _not_run(shape: CommandShape, arguments: dict[str, Any], output: str) -> None:
    raise AssertionError(f"completion does not run {shape.name!r}")  # pragma: no cover - completion never invokes


def complete(instruction: str) -> int:
    """Answer one completion request of a shell (`instruction` is the variable's value, like `bash_complete`)."""
    from click.shell_completion import shell_complete

    from sysops.cli.app import app
    from sysops.cli.routed import Commands, add_routes

    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    add_routes(group, Commands(stored_shapes(), _not_run))
    return shell_complete(group, {}, PROG_NAME, COMPLETE_VARIABLE, instruction)

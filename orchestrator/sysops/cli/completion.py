"""Shell completion: `sysops completion bash|zsh|fish` prints the script, and the shell's callback completes.

The scripts are click's: on each Tab the shell runs `sysops` with `_SYSOPS_COMPLETE=<shell>_complete` and
`COMP_WORDS`/`COMP_CWORD` in the environment. cli/main.py hands that call to `complete` before anything
else. The tree completed is the built-in commands plus the plugin commands, with their options and choices,
read from the routes stored in this installation's state database: a Tab starts no host and no container
and opens no connection. In a remote context (SYSOPS_SERVER or a context's server) only the built-in
commands are completed, since asking the server would put a network round trip on every Tab. Plugin-name
arguments (`plugin status <Tab>`, `down`, `logs`, `history`, `rollback`) complete from the same store.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from sysops.cli.main import COMPLETE_VARIABLE
from sysops.core.command_shape import CommandShape
from sysops.errors import SysopsError

if TYPE_CHECKING:
    from sysops.store import Store

T = TypeVar("T")

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


def _from_local_store(read: Callable[[Store], list[T]]) -> list[T]:
    """What `read` finds in the local store; nothing in a remote context, before the first `up`, or when the
    store cannot be read (a Tab never prints an error)."""
    from sysops.cli import contexts
    from sysops.settings import Settings

    try:
        if contexts.current() is not None:
            return []
        settings = Settings()
        if not settings.store_path.exists():
            return []
        from sysops.store import Store

        store = Store(settings.store_path)
        try:
            return read(store)
        finally:
            store.close()
    except (SysopsError, sqlite3.Error, OSError, ValueError):
        return []


def stored_shapes() -> list[CommandShape]:
    """The routed commands' shapes, from the routes in the local store."""
    from sysops.core.command_shape import shape_from_spec

    return _from_local_store(
        lambda store: [shape_from_spec(route.command, route.plugin, route.spec) for route in store.routes()]
    )


def plugin_names(incomplete: str) -> list[str]:
    """Completion of a plugin-name argument (`plugin status <Tab>`): the plugins in the local store."""
    return _from_local_store(
        lambda store: [plugin.name for plugin in store.plugins() if plugin.name.startswith(incomplete)]
    )


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

"""Shell completion: `sysops completion bash|zsh|fish` prints the script, and the shell's callback completes.

The scripts are click's: on each Tab the shell runs `sysops` with `_SYSOPS_COMPLETE=<shell>_complete` and
`COMP_WORDS`/`COMP_CWORD` in the environment. cli/main.py hands that call to `complete` before anything
else. The tree completed is the built-in commands plus the plugin commands, with their options and choices,
read from the routes stored in this installation's state database: a Tab starts no host and no container
and opens no connection. In a remote context (SYSOPS_SERVER or a context's server) only the built-in
commands are completed, since asking the server would put a network round trip on every Tab. Plugin-name
arguments (`plugin status <Tab>`, `down`, `logs`, `history`, `rollback`) complete from the same store.

A plugin's words reach the shell, which inserts a candidate unquoted: a candidate outside SAFE_WORD is
dropped and help texts are made one printable line. A damaged route is skipped on its own, and a Tab never
writes to stderr: on any failure the built-in commands are completed, exit 0.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from sysops.cli.main import COMPLETE_VARIABLE
from sysops.core.command_shape import SAFE_WORD, CommandShape
from sysops.errors import SysopsError

if TYPE_CHECKING:
    import click
    from click.shell_completion import CompletionItem

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
    """The routed commands' shapes, from the routes in the local store; a route that is not a CommandSpec
    (a damaged store) is skipped."""
    from sysops.core.command_shape import shape_from_spec

    def shapes(store: Store) -> list[CommandShape]:
        made: list[CommandShape] = []
        for route in store.routes():
            try:
                made.append(shape_from_spec(route.command, route.plugin, route.spec))
            except Exception:  # protobuf's DecodeError (untyped), or a value the shape refuses: skip this one
                continue
        return made

    return _from_local_store(shapes)


def plugin_names(incomplete: str) -> list[str]:
    """Completion of a plugin-name argument (`plugin status <Tab>`): the plugins in the local store."""
    return _from_local_store(lambda store: [name for name in store.plugin_names() if name.startswith(incomplete)])


def _not_run(shape: CommandShape, arguments: dict[str, Any], output: str) -> None:
    raise AssertionError(f"completion does not run {shape.name!r}")  # pragma: no cover - completion never invokes


def _buildable(shape: CommandShape) -> bool:
    """Whether click accepts the shape's parameters (a stored route may declare ones it refuses)."""
    from sysops.cli.routed import build_command

    try:
        build_command(shape, shape.name.split(" ")[-1], _not_run)
    except (ValueError, TypeError):
        return False
    return True


def _shown(item: CompletionItem) -> CompletionItem | None:
    """The item as a shell may receive it: None for a word outside SAFE_WORD, help made one printable line
    (zsh reads a candidate's help as one line of a triple, fish as the rest of one record)."""
    from click.shell_completion import CompletionItem

    from sysops.safe_text import escape_controls

    if item.type == "plain" and not SAFE_WORD.fullmatch(item.value):
        return None
    help_text = escape_controls(item.help, one_line=True).replace("\t", " ") if item.help else None
    return CompletionItem(item.value, type=item.type, help=help_text)


def _answer(group: click.Command, shell: str) -> str:
    """The completion data for the shell asking (`COMP_WORDS`/`COMP_CWORD` in the environment)."""
    from click.shell_completion import get_completion_class

    script_class = get_completion_class(shell)
    assert script_class is not None  # `complete` checked the shell
    completer = script_class(group, {}, PROG_NAME, COMPLETE_VARIABLE)
    args, incomplete = completer.get_completion_args()
    items = (_shown(item) for item in completer.get_completions(args, incomplete))
    return "\n".join(completer.format_completion(item) for item in items if item is not None)


def complete(instruction: str) -> int:
    """Answer one completion request of a shell (`instruction` is the variable's value, like `bash_complete`):
    the built-ins plus the stored plugin commands, or the built-ins alone if anything about those fails."""
    from click.shell_completion import get_completion_class, shell_complete

    from sysops.cli.app import app
    from sysops.cli.routed import Commands, add_routes

    shell, _, action = instruction.partition("_")
    if action != "complete" or get_completion_class(shell) is None:
        return shell_complete(typer.main.get_command(app), {}, PROG_NAME, COMPLETE_VARIABLE, instruction)
    try:
        group = typer.main.get_command(app)
        assert isinstance(group, typer.core.TyperGroup)
        add_routes(group, Commands([shape for shape in stored_shapes() if _buildable(shape)], _not_run))
        answer = _answer(group, shell)
    except Exception:  # a Tab must never print an error: complete the built-ins instead
        try:
            answer = _answer(typer.main.get_command(app), shell)
        except Exception:  # not even those: complete nothing
            answer = ""
    if answer:
        sys.stdout.write(answer + "\n")
    return 0

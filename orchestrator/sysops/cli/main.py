"""Entry point of `sysops`: routes plugin commands fast, and everything else through the typer app.

`sysops greet World` must cost little more than a gRPC call: when the first word is not a built-in, the
resident host is asked for that command's shape and runs the call (cli/host_call.py). Plain arguments are
parsed without click (cli/plain_args.py); otherwise only that command is built in click. Neither imports
typer's app, gRPC, protobuf, the Docker SDK or pydantic. Every SysopsError becomes one line on stderr and
its stable exit code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from sysops.errors import ExitCode, SysopsError
from sysops.reserved import RESERVED_COMMANDS
from sysops.safe_text import for_terminal

if TYPE_CHECKING:
    import click

#: Set by the completion scripts of `sysops completion SHELL` (cli/completion.py's COMPLETE_VARIABLE).
COMPLETE_VARIABLE = "_SYSOPS_COMPLETE"


def _print_error(error: SysopsError) -> None:
    """One line (capped, control characters escaped: it may quote a plugin), then the details block."""
    hint = f"; {for_terminal(error.hint)}" if error.hint else ""
    sys.stderr.write(f"error: {for_terminal(error.message)}{hint}\n")
    if error.details:
        sys.stderr.write("".join(f"  {for_terminal(line)}\n" for line in error.details.rstrip("\n").split("\n")))


def _help_hint(error: click.ClickException) -> str:
    """Where the usage of the command a usage error is about is shown."""
    import click

    context = error.ctx if isinstance(error, click.UsageError) else None
    return f"`{context.command_path} --help` shows the usage" if context is not None else ""


def run_guarded(function: Callable[[], object]) -> int:
    """Run a CLI function, turning sysops and click errors into messages and exit codes.

    Click's `main(standalone_mode=False)` returns the code of an exit it caught: typer turns Ctrl-C into
    one with code 130 (`plugin logs -f`, `events -f`, `up --watch`), which must not become exit 0.
    """
    try:
        code = function()
        if isinstance(code, int) and not isinstance(code, bool) and code:
            return code
    except SysopsError as error:
        _print_error(error)
        return int(error.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        return 0
    except Exception as exc:
        click_code = _click_exit_code(exc) if "click" in sys.modules else None  # no click error without click
        if click_code is not None:
            return click_code
        if os.environ.get("SYSOPS_DEBUG"):  # a bug in sysops: still no traceback unless asked for
            raise
        detail = for_terminal(f"{type(exc).__name__}: {exc}")
        sys.stderr.write(f"error: internal error: {detail} (set SYSOPS_DEBUG=1 for a traceback)\n")
        return int(ExitCode.COMMAND_FAILED)
    return 0


def _click_exit_code(exc: Exception) -> int | None:
    """The exit code of a click exception, after saying what it has to say; None for any other exception."""
    import click

    if isinstance(exc, click.exceptions.Exit):
        return int(exc.exit_code)
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):  # a group named alone: its help is the answer
        exc.show()
        return int(exc.exit_code)
    if isinstance(exc, click.ClickException):  # one line like every other error (click's usage block is four)
        _print_error(SysopsError(exc.format_message().rstrip("."), hint=_help_hint(exc)))
        return int(exc.exit_code)
    if isinstance(exc, click.exceptions.Abort):
        return int(ExitCode.INTERRUPTED)
    return None


def _routed(argv: list[str]) -> int | None:
    """Run `argv` as a plugin command if its first word is routed; None if it is not.

    Locally the command's shape and its call go over one connection to the resident host (cli/host_call.py).
    Plain arguments need no click (cli/plain_args.py); anything else is parsed by the command built in click.
    """
    from sysops.cli.plain_args import plain_call
    from sysops.cli.routed_source import Commands, context_commands

    found: list[Commands] = []
    code = run_guarded(lambda: found.append(context_commands(prefix=argv[0])))
    if not found:
        return code
    commands = found[0]
    try:
        if not commands.shapes:
            return None
        plain = plain_call(commands.shapes, argv)
        if plain is not None:
            return run_guarded(lambda: commands.invoker(*plain))
        import click

        from sysops.cli.routed import add_routes

        group = click.Group("sysops")
        add_routes(group, commands)
        return run_guarded(lambda: group.main(argv, prog_name="sysops", standalone_mode=False))
    finally:
        commands.close()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if COMPLETE_VARIABLE in os.environ:  # a shell asking for completions (cli/completion.py): nothing else runs
        from sysops.cli.completion import complete

        return run_guarded(lambda: complete(os.environ[COMPLETE_VARIABLE]))
    # gRPC's core logs a failed TLS handshake on stderr at INFO: the CLI's one error line says it already.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if argv[:1] == ["--insecure"]:  # plaintext to a TCP server, by explicit choice (cli/contexts.py)
        argv = argv[1:]
        os.environ["SYSOPS_INSECURE"] = "1"
    if argv and not argv[0].startswith("-") and argv[0] not in RESERVED_COMMANDS:
        code = _routed(argv)
        if code is not None:
            return code
    if argv[:2] == ["plugin", "ls"]:  # the host answers it over the call socket (cli/plugin_ls.py)
        from sysops.cli.plugin_ls import fast_plugin_ls

        found: list[int | None] = []
        code = run_guarded(lambda: found.append(fast_plugin_ls(argv[2:])))
        if not found or found[0] is not None:
            return code
    from sysops.cli.app import build_cli

    return run_guarded(lambda: build_cli(argv).main(argv, prog_name="sysops", standalone_mode=False))


def entrypoint() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()

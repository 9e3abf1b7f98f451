"""Where the routed commands of the current context come from, and how they are run; click-free.

Locally the shapes come from the resident host over its call socket (cli/host_call.py), which also runs
the call. In a remote context (SYSOPS_SERVER) they come from the control server's Routes reply and the call
goes through its Invoke, over gRPC. Kept apart from cli/routed.py (which builds click commands from the
shapes) so that `sysops <command>` with plain arguments (cli/plain_args.py) never imports click.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sysops.cli.output import emit, write_result
from sysops.core.command_shape import CommandShape
from sysops.errors import CallInterruptedError, command_failure

if TYPE_CHECKING:
    from sysops.core.client import InvocationResult

#: Runs a command with its parsed arguments and output format, printing what it says.
Invoker = Callable[[CommandShape, dict[str, Any], str], None]


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
        raise command_failure(f"{shape.plugin}: {shape.name}: {item.error}", item.exit_code)
    if item.kind == "text":
        write_result(item.text)  # not joined to its newline: a result can be 64 MiB
        if not item.text.endswith("\n"):
            sys.stdout.write("\n")
    elif item.kind == "data":
        emit(item.data, output)

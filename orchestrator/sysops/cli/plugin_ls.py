"""`sysops plugin ls`: its table, and its fast path, which asks the local host without typer, pydantic or gRPC.

Importing the typer app costs about half a second on this kind of machine, more than the whole answer
should (issue 15: `plugin ls` with fifty plugins in at most 0.3 s). Like a routed command (cli/main.py), a
plain `plugin ls [-o FORMAT]` in the local context asks the resident host over its call socket
(host/call_wire.py `list`) for the same statuses its control API's Query `list` returns, and prints them as
the typer command does: one `ls_rows` serves both. Anything else (`--outdated`, `--help`, a server context,
no store yet, a host that does not know `list`) returns None, and the full CLI handles it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sysops.cli.output import DATA_FORMATS, emit
from sysops.safe_text import escape_controls

LS_COLUMNS = ("name", "state", "version", "revision", "replicas", "health", "rating", "container", "commands")
#: `plugin ls -o wide`: also where it runs, where it came from, its image and its last error.
LS_WIDE_COLUMNS = (*LS_COLUMNS, "runtime", "source", "image", "last_error")
#: The formats of `plugin ls -o` (cli/plugin_cmd.py Output).
LS_FORMATS = ("text", "json", "yaml", "wide")


def ls_rows(statuses: Sequence[dict[str, Any]], output: str) -> list[dict[str, Any]]:
    """The rows of `plugin ls` from plugin statuses (PluginStatus.as_dict): whole for JSON and YAML, else shown
    as a table shows them (commands joined, no rating as "-", a last error on one escaped line)."""
    data = output in DATA_FORMATS
    return [
        {
            "name": status["name"],
            "state": str(status["state"]),
            "version": status["version"],
            "revision": status["revision"],
            "health": status["health"],
            "replicas": status["replicas"],
            "rating": status["rating"] if data else (status["rating"] or "-"),
            "container": status["container_id"],
            "commands": status["commands"] if data else " ".join(status["commands"]),
            "runtime": status["runtime"],
            "source": status["source"],
            "image": status["image"],
            "last_error": status["last_error"] if data else escape_controls(status["last_error"], one_line=True),
        }
        for status in statuses
    ]


def print_ls(statuses: Sequence[dict[str, Any]], output: str) -> None:
    """Print `plugin ls` in `output` format."""
    emit(ls_rows(statuses, output), output, LS_COLUMNS, LS_WIDE_COLUMNS)


def fast_plugin_ls(options: Sequence[str]) -> int | None:
    """Run `plugin ls` with `options` (what follows it) through the local host's call socket; None when the
    full CLI must (module docstring)."""
    output = _output_format(options)
    if output is None:
        return None
    from sysops.cli import contexts

    if contexts.current() is not None:
        return None
    from sysops.settings import Settings

    settings = Settings()
    if not settings.store_path.exists():
        return None
    from sysops.cli.host_call import HostCall, HostUnawareError
    from sysops.host.launcher import ensure_host

    ensure_host(settings)  # a host of another sysops, engine or settings is replaced first, as on the full path
    with HostCall(settings) as host:
        try:
            statuses = host.plugins()
        except HostUnawareError:  # a host started by an older sysops: the full CLI asks it over gRPC
            return None
    print_ls(statuses, output)
    return 0


def _output_format(options: Sequence[str]) -> str | None:
    """The format of `plugin ls` options that are nothing but an output format; None for anything else."""
    if not options:
        return "text"
    if len(options) == 2 and options[0] in ("-o", "--output"):
        chosen = options[1]
    elif len(options) == 1 and options[0].startswith("--output="):
        chosen = options[0].removeprefix("--output=")
    else:
        return None
    return chosen if chosen in LS_FORMATS else None

"""`sysops plugin ls` as a thin client: the resident host answers it over its call socket.

The typer app (with pydantic, gRPC and the rest) costs more to import than `plugin ls` may take with fifty
plugins (0.3 s), so `cli/main.py` hands `plugin ls [--output|-o text|json|yaml|wide]` here first: the host's
call server (host/call_server.py, request `plugins`) answers with every plugin's status from its own
orchestrator, and this module prints the same rows as the typer command (cli/plugin_cmd.py `ls`, which
builds them with `listing_rows` too). Anything else (`--outdated`, `--help`, a remote context, no host
running, a host of an older version) returns False and the typer command runs. Standard library only, like
the routed path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sysops.cli.output import DATA_FORMATS, OUTPUT_FORMATS, emit
from sysops.safe_text import escape_controls

LS_COLUMNS = ("name", "state", "version", "revision", "replicas", "health", "rating", "container", "commands")
#: `plugin ls -o wide`: also where it runs, where it came from, its image and its last error.
LS_WIDE_COLUMNS = (*LS_COLUMNS, "runtime", "source", "image", "last_error")


def listing_rows(statuses: Iterable[Mapping[str, Any]], output: str) -> list[dict[str, Any]]:
    """The rows of `plugin ls` in `output` format, from plugin statuses as dicts (PluginStatus.as_dict)."""
    data = output in DATA_FORMATS
    return [
        {
            "name": s["name"],
            "state": s["state"],
            "version": s["version"],
            "revision": s["revision"],
            "health": s["health"],
            "replicas": s["replicas"],
            "rating": s["rating"] if data else (s["rating"] or "-"),
            "container": s["container_id"],
            "commands": s["commands"] if data else " ".join(s["commands"]),
            "runtime": s["runtime"],
            "source": s["source"],
            "image": s["image"],
            "last_error": s["last_error"] if data else escape_controls(s["last_error"], one_line=True),
        }
        for s in statuses
    ]


def listing_output(arguments: list[str]) -> str | None:
    """The output format of `plugin ls ARGUMENTS`, or None if they ask for more than the fast path does."""
    output = "text"
    rest = list(arguments)
    while rest:
        word = rest.pop(0)
        if word in ("--output", "-o") and rest:
            output = rest.pop(0)
        elif word.startswith("--output="):
            output = word.removeprefix("--output=")
        elif word.startswith("-o") and len(word) > 2:
            output = word[2:]
        else:
            return None
    return output if output in OUTPUT_FORMATS else None  # a wrong one: the typer command says why


def fast_plugin_ls(arguments: list[str]) -> bool:
    """Print `plugin ls ARGUMENTS` from the local host's answer; False (nothing printed) if the fast path
    does not apply and the typer command must run."""
    output = listing_output(arguments)
    if output is None:
        return False
    from sysops.cli import contexts

    if contexts.current() is not None:  # a remote context: its server answers (cli/remote.py)
        return False
    from sysops.host.paths import host_paths
    from sysops.settings import Settings

    settings = Settings()
    if not host_paths(settings).call_socket.exists():  # no host runs here: the typer command starts one
        return False
    from sysops.cli.host_call import HostCall
    from sysops.host.launcher import ensure_host

    ensure_host(settings)  # a host of another sysops or other settings is replaced, as for the typer command
    with HostCall(settings) as host:
        statuses = host.plugins()
    if statuses is None:
        return False
    emit(listing_rows(statuses, output), output, LS_COLUMNS, LS_WIDE_COLUMNS)
    return True

"""Which orchestrator the CLI talks to: itself (the `local` context) or a `sysops serve`, like kubectl contexts.

Resolution order: `SYSOPS_SERVER` (+ `SYSOPS_TOKEN`) in the environment; else the context named by
`SYSOPS_CONTEXT` or `current-context` in the config file (`SYSOPS_CONFIG`, default
`~/.config/sysops/config.yaml`); else local. Kept cheap: the routed-command path calls `current()`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sysops.errors import NotFoundError, UsageError
from sysops.private_paths import ensure_private_dir, write_private_file

LOCAL = "local"
#: The endpoint of routes that go through a server rather than straight to an instance.
REMOTE_ENDPOINT = "sysops-server"


@dataclass(frozen=True)
class ServerContext:
    """A remote orchestrator: its gRPC address and the bearer token it expects."""

    name: str
    server: str
    token: str


def config_path() -> Path:
    """The CLI's config file."""
    explicit = os.environ.get("SYSOPS_CONFIG")
    if explicit:
        return Path(explicit)
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "sysops" / "config.yaml"


def _load() -> dict[str, Any]:
    path = config_path()
    if not path.exists():
        return {"current-context": LOCAL, "contexts": {}}
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not isinstance(data.get("contexts", {}), dict):
        raise UsageError(f"{path}: expected 'current-context' and a 'contexts' mapping")
    data.setdefault("contexts", {})
    data.setdefault("current-context", LOCAL)
    return data


def _save(data: dict[str, Any]) -> None:
    import yaml

    path = config_path()
    if os.environ.get("SYSOPS_CONFIG"):
        path.parent.mkdir(parents=True, exist_ok=True)  # a directory the user chose: leave its mode alone
    else:
        ensure_private_dir(path.parent)
    write_private_file(path, yaml.safe_dump(data, sort_keys=True))  # it holds tokens: 0600 from creation


def current() -> ServerContext | None:
    """The remote context in effect, or None for local."""
    server = os.environ.get("SYSOPS_SERVER")
    if server:
        return ServerContext("environment", server, os.environ.get("SYSOPS_TOKEN", ""))
    if not os.environ.get("SYSOPS_CONTEXT") and not config_path().exists():
        return None
    data = _load()
    name = os.environ.get("SYSOPS_CONTEXT") or data["current-context"]
    if name == LOCAL:
        return None
    entry = data["contexts"].get(name)
    if not isinstance(entry, dict):
        raise NotFoundError(f"{config_path()}: no context named {name!r}", hint="`sysops context ls` lists them")
    return ServerContext(name, str(entry.get("server", "")), str(entry.get("token", "")))


def local_host() -> ServerContext:
    """The context of this installation's resident host, started if it does not run (no token: its socket is 0600)."""
    from sysops.host.launcher import ensure_host

    return ServerContext(LOCAL, f"unix:{ensure_host().control_socket}", "")


def set_context(name: str, server: str, token: str) -> None:
    """Add or change a context."""
    if name == LOCAL:
        raise UsageError("'local' is the built-in context and has no server")
    data = _load()
    data["contexts"][name] = {"server": server, "token": token}
    _save(data)


def use_context(name: str) -> None:
    """Make a context current."""
    data = _load()
    if name != LOCAL and name not in data["contexts"]:
        raise NotFoundError(f"no context named {name!r}", hint="`sysops context set NAME --server ...` adds one")
    data["current-context"] = name
    _save(data)


def list_contexts() -> list[dict[str, str]]:
    """All contexts, with which one is current."""
    data = _load()
    current_name = data["current-context"]
    rows = [{"name": LOCAL, "server": "(this machine)", "current": "*" if current_name == LOCAL else ""}]
    for name, entry in sorted(data["contexts"].items()):
        rows.append(
            {"name": name, "server": str(entry.get("server", "")), "current": "*" if name == current_name else ""}
        )
    return rows

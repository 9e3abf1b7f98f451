"""Which orchestrator the CLI talks to: itself (the `local` context) or a `sysops serve`, like kubectl contexts.

Resolution order: `SYSOPS_SERVER` (+ `SYSOPS_TOKEN`) in the environment; else the context named by
`SYSOPS_CONTEXT` or `current-context` in the config file (`SYSOPS_CONFIG`, default
`~/.config/sysops/config.yaml`); else local. Kept cheap: the routed-command path calls `current()`.

A server is talked to over TLS, verified with the context's `ca` (a PEM file; the system's CAs without one)
for its `server-name` (the host of its address without one); `SYSOPS_SERVER_CA` and `SYSOPS_SERVER_NAME`
override them. Plaintext only by explicit choice: `insecure: true` in the context (`sysops context set
--insecure`) or `SYSOPS_INSECURE=1` (`sysops --insecure ...`). `SYSOPS_SERVER_CA` given for a context stored
with `insecure: true` switches it back to TLS (a CA is a request to verify); `SYSOPS_INSECURE=1`, said for
this one command, wins over everything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sysops.errors import NotFoundError, UsageError
from sysops.private_paths import ensure_private_dir, write_private_file

LOCAL = "local"
CA_ENV = "SYSOPS_SERVER_CA"
SERVER_NAME_ENV = "SYSOPS_SERVER_NAME"
INSECURE_ENV = "SYSOPS_INSECURE"
#: The endpoint of routes that go through a server rather than straight to an instance.
REMOTE_ENDPOINT = "sysops-server"


@dataclass(frozen=True)
class ServerContext:
    """A remote orchestrator: its gRPC address, the bearer token it expects, and how its TLS is verified."""

    name: str
    server: str
    token: str
    #: PEM file of the CA that verifies the server's certificate ('': the system's CAs).
    ca: str = ""
    #: The name the server's certificate must carry ('': the host of `server`).
    server_name: str = ""
    #: Plaintext, no TLS: only when the user said so.
    insecure: bool = False


def insecure_from_env() -> bool:
    """Whether SYSOPS_INSECURE asks for plaintext (`1`, `true`, `yes`)."""
    return os.environ.get(INSECURE_ENV, "").strip().lower() in ("1", "true", "yes")


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
        return _with_tls_env(ServerContext("environment", server, os.environ.get("SYSOPS_TOKEN", "")))
    if not os.environ.get("SYSOPS_CONTEXT") and not config_path().exists():
        return None
    data = _load()
    name = os.environ.get("SYSOPS_CONTEXT") or data["current-context"]
    if name == LOCAL:
        return None
    entry = data["contexts"].get(name)
    if not isinstance(entry, dict):
        raise NotFoundError(f"{config_path()}: no context named {name!r}", hint="`sysops context ls` lists them")
    return _with_tls_env(
        ServerContext(
            name,
            str(entry.get("server", "")),
            str(entry.get("token", "")),
            ca=str(entry.get("ca", "") or ""),
            server_name=str(entry.get("server-name", "") or ""),
            insecure=entry.get("insecure") is True,
        )
    )


def _with_tls_env(context: ServerContext) -> ServerContext:
    """The context with SYSOPS_SERVER_CA, SYSOPS_SERVER_NAME and SYSOPS_INSECURE applied over its own values
    (a CA from the environment turns a stored `insecure` back to TLS; SYSOPS_INSECURE=1 is plaintext)."""
    ca_from_env = os.environ.get(CA_ENV, "").strip()
    return replace(
        context,
        ca=ca_from_env or context.ca,
        server_name=os.environ.get(SERVER_NAME_ENV, "").strip() or context.server_name,
        insecure=(context.insecure and not ca_from_env) or insecure_from_env(),
    )


def local_host() -> ServerContext:
    """The context of this installation's resident host, started if it does not run (no token: its socket is 0600)."""
    from sysops.host.launcher import ensure_host

    return ServerContext(LOCAL, f"unix:{ensure_host().control_socket}", "")


def set_context(
    name: str, server: str, token: str, *, ca: str = "", server_name: str = "", insecure: bool = False
) -> None:
    """Add or change a context (`ca` is kept as an absolute path, and must be readable now)."""
    if name == LOCAL:
        raise UsageError("'local' is the built-in context and has no server")
    if ca and insecure:
        raise UsageError("--ca and --insecure contradict each other: a plaintext connection verifies nothing")
    entry: dict[str, Any] = {"server": server, "token": token}
    if ca:
        ca_path = Path(ca).expanduser().resolve()
        if not ca_path.is_file():
            raise UsageError(f"--ca {ca}: no such file")
        entry["ca"] = str(ca_path)
    if server_name:
        entry["server-name"] = server_name
    if insecure:
        entry["insecure"] = True
    data = _load()
    data["contexts"][name] = entry
    _save(data)


def use_context(name: str) -> None:
    """Make a context current."""
    data = _load()
    if name != LOCAL and name not in data["contexts"]:
        raise NotFoundError(f"no context named {name!r}", hint="`sysops context set NAME --server ...` adds one")
    data["current-context"] = name
    _save(data)


def list_contexts() -> list[dict[str, str]]:
    """All contexts as stored, with which one is current and how each verifies the server (`tls`)."""
    data = _load()
    current_name = data["current-context"]
    rows = [{"name": LOCAL, "server": "(this machine)", "tls": "-", "current": "*" if current_name == LOCAL else ""}]
    for name, entry in sorted(data["contexts"].items()):
        rows.append(
            {
                "name": name,
                "server": str(entry.get("server", "")),
                "tls": _stored_tls(entry),
                "current": "*" if name == current_name else "",
            }
        )
    return rows


def _stored_tls(entry: dict[str, Any]) -> str:
    """How a stored context talks to its server: `insecure (plaintext)`, `ca FILE`, or `system CAs`."""
    if entry.get("insecure") is True:
        return "insecure (plaintext)"
    return f"ca {entry['ca']}" if entry.get("ca") else "system CAs"

"""Who calls the control API, and what their role lets them do (docs/cli.md#roles).

A `sysops serve` is shared: each CLI caller presents a bearer token, and the role that token has decides
what the caller may do, before any plugin is called. The server's own token (SYSOPS_SERVER_TOKEN) is
admin; the policy's `callers` map other tokens (by their sha256, never the token itself) to a name and a
role. The resident host's Unix socket (0600, no token) belongs to its owner, who is admin.

    viewer    Query, Logs, Events, Routes (and the permissions/config/metrics/alerts views); Invoke of a
              command whose CommandSpec.read_only is true
    operator  viewer + Invoke of any command, `events publish`, `alerts resolve`
    admin     operator + Up, Down, Rollback, `plugin config set`

The interceptor refuses an unknown token (UNAUTHENTICATED) and the methods that need more than viewer by
their name alone; the servicer checks what depends on the request (which command, which action) with
`require`. Health checks and `sysops.host.v1.Host` calls (plugins, authenticated by their instance token
in the host servicer) pass through.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from sysops.errors import ExitCode, PolicyDeniedError

if TYPE_CHECKING:
    from sysops.core.policy import Policy

EXIT_CODE_METADATA_KEY = "sysops-exit-code"
AUTHORIZATION_METADATA_KEY = "authorization"
#: Calls no caller token guards: health checks, and plugins calling the host (their instance token is checked there).
PASS_THROUGH_PREFIXES = ("/grpc.health.v1.Health/", "/sysops.host.v1.Host/")
CONTROL_PREFIX = "/sysops.control.v1.Control/"


class Role(IntEnum):
    """A caller's role; each one may do everything the ones below it may."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    def __str__(self) -> str:
        return self.name.lower()


#: What each Control method needs, whatever the request says (Invoke and Act are refined by the servicer).
METHOD_ROLES: Mapping[str, tuple[Role, str]] = {
    "Up": (Role.ADMIN, "run plugin up"),
    "Down": (Role.ADMIN, "run plugin down"),
    "Rollback": (Role.ADMIN, "run plugin rollback"),
}


@dataclass(frozen=True)
class Caller:
    """An authenticated CLI caller."""

    name: str
    role: Role

    @property
    def principal(self) -> str:
        """How the plugin sees the caller (CallerIdentity.principal)."""
        return f"user:{self.name}"


#: The resident host's owner (its socket is 0600) and the holder of a server's own token.
OWNER = Caller("owner", Role.ADMIN)
SERVER_ADMIN = Caller("admin", Role.ADMIN)

#: Finds the caller a bearer token belongs to, or None for an unknown token.
CallerLookup = Callable[[str], Caller | None]


def require(caller: Caller, needed: Role, action: str) -> None:
    """Refuse (PolicyDeniedError, exit 9) a caller whose role is below `needed` for `action`."""
    if caller.role < needed:
        raise PolicyDeniedError(f"caller {caller.name!r} (role {caller.role}) may not {action}; it needs role {needed}")


def bearer(metadata: Any) -> str:
    """The token of an `authorization: Bearer TOKEN` metadata entry ("" without one)."""
    value = str(dict(metadata or ()).get(AUTHORIZATION_METADATA_KEY, ""))
    return value.removeprefix("Bearer ") if value.startswith("Bearer ") else ""


class ServerCallers:
    """The callers of a TCP server: its own token (admin), then the policy's `callers`; the policy is read
    again when its file changes, so a new caller needs no restart."""

    def __init__(self, server_token: str, home: Path) -> None:
        self._server_token = server_token
        self._home = home
        self._stamp: tuple[str, int, int] | None = None
        self._policy: Policy | None = None

    def __call__(self, token: str) -> Caller | None:
        """The caller `token` belongs to, or None."""
        from sysops.core.policy import role_for_token

        if not token:
            return None
        if self._server_token and hmac.compare_digest(token.encode(), self._server_token.encode()):
            return SERVER_ADMIN
        found = role_for_token(self._current_policy(), token)
        return None if found is None else Caller(found[0], Role[found[1].upper()])

    def _current_policy(self) -> Policy:
        from sysops.core.policy import load_policy, policy_path

        path = policy_path(self._home)
        try:
            status = os.stat(path)
            stamp = (str(path), status.st_mtime_ns, status.st_size)
        except OSError:
            stamp = (str(path), 0, 0)
        if self._policy is None or stamp != self._stamp:
            self._policy = load_policy(self._home)
            self._stamp = stamp
        return self._policy


def owner_only(token: str) -> Caller:
    """The resident host's socket: whoever can connect is its owner."""
    return OWNER


def _refusal(status: grpc.StatusCode, message: str, exit_code: int | None) -> Any:
    def refuse(request: object, context: grpc.ServicerContext) -> None:
        if exit_code is not None:
            context.set_trailing_metadata(((EXIT_CODE_METADATA_KEY, str(exit_code)),))
        context.abort(status, message)

    return grpc.unary_unary_rpc_method_handler(refuse)


class RoleAuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Authenticate every control call by its bearer token and refuse a method above the caller's role."""

    def __init__(self, callers: CallerLookup) -> None:
        self._callers = callers
        self._unknown = _refusal(grpc.StatusCode.UNAUTHENTICATED, "missing or unknown sysops caller token", None)

    def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        """Pass health and host calls; refuse unknown tokens and methods above the caller's role."""
        method = str(handler_call_details.method)
        if method.startswith(PASS_THROUGH_PREFIXES):
            return continuation(handler_call_details)
        try:
            caller = self._callers(bearer(handler_call_details.invocation_metadata))
        except PolicyDeniedError as error:  # a broken policy file: say so rather than "unknown token"
            return _refusal(grpc.StatusCode.FAILED_PRECONDITION, str(error), int(ExitCode.POLICY_DENIED))
        if caller is None:
            return self._unknown
        needed = METHOD_ROLES.get(method.removeprefix(CONTROL_PREFIX))
        if needed is not None:
            try:
                require(caller, *needed)
            except PolicyDeniedError as error:
                return _refusal(grpc.StatusCode.PERMISSION_DENIED, str(error), int(error.exit_code))
        return continuation(handler_call_details)

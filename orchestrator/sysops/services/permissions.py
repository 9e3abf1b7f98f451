"""Which permission each host service method needs, and which of a plugin's asked permissions are granted.

The one table of (service, method) -> permission lives here, so the dispatcher, the docs and
`sysops plugin permissions` agree. A plugin's manifest `permissions:` is what it ASKS; the operator's
policy GRANTS, by name or by segment wildcard (`system.*` matches `system.deploy` and `system.a.b`, `*`
matches everything). Granted = the asked permissions some grant matches: a permission the manifest does
not ask for is never granted, whatever the policy says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sysops.core.manifest import is_permission_name

#: Permission a plugin needs for its Describe `subscriptions` to be honoured.
SUBSCRIBE_PERMISSION = "events.subscribe"
#: The grant that matches every permission.
GRANT_ALL = "*"

#: (service, method) -> the permission a call needs.
METHOD_PERMISSIONS: Mapping[tuple[str, str], str] = {
    ("state", "get"): "state.read",
    ("state", "list"): "state.read",
    ("state", "set"): "state.write",
    ("state", "delete"): "state.write",
    ("state", "cas"): "state.write",
    ("config", "get"): "config.read",
    ("config", "all"): "config.read",
    ("config", "section"): "config.read",
    ("metrics", "counter"): "metrics.write",
    ("metrics", "gauge"): "metrics.write",
    ("metrics", "histogram"): "metrics.write",
    ("alerts", "raise"): "alerts.write",
    ("alerts", "resolve"): "alerts.write",
    ("alerts", "list"): "alerts.read",
    ("events", "publish"): "events.publish",
    ("logs", "write"): "logs.write",
}

#: Methods whose service checks each call itself, so no grant is needed (their permission is ""): `secrets.get`
#: (the manifest's `secrets:` is what a plugin asks, the policy's `plugins.NAME.secrets` what it is given).
SELF_CHECKED: frozenset[tuple[str, str]] = frozenset({("secrets", "get")})
#: Methods any plugin may call without a grant: `plugins.available` and `plugins.check` say only which plugins
#: run in which versions (what `sysops plugin ls` shows), so a plugin can check its dependencies.
OPEN_METHODS: frozenset[tuple[str, str]] = frozenset({("plugins", "available"), ("plugins", "check")})
_NO_GRANT = SELF_CHECKED | OPEN_METHODS

#: Every service name, sorted (for messages naming what exists).
SERVICES: tuple[str, ...] = tuple(sorted({service for service, _ in (*METHOD_PERMISSIONS, *_NO_GRANT)}))


def methods_of(service: str) -> tuple[str, ...]:
    """The methods of `service`, sorted (empty for an unknown service)."""
    return tuple(sorted(method for name, method in (*METHOD_PERMISSIONS, *_NO_GRANT) if name == service))


def permission_for(service: str, method: str) -> str | None:
    """The permission a call of `service.method` needs ("" when its service checks the call itself or it needs
    none), or None for an unknown service or method."""
    return "" if (service, method) in _NO_GRANT else METHOD_PERMISSIONS.get((service, method))


def valid_permission(name: str) -> bool:
    """Say whether `name` is a permission name a manifest may ask for (the manifest's rule)."""
    return is_permission_name(name)


def valid_grant(name: str) -> bool:
    """Say whether `name` may be granted by the policy: a permission name (wildcards allowed) or `*`."""
    return name == GRANT_ALL or is_permission_name(name)


def grant_matches(grant: str, permission: str) -> bool:
    """Say whether `grant` covers `permission`.

    Segments compare one by one; a `*` segment matches any one segment, and a trailing `*` matches one or
    more (`system.*` covers `system.deploy` and `system.a.b`, not `system`); `*` alone covers everything.
    """
    if grant == GRANT_ALL:
        return True
    wanted = grant.split(".")
    have = permission.split(".")
    for index, segment in enumerate(wanted):
        if index >= len(have):
            return False
        last = index == len(wanted) - 1
        if segment == "*":
            if last:
                return True
            continue
        if segment != have[index]:
            return False
    return len(wanted) == len(have)


@dataclass(frozen=True)
class PermissionReport:
    """What a plugin asks (its manifest), what the policy grants of that, and what it refuses (both sorted)."""

    asked: tuple[str, ...]
    granted: tuple[str, ...]
    refused: tuple[str, ...]


def permission_report(asked: Sequence[str], grants: Sequence[str]) -> PermissionReport:
    """Split `asked` into granted (some grant matches) and refused; what is not asked is never granted."""
    unique = tuple(sorted(set(asked)))
    granted = tuple(name for name in unique if any(grant_matches(grant, name) for grant in grants))
    refused = tuple(name for name in unique if name not in granted)
    return PermissionReport(asked=unique, granted=granted, refused=refused)

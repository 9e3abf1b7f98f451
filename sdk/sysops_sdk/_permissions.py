"""The SDK's own check of a command's `@requires_permission` against what the host granted (defence in depth).

The host is the authority: it refuses a command whose permissions policy does not grant before the call
reaches the plugin. It also sends the granted set (`CallerIdentity.granted_permissions`), and the plugin
server refuses too, so a host that forgot to check still cannot run such a command. Grants match by dotted
segment like the host's policy: `system.*` grants `system.deploy` and `system.a.b`; `*` grants everything.
"""

from __future__ import annotations

from collections.abc import Iterable


def grant_matches(grant: str, permission: str) -> bool:
    """Whether `grant` (possibly with `*` segments) covers `permission`."""
    wanted, segments = permission.split("."), grant.split(".")
    for index, segment in enumerate(segments):
        if segment == "*" and index == len(segments) - 1:
            return len(wanted) > index  # a trailing `*` covers one or more remaining segments
        if index >= len(wanted) or segment not in ("*", wanted[index]):
            return False
    return len(wanted) == len(segments)


def first_missing(required: Iterable[str], granted: Iterable[str]) -> str | None:
    """The first of `required` that no grant in `granted` covers, or None when all are granted."""
    grants = list(granted)
    return next((p for p in required if not any(grant_matches(grant, p) for grant in grants)), None)

"""Plugin names, checked wherever one enters sysops, and user-supplied text made safe to echo in errors.

A plugin name becomes a lock file path, container, image and volume names, labels and SQL keys; an
unchecked `sysops plugin down /srv/app/poetry` once truncated `/srv/app/poetry.lock`. So every entry
point (CLI arguments, control API requests, the manifest, the Orchestrator's own methods) checks names
against the DNS-1123 label rule here. Patterns use `fullmatch`: `$` would let a trailing newline through.

Errors echo what the user gave; `shown` escapes control characters (one line) and caps the length, so a
hostile value cannot flood or forge the terminal.
"""

from __future__ import annotations

import re

from sysops.errors import UsageError

#: Lowercase letters, digits and '-', 1 to 63 characters, no '-' at either end (RFC 1123 label).
PLUGIN_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
PLUGIN_NAME_RULE = "lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit"
#: Longest echo of a user-supplied value in an error message.
ECHO_LIMIT = 60


def shown(value: object, limit: int = ECHO_LIMIT) -> str:
    """`value` for a one-line message: strings quoted, non-printable characters escaped, capped at `limit`."""
    text = value if isinstance(value, str) else repr(value)
    escaped = repr(text)[1:-1] if not text.isprintable() else text
    if len(escaped) > limit:
        escaped = f"{escaped[: limit - 3]}..."
    return f"'{escaped}'" if isinstance(value, str) else escaped


def is_plugin_name(name: str) -> bool:
    """Say whether `name` is a valid plugin name (a DNS-1123 label)."""
    return PLUGIN_NAME.fullmatch(name) is not None


def check_plugin_name(name: str) -> str:
    """Return `name`, or raise UsageError (exit 2) saying what a plugin name may contain."""
    if not is_plugin_name(name):
        raise UsageError(
            f"invalid plugin name {shown(name)}: a plugin name has {PLUGIN_NAME_RULE}",
            hint="`sysops plugin ls` lists the plugins",
        )
    return name

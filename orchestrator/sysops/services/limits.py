"""The limits of the host services (docs: the services reference), and the checks several services share.

A plugin is untrusted: every argument it sends is checked here or in its service before anything is
stored, and a call beyond a limit is refused with one line (INVALID_ARGUMENT for a malformed value,
RESOURCE_EXHAUSTED for a quota), never a traceback. The event bus uses the topic and payload checks too.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sysops.core.names import shown
from sysops.services.call import ServiceCallError

STATE_KEY_CHARS = 256
STATE_VALUE_BYTES = 64 * 1024
STATE_KEYS_PER_PLUGIN = 1000
STATE_BYTES_PER_PLUGIN = 4 * 1024 * 1024
EVENT_PAYLOAD_BYTES = 64 * 1024
TOPIC = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
#: Topics under this prefix are published by the host only.
HOST_TOPIC_PREFIX = "sysops."
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
METRIC_NAME_CHARS = 100
METRIC_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
METRIC_LABELS = 10
METRIC_SERIES_PER_PLUGIN = 1000
METRIC_HELP_CHARS = 1000
METRIC_LABEL_VALUE_CHARS = 256
METRIC_BUCKETS = 64
LOG_MESSAGE_BYTES = 8 * 1024
LOG_FIELDS_BYTES = 16 * 1024
LOGS_PER_PLUGIN = 5000
ALERT_NAME_CHARS = 128
ALERT_MESSAGE_CHARS = 4096
RESOLVED_ALERTS_PER_PLUGIN = 1000
OPEN_ALERTS_PER_PLUGIN = 1000


def json_text(value: Any) -> str:
    """`value` as compact JSON (what is stored and measured); a value JSON cannot hold is INVALID_ARGUMENT, and
    so is one nested too deep to write again (it parsed, just under the parser's limit)."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ServiceCallError("invalid_argument", f"value is not JSON: {exc}") from None
    except RecursionError:
        raise ServiceCallError("invalid_argument", "value is nested too deeply") from None


def json_bytes(value: Any) -> int:
    """Size of `value` as compact UTF-8 JSON."""
    return len(json_text(value).encode())


def check_topic(topic: Any, *, by_host: bool = False) -> str:
    """Return `topic` if it is a valid topic one may publish on; host topics (`sysops.`) are the host's alone."""
    if not isinstance(topic, str) or not TOPIC.fullmatch(topic):
        raise ServiceCallError(
            "invalid_argument", f"topic {shown(topic)} must match [a-z0-9][a-z0-9._-]{{0,127}}, like 'deploy.done'"
        )
    if topic.startswith(HOST_TOPIC_PREFIX) and not by_host:
        raise ServiceCallError(
            "permission_denied", f"topic {shown(topic)}: topics 'sysops.*' are published by the host"
        )
    return topic


def check_payload(payload: Any) -> str:
    """`payload` as JSON text, refused above EVENT_PAYLOAD_BYTES."""
    text = json_text(payload)
    if len(text.encode()) > EVENT_PAYLOAD_BYTES:
        raise ServiceCallError(
            "invalid_argument", f"event payload is {len(text.encode())} bytes as JSON, above {EVENT_PAYLOAD_BYTES}"
        )
    return text


def text_argument(arguments: dict[str, Any], name: str, limit: int, *, default: str | None = None) -> str:
    """The string argument `name` (at most `limit` characters; required unless `default` is given)."""
    value = arguments.get(name, default)
    if value is None:
        raise ServiceCallError("invalid_argument", f"argument '{name}' is required")
    if not isinstance(value, str):
        raise ServiceCallError("invalid_argument", f"argument '{name}' must be a string (got {shown(value)})")
    if len(value) > limit:
        raise ServiceCallError("invalid_argument", f"argument '{name}' is {len(value)} characters, above {limit}")
    return value


def check_arguments(arguments: dict[str, Any], allowed: tuple[str, ...], method: str) -> None:
    """Refuse an argument `method` does not take (a typo would otherwise be silently ignored)."""
    unknown = sorted(set(arguments) - set(allowed))
    if unknown:
        raise ServiceCallError(
            "invalid_argument",
            f"{method} takes no argument {shown(unknown[0])} (it takes: {', '.join(allowed) or 'none'})",
        )

"""Status conditions as Kubernetes writes them (type, status, reason, message, lastTransitionTime).

Kept apart from the Kubernetes runtime so the core can describe a plugin's state for a mirror's status
without importing the kubernetes client (an optional dependency).
"""

from __future__ import annotations

from datetime import UTC, datetime


def condition(kind: str, status: bool, reason: str, message: str = "") -> dict[str, str]:
    """One status condition (Ready, Progressing, Degraded), stamped now; without a message when `message` is
    empty (an API server may decode an empty string as null, which a string field refuses)."""
    stamped = {
        "type": kind,
        "status": "True" if status else "False",
        "reason": reason,
        "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return {**stamped, "message": message} if message else stamped

"""A base for the tests' fake host service dispatchers: they answer nothing from memory, so every call of theirs
goes to the listener's threads (services/transport.py), as calls that need the database do."""

from __future__ import annotations

from typing import Any

from sysops.services.call import NOT_CACHED, Caller


class AnswersNothingFromMemory:
    """`cached_call` of a dispatcher whose every call needs a thread."""

    def cached_call(self, caller: Caller, service: str, method: str, arguments: dict[str, Any]) -> Any:
        return NOT_CACHED

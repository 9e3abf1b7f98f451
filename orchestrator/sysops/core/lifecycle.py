"""Plugin lifecycle states (ADR-006) and the one place where they are derived and changed.

A state is never set by hand around the code base: `derive_state` maps what the runtime observes to a
state with one `match`, and `check_transition` holds the ADR's diagram as a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PluginState(StrEnum):
    """ADR-006 lifecycle states."""

    UNLOADED = "Unloaded"
    LOADED = "Loaded"
    ACTIVE = "Active"
    STOPPING = "Stopping"
    FAILED = "Failed"


#: The ADR's diagram, plus the edges a container runtime adds (a crash from Active, a restart from Failed).
TRANSITIONS: dict[PluginState, frozenset[PluginState]] = {
    PluginState.UNLOADED: frozenset({PluginState.LOADED}),
    PluginState.LOADED: frozenset({PluginState.ACTIVE, PluginState.FAILED, PluginState.STOPPING}),
    PluginState.ACTIVE: frozenset({PluginState.STOPPING, PluginState.FAILED}),
    PluginState.STOPPING: frozenset({PluginState.UNLOADED, PluginState.FAILED}),
    PluginState.FAILED: frozenset({PluginState.UNLOADED, PluginState.LOADED}),
}


class InvalidTransitionError(ValueError):
    """A state change that the lifecycle does not allow."""


def check_transition(current: PluginState, target: PluginState) -> PluginState:
    """Return `target` if the lifecycle allows moving there from `current`, else raise."""
    if current != target and target not in TRANSITIONS[current]:
        raise InvalidTransitionError(f"cannot go from {current} to {target}")
    return target


@dataclass(frozen=True)
class Observation:
    """What the runtime and the health check say about one instance right now."""

    exists: bool
    running: bool
    healthy: bool
    exit_code: int | None = None
    stopping: bool = False


def derive_state(observed: Observation) -> PluginState:
    """Map an observation of an instance to its lifecycle state."""
    match observed:
        case Observation(exists=False):
            return PluginState.UNLOADED
        case Observation(stopping=True):
            return PluginState.STOPPING
        case Observation(running=True, healthy=True):
            return PluginState.ACTIVE
        case Observation(running=True):
            return PluginState.LOADED
        case Observation(exit_code=0):
            return PluginState.UNLOADED
        case _:
            return PluginState.FAILED

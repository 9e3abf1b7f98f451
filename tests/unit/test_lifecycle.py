import pytest
from sysops.core.lifecycle import (
    InvalidTransitionError,
    Observation,
    PluginState,
    check_transition,
    derive_state,
)


@pytest.mark.parametrize(
    ("observed", "state"),
    [
        (Observation(exists=False, running=False, healthy=False), PluginState.UNLOADED),
        (Observation(exists=True, running=True, healthy=False), PluginState.LOADED),
        (Observation(exists=True, running=True, healthy=True), PluginState.ACTIVE),
        (Observation(exists=True, running=True, healthy=True, stopping=True), PluginState.STOPPING),
        (Observation(exists=True, running=False, healthy=False, exit_code=4), PluginState.FAILED),
        (Observation(exists=True, running=False, healthy=False, exit_code=0), PluginState.UNLOADED),
    ],
)
def test_derive_state(observed: Observation, state: PluginState) -> None:
    assert derive_state(observed) is state


def test_transitions_follow_the_adr() -> None:
    assert check_transition(PluginState.UNLOADED, PluginState.LOADED) is PluginState.LOADED
    assert check_transition(PluginState.ACTIVE, PluginState.STOPPING) is PluginState.STOPPING
    with pytest.raises(InvalidTransitionError):
        check_transition(PluginState.UNLOADED, PluginState.ACTIVE)
    with pytest.raises(InvalidTransitionError):
        check_transition(PluginState.STOPPING, PluginState.ACTIVE)

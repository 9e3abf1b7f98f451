"""Checks every roll passes before anything starts: the one place distribution and trust plug into rolls.

The orchestrator calls each gate in `roll_gates(settings)` with the roll's target (manifest after policy,
image, image id, source) and the manifest of the version serving now (None for a first start), after the
image's compatibility check and before any instance starts, on every runtime (the local host and `sysops
serve` run the same orchestrator). A gate refuses by raising a SysopsError whose message names the plugin and
what to do; the orchestrator then removes an image the roll built, as for any refused roll. Rollbacks and
re-adoption of revisions already admitted do not pass through the gates again.
"""

from __future__ import annotations

from typing import Protocol

from sysops.core.held_upgrades import held_upgrade_gate
from sysops.core.manifest import Manifest
from sysops.core.rollout import RollTarget
from sysops.core.trust_gate import trust_gate
from sysops.settings import Settings


class RollGate(Protocol):
    """One check of a roll: returns to admit it, raises a SysopsError to refuse it."""

    def __call__(self, target: RollTarget, serving: Manifest | None) -> None:
        """Check `target` against `serving` (the manifest of the version that serves now, if any)."""


def roll_gates(settings: Settings) -> list[RollGate]:
    """The gates of this installation, in order (each module owns its gate's rules)."""
    return [trust_gate(settings), held_upgrade_gate(settings)]

"""Where the time of one reload of `sysops plugin up --watch` went: one line per reload, and the bench's breakdown.

A roll reports its steps as progress lines (building the image, starting the new instance, waiting for its
readiness, switching routing to it, draining the old one), wherever it runs: in this process or in the host,
whose lines stream back over the control API. `ReloadTimer` stamps those lines as they arrive, so the same
breakdown is measured for both. The phases, in order:

    detect  the newest changed file's modification time -> the watch reports the change (the debounce)
    build   the change reported -> the new instance is being started (code checks, context, image build, sign)
    start   the instance is being started -> its readiness is awaited (the engine creates and starts it; in
            development mode a spare instance, started after the previous roll, is claimed instead)
    ready   readiness awaited -> routing is being switched (health SERVING, Describe, self-test, limits read back)
    switch  routing is being switched -> the old instance is drained (state handed over, one store transaction):
            from here on, calls reach the new version
    drain   the old instance drained and removed (after serving already: not part of save -> serving)
    spare   development mode: the spare instance for the next save is started (not shown)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

#: The progress lines (their beginnings) that open each phase after `build`, as core/rollout.py words them.
PHASE_MARKS = (
    ("starting ", "start"),
    ("claiming ", "start"),  # development mode: a spare instance is given the code (core/spares.py)
    ("waiting for ", "ready"),
    ("switching ", "switch"),
    ("draining ", "drain"),
    ("spare instance of ", "spare"),  # development mode: the next save's spare starts after the drain
)
#: The phases from a save to the new version serving.
SERVING_PHASES = ("detect", "build", "start", "ready", "switch")


def newest_change(paths: Iterable[str]) -> float | None:
    """The latest modification time (epoch seconds) among changed paths that still exist (None: all deleted)."""
    times = []
    for path in paths:
        try:
            times.append(os.stat(path).st_mtime)
        except OSError:
            continue
    return max(times) if times else None


@dataclass
class ReloadTimer:
    """Stamps a reload's progress lines into phases; `line()` is the reload's one-line breakdown."""

    #: Wall-clock time of the change that started the reload (a file's mtime); None when unknown.
    changed_at: float | None = None
    detected_wall: float = field(default_factory=time.time)
    detected: float = field(default_factory=time.monotonic)
    #: Monotonic time at which each phase after `build` began (the first line that opened it).
    began: dict[str, float] = field(default_factory=dict)

    def watching(self, progress: Callable[[str], None]) -> Callable[[str], None]:
        """A progress callback that stamps the phases, then passes the line on."""

        def stamped(message: str) -> None:
            self.stamp(message)
            progress(message)

        return stamped

    def stamp(self, message: str, now: float | None = None) -> None:
        """Note the phase a progress line opens, if it opens one (and it has not begun yet)."""
        for prefix, phase in PHASE_MARKS:
            if message.startswith(prefix) and phase not in self.began:
                self.began[phase] = time.monotonic() if now is None else now
                return

    def breakdown(self, ended: float | None = None) -> dict[str, float]:
        """Seconds per phase (phases not reached are left out) and `serving`, the sum from save to serving."""
        end = time.monotonic() if ended is None else ended
        phases: dict[str, float] = {}
        if self.changed_at is not None:
            phases["detect"] = max(0.0, self.detected_wall - self.changed_at)
        order = ["build", *dict.fromkeys(phase for _, phase in PHASE_MARKS)]
        starts = {"build": self.detected, **self.began}
        reached = [phase for phase in order if phase in starts]
        for index, phase in enumerate(reached):
            following = reached[index + 1] if index + 1 < len(reached) else None
            phases[phase] = (starts[following] if following else end) - starts[phase]
        if "switch" in phases:
            phases["serving"] = sum(phases.get(phase, 0.0) for phase in SERVING_PHASES)
        return phases

    def line(self, ended: float | None = None) -> str:
        """`reload: detect 0.03s, build 0.41s, ... -> serving 1.21s (drain 0.30s)`."""
        phases = self.breakdown(ended)
        shown = ", ".join(f"{phase} {phases[phase]:.3f}s" for phase in SERVING_PHASES if phase in phases)
        text = f"reload: {shown}"
        if "serving" in phases:
            text += f" -> serving {phases['serving']:.3f}s"
        if "drain" in phases:
            text += f" (drain {phases['drain']:.3f}s)"
        return text

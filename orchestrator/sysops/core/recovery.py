"""Starting again an instance the engine stopped cleanly: the rule, free of I/O.

Docker runs instances with the restart policy on-failure: a crash (a non-zero exit) is restarted by the
engine, but an instance that exits 0 is left stopped, and so is one stopped by `docker stop` (143 or 137).
When dockerd restarts or the machine reboots, the engine sends SIGTERM to every container; the plugin
server drains and exits 0, so after the restart nothing would run though the plugin is desired up.
Reconciliation (core/orchestrator.py, which the resident host runs every few seconds and every CLI
operation runs once) applies `judge` to every instance that is still active in the store (sysops itself
never stops an active instance: `plugin down`, a roll and the supervisor's give-up take it out of
routing first, and a supervisor restart starts it again in one driver call) and whose container is
stopped: after GRACE_SECONDS since it stopped, it is started again in place, at most MAX_RESTARTS times
within the stability window (runtime/faults.py `stability_window()`); the next stop is given up on: the
plugin is Failed with the reason, through the supervisor's give-up path. Each restart is a `restarted`
event whose message starts with `restart_marker(instance)` (a start the runtime refused, a `failed` one: it
counts too, so reconciliation never fails on it for good): the events are the count, so every process
that reconciles (the host, a CLI) shares it. Only drivers whose runtime leaves such instances stopped ask
for this (`RuntimeDriver.restarts_stopped_instances`: Docker yes, Kubernetes no: the kubelet restarts them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from sysops.core.events import EventKind
from sysops.runtime.base import InstanceStatus
from sysops.runtime.faults import MAX_RESTARTS, engine_timestamp
from sysops.store import EventRecord

#: Exit codes of a clean stop: the plugin's own SIGTERM handler (0), or the default action of SIGTERM (143)
#: and the SIGKILL after a stop timeout (137). Any other code is a crash: the engine's restart policy's case.
ENGINE_STOP_EXIT_CODES = frozenset({0, 137, 143})
#: Seconds after a stop before reconciliation starts the instance again (the engine's own restart may be due).
GRACE_SECONDS = 3.0


class Verdict(StrEnum):
    """What reconciliation does about one active instance."""

    LEAVE = "leave"  # running, or stopped by a crash (the engine's restart policy decides)
    WAIT = "wait"  # stopped cleanly, less than GRACE_SECONDS ago
    RESTART = "restart"
    GIVE_UP = "give-up"


def stopped_cleanly(status: InstanceStatus) -> bool:
    """Whether an instance is stopped with an exit code of a stop, not of a crash the engine handles."""
    if status.running or status.restarting or status.oom_killed or status.exit_code not in ENGINE_STOP_EXIT_CODES:
        return False
    # 137 and 143 are non-zero: once the engine's budget is spent, that stop is its giving up on a crash loop.
    return status.exit_code == 0 or status.restart_count < MAX_RESTARTS


def judge(status: InstanceStatus, now: float, earlier_restarts: int, budget: int = MAX_RESTARTS) -> Verdict:
    """What to do about an active instance in `status` at `now` (epoch seconds), restarted `earlier_restarts`
    times by reconciliation within the stability window."""
    if not stopped_cleanly(status):
        return Verdict.LEAVE
    finished = engine_timestamp(status.finished_at)
    if finished is not None and now - finished < GRACE_SECONDS:
        return Verdict.WAIT
    return Verdict.GIVE_UP if earlier_restarts >= budget else Verdict.RESTART


def restart_marker(instance_id: str) -> str:
    """How the message of a restart of `instance_id` by reconciliation starts."""
    return f"instance {instance_id}: the engine stopped it"


def restarts_since(records: Iterable[EventRecord], instance_id: str, since: float) -> int:
    """Attempts to start `instance_id` again by reconciliation (done or refused) recorded at or after `since`
    (epoch seconds)."""
    marker = restart_marker(instance_id)
    kinds = (EventKind.RESTARTED, EventKind.FAILED)
    return sum(1 for e in records if e.kind in kinds and e.message.startswith(marker) and e.time >= since)


@dataclass(frozen=True)
class Attempt:
    """One start of an instance again by reconciliation, and the event messages that record it."""

    instance_id: str
    exit_code: int | None
    number: int
    window: float
    budget: int = MAX_RESTARTS

    def _head(self) -> str:
        return f"{restart_marker(self.instance_id)} (exit code {self.exit_code})"

    def restarted(self) -> str:
        """`instance X: the engine stopped it (exit code 0); started again (restart 1 of 3 within 600s)`."""
        return f"{self._head()}; started again (restart {self.number} of {self.budget} within {self.window:g}s)"

    def failed(self, error: str) -> str:
        """The message of an attempt the runtime refused (it counts against the budget all the same)."""
        return (
            f"{self._head()}; starting it again failed (attempt {self.number} of {self.budget} "
            f"within {self.window:g}s): {error}"
        )


def give_up_reason(restarts: int, exit_code: int | None, window: float) -> str:
    """The last error of a plugin whose instance the engine stopped once more after `restarts` restarts."""
    return (
        f"Failed after {restarts} restarts: the engine stopped it {restarts + 1} times within {window:g}s "
        f"(last exit code {exit_code}); `sysops plugin up` starts it again"
    )

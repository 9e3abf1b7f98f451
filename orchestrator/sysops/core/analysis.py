"""The decision of a rollout analysis: pass, fail (naming the threshold crossed) or inconclusive.

With a `rollout:` block in the manifest, a roll routes `share` of the calls to the new version for
`analysis_s` seconds beside the old one (core/rollout.py) and the router reports each call the new version
answered (core/call_meter.py). This module turns those samples into the verdict, as Argo Rollouts' and
Flagger's analysis do: fewer than `min_calls` calls is inconclusive (the old version is kept: nothing was
proven); an error rate above `max_error_rate` or a p99 latency above `max_p99_ms` fails (the roll is rolled
back at once); anything else passes. A failed call is one that did not end with exit code 0, including a
call the instance broke or let overrun its deadline. Pure: no clock, no store, no engine
(docs/rollout-analysis.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sysops.core.call_meter import Sample
from sysops.core.manifest import RolloutAnalysis
from sysops.errors import StartFailedError


class Outcome(StrEnum):
    """What an analysis decided."""

    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Verdict:
    """The decision and its one-line reason (the event and the CLI show `reason`)."""

    outcome: Outcome
    reason: str
    calls: int
    errors: int
    p99_ms: float


class AnalysisError(StartFailedError):
    """A roll was stopped by its analysis (failed or inconclusive): the old version keeps serving (exit 6)."""


def p99_ms(samples: Sequence[Sample]) -> float:
    """The 99th percentile of the samples' durations in milliseconds (nearest rank; 0 with no samples)."""
    if not samples:
        return 0.0
    ordered = sorted(sample.seconds for sample in samples)
    rank = max(1, math.ceil(0.99 * len(ordered)))
    return ordered[rank - 1] * 1000


def decide(samples: Sequence[Sample], analysis: RolloutAnalysis) -> Verdict:
    """Judge the new version's calls of one analysis window against the manifest's thresholds."""
    calls = len(samples)
    errors = sum(1 for sample in samples if not sample.ok)
    latency = p99_ms(samples)
    if calls < analysis.min_calls:
        reason = (
            f"analysis inconclusive: {calls} calls to the new version in {analysis.analysis_s:g}s, "
            f"fewer than min_calls {analysis.min_calls}"
        )
        return Verdict(Outcome.INCONCLUSIVE, reason, calls, errors, latency)
    rate = errors / calls
    if rate > analysis.max_error_rate:
        shown = f"{rate:.2f}" if round(rate, 2) > analysis.max_error_rate else f"{rate:.4f}"
        reason = f"analysis failed: error rate {shown} > max_error_rate {analysis.max_error_rate:g} over {calls} calls"
        return Verdict(Outcome.FAILED, reason, calls, errors, latency)
    if analysis.max_p99_ms is not None and latency > analysis.max_p99_ms:
        reason = f"analysis failed: p99 {latency:.0f} ms > max_p99_ms {analysis.max_p99_ms:g} over {calls} calls"
        return Verdict(Outcome.FAILED, reason, calls, errors, latency)
    reason = f"analysis passed: error rate {rate:.2f}, p99 {latency:.0f} ms over {calls} calls"
    return Verdict(Outcome.PASSED, reason, calls, errors, latency)

"""One measured figure of a benchmark, the shape every bench module returns to the runner (bench/run.py).

Each bench module exposes `measure(smoke: bool) -> list[Figure]`: `smoke=True` is the short run CI makes to
check that the benchmark works (a handful of iterations, no goal judged); `smoke=False` is the real run.
A figure is printed beside a baseline measured in the same run, as a ratio, because these machines are noisy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Figure:
    """A metric, our value, the baseline measured in the same run (if any), and the goal it is judged by."""

    metric: str
    ours: float
    unit: str
    baseline: float | None = None
    #: What the baseline is ("docker exec python -c pass", "raw gRPC Invoke", ...).
    baseline_name: str = ""
    #: The goal as written in the issue ("<= 0.25 s", ">= 0.9x raw", ...); "" when the figure has none.
    goal: str = ""
    #: Whether the goal holds; None when there is no goal or it is a smoke run.
    passed: bool | None = None
    #: A series behind the figure (for example the latency of every reload, charted by the runner).
    series: list[float] = field(default_factory=list)
    #: A breakdown or anything else worth keeping in the JSON report (for example detect/build/start/ready/switch).
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """Ours over the baseline, when there is a baseline."""
        if self.baseline is None or self.baseline == 0:
            return None
        return self.ours / self.baseline

    def as_json(self) -> dict[str, Any]:
        """The figure as a JSON object (ratio included)."""
        return {**asdict(self), "ratio": self.ratio}

"""The `checks:` section of the operator's policy file: which static findings block a build.

    checks:
      block: [high]            # severities that refuse `plugin up` (default: high only; [] blocks nothing)
      ignore: [B404, process-spawn]   # rule ids never reported as blocking (bandit test ids or ours)

The default blocks only high findings: bandit's high-severity mistakes (a shell built from input, TLS
without verification, weak hashes) and code the checks could not analyse. Our manifest rules are medium,
since the sandbox enforces what they describe (no network under `network: none`, a read-only root
filesystem, host services checked per call): they inform the operator and the rating, and block when the
policy lists `medium`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from sysops.checks.findings import Finding, Severity

RuleId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


def _high_only() -> list[Severity]:
    return ["high"]


class CheckPolicy(BaseModel):
    """Which severities block, and which rules are ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    block: list[Severity] = Field(default_factory=_high_only, max_length=3)
    ignore: list[RuleId] = Field(default_factory=list, max_length=256)

    def blocking(self, findings: list[Finding]) -> list[Finding]:
        """The findings this policy refuses a build for."""
        return [f for f in findings if f.severity in self.block and f.rule not in self.ignore]

"""What a static check found in a plugin's code: one record per finding, shared by bandit and our own rules.

A finding names the file (relative to the plugin directory, POSIX separators), the line, the rule that fired
(bandit's test id such as `B602`, or one of ours such as `network-undeclared`), a severity and a one-line
message. Severities order low < medium < high; the policy (checks/policy.py) decides which block a build.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

Severity = Literal["low", "medium", "high"]
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high")


@dataclass(frozen=True, order=True)
class Finding:
    """One finding: where (file:line), which rule, how severe, and what it means."""

    file: str
    line: int
    rule: str
    severity: Severity
    message: str

    @property
    def where(self) -> str:
        """`file:line`, as editors and CI logs link it."""
        return f"{self.file}:{self.line}"

    def to_json(self) -> dict[str, Any]:
        """The finding as a JSON-able mapping."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Finding:
        """A finding from `to_json()`'s mapping; ValueError when it is not one."""
        severity = data.get("severity")
        if severity not in SEVERITIES:
            raise ValueError(f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")
        line = data.get("line")
        if not isinstance(line, int) or isinstance(line, bool):
            raise ValueError("line is not an integer")
        texts = [data.get(key) for key in ("file", "rule", "message")]
        if not all(isinstance(text, str) for text in texts):
            raise ValueError("file, rule and message must be strings")
        file, rule, message = (cast(str, text) for text in texts)
        return cls(file=file, line=line, rule=rule, severity=cast(Severity, severity), message=message)


def severity_rank(severity: Severity) -> int:
    """0 for low, 1 for medium, 2 for high."""
    return SEVERITIES.index(severity)

"""bandit, used as a library, over the plugin files checks/sources.py has already read and parsed.

bandit knows the common Python security mistakes (a shell command built from input, weak hashes, TLS
without verification, unsafe deserialisation...). It runs over exactly the files that parsed, named by
their real paths, so links and oversized files never reach it. `# nosec` comments in the plugin are NOT
honoured: the code under review does not get to silence its own review (an operator ignores a rule in
the policy instead, checks/policy.py).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import cast

from sysops.checks.findings import Finding, Severity
from sysops.checks.sources import SourceFile

_BANDIT_SEVERITIES: dict[str, Severity] = {"LOW": "low", "MEDIUM": "medium", "HIGH": "high"}


def bandit_findings(files: Sequence[SourceFile]) -> list[Finding]:
    """bandit's findings over `files`, each with the file's relative path, line, test id and severity."""
    if not files:
        return []
    relative_of = {str(source.path): source.relative for source in files}
    with _quiet_bandit():
        with warnings.catch_warnings():  # bandit's plugin loader (stevedore) warns of its own deprecations
            warnings.simplefilter("ignore", DeprecationWarning)
            from bandit.core import config as bandit_config  # type: ignore[import-untyped]
            from bandit.core import manager as bandit_manager

        manager = bandit_manager.BanditManager(bandit_config.BanditConfig(), "file", quiet=True, ignore_nosec=True)
        manager.discover_files(list(relative_of))
        manager.run_tests()
    findings = [
        Finding(
            relative_of.get(str(issue.fname), str(issue.fname)),
            int(issue.lineno or 0),
            str(issue.test_id),
            _BANDIT_SEVERITIES.get(str(issue.severity), "medium"),
            f"{issue.test} ({str(issue.confidence).lower()} confidence): {issue.text}",
        )
        for issue in manager.get_issue_list()
    ]
    findings += [
        Finding(relative_of.get(str(name), str(name)), 0, "unanalysed", "high", f"bandit could not read it: {reason}")
        for name, reason in cast(list[tuple[str, str]], manager.skipped)
    ]
    return findings


@contextmanager
def _quiet_bandit() -> Iterator[None]:
    """bandit and its plugin loader log progress and warnings themselves (such as an optional formatter it cannot
    load); our findings say everything, so they stay quiet meanwhile."""
    loggers = [logging.getLogger(name) for name in ("bandit", "stevedore")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)

"""Session-wide test setup: the project's own helm and kubectl first on PATH, and one line saying why tests skipped.

scripts/bootstrap.sh installs helm and kubectl into the venv's bin directory (issue 14 item 6), so the chart tests
(helm) and the Kubernetes tests (helm, kubectl) use those, whatever the machine has, even when pytest is run as
`.venv/bin/pytest` without the venv activated. Only tests that need a running cluster may skip; the summary at the
end says how many did and why ("N skipped: needs a running Kubernetes cluster (...)"), and every other skip
reason with its count. With SYSOPS_SKIP_SUMMARY=FILE the same lines are written there (scripts/test.sh prints
them in its own summary).
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest

#: Where bootstrap put helm and kubectl: the bin directory of the Python running the tests (.venv/bin).
PROJECT_TOOLS = Path(sys.executable).parent

if (PROJECT_TOOLS / "helm").is_file() and str(PROJECT_TOOLS) not in os.environ.get("PATH", "").split(os.pathsep)[:1]:
    os.environ["PATH"] = f"{PROJECT_TOOLS}{os.pathsep}{os.environ.get('PATH', '')}"

# The Ctrl-C tests send SIGINT to a CLI as a terminal does. A run started in the background of a non-interactive
# shell (`nohup ... &`) inherits SIGINT ignored, and so does every CLI it starts (an ignored signal stays ignored
# across exec, and Python then installs no KeyboardInterrupt handler): those CLIs never saw the Ctrl-C. A handler
# in this process is reset to the default by exec, so the CLIs the tests start get their own.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

#: A skip whose reason says one of these needs a running cluster (KUBECONFIG unset or the cluster unreachable).
_CLUSTER_WORDS = ("no kubernetes cluster", "kubeconfig")


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def skip_summary(reasons: list[str]) -> list[str]:
    """One line for the skips that need a running cluster, then one per other reason (most frequent first)."""
    cluster = [reason for reason in reasons if any(word in reason.lower() for word in _CLUSTER_WORDS)]
    lines = []
    if cluster:
        why = "KUBECONFIG is not set" if not os.environ.get("KUBECONFIG") else "the cluster was not usable"
        lines.append(f"{len(cluster)} skipped: needs a running Kubernetes cluster ({why}; see scripts/test.sh)")
    others = Counter(reason for reason in reasons if reason not in cluster)
    lines.extend(f"{count} skipped: {reason}" for reason, count in others.most_common())
    return lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print (and with SYSOPS_SKIP_SUMMARY, write) why tests were skipped."""
    skipped = [report for report in terminalreporter.stats.get("skipped", []) if isinstance(report, pytest.TestReport)]
    lines = skip_summary([_reason(report) for report in skipped])
    if lines:
        terminalreporter.section("skips")
        for line in lines:
            terminalreporter.write_line(line)
    target = os.environ.get("SYSOPS_SKIP_SUMMARY")
    if target:
        Path(target).write_text("".join(f"{line}\n" for line in lines))

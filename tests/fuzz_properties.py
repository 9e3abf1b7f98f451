"""What every fuzz test asserts, in one place: documented exit code, one line, no traceback, nothing left behind.

The documented exit codes are the table of docs/cli.md ("## Exit codes"), read here and nowhere else, so a
code that the CLI or the control API returns without documenting it fails every fuzz test that meets it
(tests/unit/test_fuzz_cli.py checks that the table and `ExitCode` agree). Example counts are small enough
for CI (the unit fuzz suite runs in well under a minute); `SYSOPS_FUZZ_SCALE=N` runs N times as many
examples of every fuzz test, for a longer run by hand.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hypothesis import HealthCheck, settings

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
#: An error message (or error line) longer than this is not "one line" a person can read.
MESSAGE_LIMIT = 1000
#: Multiplies every fuzz test's example count (1 in CI).
SCALE = int(os.environ.get("SYSOPS_FUZZ_SCALE", "1"))
#: What sysops makes in SYSOPS_HOME for itself whatever it is asked: the store and its journal, the lock
#: directory (lock files live only while held, but for the kept dependencies lock), the cache directory and its
#: (emptied) build context directory.
BOOKKEEPING = frozenset(
    {
        *("state.db", "state.db-wal", "state.db-shm", "state.db-journal"),
        *("locks", "locks/_dependencies.lock", "cache", "cache/contexts"),
    }
)


def documented_exit_codes(text: str) -> dict[int, str]:
    """The rows of the exit code table of docs/cli.md: code -> name."""
    section = text.split("\n## Exit codes\n", 1)[1].split("\n## ", 1)[0]
    return {int(code): name for code, name in re.findall(r"^\| (\d+) \| `(\w+)` \|", section, re.MULTILINE)}


DOCUMENTED_EXIT_CODES = frozenset(documented_exit_codes(DOCS.read_text(encoding="utf-8")))


def fuzz_settings(max_examples: int) -> settings:
    """Bounded examples (times SYSOPS_FUZZ_SCALE), no per-example deadline (CI machines vary)."""
    return settings(
        max_examples=max_examples * SCALE,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def assert_one_line(message: str) -> None:
    """An error message is one line a person can read."""
    assert "\n" not in message and "\r" not in message, message[:300]
    assert len(message) <= MESSAGE_LIMIT, message[:300]


def assert_exit_code(code: int, expected: set[int]) -> None:
    """The exit code is documented, and one this input may give."""
    assert code in DOCUMENTED_EXIT_CODES, f"exit code {code} is not in docs/cli.md's table"
    assert code in expected, f"exit code {code}, expected one of {sorted(expected)}"


def assert_clean_error(stderr: str, *, only_line: bool = True) -> None:
    """stderr holds exactly one `error:` line (and, if `only_line`, nothing else), and no traceback."""
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr[:2000]
    lines = stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, stderr[:2000]
    assert not only_line or lines == errors, stderr[:2000]
    assert_one_line(errors[0])


def files_under(root: Path) -> set[str]:
    """Every path below `root`, relative to it (missing root: none)."""
    return {str(path.relative_to(root)) for path in root.rglob("*")} if root.exists() else set()


def assert_nothing_left(home: Path, before: set[str], temp: Path) -> None:
    """Nothing new in SYSOPS_HOME since `before` but sysops's bookkeeping, nothing at all in `temp`."""
    # The static checks' report of a version that loaded is kept for the rating (checks/run.py), like a cache.
    new = {path for path in files_under(home) - before if not path.startswith("cache/checks")}
    assert new <= BOOKKEEPING, f"left in SYSOPS_HOME: {new}"
    assert files_under(temp) == set(), f"left in the temporary directory: {files_under(temp)}"

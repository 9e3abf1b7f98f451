#!/usr/bin/env bash
# Lint, type-check and test. Extra arguments go to pytest. Runs all three checks and
# exits non-zero if any of them failed.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

scripts/bootstrap.sh || { echo "test: bootstrap failed" >&2; exit 1; }

BIN=.venv/bin
declare -a results=()
rc=0
run() {
    local name="$1"; shift
    echo "==> $name: $*" >&2
    "$@"
    local r=$?
    results+=("$(printf '%-7s %s' "$name" "$([[ $r == 0 ]] && echo ok || echo "FAILED (exit $r)")")")
    [[ $r == 0 ]] || rc=1
}

run ruff   "$BIN/ruff" check .
run mypy   "$BIN/mypy"
run pytest "$BIN/pytest" -q --cov --cov-report=term --cov-fail-under=80 "$@"

echo "==> summary" >&2
printf '    %s\n' "${results[@]}" >&2
exit "$rc"

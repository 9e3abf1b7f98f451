#!/usr/bin/env bash
# Lint, check the import layers, type-check and test. Extra arguments go to pytest. Runs every check and
# exits non-zero if any of them failed.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

scripts/bootstrap.sh || { echo "test: bootstrap failed" >&2; exit 1; }

# Kubernetes end-to-end tests need a cluster. Where this machine offers the workplace's real single-node
# cluster (../shared/k8s, as in CI), bring it up (first run builds it, about 6-9 minutes; then cached).
# Elsewhere, or with SYSOPS_SKIP_K8S=1, those tests are skipped and say why.
K8S_UP="${SYSOPS_K8S_UP:-$REPO/../shared/k8s/up.sh}"
if [[ -z "${KUBECONFIG:-}" && -z "${SYSOPS_SKIP_K8S:-}" && -x "$K8S_UP" ]]; then
    echo "==> kubernetes: $K8S_UP" >&2
    if k8s_env="$("$K8S_UP")"; then
        eval "$k8s_env"
        export KUBECONFIG PATH
    else
        echo "test: could not bring up the Kubernetes test cluster; its tests will be skipped" >&2
    fi
fi

# helm and kubectl come from the bootstrap (.venv/bin), ahead of any the cluster script put on PATH: the chart
# tests never skip for want of them, only the tests that need a running cluster may (summary below).
export PATH="$REPO/.venv/bin:$PATH"

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
# Layer contracts ([tool.importlinter] in pyproject.toml): which package may import which.
run imports "$BIN/lint-imports" --no-cache
skips="$(mktemp)"
trap 'rm -f "$skips"' EXIT
SYSOPS_SKIP_SUMMARY="$skips" \
    run pytest "$BIN/pytest" -q --durations=40 --cov --cov-report=term --cov-fail-under=80 -m "not untraced" "$@"
# Tests that raise real asynchronous interruptions in their own process run apart, untraced (see
# tests/unit/test_sdk_cancel.py): coverage's tracer and those interruptions wedged thread starts.
run untraced "$BIN/pytest" -q -p no:cov -m untraced tests/unit

# The documentation site, strict (scripts/build-docs.sh builds into a temporary directory), and a smoke run of
# the benchmark runner: a few iterations of each benchmark, checking they work, judging no figure.
run docs   scripts/build-docs.sh
run bench  "$BIN/python" -m bench --smoke

echo "==> summary" >&2
printf '    %s\n' "${results[@]}" >&2
# Why tests were skipped (tests/conftest.py): "N skipped: needs a running Kubernetes cluster (...)" and any other.
[[ -s "$skips" ]] && sed 's/^/    /' "$skips" >&2
exit "$rc"

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

skips="$(mktemp)"
cluster_skips="$(mktemp)"
cluster_log="$(mktemp)"
cluster_tmp="$(mktemp -d)"
cluster_pid=""
# Stop the cluster tests if this script ends early (Ctrl-C, a kill): SIGINT first, so that their fixtures
# remove the Helm releases, namespaces and images they made; whatever still runs after two minutes is killed.
# Their output so far is shown. A second Ctrl-C does not cut this short; if this script is killed outright,
# the kernel sends them the SIGINT (setpriv --pdeathsig below).
stop_cluster_tests() {
    [[ -n "$cluster_pid" ]] && kill -0 "$cluster_pid" 2>/dev/null || return 0
    echo "test: stopping the cluster tests (up to 2 minutes for their cleanup)" >&2
    kill -INT "$cluster_pid" 2>/dev/null
    for _ in $(seq 120); do kill -0 "$cluster_pid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$cluster_pid" 2>/dev/null
    tail -n 40 "$cluster_log" >&2
}
trap 'trap "" INT TERM; stop_cluster_tests; rm -rf "$skips" "$cluster_skips" "$cluster_log" "$cluster_tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ $# -eq 0 ]]; then
    # The tests that use the Kubernetes cluster (tests/contract: one harness per driver, and tests/e2e) run in a
    # second pytest process beside all the others: they mostly wait for pods and the API server, and serially
    # they made the run half again as long. Only this process touches the cluster (its contract harness creates
    # and deletes the Plugin CRD; the node holds one test namespace's pods at a time), and it starts first, so
    # its image builds overlap ruff and mypy. It has its own coverage data (COVERAGE_FILE, which the CLI
    # subprocesses it runs inherit), temporary directory and skip summary; all are combined below.
    # It also takes these Docker tests, which have no tight time bounds, so that both processes take about as long
    # (alone, the cluster tests took 18 min and all the others 29; with these, 27.7 and 24.7 min when the
    # rollout analysis tests, ~1.5 min, were here too).
    beside_cluster=(tests/integration/test_install_sources.py tests/integration/test_dependencies_docker.py
        tests/integration/test_events_bus_docker.py tests/integration/test_indexes.py tests/integration/test_trust.py tests/integration/test_registry.py
        tests/integration/test_compatibility_docker.py)
    rm -f .coverage .coverage-main .coverage-main.* .coverage-cluster .coverage-cluster.*
    set -m  # its own process group (pgid = its pid), for stop_cluster_tests
    COVERAGE_FILE="$REPO/.coverage-cluster" SYSOPS_SKIP_SUMMARY="$cluster_skips" setpriv --pdeathsig INT -- \
        "$BIN/pytest" -q -p no:cacheprovider --basetemp="$cluster_tmp/t" --durations=20 --cov --cov-report= \
        -m "not untraced" tests/contract tests/e2e "${beside_cluster[@]}" </dev/null >"$cluster_log" 2>&1 &
    cluster_pid=$!
    set +m
fi

run ruff   "$BIN/ruff" check .
run mypy   "$BIN/mypy"
# Layer contracts ([tool.importlinter] in pyproject.toml): which package may import which.
run imports "$BIN/lint-imports" --no-cache
if [[ $# -gt 0 ]]; then  # the tests asked for, in one process
    SYSOPS_SKIP_SUMMARY="$skips" \
        run pytest "$BIN/pytest" -q --durations=40 --cov --cov-report=term --cov-fail-under=80 -m "not untraced" "$@"
else
    COVERAGE_FILE="$REPO/.coverage-main" SYSOPS_SKIP_SUMMARY="$skips" \
        run pytest "$BIN/pytest" -q --durations=40 --cov --cov-report= -m "not untraced" \
        --ignore=tests/contract --ignore=tests/e2e "${beside_cluster[@]/#/--ignore=}"
    echo "==> pytest-cluster: tests/contract tests/e2e ${beside_cluster[*]} (ran beside the others; its output follows)" >&2
    wait "$cluster_pid"
    cluster_rc=$?
    cluster_pid=""
    cat "$cluster_log"
    results+=("$(printf '%-7s %s' "cluster" "$([[ $cluster_rc == 0 ]] && echo ok || echo "FAILED (exit $cluster_rc)")")")
    [[ $cluster_rc == 0 ]] || rc=1
    cat "$cluster_skips" >>"$skips"
    # One report and one threshold over both processes (a process that left no data is named, not hidden).
    data=()
    for part in .coverage-main .coverage-cluster; do
        if [[ -s "$part" ]]; then data+=("$part"); else echo "test: no coverage data in $part" >&2; rc=1; fi
    done
    run combine "$BIN/coverage" combine -q "${data[@]}"
    run coverage "$BIN/coverage" report --fail-under=80
fi
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

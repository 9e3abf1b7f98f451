#!/usr/bin/env bash
# Build the sysops plugin base image (sysops/plugin-base:<sdk version>) fully offline
# from the Docker engine's point of view: no registry pull, `docker build --network none`.
#
#   1. Fingerprint Dockerfile + sdk sources; if the image already carries that
#      fingerprint (label sysops.base.fingerprint) -> exit 0 immediately.
#   2. Ensure the bootstrap image sysops/python-bootstrap:bookworm exists:
#      re-tag python:3.11-slim if present locally, else debootstrap a minimal
#      bookworm rootfs (cached as a tarball in $SYSOPS_CACHE) and `docker import` it.
#   3. Assemble a build context with all wheels (sdk wheel + manylinux deps,
#      cached in $SYSOPS_CACHE/wheels), build, and smoke-test the image.
#
# Env: SYSOPS_CACHE (default /var/cache/sysops, or ~/.cache/sysops if not writable)
#      DEBIAN_MIRROR (default: taken from apt sources, else http://deb.debian.org/debian)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
SDK="$REPO/sdk"
DOCKERFILE="$HERE/Dockerfile"

BOOTSTRAP_IMAGE="sysops/python-bootstrap:bookworm"
SLIM_IMAGE="python:3.11-slim"
SDK_VERSION="$(sed -n 's/^version[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$SDK/pyproject.toml" | head -n1)"
[[ -n "$SDK_VERSION" ]] || { echo "build.sh: cannot read version from $SDK/pyproject.toml" >&2; exit 1; }
BASE_IMAGE="sysops/plugin-base:$SDK_VERSION"
PROTOCOL_VERSION="$(sed -n 's/^PROTOCOL_VERSION[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$SDK/sysops_sdk/_version.py" | head -n1)"
[[ -n "$PROTOCOL_VERSION" ]] || { echo "build.sh: cannot read PROTOCOL_VERSION from $SDK/sysops_sdk/_version.py" >&2; exit 1; }
SDK_DEPS=("grpcio>=1.85.1" "grpcio-health-checking>=1.85.1" "protobuf>=7.35.1")

log() { printf 'plugin-base: %s\n' "$*" >&2; }
die() { printf 'plugin-base: ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=../scripts/lib/image-build.sh
source "$REPO/scripts/lib/image-build.sh"

# ---------------------------------------------------------------- fingerprint
fingerprint() {
    (cd "$REPO" && hash_files plugin-base-image/Dockerfile plugin-base-image/build.sh sdk/pyproject.toml sdk/sysops_sdk)
}

command -v docker >/dev/null 2>&1 || die "docker CLI not found (run scripts/bootstrap.sh)"
FP="$(fingerprint)"
exit_if_current "$BASE_IMAGE" sysops.base.fingerprint "$FP"
open_cache .build.lock
# Another run may have finished the build while we waited for the lock.
exit_if_current "$BASE_IMAGE" sysops.base.fingerprint "$FP"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sysops-base.XXXXXX")"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

# ---------------------------------------------------------------- bootstrap image
debian_mirror() {
    if [[ -n "${DEBIAN_MIRROR:-}" ]]; then echo "$DEBIAN_MIRROR"; return; fi
    local m=""
    # one-line format: deb [opts] URI suite components
    m="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | sed -n 's/^[[:space:]]*deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([a-z]\+:\/\/[^[:space:]]\+\).*/\2/p' \
        | grep -v -e security -e backports | head -n1 || true)"
    if [[ -z "$m" ]]; then
        # deb822 format: URIs: URI [URI...]
        m="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
            | sed -n 's/^[[:space:]]*URIs:[[:space:]]*\([^[:space:]]\+\).*/\1/p' \
            | grep -v -e security -e backports | head -n1 || true)"
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

make_rootfs_tarball() {
    local tarball="$1" rootfs="$WORK/rootfs" mirror
    [[ "$(id -u)" == 0 ]] || die "creating the bootstrap rootfs needs root (debootstrap)"
    if ! command -v debootstrap >/dev/null 2>&1; then
        command -v apt-get >/dev/null 2>&1 || die "debootstrap missing and no apt-get to install it"
        log "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2 \
            || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2; }
    fi
    mirror="$(debian_mirror)"
    log "debootstrap bookworm from $mirror (about a minute)"
    if ! debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1; then
        tail -n 30 "$WORK/debootstrap.log" >&2
        [[ -f "$rootfs/debootstrap/debootstrap.log" ]] && tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2
        die "debootstrap failed"
    fi
    (
        cd "$rootfs"
        rm -rf var/cache/apt/archives/*.deb var/cache/apt/*.bin var/lib/apt/lists/* \
            usr/share/man/* usr/share/info/* var/log/*.log tmp/* 2>/dev/null || true
        find usr/share/doc -type f ! -name copyright -delete 2>/dev/null || true
    )
    log "caching rootfs tarball at $tarball"
    tar --numeric-owner -C "$rootfs" -czf "$tarball.tmp" .
    mv -f "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
}

ensure_bootstrap_image() {
    if docker image inspect "$BOOTSTRAP_IMAGE" >/dev/null 2>&1; then
        return
    fi
    if docker image inspect "$SLIM_IMAGE" >/dev/null 2>&1; then
        log "tagging local $SLIM_IMAGE as $BOOTSTRAP_IMAGE"
        docker tag "$SLIM_IMAGE" "$BOOTSTRAP_IMAGE"
        return
    fi
    local tarball="$CACHE/rootfs-bookworm.tar.gz"
    if [[ -s "$tarball" ]]; then
        log "reusing cached rootfs $tarball"
    else
        make_rootfs_tarball "$tarball"
    fi
    log "importing $BOOTSTRAP_IMAGE"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        "$tarball" "$BOOTSTRAP_IMAGE" >/dev/null
}

ensure_bootstrap_image
# The Python plugins run with (the venv is made from it): a label the compatibility checks read.
PYTHON_VERSION="$(docker run --rm --network none --entrypoint python3 "$BOOTSTRAP_IMAGE" \
    -c 'import platform; print(platform.python_version())')" || die "cannot run python3 in $BOOTSTRAP_IMAGE"
[[ "$PYTHON_VERSION" =~ ^[0-9]+\.[0-9]+ ]] || die "unexpected Python version '$PYTHON_VERSION' in $BOOTSTRAP_IMAGE"

# ---------------------------------------------------------------- build context
if [[ -x "$REPO/.venv/bin/python" ]]; then PY="$REPO/.venv/bin/python"; else PY="python3"; fi
pip() { "$PY" -m pip --disable-pip-version-check "$@"; }

CTX="$WORK/ctx"
mkdir -p "$CTX/wheels"
cp "$DOCKERFILE" "$CTX/Dockerfile"

# Build the sdk wheel from a clean copy so nothing (build/, egg-info) lands in sdk/.
log "building sysops-sdk $SDK_VERSION wheel"
mkdir -p "$WORK/sdk-src"
tar -C "$SDK" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' --exclude=build --exclude=dist \
    -cf - pyproject.toml sysops_sdk | tar -C "$WORK/sdk-src" -xf -
build_iso=()
# Reuse the local setuptools when it can build wheels by itself (>= 70.1): faster, no network.
if "$PY" -c 'import setuptools, sys; sys.exit(tuple(map(int, setuptools.__version__.split(".")[:2])) < (70, 1))' \
        >/dev/null 2>&1; then
    build_iso=(--no-build-isolation)
fi
pip wheel -q --no-deps "${build_iso[@]}" -w "$CTX/wheels" "$WORK/sdk-src" >&2 \
    || pip wheel -q --no-deps -w "$CTX/wheels" "$WORK/sdk-src" >&2

arch="$(uname -m)"
plat=(--only-binary=:all: --python-version 3.11 --implementation cp
      --platform "manylinux2014_$arch" --platform "manylinux_2_17_$arch")
fetch_wheels "$CTX/wheels" "${SDK_DEPS[@]}"

# ---------------------------------------------------------------- build + verify
log "docker build $BASE_IMAGE (fingerprint ${FP:0:12})"
old_id="$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || true)"
if ! docker build --network none \
        --build-arg "PYTHON_IMAGE=$BOOTSTRAP_IMAGE" \
        --build-arg "SYSOPS_PYTHON_VERSION=$PYTHON_VERSION" \
        --build-arg "SYSOPS_SDK_VERSION=$SDK_VERSION" \
        --build-arg "SYSOPS_PROTOCOL_VERSION=$PROTOCOL_VERSION" \
        --label "sysops.base.fingerprint=$FP" \
        --label "sysops.sdk.version=$SDK_VERSION" \
        -t "$BASE_IMAGE" "$CTX" >"$WORK/build.log" 2>&1; then
    cat "$WORK/build.log" >&2
    die "docker build failed"
fi

log "verifying $BASE_IMAGE"
docker run --rm --network none --entrypoint python "$BASE_IMAGE" \
    -c "import grpc, grpc_health, sysops_sdk, os, platform; assert os.getuid()==10001; \
assert platform.python_version() == '$PYTHON_VERSION' and sysops_sdk.PROTOCOL_VERSION == '$PROTOCOL_VERSION'" >&2 \
    || die "verification of $BASE_IMAGE failed"

# Drop the superseded base image. Plain `docker rmi` (no -f) refuses while plugin images
# built on it or containers still use it, which is what we want (rollbacks keep working).
# (No label-based prune: plugin images inherit the sysops.base labels.)
new_id="$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")"
if [[ -n "$old_id" && "$old_id" != "$new_id" ]]; then
    docker rmi "$old_id" >/dev/null 2>&1 || true
fi

log "built $BASE_IMAGE ($(docker image inspect -f '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"

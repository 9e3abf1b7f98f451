#!/usr/bin/env bash
# Build the sysops orchestrator image (sysops/orchestrator:<version>) FROM the plugin base image, offline from
# the Docker engine's point of view (`docker build --network none`).
#
#   1. Ensure the base image is current (plugin-base-image/build.sh, itself idempotent).
#   2. Fingerprint orchestrator/sysops/**, sdk/sysops_sdk/**, pyproject.toml, orchestrator/Dockerfile and the
#      base image id; if the image already carries that fingerprint (label sysops.orchestrator.fingerprint)
#      -> exit 0.
#   3. Build the sysops wheel from a clean copy of the sources, fetch the wheels of its dependencies and of the
#      `kubernetes` extra on the host (cached in $SYSOPS_CACHE/wheels; the host runs Python 3.11 like the
#      image), build, and check that `import sysops, kubernetes, grpc` works in the image.
#
# Env: SYSOPS_CACHE (default /var/cache/sysops, or ~/.cache/sysops if not writable)
#      SYSOPS_ORCHESTRATOR_IMAGE (default sysops/orchestrator:<version from pyproject.toml>)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DOCKERFILE="$REPO/orchestrator/Dockerfile"

VERSION="$(sed -n 's/^version[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$REPO/pyproject.toml" | head -n1)"
SDK_VERSION="$(sed -n 's/^version[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$REPO/sdk/pyproject.toml" | head -n1)"
[[ -n "$VERSION" && -n "$SDK_VERSION" ]] || { echo "orchestrator-image: cannot read versions" >&2; exit 1; }
IMAGE="${SYSOPS_ORCHESTRATOR_IMAGE:-sysops/orchestrator:$VERSION}"
BASE_IMAGE="sysops/plugin-base:$SDK_VERSION"

log() { printf 'orchestrator-image: %s\n' "$*" >&2; }
die() { printf 'orchestrator-image: ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=lib/image-build.sh
source "$REPO/scripts/lib/image-build.sh"

# ---------------------------------------------------------------- fingerprint
fingerprint() {
    (cd "$REPO" && hash_files orchestrator/Dockerfile pyproject.toml orchestrator/sysops sdk/sysops_sdk)
}

command -v docker >/dev/null 2>&1 || die "docker CLI not found (run scripts/bootstrap.sh)"
# The base image carries the sdk; its own script rebuilds it when sdk/ changed (and returns at once otherwise).
"$REPO/plugin-base-image/build.sh"
# The id of the base image is part of the fingerprint: a rebuilt base means a rebuilt orchestrator image.
FP="$({ fingerprint; docker image inspect -f '{{.Id}}' "$BASE_IMAGE"; } | sha256sum | cut -d' ' -f1)"
exit_if_current "$IMAGE" sysops.orchestrator.fingerprint "$FP"
open_cache .orchestrator-build.lock
exit_if_current "$IMAGE" sysops.orchestrator.fingerprint "$FP"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sysops-orchestrator.XXXXXX")"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

if [[ -x "$REPO/.venv/bin/python" ]]; then PY="$REPO/.venv/bin/python"; else PY="python3"; fi
pip() { "$PY" -m pip --disable-pip-version-check "$@"; }

CTX="$WORK/ctx"
mkdir -p "$CTX/wheels" "$WORK/src/orchestrator"
cp "$DOCKERFILE" "$CTX/Dockerfile"

# ---------------------------------------------------------------- sysops wheel
# From a clean copy, so nothing (build/, egg-info) lands in the repository.
log "building sysops $VERSION wheel"
cp "$REPO/pyproject.toml" "$WORK/src/"
tar -C "$REPO/orchestrator" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' -cf - sysops \
    | tar -C "$WORK/src/orchestrator" -xf -
build_iso=()
# Reuse the local setuptools when it can build wheels by itself (>= 70.1): faster, no network.
if "$PY" -c 'import setuptools, sys; sys.exit(tuple(map(int, setuptools.__version__.split(".")[:2])) < (70, 1))' \
        >/dev/null 2>&1; then
    build_iso=(--no-build-isolation)
fi
pip wheel -q --no-deps "${build_iso[@]}" -w "$CTX/wheels" "$WORK/src" >&2 \
    || pip wheel -q --no-deps -w "$CTX/wheels" "$WORK/src" >&2

# ---------------------------------------------------------------- dependency wheels
# Runtime dependencies plus the kubernetes extra, read from pyproject.toml. sysops-sdk is left out: the base
# image has it (same version, checked by pip inside the build).
mapfile -t DEPS < <("$PY" - "$REPO/pyproject.toml" <<'PY'
import sys, tomllib
from packaging.requirements import Requirement
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
for spec in project["dependencies"] + project["optional-dependencies"]["kubernetes"]:
    if Requirement(spec).name != "sysops-sdk":
        print(spec)
PY
)
[[ ${#DEPS[@]} -gt 0 ]] || die "no dependencies read from pyproject.toml"
arch="$(uname -m)"
plat=(--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none
      --platform "manylinux2014_$arch")
# The base image is Debian bookworm (glibc 2.36): any manylinux_2_17 .. manylinux_2_36 wheel runs there.
for minor in $(seq 17 36); do plat+=(--platform "manylinux_2_${minor}_$arch"); done
fetch_wheels "$CTX/wheels" "${DEPS[@]}" || die "cannot get the dependency wheels"

# ---------------------------------------------------------------- build + verify
log "docker build $IMAGE (fingerprint ${FP:0:12})"
old_id="$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
if ! docker build --network none \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --label "sysops.orchestrator.fingerprint=$FP" \
        --label "sysops.orchestrator.version=$VERSION" \
        -t "$IMAGE" -f "$CTX/Dockerfile" "$CTX" >"$WORK/build.log" 2>&1; then
    cat "$WORK/build.log" >&2
    die "docker build failed"
fi

log "verifying $IMAGE"
docker run --rm --network none --entrypoint /opt/sysops/bin/python "$IMAGE" \
    -c "import os, sysops, kubernetes, grpc, sysops_sdk; assert os.getuid() == 10001" >&2 \
    || die "verification of $IMAGE failed"

# Drop the superseded image (plain `docker rmi`: refused while a container still uses it).
new_id="$(docker image inspect -f '{{.Id}}' "$IMAGE")"
if [[ -n "$old_id" && "$old_id" != "$new_id" ]]; then
    docker rmi "$old_id" >/dev/null 2>&1 || true
fi
# The classic builder leaves the install stage behind as a dangling image (labelled in the Dockerfile).
docker image prune -f --filter "label=sysops.orchestrator.stage=install" >/dev/null 2>&1 || true

log "built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"

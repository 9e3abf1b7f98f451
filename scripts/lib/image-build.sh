# Shared by plugin-base-image/build.sh and scripts/build-orchestrator-image.sh (sourced, not run).
# Both skip work when the image already carries the fingerprint of its inputs, and serialize concurrent
# builds with a lock in the cache directory. Callers define log().

# hash_files PATH...: one sha256 over the named files and every file under the named directories (caches
# skipped), run from the repository root; the fingerprint of an image's inputs.
hash_files() {
    find "$@" -type f -not -path '*/__pycache__/*' -not -name '*.pyc' | LC_ALL=C sort \
        | while IFS= read -r f; do sha256sum -- "$f"; done | sha256sum | cut -d' ' -f1
}

# Print the fingerprint label LABEL of IMAGE ("" when the image is missing).
image_fingerprint() {
    docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true
}

# exit_if_current IMAGE LABEL FINGERPRINT: exit 0 when IMAGE is already built from these inputs.
exit_if_current() {
    if [[ "$(image_fingerprint "$1" "$2")" == "$3" ]]; then
        log "$1 is up to date (${3:0:12})"
        exit 0
    fi
}

# open_cache LOCKFILE: set CACHE (SYSOPS_CACHE, /var/cache/sysops, or ~/.cache/sysops when that is not
# writable), make $CACHE/wheels, and hold an exclusive lock on $CACHE/LOCKFILE for the rest of the script.
open_cache() {
    CACHE="${SYSOPS_CACHE:-/var/cache/sysops}"
    if ! mkdir -p "$CACHE" 2>/dev/null || [[ ! -w "$CACHE" ]]; then
        CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/sysops"
        mkdir -p "$CACHE"
    fi
    mkdir -p "$CACHE/wheels"
    exec 9>"$CACHE/$1"
    flock 9
}

# fetch_wheels DEST REQUIREMENT...: wheels for the image's Python (pip platform flags in the array `plat`)
# into DEST, offline from $CACHE/wheels first; download into the cache only when that fails.
# Callers define pip() (their interpreter's pip).
fetch_wheels() {
    local dest="$1"
    shift
    if pip download -q --no-index --find-links "$CACHE/wheels" "${plat[@]}" -d "$dest" "$@" >/dev/null 2>&1; then
        log "dependency wheels served from cache"
        return 0
    fi
    log "downloading dependency wheels into $CACHE/wheels"
    pip download -q "${plat[@]}" --find-links "$CACHE/wheels" -d "$CACHE/wheels" "$@" >&2 \
        && pip download -q --no-index --find-links "$CACHE/wheels" "${plat[@]}" -d "$dest" "$@" >&2
}

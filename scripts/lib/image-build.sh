# Shared by plugin-base-image/build.sh and scripts/build-orchestrator-image.sh (sourced, not run).
# Both skip work when the image already carries the fingerprint of its inputs, and serialize concurrent
# builds with a lock in the cache directory. Callers define log().

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

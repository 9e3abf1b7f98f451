#!/usr/bin/env bash
# Build the documentation site (mkdocs-material, strict) from docs/ plus the pages generated from the code.
#
#   scripts/build-docs.sh            build into a temporary directory, removed afterwards (what CI runs)
#   scripts/build-docs.sh --out DIR  keep the site in DIR (open DIR/index.html)
#
# It installs nothing: mkdocs-material and mkdocstrings come from the dev extras in .venv (scripts/bootstrap.sh).
# docs/ is copied to a temporary directory, scripts/gen_docs writes the generated pages into the copy (the
# manifest, CLI and protocol references, available plugins, benchmarks), and `mkdocs build --strict` builds
# it with mkdocs.yml (SYSOPS_DOCS_DIR points it at the copy): a broken link or anchor, or a page missing
# from the nav, fails the build. Exit 0 when the site built.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
BIN="$REPO/.venv/bin"

out=""
while (($#)); do
    case "$1" in
        --out) out="${2:?--out needs a directory}"; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "build-docs: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

if [[ ! -x "$BIN/mkdocs" ]]; then
    echo "build-docs: $BIN/mkdocs not found; run scripts/bootstrap.sh (it installs the dev extras)" >&2
    exit 2
fi

export NO_MKDOCS_2_WARNING=1  # material's notice about MkDocs 2.0, printed on every build
work="$(mktemp -d "${TMPDIR:-/tmp}/sysops-docs.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp -r docs "$work/docs"
PYTHONPATH="$REPO/scripts${PYTHONPATH:+:$PYTHONPATH}" "$BIN/python" -m gen_docs "$work/docs" --root "$REPO"
site="${out:-$work/site}"
SYSOPS_DOCS_DIR="$work/docs" "$BIN/mkdocs" build --strict --config-file "$REPO/mkdocs.yml" --site-dir "$site"
echo "build-docs: site built in $site$([[ -z "$out" ]] && echo ' (temporary, removed)')" >&2

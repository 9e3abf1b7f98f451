#!/usr/bin/env bash
# End-to-end demo: bring up the example "hello" plugin in a container and call it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

scripts/bootstrap.sh
.venv/bin/sysops plugin up examples/hello
.venv/bin/sysops greet World

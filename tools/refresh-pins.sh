#!/usr/bin/env bash
# Re-resolves the pinned dependencies, with hashes, from requirements.in (runtime: what the zip
# ships) and requirements-dev.in (test and build tools). Review the diff, then run ./test.sh.
#   tools/refresh-pins.sh            newest versions allowed by the .in files
#   tools/refresh-pins.sh --keep     only add what is missing; keep existing pins
set -euo pipefail
cd "$(dirname "$0")/.."
tools/ensure-venv.sh
upgrade=--upgrade
[ "${1:-}" = "--keep" ] && upgrade=
compile() {
  .venv/bin/python -m piptools compile --quiet --strip-extras --generate-hashes --allow-unsafe \
    --no-emit-index-url --no-emit-find-links $upgrade -o "$2" "$1"
}
compile requirements.in requirements.txt
compile requirements-dev.in requirements-dev.txt
git --no-pager diff --stat -- requirements.txt requirements-dev.txt 2>/dev/null || true

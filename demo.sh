#!/usr/bin/env bash
# One command, no cloud account: local S3, Cloud Storage and Google token endpoints; a small
# tree uploaded to S3; the events S3 emits delivered to the real handler; both destinations listed.
set -euo pipefail
cd "$(dirname "$0")"
tools/ensure-venv.sh
exec .venv/bin/python -m tools.demo "$@"

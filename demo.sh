#!/usr/bin/env bash
# One command, no cloud account: local S3, Cloud Storage and Google token endpoints; a small
# tree uploaded to S3; the events S3 emits delivered to the real handler; what happened to each
# object at each destination. ./demo.sh --serve keeps the servers running for the command line;
# ./demo.sh --help says more.
set -euo pipefail
cd "$(dirname "$0")"
for arg in "$@"; do
  case $arg in
    -h | --help)
      # Help needs no virtual environment: the usage text is plain Python.
      python=.venv/bin/python
      [ -x "$python" ] || python=${PYTHON:-python3}
      exec "$python" tools/demo.py --help ;;
  esac
done
tools/ensure-venv.sh
exec .venv/bin/python -m tools.demo "$@"

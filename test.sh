#!/usr/bin/env bash
# Sets up everything the suite needs (virtual environment, pinned dependencies) and runs it.
# The local servers (S3, Cloud Storage, Google token endpoints) are started by the tests.
#   ./test.sh                 the whole suite
#   ./test.sh tests/unit -x   any pytest arguments
set -euo pipefail
cd "$(dirname "$0")"
tools/ensure-venv.sh

set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure, not a pass." >&2
  exit 1
fi
exit "$status"

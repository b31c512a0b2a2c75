#!/usr/bin/env bash
# Sets up everything the suite needs (virtual environment, pinned dependencies) and runs it.
# The local servers (S3, Cloud Storage, Google token endpoints) are started by the tests.
#   ./test.sh                 the whole suite
#   ./test.sh tests/unit -x   any pytest arguments (one pytest run, as given)
#
# The whole suite runs as two pytest processes side by side, each with its own local servers: the
# end-to-end tests, and the rest (unit, rig, deployment and zip tests, whose builds keep a CPU busy)
# with the end-to-end tests that mostly wait (fault runs, hostile input, the sync). The second one's
# output follows the first's, and the last line is the whole run's count, summed from both
# processes' JUnit XML results: "N passed, M failed, K skipped".
set -euo pipefail
cd "$(dirname "$0")"
tools/ensure-venv.sh

# pytest's exit status 5 means it collected no tests: a failure here, never a pass.
check() {
  local name=$1 status=$2
  if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests in $name; that is a failure, not a pass." >&2
    return 1
  fi
  return "$status"
}

if [ "$#" -gt 0 ]; then
  set +e
  .venv/bin/python -m pytest "$@"
  status=$?
  set -e
  check "$*" "$status"
  exit $?
fi

results=$(mktemp -d "${TMPDIR:-/tmp}/gcs-sync-tests.XXXXXX")
others_log="$results/others.log"
trap 'rm -rf "$results"' EXIT
set +e
# The second process also takes the end-to-end tests that mostly wait (fault runs, hostile input,
# the sync's deadlines), so the two finish together.
MOVED=(tests/e2e/test_faults.py tests/e2e/test_hostile_input.py tests/e2e/test_sync.py)
OTHERS=(tests/unit tests/rig tests/deploy tests/lambda_zip "${MOVED[@]}")
.venv/bin/python -m pytest "${OTHERS[@]}" --junitxml="$results/others.xml" >"$others_log" 2>&1 &
others=$!
.venv/bin/python -m pytest tests/e2e "${MOVED[@]/#/--ignore=}" --junitxml="$results/e2e.xml"
e2e_status=$?
wait "$others"
others_status=$?
set -e
echo
echo "==================== ${OTHERS[*]} ===================="
cat "$others_log"
failed=0
check "tests/e2e" "$e2e_status" || failed=1
check "${OTHERS[*]}" "$others_status" || failed=1
if [ "$failed" -ne 0 ]; then
  echo "test.sh: FAILED (end-to-end: exit $e2e_status; ${OTHERS[*]}: exit $others_status)" >&2
fi
echo
echo "==================== whole run: end-to-end and ${OTHERS[*]} ===================="
.venv/bin/python -m tests.junit_totals "$results/e2e.xml" "$results/others.xml" || failed=1
exit "$failed"

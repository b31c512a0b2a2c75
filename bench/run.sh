#!/usr/bin/env bash
# The benchmarks in one command: sets up .venv (tools/ensure-venv.sh), then runs bench.run.
#   bench/run.sh            full set (4.5-7 min on 2 cores, more when the machine is busy)
#   bench/run.sh --quick    reduced set (1-2 min): 64 MiB instead of 256 MiB / 1 GiB, fewer rounds
#   bench/run.sh small [...]  small objects at 0, 20 and 50 ms added per request (python -m bench.small)
#   bench/run.sh many [...]   an SQS batch of 100 small objects against rclone (python -m bench.many)
# Any other arguments go to `python -m bench.run` (see --help). Prints tables; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/ensure-venv.sh
case "${1:-}" in
  small|many) BENCH_COMMAND="bench/run.sh $*" exec .venv/bin/python -m "bench.$1" "${@:2}" ;;
esac
BENCH_COMMAND="bench/run.sh${*:+ $*}" exec .venv/bin/python -m bench.run "$@"

#!/usr/bin/env bash
# The benchmarks in one command: sets up .venv (tools/ensure-venv.sh), then runs bench.run.
#   bench/run.sh            full set (4.5-7 min on 2 cores, more when the machine is busy)
#   bench/run.sh --quick    reduced set (1-2 min): 64 MiB instead of 256 MiB / 1 GiB, fewer rounds
# Any other arguments go to `python -m bench.run` (see --help). Prints tables; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/ensure-venv.sh
BENCH_COMMAND="bench/run.sh${*:+ $*}" exec .venv/bin/python -m bench.run "$@"

#!/usr/bin/env bash
# Creates .venv with Python 3.11 and installs the pinned runtime and tool dependencies,
# again only when requirements*.txt change. Used by test.sh and demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python=$candidate; break; fi
  done
fi
if [ -z "$python" ] || ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "Python 3.11 is needed (the Lambda runtime's version); set PYTHON=/path/to/python3.11." >&2
  exit 2
fi

if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $python ..." >&2
  "$python" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(.venv/bin/python -c 'import hashlib; print(hashlib.sha256(b"".join(open(f, "rb").read() for f in ("requirements.txt", "requirements-dev.txt"))).hexdigest())')
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "Installing the pinned dependencies into .venv (requirements.txt, requirements-dev.txt; once, and" \
    "again when they change: about a minute) ..." >&2
  if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes \
    -r requirements.txt -r requirements-dev.txt; then
    platform="$(uname -s) $(uname -m)"
    echo "Installing the pinned dependencies failed on $platform (see pip's message above)." >&2
    case "$platform" in
      "Darwin x86_64")
        echo "On Intel Macs, cryptography 50.0.2 and lazy-object-proxy 1.13.0 publish no wheel: pip has to" \
          "build them from source, which needs Xcode's command line tools and a Rust toolchain." >&2 ;;
    esac
    case "$platform" in
      Darwin*) echo "The pinned fake-gcs-server wheels need macOS 12 or later." >&2 ;;
    esac
    exit 1
  fi
  echo "$want" >"$stamp"
fi

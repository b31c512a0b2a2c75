"""Building the deployment zip in tests, and running code inside its tree.

The zip itself is built once per test session by the fixtures of tests/conftest.py
(``lambda_build``, ``lambda_zip``, ``lambda_tree``, ``build_cache``), for every folder alike.

* ``run_in_tree(tree, code, env)``: run ``code`` in a fresh isolated interpreter (``-I -S -B``)
  whose ``sys.path`` is the tree plus the standard library only, cwd = tree.
* ``build(out_dir, *args, env=..., cache=...)``: run build.sh; ``zip_from(result)`` reads the zip
  path. With ``cache`` (the session's ``build_cache``), build.sh reuses the dependencies the
  session's first build installed, so a build with other options costs seconds, not a full install.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_SH = REPO / "build.sh"
# Build for the interpreter running the tests, so the tree's extension modules load in it.
TARGET_VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"
ZIP_NAME = f"gcs-sync-lambda-py{TARGET_VERSION}-x86_64.zip"

# Variables of the caller's environment that would change what build.sh makes.
_BUILD_INPUTS = ("SOURCE_DATE_EPOCH", "ALLOW_SERVICE_ACCOUNT_KEY", "OUT_DIR", "PYTHON_VERSION", "PYTHON",
                 "GCS_SYNC_BUILD_CACHE")

BUILD_TIMES: list[tuple[str, float]] = []


def build(out_dir: Path, *args: str, env: dict | None = None, umask: int | None = None,
          label: str = "build", timeout: float = 900, cache: Path | None = None) -> subprocess.CompletedProcess:
    """``./build.sh --no-docker --out OUT_DIR ARGS`` with this interpreter (and its pip)."""
    full_env = {k: v for k, v in os.environ.items() if k not in _BUILD_INPUTS}
    full_env.update(PYTHON=sys.executable, PYTHON_VERSION=TARGET_VERSION)
    if cache is not None:
        full_env["GCS_SYNC_BUILD_CACHE"] = str(cache)
    full_env.update(env or {})
    command = ["bash", str(BUILD_SH), "--no-docker", "--out", str(out_dir), *args]
    if umask is not None:
        command = ["bash", "-c", f'umask {umask:03o} && exec "$@"', "bash", *command]
    started = time.monotonic()
    result = subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    BUILD_TIMES.append((label, time.monotonic() - started))
    return result


def zip_from(result: subprocess.CompletedProcess) -> Path:
    """The zip a successful build printed as the last line of its stdout."""
    assert result.returncode == 0, f"build.sh failed ({result.returncode}):\n{result.stderr[-4000:]}"
    lines = result.stdout.splitlines()
    assert lines, f"build.sh printed nothing on stdout:\n{result.stderr[-2000:]}"
    path = Path(lines[-1])
    assert path.is_absolute() and path.name == ZIP_NAME and path.is_file(), lines[-1]
    return path


def unzip(zip_path: Path, dest: Path) -> Path:
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(dest)
    return dest


_PRELUDE = """\
import sys
sys.path.insert(0, {tree!r})
"""


def run_in_tree(tree: Path, code: str, env: dict | None = None, *, timeout: float = 300,
                python: str = sys.executable) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh ``python -I -S -B`` with the tree first on ``sys.path``.

    -I ignores PYTHON* variables and the user's site directory, -S skips site-packages (so
    only the tree and the standard library can be imported), -B writes no .pyc into the tree
    (Lambda's /var/task is read-only too). The child gets a minimal environment (PATH, HOME,
    TMPDIR, LANG) plus ``env``; stdout and stderr are captured as text.
    """
    base = {"LANG": "C.UTF-8"}
    for name in ("PATH", "HOME", "TMPDIR"):
        if name in os.environ:
            base[name] = os.environ[name]
    base.update(env or {})
    return subprocess.run(
        [python, "-I", "-S", "-B", "-c", _PRELUDE.format(tree=str(tree)) + code],
        cwd=tree, env=base, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )

"""The local stand-ins, each in its own process so they never share a GIL with what is measured.

    python -m bench.servers s3      moto's ThreadedMotoServer (S3)
    python -m bench.servers rig     the Google STS / IAM stand-in + fake-gcs-server (memory) behind
                                    the authenticating GcsFront, as the e2e tests wire them

Each prints one JSON line describing itself, then serves until its standard input closes.
``Served`` starts one from the parent and stops it again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _serve_s3() -> None:
    import logging

    from tests.rig import LocalS3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

    s3 = LocalS3().start()
    try:
        _announce({"url": s3.url, "env": s3.aws_env(), "pid": os.getpid()})
        sys.stdin.read()
    finally:
        s3.stop()


def _serve_rig() -> None:
    from tests.rig import DEFAULT_AUDIENCE, DEFAULT_SERVICE_ACCOUNT, FakeGcsServer, GcsFront, GoogleTokenServer
    from tests.rig.s3 import AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY

    tokens = GoogleTokenServer(aws_keys={AWS_ACCESS_KEY_ID: AWS_SECRET_ACCESS_KEY},
                               audience=DEFAULT_AUDIENCE, service_account=DEFAULT_SERVICE_ACCOUNT).start()
    with tempfile.TemporaryDirectory(prefix="gcs-sync-bench-fake-gcs-") as root:
        gcs = FakeGcsServer(Path(root), backend="memory").start()
        front = GcsFront(gcs.url, tokens).start()
        try:
            _announce({"front": front.url, "backend": gcs.url,
                       "backend_pid": gcs._process.pid, "credential_config": tokens.credential_config(),
                       "pid": os.getpid()})
            sys.stdin.read()
        finally:
            front.stop()
            gcs.stop()
            tokens.stop()


def _announce(info: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()


class Served:
    """A server process started with ``python -m MODULE ARGS``; ``info`` is its JSON line."""

    def __init__(self, module: str, *args: str, env: dict[str, str] | None = None):
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=REPO, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait(timeout=10)
            raise RuntimeError(f"python -m {module} {' '.join(args)} exited with {code} before serving")
        self.info: dict[str, Any] = json.loads(line)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()  # the server's cue to stop
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                self.process.wait(timeout=10)


if __name__ == "__main__":
    {"s3": _serve_s3, "rig": _serve_rig}[sys.argv[1]]()

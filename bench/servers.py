"""The local stand-ins, each in its own process so they never share a GIL with what is measured.

    python -m bench.servers s3      moto's ThreadedMotoServer (S3)
    python -m bench.servers rig     the Google STS / IAM stand-in + fake-gcs-server (memory) behind
                                    the authenticating GcsFront, as the e2e tests wire them; a
                                    second GcsFront on the same backend has TCP_NODELAY set (see
                                    _no_delay), and is the one the benchmarks use

Each prints one JSON line describing itself, then serves until its standard input closes.
``Served`` starts one from the parent and stops it again.
"""

from __future__ import annotations

import json
import os
import socket
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
        front = GcsFront(gcs.url, tokens).start()  # as the tests run it
        fast = GcsFront(gcs.url, tokens).start()   # the same, with TCP_NODELAY on its sockets
        _no_delay(fast._server)
        _no_delay(tokens._server)
        try:
            _announce({"front": fast.url, "front_as_tested": front.url, "backend": gcs.url,
                       "backend_pid": gcs._process.pid, "credential_config": tokens.credential_config(),
                       "pid": os.getpid()})
            sys.stdin.read()
        finally:
            fast.stop()
            front.stop()
            gcs.stop()
            tokens.stop()


def _no_delay(server: Any) -> None:
    """Set TCP_NODELAY on each connection this (http.server-based) server accepts from now on.

    http.server sends a response's headers and body in separate writes; with Nagle on, the body
    waits for the client's delayed ACK, about 40 ms on Linux loopback, on every request.
    """
    accept = server.get_request

    def get_request() -> Any:
        sock, address = accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address

    server.get_request = get_request


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

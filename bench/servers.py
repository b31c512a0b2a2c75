"""The local stand-ins, each in its own process so they never share a GIL with what is measured.

    python -m bench.servers s3 [--latency-ms N]
                                    moto's ThreadedMotoServer (S3); N ms added to every request
    python -m bench.servers rig [--latency-ms N]
                                    the Google STS / IAM stand-in + fake-gcs-server (memory) behind
                                    the authenticating GcsFront, as the e2e tests wire them; N ms
                                    added to every request at the front (default 0)

Each prints one JSON line describing itself, then serves until its standard input closes.
``Served`` starts one from the parent and stops it again. The rig also takes commands, one JSON
line each on its standard input, and answers each with one JSON line (``Served.call``):
``{"op": "latency", "ms": N}`` (set the front's added latency), ``{"op": "counts"}`` (requests
by kind and object writes since the last ``reset_counts``), ``{"op": "reset_counts"}``. The S3
server takes ``{"op": "latency", "ms": N}``.
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


def _serve_s3(latency_ms: float = 0.0) -> None:
    import logging

    from tests.rig import LocalS3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

    s3 = LocalS3(latency_ms=latency_ms).start()
    try:
        _announce({"url": s3.url, "env": s3.aws_env(), "pid": os.getpid(), "latency_ms": s3.latency_ms})
        for line in sys.stdin:
            command = json.loads(line)
            if command.get("op") == "latency":
                s3.latency_ms = float(command["ms"])
                _announce({"ok": True, "latency_ms": s3.latency_ms})
            else:
                _announce({"ok": False, "error": f"unknown S3 command {command.get('op')!r}: latency"})
    finally:
        s3.stop()


def _serve_rig(latency_ms: float = 0.0) -> None:
    from tests.rig import DEFAULT_AUDIENCE, DEFAULT_SERVICE_ACCOUNT, FakeGcsServer, GcsFront, GoogleTokenServer
    from tests.rig.s3 import AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY

    tokens = GoogleTokenServer(aws_keys={AWS_ACCESS_KEY_ID: AWS_SECRET_ACCESS_KEY},
                               audience=DEFAULT_AUDIENCE, service_account=DEFAULT_SERVICE_ACCOUNT).start()
    with tempfile.TemporaryDirectory(prefix="gcs-sync-bench-fake-gcs-") as root:
        gcs = FakeGcsServer(Path(root), backend="memory").start()
        front = GcsFront(gcs.url, tokens, latency_ms=latency_ms).start()
        try:
            _announce({"front": front.url, "backend": gcs.url,
                       "backend_pid": gcs._process.pid, "credential_config": tokens.credential_config(),
                       "pid": os.getpid(), "latency_ms": front.latency_ms})
            for line in sys.stdin:
                _announce(_rig_command(front, json.loads(line)))
        finally:
            front.stop()
            gcs.stop()
            tokens.stop()


def _rig_command(front: Any, command: dict[str, Any]) -> dict[str, Any]:
    """One control command to the rig's front (see the module's docstring)."""
    op = command.get("op")
    if op == "latency":
        front.latency_ms = float(command["ms"])
        return {"ok": True, "latency_ms": front.latency_ms}
    if op == "counts":
        with front._lock:
            return {"ok": True, "requests": dict(front.request_kinds), "total": sum(front.request_kinds.values()),
                    "writes": sum(front.object_writes.values()),
                    "refused_writes": sum(front.object_writes_refused.values())}
    if op == "reset_counts":
        with front._lock:
            front.request_kinds.clear()
            front.requests.clear()
            front.object_writes.clear()
            front.object_writes_refused.clear()
            front.policy_requests.clear()
        return {"ok": True}
    return {"ok": False, "error": f"unknown rig command {op!r}: latency, counts or reset_counts"}


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

    def call(self, op: str, **params: Any) -> dict[str, Any]:
        """One command on the server's standard input; its one-line JSON answer."""
        self.process.stdin.write(json.dumps({"op": op, **params}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the server stopped during {op}")
        answer: dict[str, Any] = json.loads(line)
        if not answer.pop("ok", False):
            raise RuntimeError(f"{op}: {answer.get('error')}")
        return answer

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
    latency = float(sys.argv[sys.argv.index("--latency-ms") + 1]) if "--latency-ms" in sys.argv else 0.0
    {"s3": _serve_s3, "rig": _serve_rig}[sys.argv[1]](latency)


def rclone_s3_section(env: dict[str, str]) -> str:
    """rclone's ``[s3]`` remote for the local S3 stand-in whose environment is ``env``."""
    return f"""[s3]
type = s3
provider = Other
endpoint = {env['AWS_ENDPOINT_URL_S3']}
access_key_id = {env['AWS_ACCESS_KEY_ID']}
secret_access_key = {env['AWS_SECRET_ACCESS_KEY']}
session_token = {env['AWS_SESSION_TOKEN']}
region = {env['AWS_REGION']}
force_path_style = true
"""


def stop_all(drivers: list, servers: list) -> None:
    """Stop the drivers, then the servers in the reverse order of their start, whatever fails."""
    for driver in drivers:
        try:
            driver.stop()
        except Exception:  # noqa: BLE001 - cleaning up regardless
            pass
    for served in reversed(servers):
        try:
            served.stop()
        except Exception:  # noqa: BLE001
            pass

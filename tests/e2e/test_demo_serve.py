"""./demo.sh --serve: the exports it prints are enough for the command line to use its servers."""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tools.demo import REWRITTEN, SERVING

ROOT = Path(__file__).resolve().parents[2]
NEEDED = {"AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_STS", "AWS_ACCESS_KEY_ID",
          "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "GCS_API_ENDPOINT",
          "GOOGLE_APPLICATION_CREDENTIALS", "GCS_DESTINATIONS"}


def _lines(process: subprocess.Popen) -> "queue.Queue[str | None]":
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


@pytest.fixture
def served():
    """The --serve process, its output so far and the exports it printed; stopped with Ctrl-C."""
    process = subprocess.Popen([sys.executable, "-m", "tools.demo", "--serve"], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, encoding="utf-8")
    lines, seen = _lines(process), []
    try:
        deadline = time.monotonic() + 120
        while not seen or seen[-1] != SERVING:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, "--serve ended early:\n" + "\n".join(seen)
            seen.append(line)
        exports = dict(shlex.split(line)[1].split("=", 1) for line in seen if line.startswith("export "))
        yield process, seen, exports, lines
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _cli(exports: dict[str, str], *args: str, home: Path) -> subprocess.CompletedProcess:
    """The command line with the printed exports only (nothing inherited but PATH)."""
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), **exports}
    return subprocess.run([sys.executable, "-m", "gcs_sync", *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=120)


def test_the_printed_exports_run_the_doctor_and_a_copy_against_the_served_servers(served, tmp_path):
    process, seen, exports, lines = served
    assert NEEDED <= set(exports), f"missing: {NEEDED - set(exports)}"
    assert Path(exports["GOOGLE_APPLICATION_CREDENTIALS"]).is_absolute()
    assert json.loads(Path(exports["GOOGLE_APPLICATION_CREDENTIALS"]).read_text())["token_url"].startswith(
        "http://127.0.0.1:")
    printed = "\n".join(seen)
    for command in ("doctor", "copy", "sync", "check", "redrive"):
        assert f"-m gcs_sync {command}" in printed, command

    doctor = _cli(exports, "doctor", "--json", home=tmp_path)
    report = json.loads(doctor.stdout)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert doctor.returncode == 0 and report["ok"], failed
    # Every endpoint is local: google-auth's location lookup no longer calls Google (nor warns).
    assert "googleapis.com" not in doctor.stderr and "Retrying" not in doctor.stderr, doctor.stderr

    copy = _cli(exports, "copy", f"s3://{exports['S3_BUCKET_NAME']}/{REWRITTEN}", home=tmp_path)
    assert copy.returncode == 0, copy.stderr
    assert json.loads(copy.stdout)["copied"] == 1

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0
    rest = []
    while (line := lines.get(timeout=10)) is not None:
        rest.append(line)
    assert "Stopping the local servers." in rest

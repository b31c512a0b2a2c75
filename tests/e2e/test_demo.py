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

    queue = next(line.split()[-2] for line in seen if " -m gcs_sync redrive " in line and line.endswith("--dry-run"))
    redrive = _cli(exports, "redrive", queue, "--dry-run", home=tmp_path)
    assert redrive.returncode == 0, redrive.stderr
    assert json.loads(redrive.stdout.splitlines()[-1])["would_redrive"] == 1

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0
    rest = []
    while (line := lines.get(timeout=10)) is not None:
        rest.append(line)
    assert "Stopping the local servers." in rest


def test_the_demo_shows_each_objects_outcome_proof_way_and_latency():
    """./demo.sh end to end (without the .venv check): what it prints is what happened."""
    result = subprocess.run([sys.executable, "-m", "tools.demo"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, encoding="utf-8")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    flat = " ".join(out.split())  # explanations are wrapped
    assert "Starting the local servers:" in out and "done (" in out  # setup progress
    assert "1 s3:TestEvent that S3 sends when a notification configuration is saved" in flat
    assert "S3 sent 6 messages to the queue: 5 ObjectCreated notifications" in flat
    rows = [line for line in out.splitlines() if line.lstrip().startswith("gs://demo-") and "  " in line.strip()]
    copied = [line for line in rows if " copied " in line]
    assert len(copied) == 2 * 5 + 2  # 5 objects and the rewritten one, at 2 destinations
    assert all(" crc32 " in line and "latency " in line for line in copied)
    # the 48,000-byte logo is copied inside Cloud Storage to the archive; objects of a few KB
    # are uploaded to each destination (below the size where a round trip costs more than egress)
    server_side = [line for line in copied if "server-side copy" in line]
    assert len(server_side) == 1 and "gs://demo-archive/from-s3/images/logo.png" in server_side[0]
    assert sum(" upload " in line for line in copied) == len(copied) - 1
    superseded = [line for line in rows if line.rstrip().endswith(" superseded")]
    assert len(superseded) == 2
    assert "日本語 フォルダ/レポート 1.txt" in out
    assert "Demo succeeded" in out
    assert "(the function skips it)" in flat and "skipped: SQS message" in flat

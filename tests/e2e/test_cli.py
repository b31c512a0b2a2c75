"""The command line, as a separate process with the function's environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .conftest import ROOT


def run_cli(world, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()}
    env["GOOGLE_APPLICATION_CREDENTIALS"] = os.path.join(env["LAMBDA_TASK_ROOT"], "gcp-credentials.json")
    env.pop("AWS_LAMBDA_FUNCTION_NAME", None)  # a terminal, not Lambda
    env["LOG_LEVEL"] = "ERROR"
    return subprocess.run([sys.executable, "-m", "gcs_sync", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_sync_from_a_terminal_runs_to_the_end(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}/copy/")
    for i in range(5):
        world.rig.s3_client.put_object(Bucket=world.source, Key=f"data/{i}.txt", Body=f"row {i}".encode())
    world.rig.s3_client.put_object(Bucket=world.source, Key="other/x.txt", Body=b"not under the prefix")
    dry = run_cli(world, "sync", f"s3://{world.source}/data/", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("would copy") == 5 and world.gcs_object(dest, "copy/data/0.txt") is None
    done = run_cli(world, "sync", f"s3://{world.source}/data/")
    assert done.returncode == 0, done.stderr
    totals = json.loads(done.stdout.strip().splitlines()[-1])
    assert totals["copied"] == 5 and totals["listed"] == 5
    assert world.gcs_bytes(dest, "copy/data/3.txt") == b"row 3"
    assert world.gcs_object(dest, "copy/other/x.txt") is None


def test_copy_from_a_terminal_reports_failures_with_exit_status(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    world.rig.s3_client.put_object(Bucket=world.source, Key="a b.txt", Body=b"ab")
    ok = run_cli(world, "copy", f"s3://{world.source}/a b.txt")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["copied"] == 1 and world.gcs_bytes(dest, "a b.txt") == b"ab"
    world.rig.front.deny[dest] = 403
    denied = run_cli(world, "copy", f"s3://{world.source}/a b.txt")
    assert denied.returncode == 1
    assert json.loads(denied.stdout)["failed"] == 1

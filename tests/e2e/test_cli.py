"""The command line, as a separate process with the function's environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .conftest import ROOT


def run_cli(world, *args: str, cwd=ROOT, credentials: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()}
    env["GOOGLE_APPLICATION_CREDENTIALS"] = credentials or os.path.join(env["LAMBDA_TASK_ROOT"], "gcp-credentials.json")
    env.pop("AWS_LAMBDA_FUNCTION_NAME", None)  # a terminal, not Lambda
    env["LOG_LEVEL"] = "ERROR"
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "gcs_sync", *args], cwd=cwd, env=env,
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


def test_relative_credentials_on_a_terminal_mean_the_current_directory(world, tmp_path):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    world.rig.s3_client.put_object(Bucket=world.source, Key="rel.txt", Body=b"relative")
    here = tmp_path / "workdir"
    (here / "conf").mkdir(parents=True)
    task_config = os.path.join(os.environ["LAMBDA_TASK_ROOT"], "gcp-credentials.json")
    with open(task_config, encoding="utf-8") as handle:
        (here / "conf" / "mine.json").write_text(handle.read(), encoding="utf-8")
    done = run_cli(world, "copy", f"s3://{world.source}/rel.txt", cwd=here, credentials="conf/mine.json")
    assert done.returncode == 0, done.stderr
    assert world.gcs_bytes(dest, "rel.txt") == b"relative"
    assert '"_aws"' not in done.stdout  # no metrics on a terminal: stdout is the summary alone
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    missing = run_cli(world, "copy", f"s3://{world.source}/rel.txt", cwd=elsewhere, credentials="conf/mine.json")
    assert missing.returncode == 2
    assert f"resolved against the current directory ({elsewhere})" in missing.stderr
    assert "does not exist. Fix: " in missing.stderr
    assert missing.stderr.startswith("gcs-sync: ") and "gcs-sync: gcs-sync" not in missing.stderr


def test_help_documents_every_command_with_an_example_and_the_local_servers(world):
    top = run_cli(world, "--help")
    assert top.returncode == 0
    for command in ("doctor", "sync", "copy"):
        assert f"python -m gcs_sync {command} " in top.stdout
        sub = run_cli(world, command, "--help")
        assert sub.returncode == 0 and "example" in sub.stdout and f"python -m gcs_sync {command}" in sub.stdout
    for variable in ("AWS_ENDPOINT_URL_S3", "GCS_API_ENDPOINT", "GOOGLE_APPLICATION_CREDENTIALS", "./demo.sh"):
        assert variable in top.stdout


def test_command_line_mistakes_get_the_fix_for_them(world):
    missing = run_cli(world, "copy")
    assert missing.returncode == 2
    assert "required" in missing.stderr and "for example: python -m gcs_sync copy s3://" in missing.stderr
    wrong_scheme = run_cli(world, "copy", "gs://b-b/k.txt")
    assert wrong_scheme.returncode == 2 and "e.g. s3://b-b/k.txt" in wrong_scheme.stderr
    no_key = run_cli(world, "copy", "s3://b-b")
    assert "python -m gcs_sync sync s3://b-b/" in no_key.stderr


def test_check_from_a_terminal_names_drift_and_exits_1(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    world.notify(world.put("same.txt", b"same"))
    world.put("new.txt", b"never announced")
    table = run_cli(world, "check", f"s3://{world.source}")
    assert table.returncode == 1, table.stderr
    assert f"gs://{dest}/: 1 ok, 1 missing" in table.stdout and "missing    new.txt" in table.stdout
    as_json = run_cli(world, "check", f"s3://{world.source}", "--json")
    result = json.loads(as_json.stdout)
    assert result["ok"] is False and result["destinations"][0]["examples"] == {"missing": ["new.txt"]}
    world.notify(world.record("new.txt", size=15))
    clean = run_cli(world, "check", f"s3://{world.source}", "--deep")
    assert clean.returncode == 0 and f"gs://{dest}/: 2 ok" in clean.stdout
    wrong = run_cli(world, "check", f"gs://{dest}")
    assert wrong.returncode == 2 and "check reads from S3" in wrong.stderr

"""End-to-end fixtures: the real handler, real boto3 and google-cloud-storage, real HTTP.

S3 is moto's server, Cloud Storage is fake-gcs-server behind an authenticating front, and the
Google STS / IAM endpoints are our own, verifying the SigV4-signed subject token. Nothing in
the function under test is patched: it is configured only through its environment, as in
Lambda.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
import subprocess

from tests.conftest import Rig

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import lambda_function  # noqa: E402


@dataclass
class Invoker:
    """One test's world: its own buckets, the function's environment, and ways to look."""

    rig: Rig
    monkeypatch: Any
    tmp_path: Path
    source: str = ""
    destinations: list[str] = field(default_factory=list)
    staging: Path | None = None

    def bucket(self, prefix: str = "dst") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.rig.gcs.create_bucket(name)
        return name

    def configure(self, destinations: str, **extra: str) -> None:
        self.monkeypatch.setenv("GCS_DESTINATIONS", destinations)
        for name, value in extra.items():
            self.monkeypatch.setenv(name, value)
        lambda_function.new_container()

    def put(self, key: str, body: bytes = b"", **params: Any) -> dict:
        """Upload to the source bucket and return the S3 notification record S3 would send."""
        response = self.rig.s3_client.put_object(Bucket=self.source, Key=key, Body=body, **params)
        return self.record(key, size=len(body), etag=response["ETag"].strip('"'),
                           version_id=response.get("VersionId"))

    def record(self, key: str, *, size: int = 0, etag: str | None = None, version_id: str | None = None,
               event: str = "ObjectCreated:Put", sequencer: str | None = None, bucket: str | None = None) -> dict:
        obj: dict[str, Any] = {"key": quote_plus(key, safe="/"), "size": size}
        if etag:
            obj["eTag"] = etag
        if version_id:
            obj["versionId"] = version_id
        if sequencer:
            obj["sequencer"] = sequencer
        return {
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventTime": "2026-11-21T12:00:00.000Z", "eventName": event,
            "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket or self.source,
                                                         "arn": f"arn:aws:s3:::{bucket or self.source}"},
                   "object": obj},
        }

    def invoke(self, event: Any) -> Any:
        return lambda_function.lambda_handler(json.loads(json.dumps(event)), FakeContext())

    def notify(self, *records: dict) -> Any:
        return self.invoke({"Records": list(records)})

    def gcs_object(self, bucket: str, name: str) -> dict | None:
        return self.rig.gcs.object_metadata(bucket, name)

    def gcs_bytes(self, bucket: str, name: str) -> bytes:
        return self.rig.gcs.read_object(bucket, name)

    def staging_leftovers(self) -> list[str]:
        return sorted(p.name for p in self.staging.iterdir()) if self.staging else []


class FakeContext:
    aws_request_id = "req-" + uuid.uuid4().hex[:8]
    function_name = "gcs-sync-test"
    memory_limit_in_mb = 1024

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


class CountdownContext:
    """A Lambda context whose remaining time really runs down from ``budget`` seconds."""

    function_name = "gcs-sync-test"
    memory_limit_in_mb = 1024

    def __init__(self, budget: float):
        self.aws_request_id = "req-" + uuid.uuid4().hex[:8]
        self.budget = budget
        self._end = time.monotonic() + budget

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._end - time.monotonic()) * 1000))


def writes(world: Invoker, bucket: str | None = None, since: int = 0) -> int:
    """Requests that wrote an object (upload POSTs and server-side copies), after request ``since``,
    to ``bucket`` or to any bucket."""
    count = 0
    for method, path in world.rig.front.requests[since:]:
        if method != "POST":
            continue
        if path.startswith("/upload/storage/v1/b/"):
            target = path.split("/")[5]
        elif "/rewriteTo/b/" in path:
            target = path.split("/rewriteTo/b/", 1)[1].split("/")[0]
        else:
            continue
        count += bucket is None or target == bucket
    return count


def uploads(world: Invoker, bucket: str | None = None, since: int = 0) -> int:
    """Upload POSTs only: the object's bytes sent from the function (server-side copies not counted)."""
    wanted = "/upload/" if bucket is None else f"/upload/storage/v1/b/{bucket}/o"
    return sum(1 for method, path in world.rig.front.requests[since:]
               if method == "POST" and path.startswith(wanted))


@pytest.fixture
def small_disk(world, monkeypatch):
    """``small_disk(nbytes)``: the function's temporary directory on a file system of that size (a
    tmpfs mounted for the test), so the free space and a full disk are the operating system's own
    answers. Needs root, as on the project's machines and CI."""
    mounted: list[Path] = []

    def make(nbytes: int) -> Path:
        path = world.tmp_path / f"small-disk-{len(mounted)}"
        path.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={nbytes},mode=0700", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"mounting a {nbytes}-byte tmpfs needs root: {done.stderr.strip()}")
        mounted.append(path)
        world.staging = path
        monkeypatch.setenv("STAGING_DIR", str(path))
        lambda_function.new_container()
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def world(rig: Rig, monkeypatch, tmp_path) -> Invoker:
    """A fresh source bucket and the function's environment, as Lambda would set it."""
    for name in list(os.environ):
        if name.startswith(("GCS_", "GOOGLE_", "SOURCE_BUCKETS", "S3_BUCKET_NAME", "MIRROR_DELETES")):
            monkeypatch.delenv(name)
    for name, value in rig.s3.aws_env().items():
        monkeypatch.setenv(name, value)
    code_dir = tmp_path / "task"
    code_dir.mkdir()
    (code_dir / "gcp-credentials.json").write_text(json.dumps(rig.tokens.credential_config()))
    staging = tmp_path / "tmp"
    staging.mkdir()
    monkeypatch.setenv("LAMBDA_TASK_ROOT", str(code_dir))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "gcp-credentials.json")
    monkeypatch.setenv("GCS_API_ENDPOINT", rig.front.url)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "gcs-sync-test")
    monkeypatch.setenv("STAGING_DIR", str(staging))
    rig.front.reset()
    rig.tokens.reset()
    invoker = Invoker(rig=rig, monkeypatch=monkeypatch, tmp_path=tmp_path, staging=staging)
    invoker.source = f"src-{uuid.uuid4().hex[:12]}"
    rig.s3_client.create_bucket(Bucket=invoker.source)
    lambda_function.new_container()
    yield invoker
    lambda_function.new_container()
    assert not rig.front.unauthorized, f"requests without a token we issued: {rig.front.unauthorized}"


def flip_stored_byte(world: Invoker, key: str, offset: int) -> None:
    """Change one byte of what S3 serves for ``key``, keeping its size and S3's record of it (its
    ETag and checksums): what a read corrupted on its way from S3's disks would deliver."""
    from moto.s3.models import s3_backends

    for account in s3_backends.values():
        for backend in account.values():
            bucket = backend.buckets.get(world.source)
            if bucket is not None:
                stored = bucket.keys[key]
                data = bytearray(stored.value)
                data[offset] ^= 0x01
                stored._value_buffer.seek(0)
                stored._value_buffer.write(bytes(data))
                return
    raise KeyError(key)


def md5_b64(data: bytes) -> str:
    import base64

    return base64.b64encode(hashlib.md5(data).digest()).decode()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.rig.faults import FAULT_RUNS

    if not FAULT_RUNS:
        return
    total = {k: sum(run[k] for run in FAULT_RUNS) for k in ("faults", "copied", "corrupt", "lost", "failed_first")}
    seeds = sorted({run["seed"] for run in FAULT_RUNS})
    terminalreporter.write_line(
        f"fault injection: seeds {', '.join(map(str, seeds))} ({len(FAULT_RUNS)} runs, staged and streamed): "
        f"{total['faults']} faults injected, {total['copied']} copies verified, {total['corrupt']} corrupt, "
        f"{total['lost']} lost; {total['failed_first']} failed on the faulty delivery and were named "
        "(set FAULT_SEEDS to choose seeds)")


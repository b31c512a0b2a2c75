"""What ``bench.small`` and ``bench.many`` share: moto and the rig in their own processes, with
latency added at the rig's Cloud Storage front (a Cloud Storage a region away), the function and
its floors in ``bench.driver`` processes, and the front's request counts.

Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.run import Driver, http_json, machine, progress
from bench.servers import Served, stop_all

SOURCE = "bench-src"
BUCKETS = ["bench-dst-1", "bench-dst-2"]
KIB = 1024
# Environment the parent must not pass on: the function takes its configuration from what we set.
_OWN_ENV = ("AWS_", "GCS_", "GOOGLE_", "STREAM_", "STAGING_", "SOURCE_BUCKETS", "S3_BUCKET_NAME", "S3_READ_PARTS",
            "MIRROR_DELETES", "OBJECT_CONCURRENCY", "LOG_LEVEL", "INCLUDE", "EXCLUDE", "LAMBDA_", "FANOUT",
            "SLICE_", "SMALL_")


def common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--s3-latency-ms", type=float, default=0.0, metavar="MS",
                        help="ms added to every S3 request, for every contender (default 0: S3 in the region)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an extra environment variable for the function (repeatable), e.g. OBJECT_CONCURRENCY=8")


def extra_env(pairs: list[str]) -> dict[str, str]:
    extra = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--env {pair!r}: expected NAME=VALUE, e.g. --env OBJECT_CONCURRENCY=8")
        extra[name] = value
    return extra


def header(title: str, argv: list[str], module: str) -> float:
    print(f"# {title}")
    wrapper = os.environ.get("BENCH_COMMAND")
    command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", module, *argv])
    print(f"command: {wrapper} (runs {command})" if wrapper else f"command: {command}")
    for line in machine():
        print(line)
    print(f"started {time.strftime('%Y-%m-%d %H:%M:%S')}; load average at start {os.getloadavg()[0]:.2f} (1 min)")
    return time.monotonic()


def footer(started: float) -> None:
    load = os.getloadavg()
    busy = load[1] > 0.6 * (os.cpu_count() or 1) + 2
    print(f"\ntotal wall time: {time.monotonic() - started:.0f} s; load average at the end {load[0]:.2f} (1 min), "
          f"{load[1]:.2f} (5 min) on {os.cpu_count()} CPUs"
          + ("; other work was running: absolute times are inflated, compare the ratios" if busy else ""))


def per_object(counts: dict[str, Any], objects: int) -> str:
    """``3.0 (object GET 1.0, upload: multipart 2.0)``: requests at the front per object."""
    def figure(value: float) -> str:
        return f"{value:.1f}" if value >= 1 or value == 0 else f"{value:.2f}"

    kinds = ", ".join(f"{kind} {figure(n / objects)}" for kind, n in sorted(counts["requests"].items()))
    return f"{counts['total'] / objects:.1f} ({kinds})" if kinds else "0"


def median_and_p90(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[int(0.9 * (len(ordered) - 1))]


class DistantRig:
    """moto + the rig (front with added latency) + drivers, in a temporary directory."""

    def __init__(self, tmp: Path, extra: dict[str, str], s3_latency_ms: float = 0.0):
        self.tmp, self.extra, self.s3_latency_ms = tmp, extra, s3_latency_ms
        self.servers: list[Served] = []
        self.drivers: list[Driver] = []

    def start(self) -> None:
        child = {"TMPDIR": str(self.tmp)}
        self.s3 = Served("bench.servers", "s3", "--latency-ms", str(self.s3_latency_ms), env=child)
        self.servers.append(self.s3)
        self.rig = Served("bench.servers", "rig", env=child)
        self.servers.append(self.rig)
        self.credentials = self.tmp / "gcp-credentials.json"
        self.credentials.write_text(json.dumps(self.rig.info["credential_config"]))
        for bucket in BUCKETS:
            status, _ = http_json("POST", self.rig.info["backend"] + "/storage/v1/b?project=bench", {"name": bucket})
            if status != 200:
                raise RuntimeError(f"creating {bucket} on fake-gcs-server: HTTP {status}")
        import boto3
        from botocore.config import Config

        env = self.s3.info["env"]
        self.s3_client = boto3.client(
            "s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"], region_name=env["AWS_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=env["AWS_SESSION_TOKEN"], config=Config(max_pool_connections=16))
        self.s3_client.create_bucket(Bucket=SOURCE)
        self.s3_client.put_object(Bucket=SOURCE, Key="warmup/small.bin", Body=os.urandom(10 * KIB))

    def stop(self) -> None:
        stop_all(self.drivers, self.servers)

    def env(self) -> dict[str, str]:
        """The function's environment, as Lambda would set it, pointed at the rig."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_ENV)}
        return {**base, **self.s3.info["env"], "TMPDIR": str(self.tmp),
                "GCS_API_ENDPOINT": self.rig.info["front"],
                "GOOGLE_APPLICATION_CREDENTIALS": str(self.credentials),
                "AWS_LAMBDA_FUNCTION_NAME": "gcs-sync-bench",
                "GCS_DESTINATIONS": " ".join(f"gs://{b}" for b in BUCKETS), **self.extra}

    def driver(self, name: str, *, function: bool, floor: bool) -> Driver:
        """A warm bench.driver process: the function copied one object already, the floor's clients
        made one copy (both through the front, at its current latency)."""
        driver = Driver(name, self.env(), self.tmp)
        self.drivers.append(driver)
        if function:
            driver.call("function_setup", bucket=SOURCE, key="warmup/small.bin")
        if floor:
            driver.call("floor_setup", bucket=SOURCE, key="warmup/small.bin")
        return driver

    def latency(self, ms: float) -> None:
        self.rig.call("latency", ms=ms)

    def reset_counts(self) -> None:
        self.rig.call("reset_counts")

    def counts(self) -> dict[str, Any]:
        return self.rig.call("counts")

    def put_objects(self, prefix: str, n: int, size: int) -> list[str]:
        keys = [f"{prefix}{i:04d}.bin" for i in range(n)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda k: self.s3_client.put_object(Bucket=SOURCE, Key=k, Body=os.urandom(size)), keys))
        return keys

    def listed(self, bucket: str, prefix: str) -> int:
        """How many objects the backend holds under a prefix (asked directly, not through the front)."""
        count, token = 0, ""
        while True:
            query = urllib.parse.urlencode({"prefix": prefix, "pageToken": token, "maxResults": 1000})
            status, page = http_json("GET", f"{self.rig.info['backend']}/storage/v1/b/{bucket}/o?{query}")
            if status != 200:
                raise RuntimeError(f"listing gs://{bucket}/{prefix} at the backend: HTTP {status}")
            count += len(page.get("items", []))
            token = page.get("nextPageToken", "")
            if not token:
                return count


def run(title: str, module: str, argv: list[str], args: argparse.Namespace, body: Any) -> None:
    """Header, the rig in a temporary directory, ``body(rig)``, footer; servers stopped whatever happens."""
    started = header(title, argv, module)
    if args.s3_latency_ms:
        print(f"S3: {args.s3_latency_ms:g} ms added to every request")
    # Not "gcs-sync-...": a function staging under the shared temp dir sweeps what starts so.
    with tempfile.TemporaryDirectory(prefix="bench-distant-") as tmp:
        rig = DistantRig(Path(tmp), extra_env(args.env), args.s3_latency_ms)
        try:
            progress("starting moto and the rig")
            rig.start()
            body(rig)
        finally:
            rig.stop()
    footer(started)

"""gcs-sync benchmarks: one command, local servers, every comparison inside one run; prints tables.

    bench/run.sh [--quick]            (sets up .venv, then runs this)
    python -m bench.run [--quick] [--small-n N] [--reps N] [--sink-dir DIR]

What runs where (each in its own process, so nothing measured shares a GIL with a server):
  S3           moto's ThreadedMotoServer (bench.servers s3)
  rig          Google STS/IAM stand-in + fake-gcs-server (memory) behind the authenticating
               GcsFront (bench.servers rig), exactly as the e2e tests wire them
  sink         bench.gcs_sink: streams uploads to files (tmpfs by default), checks no tokens
  the function bench.driver: lambda_function.lambda_handler with a warm container, configured
               only through environment variables; RSS and STAGING_DIR sampled by this process
  floors       bench.driver too: plain boto3 + google-cloud-storage with the same credentials
  rclone       .venv/bin/rclone, S3 remote (provider Other) + GCS remote with an endpoint

See bench/README.md for what each figure means. Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import google_crc32c

from bench.servers import REPO, Served, rclone_s3_section, stop_all

MIB = 1 << 20
KIB = 1 << 10
SOURCE = "bench-src"
BUCKETS = [f"bench-dst-{i}" for i in range(1, 5)]
RCLONE = REPO / ".venv" / "bin" / "rclone"
HUGE_THRESHOLD_MB = "1000000"  # STREAM_THRESHOLD_MB that stages everything
RANGED_PARTS = "4"  # S3_READ_PARTS of the ranged-GET contender
LARGE_CONTENDERS = ("function", "ranged", "staged", "floor", "rclone", "parts", "rclone_parts")
SECTIONS = ("standins", "small", "large", "components", "rig", "scaling", "fanout")
DEFAULT_THRESHOLD = 8 * MIB  # gcs_sync.config.Settings.stream_threshold: objects this large stream


# -- plans ----------------------------------------------------------------------------------------

@dataclass
class Plan:
    quick: bool
    small_size: int = 10 * KIB
    small_n: int = 200
    small_warmup: int = 10
    large: list[int] = field(default_factory=lambda: [256 * MIB, 1024 * MIB])
    large_reps: dict[int, int] = field(default_factory=lambda: {256 * MIB: 3, 1024 * MIB: 3})
    scale_sizes: list[int] = field(default_factory=lambda: [1 * MIB, 16 * MIB, 64 * MIB, 256 * MIB])
    scale_reps: int = 3
    dest_size: int = 256 * MIB
    dest_counts: list[int] = field(default_factory=lambda: [1, 2, 4])
    dest_reps: int = 2
    standin_size: int = 256 * MIB
    rig_size: int = 64 * MIB  # fake-gcs-server behind the front: ~40-90 MB/s, 64 MiB shows it
    latency_n: int = 50
    batch_size: int = 60 * MIB
    fanout_sizes: list[int] = field(default_factory=lambda: [256 * MIB, 1024 * MIB])
    fanout_counts: list[int] = field(default_factory=lambda: [1, 2, 4])
    fanout_reps: int = 3  # unbounded only: behind the rate cap the link sets the times (1 run)
    fanout_rate: float = 100.0  # MB/s admitted by the capped gcs_sink (one network link)

    @classmethod
    def make(cls, quick: bool) -> "Plan":
        if not quick:
            return cls(quick=False)
        return cls(quick=True, small_n=40, small_warmup=5, large=[64 * MIB], large_reps={64 * MIB: 2},
                   scale_sizes=[1 * MIB, 16 * MIB, 64 * MIB], scale_reps=2, dest_size=64 * MIB, dest_reps=1,
                   standin_size=64 * MIB, rig_size=64 * MIB, latency_n=20, batch_size=16 * MIB,
                   fanout_sizes=[64 * MIB], fanout_reps=1)


# -- helpers ----------------------------------------------------------------------------------------

def size_label(n: int) -> str:
    if n >= MIB and n % MIB == 0:
        return f"{n // 1024 // 1024 // 1024} GiB" if n >= 1024 * MIB and n % (1024 * MIB) == 0 else f"{n // MIB} MiB"
    return f"{n // KIB} KiB" if n % KIB == 0 else f"{n} B"


def mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:.0f}"


def mib(kib: float | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.0f}"


_NUMERIC = re.compile(r"^(?:[-+]?[\d.]+(?:x| ms| s| MiB| MB/s)?|-|)$")


def table(title: str, headers: list[str], rows: list[list[Any]], note: str = "") -> None:
    """A Markdown table: numeric columns right-aligned, text columns left-aligned."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(all(_NUMERIC.match(p) for p in r[i].split(" / ")) for r in cells[1:]) for i in range(len(headers))]
    print(f"\n### {title}")

    def line(r: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)) + " |"

    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 1) + (":" if num else "-") for w, num in zip(widths, numeric)) + "|")
    for r in cells[1:]:
        print(line(r))
    if note:
        for text in note.strip().splitlines():
            print(f"  {text}")
    sys.stdout.flush()


def verdict(value: float, goal: float) -> str:
    return "met" if value <= goal else "NOT met"


def http_json(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw.strip() else {}
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- sampling a child process -------------------------------------------------------------------------

class Sampler:
    """Peak VmRSS of a process and peak bytes under a directory, polled every 10 ms."""

    def __init__(self, pid: int, directory: str | None):
        self.pid, self.directory = pid, directory
        self.peak_rss_kb = 0
        self.peak_dir_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(0.01):
                self._sample()
                return

    def _sample(self) -> None:
        self.samples += 1
        try:
            with open(f"/proc/{self.pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        self.peak_rss_kb = max(self.peak_rss_kb, int(line.split()[1]))
                        break
        except OSError:
            pass
        if self.directory:
            self.peak_dir_bytes = max(self.peak_dir_bytes, dir_bytes(self.directory))

    def stop(self) -> "Sampler":
        self._stop.set()
        self._thread.join()
        return self


_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (all threads), from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def dir_bytes(path: str) -> int:
    total = 0
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        total += dir_bytes(entry.path)
                    else:
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    pass
    except OSError:
        pass
    return total


# -- the measured processes -------------------------------------------------------------------------

class Driver:
    """A bench.driver process: the function or a floor, with its own STAGING_DIR."""

    def __init__(self, name: str, env: dict[str, str], tmp: Path):
        self.name = name
        self.staging = tmp / f"staging-{name}"
        self.staging.mkdir(parents=True, exist_ok=True)
        self.log_path = tmp / f"driver-{name}.log"
        self._log = open(self.log_path, "wb")
        read_end, write_end = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.driver"], cwd=REPO, stdin=subprocess.PIPE, stdout=self._log,
            stderr=subprocess.STDOUT, pass_fds=(write_end,), text=True,
            env={**env, "STAGING_DIR": str(self.staging), "BENCH_ANSWER_FD": str(write_end)})
        os.close(write_end)
        self._answers = os.fdopen(read_end)
        self.lifetime_hwm_kb = 0

    def call(self, op: str, sample: bool = False, **params: Any) -> dict:
        sampler = Sampler(self.process.pid, str(self.staging)) if sample else None
        self.process.stdin.write(json.dumps({"op": op, **params}) + "\n")
        self.process.stdin.flush()
        line = self._answers.readline()
        if sampler:
            sampler.stop()
        if not line:
            raise RuntimeError(f"driver {self.name} died during {op}; its log {self.log_path}:\n{self.tail()}")
        answer = json.loads(line)
        if not answer.pop("ok"):
            raise RuntimeError(f"driver {self.name}: {op} failed: {answer['error']}\n{answer['traceback']}\n"
                               f"its log ({self.log_path}):\n{self.tail()}")
        if sampler:
            answer["peak_rss_kb"] = sampler.peak_rss_kb
            answer["peak_tmp_bytes"] = sampler.peak_dir_bytes
        for key in ("VmHWM", "hwm_before"):
            if isinstance(answer.get(key), int):
                self.lifetime_hwm_kb = max(self.lifetime_hwm_kb, answer[key])
        before = answer.get("before") or {}
        self.lifetime_hwm_kb = max(self.lifetime_hwm_kb, before.get("VmHWM", 0))
        return answer

    def tail(self, n: int = 4000) -> str:
        self._log.flush()
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "exit"}) + "\n")
                self.process.stdin.close()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self._answers.close()
        self._log.close()
        shutil.rmtree(self.staging, ignore_errors=True)


# -- the bench ----------------------------------------------------------------------------------------

@dataclass
class SourceObject:
    key: str
    size: int
    crc32c: str
    md5: str


class Bench:
    def __init__(self, plan: Plan, tmp: Path, sink_dir: str):
        self.plan, self.tmp, self.sink_dir = plan, tmp, sink_dir
        self.servers: list[Served] = []
        self.drivers: list[Driver] = []
        self.objects: dict[int, SourceObject] = {}
        self.multipart_keys: set[str] = set()
        self.goals: list[list[str]] = []
        self.findings: list[str] = []
        self.capped: Served | None = None  # a second gcs_sink with --max-rate (the fan-out section)

    # servers and environment -----------------------------------------------------------------

    def start(self) -> None:
        child = {"TMPDIR": str(self.tmp)}
        self.s3 = self._serve("bench.servers", "s3", env=child)
        self.rig = self._serve("bench.servers", "rig", env=child)
        self.sink = self._serve("bench.gcs_sink", "--root", self.sink_dir, env=child)
        self.credentials = self.tmp / "gcp-credentials.json"
        self.credentials.write_text(json.dumps(self.rig.info["credential_config"]))
        for bucket in BUCKETS:
            status, _ = http_json("POST", self.rig.info["backend"] + "/storage/v1/b?project=bench", {"name": bucket})
            if status != 200:
                raise RuntimeError(f"creating {bucket} on fake-gcs-server: HTTP {status}")
        import boto3

        env = self.s3.info["env"]
        self.s3_client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"], region_name=env["AWS_REGION"],
                                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                                      aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                                      aws_session_token=env["AWS_SESSION_TOKEN"])
        self.s3_client.create_bucket(Bucket=SOURCE)
        self.s3_client.put_object(Bucket=SOURCE, Key="warmup/small.bin", Body=os.urandom(self.plan.small_size))

    def _serve(self, module: str, *args: str, env: dict[str, str]) -> Served:
        served = Served(module, *args, env=env)
        self.servers.append(served)
        return served

    def stop(self) -> None:
        stop_all(self.drivers, self.servers)

    def measured(self, run: Callable[[], dict], servers: str = "sink") -> dict:
        """Run one contender; add the CPU seconds the servers (moto + the GCS stand-in) spent."""
        pids = [self.s3.pid] + ([self.sink.pid] if servers == "sink" else [self.rig.pid, self.rig.info["backend_pid"]])
        before = sum(proc_cpu(pid) for pid in pids)
        result = run()
        result["server_cpu"] = sum(proc_cpu(pid) for pid in pids) - before
        return result

    def env(self, gcs: str, buckets: int = 2, **extra: str) -> dict[str, str]:
        """The function's environment, as Lambda would set it (plus the rig's endpoints)."""
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("AWS_", "GCS_", "GOOGLE_", "STREAM_", "STAGING_", "SOURCE_BUCKETS",
                                     "S3_BUCKET_NAME", "S3_READ_PARTS", "MIRROR_DELETES", "OBJECT_CONCURRENCY", "LOG_LEVEL",
                                     "INCLUDE", "EXCLUDE", "LAMBDA_"))}
        endpoint = {"sink": self.sink.info["url"], "rig": self.rig.info["front"],
                    **({"capped": self.capped.info["url"]} if self.capped else {})}[gcs]
        return {**base, **self.s3.info["env"], "TMPDIR": str(self.tmp),
                "GCS_API_ENDPOINT": endpoint,
                "GOOGLE_APPLICATION_CREDENTIALS": str(self.credentials),
                "AWS_LAMBDA_FUNCTION_NAME": "gcs-sync-bench",
                "GCS_DESTINATIONS": " ".join(f"gs://{b}" for b in BUCKETS[:buckets]),
                **extra}

    def driver(self, name: str, env: dict[str, str], role: str) -> Driver:
        driver = Driver(name, env, self.tmp)
        self.drivers.append(driver)
        if role == "function":
            driver.setup = driver.call("function_setup", bucket=SOURCE, key="warmup/small.bin")
        else:
            driver.setup = driver.call("floor_setup", bucket=SOURCE, key="warmup/small.bin")
        return driver

    def retire(self, driver: Driver) -> None:
        driver.stop()
        self.drivers.remove(driver)

    # source objects -------------------------------------------------------------------------------

    def put_object(self, size: int) -> SourceObject:
        """Random bytes written in 8 MiB pieces to a file, then one PUT (a plain MD5 ETag)."""
        if size in self.objects:
            return self.objects[size]
        key = f"objects/{size_label(size).replace(' ', '')}.bin"
        path = self.tmp / "upload.bin"
        crc, md5 = google_crc32c.Checksum(), hashlib.md5()
        with open(path, "wb") as handle:
            left = size
            while left:
                piece = os.urandom(min(8 * MIB, left))
                crc.update(piece)
                md5.update(piece)
                handle.write(piece)
                left -= len(piece)
        with open(path, "rb") as handle:
            self.s3_client.put_object(Bucket=SOURCE, Key=key, Body=handle, ContentType="application/octet-stream")
        path.unlink()
        obj = SourceObject(key, size, base64.b64encode(crc.digest()).decode(), base64.b64encode(md5.digest()).decode())
        self.objects[size] = obj
        return obj

    def multipart_copy(self, obj: SourceObject) -> SourceObject:
        """The same bytes under another key, assembled from parts (a multipart ETag, not an MD5):
        how most large objects reach S3, and the function then has no MD5 to check."""
        key = obj.key.replace(".bin", "-parts.bin")
        if key not in self.multipart_keys:
            s3, part = self.s3_client, 256 * MIB
            upload = s3.create_multipart_upload(Bucket=SOURCE, Key=key, ContentType="application/octet-stream")
            parts = []
            for number, start in enumerate(range(0, obj.size, part), 1):
                end = min(start + part, obj.size) - 1
                answer = s3.upload_part_copy(Bucket=SOURCE, Key=key, UploadId=upload["UploadId"], PartNumber=number,
                                             CopySource={"Bucket": SOURCE, "Key": obj.key},
                                             CopySourceRange=f"bytes={start}-{end}")
                parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
            s3.complete_multipart_upload(Bucket=SOURCE, Key=key, UploadId=upload["UploadId"],
                                         MultipartUpload={"Parts": parts})
            self.multipart_keys.add(key)
        return SourceObject(key, obj.size, obj.crc32c, obj.md5)

    # what the stand-ins hold --------------------------------------------------------------------

    def verify_sink(self, obj: SourceObject, buckets: int, who: str, sink: Served | None = None) -> None:
        for bucket in BUCKETS[:buckets]:
            url = f"{(sink or self.sink).info['url']}/storage/v1/b/{bucket}/o/{urllib.parse.quote(obj.key, safe='')}"
            status, meta = http_json("GET", url)
            if status != 200 or meta.get("crc32c") != obj.crc32c or meta.get("md5Hash") != obj.md5 \
                    or int(meta.get("size", -1)) != obj.size:
                raise RuntimeError(f"{who}: gs://{bucket}/{obj.key} is wrong or missing at the sink "
                                   f"(HTTP {status}, {meta})")

    def clear_sink(self, sink: Served | None = None) -> None:
        http_json("POST", (sink or self.sink).info["url"] + "/_sink/clear")

    @staticmethod
    def sink_stats(sink: Served) -> dict:
        """gcs_sink's counters (request-body bytes, uploads, rewrites...) since it started."""
        status, stats = http_json("GET", sink.info["url"] + "/_sink/stats")
        if status != 200:
            raise RuntimeError(f"gcs_sink stats: HTTP {status}")
        return stats

    def clear_rig(self, names: list[str]) -> None:
        backend = self.rig.info["backend"]
        for bucket in BUCKETS:
            for name in names:
                request = urllib.request.Request(
                    f"{backend}/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}", method="DELETE")
                try:
                    urllib.request.urlopen(request, timeout=30).read()
                except urllib.error.HTTPError:
                    pass

    # rclone ----------------------------------------------------------------------------------------

    def rclone_config(self, token: str) -> Path:
        env = self.s3.info["env"]
        path = self.tmp / "rclone.conf"
        path.write_text(rclone_s3_section(env) + f"""
[sink]
type = google cloud storage
anonymous = true
endpoint = {self.sink.info['url']}/storage/v1/
no_check_bucket = true

[rig]
type = google cloud storage
access_token = {token}
endpoint = {self.rig.info['front']}/storage/v1/
no_check_bucket = true
""")
        path.chmod(0o600)
        self.rclone_conf = path
        return path

    def rclone(self, obj: SourceObject, remote: str, buckets: int = 2) -> dict:
        """rclone copyto, once per bucket, one after the other; wall time of the whole."""
        return self.rclone_steps([(f"s3:{SOURCE}/{obj.key}", f"{remote}:{bucket}/{obj.key}")
                                  for bucket in BUCKETS[:buckets]])

    def rclone_server_side(self, obj: SourceObject, remote: str, buckets: int) -> dict:
        """rclone copyto from S3 to the first bucket, then from that bucket to each other one, in
        turn (same remote: rclone copies server-side)."""
        first = f"{remote}:{BUCKETS[0]}/{obj.key}"
        return self.rclone_steps([(f"s3:{SOURCE}/{obj.key}", first)]
                                 + [(first, f"{remote}:{bucket}/{obj.key}") for bucket in BUCKETS[1:buckets]])

    def rclone_steps(self, steps: list[tuple[str, str]]) -> dict:
        """One ``rclone copyto SRC DST`` process per step, one after the other."""
        peak, cpu = 0, 0.0
        started = time.perf_counter()
        for src, dst in steps:
            log = open(self.tmp / "rclone.log", "wb")
            process = subprocess.Popen(
                [str(RCLONE), "--config", str(self.rclone_conf), "copyto", "-q", "--retries", "1", src, dst],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(self.tmp)})
            sampler = Sampler(process.pid, None)
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            sampler.stop()
            log.close()
            peak, cpu = max(peak, sampler.peak_rss_kb), cpu + usage.ru_utime + usage.ru_stime
            if process.returncode != 0:
                output = (self.tmp / "rclone.log").read_text(errors="replace")
                raise RuntimeError(f"rclone copyto {src} {dst} failed:\n{output}")
        return {"seconds": time.perf_counter() - started, "peak_rss_kb": peak, "cpu": cpu}

    def rclone_cat(self, obj: SourceObject) -> float:
        started = time.perf_counter()
        subprocess.run([str(RCLONE), "--config", str(self.rclone_conf), "cat", f"s3:{SOURCE}/{obj.key}"],
                       stdout=subprocess.DEVNULL, check=True, env={**os.environ, "TMPDIR": str(self.tmp)})
        return time.perf_counter() - started


# -- sections ------------------------------------------------------------------------------------------

def section_standins(b: Bench) -> None:
    plan = b.plan
    progress("stand-ins: raw throughput")
    obj = b.put_object(plan.standin_size)
    big = b.objects.get(max(plan.large)) or obj
    raw = b.driver("raw", b.env("sink"), "floor")
    token = raw.call("token")["token"]
    b.rclone_config(token)
    rows = []
    reads = [raw.call("s3_read", bucket=SOURCE, key=big.key) for _ in range(2)]
    best = min(reads, key=lambda r: r["seconds"])
    rows.append(["moto S3", "one GET, boto3 iter_chunks(1 MiB)", size_label(big.size), 1,
                 f"{best['seconds']:.2f}", mb(big.size / best["seconds"]),
                 f"first byte after {best['first_byte']:.2f} s"])
    cat = min(b.rclone_cat(big) for _ in range(2))
    rows.append(["moto S3", "one GET, rclone cat > /dev/null", size_label(big.size), 1, f"{cat:.2f}",
                 mb(big.size / cat), "process start included"])
    b.s3_read_mbps = big.size / best["seconds"] / 1e6
    targets = [("gcs_sink", b.sink.info["url"], None, "sink"),
               ("GcsFront -> fake-gcs-server", b.rig.info["front"], token, "rig"),
               ("fake-gcs-server (direct)", b.rig.info["backend"], None, "rig")]
    b.standin_mbps = {}
    for label, url, tok, kind in targets:
        size = obj.size if kind == "sink" else min(obj.size, plan.rig_size)  # fake-gcs-server is slow
        for streams in (1, 2):
            result = raw.call("raw_upload", url=url, bucket=BUCKETS[0], size=size, chunk=8 * MIB,
                              streams=streams, token=tok)
            mbps = result["bytes"] / result["seconds"] / 1e6
            b.standin_mbps[(label, streams)] = mbps
            rows.append([label, "resumable upload, 8 MiB PUTs (http.client)", size_label(size), streams,
                         f"{result['seconds']:.2f}", mb(result["bytes"] / result["seconds"]), "aggregate" if streams > 1 else ""])
            if kind == "sink":
                b.clear_sink()
            else:
                b.clear_rig(result["names"])
    lat = raw.call("latency", bucket=SOURCE, key="warmup/small.bin", n=plan.latency_n, endpoints={
        "gcs_sink": b.sink.info["url"], "GcsFront (rig)": b.rig.info["front"],
        "fake-gcs-server (direct)": b.rig.info["backend"]})
    b.retire(raw)
    lat_rows = [["moto S3", f"{lat['s3 HEAD']:.1f}", f"{lat['s3 GET']:.1f}", "", "", ""]]
    for label in ("gcs_sink", "GcsFront (rig)", "fake-gcs-server (direct)"):
        lat_rows.append([label, "", "", f"{lat[label + '|metadata']:.1f}", f"{lat[label + '|missing']:.1f}",
                         f"{lat[label + '|upload']:.1f}"])
    table("Stand-ins: single-request latency, warm connection (median ms)",
          ["stand-in", "S3 HEAD", "S3 GET 10 KiB", "GCS metadata GET", "GCS metadata 404",
           "GCS upload 10 KiB (multipart)"], lat_rows,
          note="GcsFront is the rig's token-checking Python proxy in front of fake-gcs-server; like every\n"
               "rig server it sets TCP_NODELAY (http.server writes headers and body separately, and with\n"
               "Nagle on the body would wait ~40 ms for the client's delayed ACK).")
    table("Stand-ins: their own throughput (what bounds every figure below)",
          ["stand-in", "operation", "size", "streams", "s", "MB/s", "note"], rows,
          note=f"gcs_sink stores object bytes under {b.sink_dir} "
               f"({'tmpfs' if b.sink_dir.startswith('/dev/shm') else 'disk'}); fake-gcs-server runs "
               "with -backend memory behind the rig's authenticating proxy (GcsFront, Python).\n"
               "moto spools objects over ~5 MiB to temp files and reads the whole object into its "
               "memory for each GET.")


def section_small(b: Bench) -> None:
    plan = b.plan
    rows = []
    for gcs, label in (("rig", "rig: GcsFront (token-checking) -> fake-gcs-server"), ("sink", "gcs_sink")):
        progress(f"small objects via {gcs}: {plan.small_n} iterations")
        driver = b.driver(f"small-{gcs}", b.env(gcs), "function")
        driver.call("floor_setup", bucket=SOURCE, key="warmup/small.bin")
        runs = driver.call("small", bucket=SOURCE, n=plan.small_n, warmup=plan.small_warmup, size=plan.small_size)
        if gcs == "rig":
            phases = driver.call("phases", bucket=SOURCE, n=max(10, plan.small_n // 2), size=plan.small_size)["phases"]
        b.retire(driver)
        stats = {}
        for who in ("function", "floor"):
            values = sorted(runs[who])
            stats[who] = (statistics.median(values), values[int(0.9 * (len(values) - 1))],
                          statistics.median(runs[who + "_cpu"]))
        ratio_med = stats["function"][0] / stats["floor"][0]
        ratio_p90 = stats["function"][1] / stats["floor"][1]
        rows.append([label, "gcs-sync (lambda_handler, warm)", f"{stats['function'][0] * 1e3:.1f}",
                     f"{stats['function'][1] * 1e3:.1f}", f"{stats['function'][2] * 1e3:.1f}",
                     f"{ratio_med:.2f}x", f"{ratio_p90:.2f}x", verdict(ratio_med, 1.1)])
        rows.append(["", "floor: get_object + upload_from_string x2 (threads)", f"{stats['floor'][0] * 1e3:.1f}",
                     f"{stats['floor'][1] * 1e3:.1f}", f"{stats['floor'][2] * 1e3:.1f}", "", "", ""])
        b.goals.append([f"small 10 KiB -> 2 dest, median vs floor ({gcs})", "<= 1.10x", f"{ratio_med:.2f}x",
                        verdict(ratio_med, 1.1)])
    table(f"Small objects: warm per-event latency, {size_label(plan.small_size)} to 2 destinations, "
          f"{plan.small_n} events each, interleaved (ABBA)",
          ["GCS stand-in", "who", "median ms", "p90 ms", "CPU ms", "ratio median", "ratio p90", "goal <= 1.1x"], rows,
          note="Each event copies a fresh object (new key), so every destination is really written.\n"
               "CPU ms = median user+system time of the measuring process per event (all its threads).\n"
               "The function does per event: the GET, and meanwhile one metadata GET per destination (the\n"
               "ordering check), then one upload per destination; the floor does the GET and the uploads.")
    rows = []
    for who, label in (("function", "gcs-sync"), ("floor", "floor")):
        for phase, (wall, cpu) in phases[who].items():
            rows.append([label if phase == next(iter(phases[who])) else "", phase, f"{wall:.1f}", f"{cpu:.1f}"])
    table("Where a small event's time goes (rig; diagnostic run, gcs_sync calls wrapped with timers)",
          ["who", "phase (in order)", "wall ms", "CPU ms"], rows,
          note="wall = from the first call's start to the last call's end within one event; CPU = thread CPU\n"
               "time inside those calls, summed over destinations. 'everything else' = event total minus the\n"
               "phases (event parsing, planning, staging dir, thread hand-offs, logs and metrics, verification).\n"
               "Medians per row, so rows need not add up exactly.")


def section_large(b: Bench) -> None:
    plan = b.plan
    b.large_results = {}
    for size in plan.large:
        obj = b.put_object(size)
        parts_obj = b.multipart_copy(obj)
        reps = plan.large_reps[size]
        progress(f"large {size_label(size)}: {reps} rounds of function / staged / floor / rclone"
                 + (" / ranged" if size == min(plan.large) else ""))
        fn = b.driver(f"large-default-{size}", b.env("sink"), "function")
        # moto reads the whole object for every GET, ranged or not: N parts cost N whole reads at
        # the server, so the ranged contender runs at the smallest large size only.
        with_ranged = size == min(plan.large)
        ranged = b.driver(f"large-ranged-{size}", b.env("sink", S3_READ_PARTS=RANGED_PARTS), "function") \
            if with_ranged else None
        staged = b.driver(f"large-staged-{size}", b.env("sink", STREAM_THRESHOLD_MB=HUGE_THRESHOLD_MB), "function")
        floor = b.driver(f"large-floor-{size}", b.env("sink"), "floor")
        results: dict[str, list[dict]] = {k: [] for k in LARGE_CONTENDERS}
        for rep in range(reps):
            contenders = [("function", lambda: fn.call("copy", sample=True, bucket=SOURCE, key=obj.key)),
                          ("parts", lambda: fn.call("copy", sample=True, bucket=SOURCE, key=parts_obj.key)),
                          ("rclone_parts", lambda: b.rclone(parts_obj, "sink")),
                          ("ranged", lambda: ranged.call("copy", sample=True, bucket=SOURCE, key=obj.key)),
                          ("rclone", lambda: b.rclone(obj, "sink")),
                          ("floor", lambda: floor.call("floor_staged", sample=True, bucket=SOURCE, key=obj.key)),
                          ("staged", lambda: staged.call("copy", sample=True, bucket=SOURCE, key=obj.key))]
            contenders = [c for c in contenders if c[0] != "ranged" or with_ranged]
            if rep % 2:
                contenders.reverse()
            for who, run in contenders:
                result = b.measured(run)
                b.verify_sink(parts_obj if who in ("parts", "rclone_parts") else obj, 2, who)
                b.clear_sink()
                results[who].append(result)
        lifetime = {"function": fn, "staged": staged, "floor": floor, **({"ranged": ranged} if ranged else {})}
        for who, driver in lifetime.items():
            driver.call("status")
        b.large_results[size] = (results, {who: d.lifetime_hwm_kb for who, d in lifetime.items()},
                                 {who: d.setup for who, d in lifetime.items()})
        for driver in lifetime.values():
            b.retire(driver)

    for size, (results, lifetimes, setups) in b.large_results.items():
        med = {who: statistics.median(r["seconds"] for r in rs) for who, rs in results.items() if rs}
        best = {who: min(r["seconds"] for r in rs) for who, rs in results.items() if rs}
        rows = []
        labels = {"function": f"gcs-sync, default config (streams: size >= {size_label(DEFAULT_THRESHOLD)})",
                  "ranged": f"gcs-sync, S3_READ_PARTS={RANGED_PARTS} (ranged GETs of 8 MiB, streams)",
                  "staged": "gcs-sync, STREAM_THRESHOLD_MB huge (staged)",
                  "floor": "staged floor: one GET to a file, upload_from_filename x2 (threads)",
                  "rclone": "rclone copyto x2, one after the other",
                  "parts": "gcs-sync, default config; the source uploaded in parts (no MD5 to check)",
                  "rclone_parts": "rclone copyto x2; the source uploaded in parts"}
        for who in LARGE_CONTENDERS:
            rs = results[who]
            if not rs:
                continue
            peak_rss = max(r.get("peak_rss_kb", 0) for r in rs)
            tmp = max(r.get("peak_tmp_bytes", 0) for r in rs) if not who.startswith("rclone") else None
            rows.append([labels[who], " / ".join(f"{r['seconds']:.2f}" for r in rs), f"{med[who]:.2f}",
                         f"{best[who]:.2f}", mb(size / med[who]),
                         f"{med['function'] / med[who]:.2f}" if who != "function" else "1.00",
                         f"{best['function'] / best[who]:.2f}" if who != "function" else "1.00",
                         f"{statistics.median(r['cpu'] for r in rs):.2f}",
                         f"{statistics.median(r['server_cpu'] for r in rs):.2f}",
                         mib(max(peak_rss, lifetimes.get(who) or 0)), "-" if tmp is None else mib(tmp / 1024)])
        table(f"Large object: {size_label(size)} to 2 destinations (gcs_sink), median of {len(results['function'])}",
              ["who", "runs s", "median s", "best s", "MB/s (median)", "gcs-sync / this (median)",
               "(best)", "CPU s", "server CPU s", "peak RSS MiB", "tmp high-water MiB"], rows,
              note="MB/s = object size / time (each copy writes the object twice). CPU s = user+system time of\n"
                   "the process doing the copy (both rclone processes for rclone); server CPU s = moto + gcs_sink\n"
                   "during the copy. Peak RSS: max of sampled VmRSS and the process's lifetime VmHWM (imports,\n"
                   "warm-up, every copy of this size). Contenders alternate order every round; 'best' = fastest\n"
                   "round (load from other work only ever adds time).")
        b.goals.append([f"large {size_label(size)}, source uploaded in parts: gcs-sync / rclone (median; best-of)",
                        "<= 0.50x", f"{med['parts'] / med['rclone_parts']:.2f}x; "
                        f"{best['parts'] / best['rclone_parts']:.2f}x", verdict(med['parts'] / med['rclone_parts'], 0.5)])
        b.goals.append([f"large {size_label(size)}, source uploaded in parts: gcs-sync / staged floor (median; best-of)",
                        "<= 1.00x", f"{med['parts'] / med['floor']:.2f}x; {best['parts'] / best['floor']:.2f}x",
                        verdict(med['parts'] / med['floor'], 1.0)])
        r_rclone = med["function"] / med["rclone"]
        r_floor = med["function"] / med["floor"]
        b.goals.append([f"large {size_label(size)}: gcs-sync / rclone (median; best-of)", "<= 0.50x",
                        f"{r_rclone:.2f}x; {best['function'] / best['rclone']:.2f}x", verdict(r_rclone, 0.5)])
        b.goals.append([f"large {size_label(size)}: gcs-sync / staged floor (median; best-of)", "<= 1.00x",
                        f"{r_floor:.2f}x; {best['function'] / best['floor']:.2f}x", verdict(r_floor, 1.0)])
        b.goals.append([f"large {size_label(size)}: staged mode / streaming (median)", "(threshold choice)",
                        f"{med['staged'] / med['function']:.2f}x", "-"])
        if results["ranged"]:
            b.goals.append([f"large {size_label(size)}: S3_READ_PARTS={RANGED_PARTS} / one streamed GET (median)",
                            "(read strategy choice)", f"{med['ranged'] / med['function']:.2f}x", "-"])

    size = max(plan.large)
    results, lifetimes, _ = b.large_results[size]
    fn_peak = max(lifetimes["function"], max(r["peak_rss_kb"] for r in results["function"]))
    staged_peak = max(lifetimes["staged"], max(r["peak_rss_kb"] for r in results["staged"]))
    stream_tmp = max(r["peak_tmp_bytes"] for r in results["function"])
    staged_tmp = max(r["peak_tmp_bytes"] for r in results["staged"])
    before = results["function"][0]["before"]["VmRSS"]
    rows = [
        ["streaming (default)", mib(before), mib(fn_peak), f"{fn_peak / 1024 - before / 1024:.0f}",
         mib(stream_tmp / 1024), verdict(fn_peak / 1024, 256)],
        ["staged (threshold huge)", mib(results["staged"][0]["before"]["VmRSS"]), mib(staged_peak),
         f"{staged_peak / 1024 - results['staged'][0]['before']['VmRSS'] / 1024:.0f}", mib(staged_tmp / 1024),
         verdict(staged_peak / 1024, 256)],
    ]
    batch_size, batch_n = plan.batch_size, 4
    progress(f"memory: {batch_n} objects of {size_label(batch_size)} in one notification (default config)")
    keys = []
    for i in range(batch_n):
        key = f"batch/{i}.bin"
        b.s3_client.copy_object(Bucket=SOURCE, Key=key, CopySource={"Bucket": SOURCE, "Key": b.put_object(batch_size).key})
        keys.append(key)
    batch_goals = []
    for n_dest in (2, 4):
        batch = b.driver(f"batch-{n_dest}", b.env("sink", buckets=n_dest), "function")
        result = b.measured(lambda: batch.call("copy_many", sample=True, bucket=SOURCE, keys=keys))
        b.clear_sink()
        batch_peak = max(result["peak_rss_kb"], result["VmHWM"], batch.lifetime_hwm_kb)
        b.retire(batch)
        mode = "streamed" if batch_size >= DEFAULT_THRESHOLD else "staged"
        rows.append([f"{batch_n} x {size_label(batch_size)} in one event to {n_dest} destinations (default: "
                     f"{mode}, OBJECT_CONCURRENCY {batch_n})", mib(result["before"]["VmRSS"]), mib(batch_peak),
                     f"{batch_peak / 1024 - result['before']['VmRSS'] / 1024:.0f}",
                     mib(result["peak_tmp_bytes"] / 1024), verdict(batch_peak / 1024, 256)])
        batch_goals.append([f"peak RSS, {batch_n} x {size_label(batch_size)} to {n_dest} dest. (default config)",
                            "(<= 256 MiB)", f"{batch_peak / 1024:.0f} MiB", verdict(batch_peak / 1024, 256)])
    table(f"Memory and temp dir while copying {size_label(size)} to 2 destinations (function in its own process)",
          ["mode", "RSS before copy MiB", "peak RSS MiB", "growth MiB", "STAGING_DIR high-water MiB",
           "goal peak <= 256 MiB"], rows,
          note="peak RSS = max(process VmHWM, sampled VmRSS); the warm container copied a 10 KiB object first.\n"
               "STAGING_DIR sampled every 10 ms (expected: 0 when streaming, about the object size when staged).\n"
               "Staged uploads go through google-cloud-storage's upload_from_filename, which holds each chunk\n"
               "(the whole file up to 100 MiB) in memory per destination: growth ~ min(size, 100 MiB) x destinations\n"
               "x objects in flight. The last rows: several objects in one event, default configuration\n"
               "(OBJECT_CONCURRENCY defaults to 4 at Lambda's 1024 MB: memory MB / 256; objects streaming at\n"
               "once are further limited to 40 % of the memory setting: 4 at 2 destinations, 3 at 4).")
    b.goals.append([f"peak RSS copying {size_label(size)} (default config)", "<= 256 MiB", f"{fn_peak / 1024:.0f} MiB",
                    verdict(fn_peak / 1024, 256)])
    b.goals.append([f"STAGING_DIR high-water, streaming {size_label(size)}", "0", f"{stream_tmp / MIB:.0f} MiB",
                    "met" if stream_tmp == 0 else "NOT met"])
    b.goals.append([f"STAGING_DIR high-water, staged {size_label(size)}", f"~{size_label(size)}",
                    f"{staged_tmp / MIB:.0f} MiB", "met" if abs(staged_tmp - size) <= MIB else "NOT met"])
    b.goals.extend(batch_goals)


def section_components(b: Bench) -> None:
    progress("streaming path: CPU of its in-process pieces")
    driver = b.driver("components", b.env("sink"), "floor")
    mib_n = 256 if b.plan.quick else 1024
    answers = [driver.call("components", mib=mib_n) for _ in range(3)]
    b.retire(driver)
    rows = []
    for name in answers[0]:
        if name in ("ok",):
            continue
        pick = sorted(answers, key=lambda a: a[name]["cpu"])[1]  # median of 3
        rows.append([name, f"{pick[name]['cpu']:.2f}", f"{pick[name]['sys']:.2f}", f"{pick[name]['faults'] / 1000:.0f}"])
    table(f"Streaming path: CPU per GiB of its in-process pieces (no network; {mib_n} x 1 MiB pieces, median of 3)",
          ["piece", "CPU s / GiB", "of which system s", "minor page faults / GiB (thousands)"], rows,
          note="The reader thread runs all of these for every byte: S3Source.read_into feeds 1 MiB pieces to\n"
               "Digests.update and to ChunkSink.write. The last row keeps ChunkSink's contract (8 MiB chunks)\n"
               "with one join per chunk: a yardstick for what the copy costs, not gcs-sync code.")


def section_rig_large(b: Bench) -> None:
    """The same comparison through the authenticating front, to show what fake-gcs-server costs."""
    plan = b.plan
    obj = b.put_object(plan.rig_size)
    progress(f"large {size_label(obj.size)} via the authenticating front + fake-gcs-server")
    fn = b.driver("rig-large", b.env("rig"), "function")
    floor = b.driver("rig-floor", b.env("rig"), "floor")
    rows = []
    runs = {}
    for who, run in (("function", lambda: fn.call("copy", sample=True, bucket=SOURCE, key=obj.key)),
                     ("rclone", lambda: b.rclone(obj, "rig")),
                     ("floor", lambda: floor.call("floor_staged", sample=True, bucket=SOURCE, key=obj.key))):
        runs[who] = b.measured(run, servers="rig")
        b.clear_rig([obj.key])
    b.retire(fn)
    b.retire(floor)
    for who, label in (("function", "gcs-sync, default config"), ("floor", "staged floor"),
                       ("rclone", "rclone copyto x2 (access_token from the rig's STS/IAM)")):
        s = runs[who]["seconds"]
        rows.append([label, f"{s:.2f}", mb(obj.size / s), f"{runs['function']['seconds'] / s:.2f}",
                     f"{runs[who]['cpu']:.2f}", f"{runs[who]['server_cpu']:.2f}"])
    table(f"For reference: {size_label(obj.size)} to 2 destinations through GcsFront -> fake-gcs-server (1 run)",
          ["who", "s", "MB/s", "gcs-sync / this", "CPU s", "server CPU s (moto, front, fake-gcs)"], rows,
          note="fake-gcs-server keeps uploads in memory and the front proxies every byte in Python;\n"
               "the large-object goals are judged on gcs_sink above.")


def section_scaling(b: Bench) -> None:
    plan = b.plan
    progress(f"scaling with size: {', '.join(size_label(s) for s in plan.scale_sizes)}")
    staged = b.driver("scale-staged", b.env("sink", STREAM_THRESHOLD_MB=HUGE_THRESHOLD_MB), "function")
    stream = b.driver("scale-stream", b.env("sink", STREAM_THRESHOLD_MB="0"), "function")
    results: dict[tuple[int, str], list[dict]] = {}
    for size in plan.scale_sizes:
        obj = b.put_object(size)
        for rep in range(plan.scale_reps):
            pair = [("staged", staged), ("stream", stream)]
            if rep % 2:
                pair.reverse()
            for mode, driver in pair:
                result = b.measured(lambda: driver.call("copy", sample=True, bucket=SOURCE, key=obj.key))
                b.verify_sink(obj, 2, f"{mode} {size}")
                b.clear_sink()
                results.setdefault((size, mode), []).append(result)
    b.retire(staged)
    b.retire(stream)
    rows = []
    b.crossover = []
    for size in plan.scale_sizes:
        med = {mode: statistics.median(r["seconds"] for r in results[(size, mode)]) for mode in ("staged", "stream")}
        peak = {mode: max(r["VmHWM"] - r["before"]["VmRSS"] for r in results[(size, mode)]) for mode in med}
        default = "stream" if size >= DEFAULT_THRESHOLD else "staged"
        faster = min(med, key=med.get)
        b.crossover.append((size, med["staged"] / med["stream"]))
        rows.append([size_label(size), f"{med['staged'] * 1e3:.0f}", f"{med['stream'] * 1e3:.0f}",
                     f"{med['staged'] / med['stream']:.2f}", mb(size / med[default]), default,
                     "yes" if faster == default or abs(med["staged"] / med["stream"] - 1) < 0.05 else "no",
                     f"{peak['staged'] / 1024:.0f}", f"{peak['stream'] / 1024:.0f}"])
    table(f"Scaling with object size (2 destinations, gcs_sink), median of {plan.scale_reps}; staged vs streaming",
          ["size", "staged ms", "streaming ms", "staged/stream", "default MB/s", "default mode",
           "default is the faster", "staged +RSS MiB", "stream +RSS MiB"], rows,
          note="+RSS = per-event peak (VmHWM reset before the event) minus RSS before it.\n"
               f"The default (STREAM_THRESHOLD_MB={DEFAULT_THRESHOLD // MIB}) stages below "
               f"{size_label(DEFAULT_THRESHOLD)} and streams from there up.")

    progress(f"scaling with destinations: {plan.dest_counts} x {size_label(plan.dest_size)}")
    obj = b.put_object(plan.dest_size)
    drivers = {n: b.driver(f"dest-{n}", b.env("sink", buckets=n), "function") for n in plan.dest_counts}
    dest_results: dict[int, list[float]] = {n: [] for n in plan.dest_counts}
    for rep in range(plan.dest_reps):
        order = plan.dest_counts if rep % 2 == 0 else list(reversed(plan.dest_counts))
        for n in order:
            result = drivers[n].call("copy", sample=True, bucket=SOURCE, key=obj.key)
            b.verify_sink(obj, n, f"{n} destinations")
            b.clear_sink()
            dest_results[n].append(result)
    for driver in drivers.values():
        b.retire(driver)
    base = statistics.median(r["seconds"] for r in dest_results[plan.dest_counts[0]])
    rows = []
    for n in plan.dest_counts:
        med = statistics.median(r["seconds"] for r in dest_results[n])
        rows.append([n, f"{med:.2f}", f"{med / base:.2f}", mb(n * obj.size / med),
                     mib(max(r["VmHWM"] for r in dest_results[n]))])
    table(f"Scaling with destinations: {size_label(obj.size)}, default config (streams), gcs_sink, "
          f"median of {plan.dest_reps}",
          ["destinations", "s", "vs 1 destination", "MB/s written (all destinations)", "peak RSS MiB"], rows)


def section_fanout(b: Bench) -> None:
    """One upload and server-side copies (FANOUT=copy) vs an upload per destination (FANOUT=upload)
    vs rclone, to 1, 2 and 4 destinations; on gcs_sink as it is, then on a gcs_sink admitting at
    most a fixed total rate of request bodies (one network link)."""
    plan = b.plan
    b.capped = b._serve("bench.gcs_sink", "--root", b.sink_dir, "--max-rate", f"{plan.fanout_rate:g}",
                        env={"TMPDIR": str(b.tmp)})
    with open(b.rclone_conf, "a") as conf:
        conf.write(f"""
[capped]
type = google cloud storage
anonymous = true
endpoint = {b.capped.info['url']}/storage/v1/
no_check_bucket = true
""")
    counts = plan.fanout_counts
    variants = [("sink", b.sink, "gcs_sink, unbounded"),
                ("capped", b.capped, f"gcs_sink --max-rate {plan.fanout_rate:g} (MB/s, all connections together)")]
    # (who, destinations): the function with FANOUT=copy / FANOUT=upload, rclone to each bucket in
    # turn, rclone to the first then server-side; one destination is the same for every way.
    kinds = ("copy", "upload", "rclone", "rclone_ss")
    labels = {"copy": "gcs-sync FANOUT=copy (upload once, objects.rewrite)",
              "upload": "gcs-sync FANOUT=upload (an upload per destination)",
              "rclone": "rclone copyto to each bucket in turn",
              "rclone_ss": "rclone copyto to the first, then bucket to bucket"}
    one = "gcs-sync (one destination: either FANOUT)"
    measured: dict[tuple[str, int, str, int], dict] = {}

    def latencies(driver: Driver, call: Callable[[], dict]) -> dict:
        """The call's answer plus, from the function's own metrics (its log), when each destination
        was done (Latency per Destination, ms): the primary's upload, then the server-side copies."""
        offset = driver.log_path.stat().st_size
        answer = call()
        done = {}
        with open(driver.log_path, "rb") as log:
            log.seek(offset)
            for line in log:
                if b'"Latency"' in line and line.startswith(b"{"):
                    metric = json.loads(line)
                    done[metric["Destination"]] = metric["Latency"][0]
        primary = done.get(f"gs://{BUCKETS[0]}/")
        answer["after_primary_ms"] = max(done.values()) - primary if primary is not None and len(done) > 1 else None
        return answer

    for gcs, sink, _ in variants:
        drivers = {("copy", n): b.driver(f"fanout-{gcs}-copy-{n}", b.env(gcs, buckets=n, FANOUT="copy"), "function")
                   for n in counts}
        drivers.update({("upload", n): b.driver(f"fanout-{gcs}-upload-{n}", b.env(gcs, buckets=n, FANOUT="upload"),
                                                "function") for n in counts if n > 1})
        pids = [b.s3.pid, sink.pid]
        for size in plan.fanout_sizes:
            obj = b.put_object(size)
            progress(f"fan-out ({gcs}) {size_label(size)}: FANOUT=copy / upload / rclone x {counts} destinations")
            contenders = []
            for n in counts:
                for kind in kinds:
                    if n == 1 and kind != "copy" and kind != "rclone":
                        continue
                    if kind in ("copy", "upload"):
                        driver = drivers[(kind, n)]
                        run = (lambda d=driver: latencies(d, lambda: d.call("copy", bucket=SOURCE, key=obj.key)))
                    elif kind == "rclone":
                        run = (lambda n=n: b.rclone(obj, gcs, buckets=n))
                    else:
                        run = (lambda n=n: b.rclone_server_side(obj, gcs, n))
                    contenders.append(((kind, n), run))
            for rep in range(plan.fanout_reps if gcs == "sink" else 1):
                for (kind, n), run in (contenders if rep % 2 == 0 else list(reversed(contenders))):
                    stats, cpu = b.sink_stats(sink), sum(proc_cpu(pid) for pid in pids)
                    result = run()
                    result["server_cpu"] = sum(proc_cpu(pid) for pid in pids) - cpu
                    after = b.sink_stats(sink)
                    for key in ("body_bytes", "upload_bytes", "uploads", "rewrites", "download_bytes"):
                        result[key] = after[key] - stats[key]
                    b.verify_sink(obj, n, f"fan-out {kind} to {n}", sink)
                    b.clear_sink(sink)
                    measured.setdefault((gcs, size, kind, n), []).append(result)
        for driver in drivers.values():
            b.retire(driver)
    b.capped.stop()
    b.servers.remove(b.capped)
    b.capped = None

    def med(gcs: str, size: int, kind: str, n: int) -> float:
        key = (gcs, size, "copy" if n == 1 and kind in ("upload", "rclone_ss") else kind, n)
        if n == 1 and kind == "rclone_ss":
            key = (gcs, size, "rclone", 1)
        return statistics.median(r["seconds"] for r in measured[key])

    server_side_seen = []
    for gcs, _, title in variants:
        rows = []
        for size in plan.fanout_sizes:
            for n in counts:
                for kind in kinds:
                    rs = measured.get((gcs, size, kind, n))
                    if not rs:
                        continue
                    s = statistics.median(r["seconds"] for r in rs)
                    pick = sorted(rs, key=lambda r: r["seconds"])[len(rs) // 2]
                    function = kind in ("copy", "upload")
                    label = one if (n == 1 and kind == "copy") else ("rclone copyto" if n == 1 else labels[kind])
                    vs_one = f"{s / med(gcs, size, kind, 1):.2f}x" if n > 1 else "1.00x"
                    vs_rclone = f"{s / med(gcs, size, 'rclone', n):.2f}x" if kind != "rclone" else "1.00x"
                    rows.append([size_label(size), label, n, " / ".join(f"{r['seconds']:.2f}" for r in rs),
                                 mb(size * n / s), vs_one, vs_rclone,
                                 f"{pick['body_bytes'] / size:.3f}x", f"{pick['upload_bytes'] / size:.2f}x",
                                 pick["uploads"], pick["rewrites"],
                                 "-" if pick.get("after_primary_ms") is None else f"{pick['after_primary_ms']:.0f}",
                                 f"{pick['cpu']:.2f}", f"{pick['server_cpu']:.2f}"])
                    if kind == "rclone_ss":
                        server_side_seen.append((gcs, size, n, pick))
        reps = plan.fanout_reps if gcs == "sink" else 1
        table(f"Fan-out: one object to 1, 2 and 4 destinations, {title}"
              + (f", median of {reps}" if reps > 1 else ", 1 run"),
              ["size", "who", "destinations", "s", "MB/s written", "vs 1 destination", "vs rclone in turn",
               "sent / size", "uploaded / size", "uploads", "rewrites", "last dest. after primary ms",
               "CPU s", "server CPU s"], rows,
              note="sent = request-body bytes the sink received during the copy (uploads, rewrite and metadata\n"
                   "bodies, all connections): what the copying process sent out of 'AWS'. uploaded = bytes of\n"
                   "finished uploads; uploads / rewrites = calls that made an object. MB/s written = size x\n"
                   "destinations / s. vs 1 destination: the same way to one destination (the 1-destination run is\n"
                   "shared: with one destination there is nothing to fan out). last dest. after primary: from the\n"
                   "function's Latency metric per destination, how long after the primary (uploaded) destination\n"
                   "the last one was done: with FANOUT=copy the server-side copies, proven. Middle run's figures\n"
                   "beside the median time. CPU s: the copying process(es); server CPU s: moto + this gcs_sink.\n"
                   "Every copy is verified at the sink (size, CRC32C, MD5)."
                   + ("" if gcs == "sink" else "\nBehind the cap one run each: the link, not the machine's load, sets "
                                                 "these times."))
        size2 = min(plan.fanout_sizes)
        if 2 in counts:
            ratio = med(gcs, size2, "copy", 2) / med(gcs, size2, "rclone", 2)
            b.goals.append([f"fan-out {size_label(size2)} -> 2 dest, FANOUT=copy / rclone in turn ({gcs})",
                            "<= 0.50x", f"{ratio:.2f}x", verdict(ratio, 0.5)])
        for size in plan.fanout_sizes:
            top = max(counts)
            ratio = med(gcs, size, "copy", top) / med(gcs, size, "copy", 1)
            b.goals.append([f"fan-out {size_label(size)}: {top} dest / 1 dest, FANOUT=copy ({gcs})", "<= 1.20x",
                            f"{ratio:.2f}x", verdict(ratio, 1.2)])
            ratio = med(gcs, size, "upload", top) / med(gcs, size, "copy", 1)
            b.goals.append([f"fan-out {size_label(size)}: {top} dest / 1 dest, FANOUT=upload ({gcs})",
                            "(for comparison)", f"{ratio:.2f}x", "-"])
            for n in counts:
                if n == 1:
                    continue
                sent = max(r["body_bytes"] for r in measured[(gcs, size, "copy", n)]) / size
                b.goals.append([f"fan-out {size_label(size)} -> {n} dest: bytes sent / size, FANOUT=copy ({gcs})",
                                "1.00x", f"{sent:.3f}x", "met" if sent < 1.005 else "NOT met"])
    for gcs, size, n, pick in server_side_seen:
        how = ("objects.rewrite" if pick["rewrites"] == n - 1 and pick["uploads"] == 1
               else f"not objects.rewrite alone: {pick['uploads']} uploads, {pick['rewrites']} rewrites, "
                    f"{pick['download_bytes'] / size:.2f}x the size downloaded")
        b.findings.append(f"rclone bucket-to-bucket copy ({gcs}, {size_label(size)} to {n}): {how}")


# -- main ------------------------------------------------------------------------------------------------

def machine() -> list[str]:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = []
    for name in ("boto3", "google-cloud-storage", "google-auth", "google-resumable-media", "moto", "requests"):
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    rclone = subprocess.run([str(RCLONE), "version"], capture_output=True, text=True).stdout.splitlines()[:1]
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "gcs_sync", "lambda_function.py"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    return [
        f"machine: {os.cpu_count()} CPUs ({cpu}), {mem:.1f} GiB RAM, {platform.platform()}",
        f"python {platform.python_version()} ({sys.executable})",
        "versions: " + ", ".join(versions) + (f", {rclone[0]}" if rclone else ""),
        f"gcs-sync: git {rev}" + (" + uncommitted changes in gcs_sync/" if dirty else ""),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="gcs-sync benchmarks (see bench/README.md)")
    parser.add_argument("--quick", action="store_true",
                        help="reduced set: 64 MiB instead of 256 MiB / 1 GiB, fewer iterations (1-2 min)")
    parser.add_argument("--small-n", type=int, help="small-object events per contender")
    parser.add_argument("--reps", type=int, help="rounds per large size (and per fan-out contender)")
    parser.add_argument("--sink-dir", help="where gcs_sink stores object bytes (default: /dev/shm when "
                                           "it has room, else the temp dir)")
    parser.add_argument("--skip", action="append", default=[], choices=SECTIONS,
                        help="leave out a section (repeatable)")
    parser.add_argument("--only", action="append", default=[], choices=SECTIONS,
                        help="run only this section (repeatable), e.g. --only fanout")
    parser.add_argument("--fanout-rate", type=float, metavar="MB_PER_S",
                        help="the fan-out section's network-bound variant: gcs_sink admits at most this many "
                             "MB/s of request bodies, all connections together (default 100)")
    args = parser.parse_args(argv)
    plan = Plan.make(args.quick)
    if args.small_n:
        plan.small_n = args.small_n
    if args.reps:
        plan.large_reps = {s: args.reps for s in plan.large}
        plan.fanout_reps = args.reps
    if args.fanout_rate:
        plan.fanout_rate = args.fanout_rate
    if args.only:
        args.skip = [name for name in SECTIONS if name not in args.only or name in args.skip]

    print("# gcs-sync benchmark")
    python_command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "bench.run",
                                                       *(argv if argv is not None else sys.argv[1:])])
    wrapper = os.environ.get("BENCH_COMMAND")
    print(f"command: {wrapper} (runs {python_command})" if wrapper else f"command: {python_command}")
    for line in machine():
        print(line)
    print(f"plan: {'quick' if plan.quick else 'full'}; started {time.strftime('%Y-%m-%d %H:%M:%S')}; "
          f"load average at start {os.getloadavg()[0]:.2f} (1 min)")
    started = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="gcs-sync-bench-") as tmp:
        sink_parent = args.sink_dir
        if sink_parent is None:
            need = 4 * max(plan.large + plan.scale_sizes + [plan.dest_size] + plan.fanout_sizes)
            shm = "/dev/shm"
            sink_parent = shm if os.path.isdir(shm) and shutil.disk_usage(shm).free > need + 2**30 else tmp
        with tempfile.TemporaryDirectory(prefix="gcs-sync-bench-sink-", dir=sink_parent) as sink_dir:
            bench = Bench(plan, Path(tmp), sink_dir)
            try:
                progress("starting moto, the rig and gcs_sink; writing source objects")
                bench.start()
                sizes = {"standins": [plan.standin_size], "large": plan.large + [plan.batch_size],
                         "scaling": plan.scale_sizes + [plan.dest_size], "rig": [plan.rig_size],
                         "fanout": plan.fanout_sizes}
                for size in sorted({s for name, ss in sizes.items() if name not in args.skip for s in ss}):
                    bench.put_object(size)
                sections = [("standins", section_standins), ("small", section_small), ("large", section_large),
                            ("components", section_components), ("rig", section_rig_large),
                            ("scaling", section_scaling), ("fanout", section_fanout)]
                if "standins" in args.skip:
                    raw = bench.driver("token", bench.env("sink"), "floor")
                    bench.rclone_config(raw.call("token")["token"])
                    bench.retire(raw)
                for name, section in sections:
                    if name not in args.skip:
                        section(bench)
            finally:
                bench.stop()

    if bench.goals:
        table("Goals", ["figure", "goal", "measured", "verdict"], bench.goals)
    for finding in bench.findings:
        print(f"- {finding}")
    load = os.getloadavg()
    print(f"\ntotal wall time: {time.monotonic() - started:.0f} s; load average at the end {load[0]:.2f} (1 min), "
          f"{load[1]:.2f} (5 min) on {os.cpu_count()} CPUs"
          + ("; other work was running: absolute times are inflated, compare the ratios" if load[1] > 0.6 * (os.cpu_count() or 1) + 2 else ""))


if __name__ == "__main__":
    main()

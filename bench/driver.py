"""The process being measured: the function (``lambda_function.lambda_handler``) or a floor client.

    python -m bench.driver        (started by bench/run.py, never by hand)

It takes its configuration from its environment, exactly as the function does in Lambda, and
takes commands as JSON lines on standard input; each answer is one JSON line on the file
descriptor given in ``BENCH_ANSWER_FD`` (standard output and error carry the function's own
logs and metrics, which the parent sends to a file). Timings are taken here, around the work
only; the parent samples this process's RSS and staging directory meanwhile.

Commands (``op``):
  function_setup  import the function and copy a small object once (a warm container)
  copy            one S3 notification for KEY through lambda_handler; checks the summary
  copy_many       one notification with several records (objects copied concurrently)
  copy_sqs        an SQS batch: KEYS split over messages, each an S3 notification of PER_MESSAGE records
  floor_setup     boto3 + google-cloud-storage clients with the same credentials, warmed up
  floor_staged    one streamed GET into a file, then concurrent upload_from_filename to every bucket
  floor_small     one small object: get_object, then upload_from_string to every bucket at once
  small           warm latency: the function vs the floor (GET + upload_from_string x N in threads),
                  interleaved ABBA on fresh 10 KiB objects
  token           an access token from the same credentials (for rclone against the rig)
  status          VmRSS / VmHWM now
  phases          where a small event's time goes (gcs_sync calls wrapped with timers)
  components      CPU per GiB of the streaming path's in-process pieces (no network)
  latency         median single-request latency of each stand-in
  s3_read         one GET read to the end (boto3), bytes discarded
  raw_upload      http.client resumable uploads of SIZE in CHUNK pieces on STREAMS connections
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

READ_CHUNK = 1 << 20
SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]


def proc_status() -> dict[str, int]:
    """VmRSS / VmHWM of this process in KiB."""
    out = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all threads; CLOCK_PROCESS_CPUTIME_ID)."""
    return time.process_time()


def reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the next peak is this event's."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class Context:
    """What Lambda passes as ``context``: enough for the handler."""

    function_name = "gcs-sync-bench"
    memory_limit_in_mb = 1024

    def __init__(self) -> None:
        self.aws_request_id = "bench-" + uuid.uuid4().hex[:8]

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 900_000  # Lambda's longest timeout


def notification(bucket: str, key: str, size: int, etag: str) -> dict:
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": urllib.parse.quote_plus(key, safe="/"), "size": size, "eTag": etag}},
    }]}


def destinations() -> list[str]:
    """Bucket names from GCS_DESTINATIONS (the floors write where the function writes)."""
    return [d[len("gs://"):].split("/", 1)[0] for d in os.environ["GCS_DESTINATIONS"].replace(",", " ").split()]


class Driver:
    def __init__(self) -> None:
        self.handler: Callable | None = None
        self.s3: Any = None
        self.gcs: Any = None
        self.pool: ThreadPoolExecutor | None = None

    # -- the function -------------------------------------------------------------------------

    def function_setup(self, bucket: str, key: str) -> dict:
        started = time.perf_counter()
        import lambda_function

        self.handler = lambda_function.lambda_handler
        imported = time.perf_counter() - started
        self._s3_client()
        fresh = f"warmup/{uuid.uuid4().hex}.bin"  # a new object, so the first event really copies
        self.s3.copy_object(Bucket=bucket, Key=fresh, CopySource={"Bucket": bucket, "Key": key})
        head = self.s3.head_object(Bucket=bucket, Key=fresh)
        first = self._invoke(bucket, fresh, head)
        return {"import_seconds": imported, "first_event_seconds": first["seconds"], **proc_status()}

    def copy(self, bucket: str, key: str, reset: bool = True) -> dict:
        head = self.s3.head_object(Bucket=bucket, Key=key)
        before = proc_status()
        if reset:
            reset_hwm()
        answer = self._invoke(bucket, key, head)
        return {**answer, "before": before, **proc_status()}

    def _invoke(self, bucket: str, key: str, head: dict) -> dict:
        size, etag = head["ContentLength"], head["ETag"].strip('"')
        event = notification(bucket, key, size, etag)
        cpu = cpu_seconds()
        started = time.perf_counter()
        summary = self.handler(event, Context())
        seconds = time.perf_counter() - started
        cpu = cpu_seconds() - cpu
        wanted = size * len(destinations())
        if summary.get("copied") != 1 or summary.get("bytes") != wanted:
            raise RuntimeError(f"the function did not copy {key}: {json.dumps(summary)[:2000]}")
        return {"seconds": seconds, "cpu": cpu}

    # -- floors ---------------------------------------------------------------------------------

    def _s3_client(self) -> None:
        if self.s3 is None:
            import boto3

            self.s3 = boto3.session.Session().client("s3")  # AWS_ENDPOINT_URL_S3 and keys: environment

    def floor_setup(self, bucket: str, key: str) -> dict:
        import google.auth
        from google.cloud import storage

        os.environ.setdefault("DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA", "1")
        self._s3_client()
        with open(os.environ["GOOGLE_APPLICATION_CREDENTIALS"]) as handle:
            credentials, _ = google.auth.load_credentials_from_dict(json.load(handle))
        credentials = credentials.with_scopes(SCOPES)
        self.credentials = credentials
        self.gcs = storage.Client(project=None, credentials=credentials,
                                  client_options={"api_endpoint": os.environ["GCS_API_ENDPOINT"]})
        self.pool = ThreadPoolExecutor(max(2, len(destinations())))
        self._floor_small(bucket, key, "floor-warmup/")
        return proc_status()

    def _floor_small(self, bucket: str, key: str, prefix: str = "") -> None:
        data = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        uploads = [self.pool.submit(self.gcs.bucket(b).blob(prefix + key).upload_from_string, data)
                   for b in destinations()]
        for upload in uploads:
            upload.result()

    def floor_staged(self, bucket: str, key: str, reset: bool = True) -> dict:
        staging = os.environ["STAGING_DIR"]
        before = proc_status()
        if reset:
            reset_hwm()
        cpu = cpu_seconds()
        started = time.perf_counter()
        fd, path = tempfile.mkstemp(dir=staging, prefix="floor-")
        try:
            with os.fdopen(fd, "wb") as sink:
                body = self.s3.get_object(Bucket=bucket, Key=key)["Body"]
                for chunk in body.iter_chunks(READ_CHUNK):
                    sink.write(chunk)
            uploads = [self.pool.submit(self.gcs.bucket(b).blob(key).upload_from_filename, path)
                       for b in destinations()]
            for upload in uploads:
                upload.result()
            seconds = time.perf_counter() - started
            cpu = cpu_seconds() - cpu
        finally:
            os.unlink(path)
        return {"seconds": seconds, "cpu": cpu, "before": before, **proc_status()}

    def token(self) -> dict:
        """An access token from the same Workload Identity exchange (for rclone's access_token)."""
        import google.auth.transport.requests

        if not self.credentials.valid:
            self.credentials.refresh(google.auth.transport.requests.Request())
        return {"token": self.credentials.token}

    @staticmethod
    def status() -> dict:
        return proc_status()

    def latency(self, bucket: str, key: str, endpoints: dict[str, str], n: int) -> dict:
        """Median ms of single requests: S3 HEAD / GET, and per GCS endpoint a metadata GET, a
        404 metadata GET and a 10 KiB upload_from_string, each with a warm connection."""
        from google.cloud import storage

        def median_ms(fn: Callable[[], Any]) -> float:
            fn()
            times = []
            for _ in range(n):
                started = time.perf_counter()
                fn()
                times.append(time.perf_counter() - started)
            return statistics.median(times) * 1e3

        out = {"s3 HEAD": median_ms(lambda: self.s3.head_object(Bucket=bucket, Key=key)),
               "s3 GET": median_ms(lambda: self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())}
        data = os.urandom(10 * 1024)
        for label, url in endpoints.items():
            client = storage.Client(project=None, credentials=self.credentials, client_options={"api_endpoint": url})
            blob = client.bucket(destinations()[0]).blob("latency/probe")
            out[f"{label}|upload"] = median_ms(lambda: blob.upload_from_string(data))
            out[f"{label}|metadata"] = median_ms(lambda: client.bucket(destinations()[0]).blob("latency/probe").reload())
            out[f"{label}|missing"] = median_ms(lambda: client.bucket(destinations()[0]).blob("latency/none").exists())
        return out

    # -- small objects: the function vs the floor, interleaved ------------------------------

    def small(self, bucket: str, n: int, warmup: int, size: int) -> dict:
        keys = {"function": [], "floor": []}
        for who in keys:
            for i in range(n + warmup):
                key = f"small/{who}/{uuid.uuid4().hex[:8]}-{i}.bin"
                self.s3.put_object(Bucket=bucket, Key=key, Body=os.urandom(size))
                keys[who].append(key)
        heads = {k: self.s3.head_object(Bucket=bucket, Key=k) for k in keys["function"]}
        runs: dict[str, list[float]] = {"function": [], "floor": [], "function_cpu": [], "floor_cpu": []}

        def function(i: int) -> tuple[float, float]:
            key = keys["function"][i]
            answer = self._invoke(bucket, key, heads[key])
            return answer["seconds"], answer["cpu"]

        def floor(i: int) -> tuple[float, float]:
            cpu = cpu_seconds()
            started = time.perf_counter()
            self._floor_small(bucket, keys["floor"][i])
            return time.perf_counter() - started, cpu_seconds() - cpu

        for i in range(n + warmup):
            order = [("function", function), ("floor", floor)]
            if i % 2:
                order.reverse()
            for who, fn in order:
                seconds, cpu = fn(i)
                if i >= warmup:
                    runs[who].append(seconds)
                    runs[who + "_cpu"].append(cpu)
        return runs

    def copy_many(self, bucket: str, keys: list[str], reset: bool = True) -> dict:
        """One notification carrying several records (objects copied concurrently)."""
        heads = [self.s3.head_object(Bucket=bucket, Key=k) for k in keys]
        event = {"Records": [notification(bucket, k, h["ContentLength"], h["ETag"].strip('"'))["Records"][0]
                             for k, h in zip(keys, heads)]}
        before = proc_status()
        if reset:
            reset_hwm()
        cpu = cpu_seconds()
        started = time.perf_counter()
        summary = self.handler(event, Context())
        seconds = time.perf_counter() - started
        wanted = sum(h["ContentLength"] for h in heads) * len(destinations())
        if summary.get("copied") != len(keys) or summary.get("bytes") != wanted:
            raise RuntimeError(f"the function did not copy {keys}: {json.dumps(summary)[:2000]}")
        return {"seconds": seconds, "cpu": cpu_seconds() - cpu, "before": before, **proc_status()}

    def floor_small(self, bucket: str, key: str, prefix: str = "floor/") -> dict:
        started = time.perf_counter()
        self._floor_small(bucket, key, prefix)
        return {"seconds": time.perf_counter() - started}

    def copy_sqs(self, bucket: str, keys: list[str], per_message: int) -> dict:
        """One SQS batch (as Lambda's queue trigger delivers it): the keys in messages of
        ``per_message`` S3 records each; every message must succeed."""
        heads = [self.s3.head_object(Bucket=bucket, Key=k) for k in keys]
        records = [notification(bucket, k, h["ContentLength"], h["ETag"].strip('"'))["Records"][0]
                   for k, h in zip(keys, heads)]
        messages = [{"messageId": str(uuid.uuid4()), "receiptHandle": "bench", "eventSource": "aws:sqs",
                     "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:gcs-sync-bench", "awsRegion": "us-east-1",
                     "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                     "body": json.dumps({"Records": records[i:i + per_message]})}
                    for i in range(0, len(records), per_message)]
        cpu = cpu_seconds()
        started = time.perf_counter()
        answer = self.handler({"Records": messages}, Context())
        seconds = time.perf_counter() - started
        if answer.get("batchItemFailures"):
            raise RuntimeError(f"the function failed messages of the batch: {json.dumps(answer)[:2000]}")
        return {"seconds": seconds, "cpu": cpu_seconds() - cpu, "messages": len(messages)}

    def phases(self, bucket: str, n: int, size: int) -> dict:
        """Where a small event's time goes: gcs_sync's S3 / GCS calls wrapped with timers (in this
        process only, for this diagnostic run), and the floor's GET and uploads timed alike.
        Per event and phase: wall time from the first call's start to the last call's end."""
        import gcs_sync.destination
        import gcs_sync.source

        records: list[tuple[str, str, int, float, float, float]] = []  # who, phase, event, start, end, cpu
        lock = threading.Lock()
        current = ["", 0]

        def timed_call(label: str, fn: Callable, *args: Any, **kwargs: Any) -> Any:
            who, event = current
            cpu, started = time.thread_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with lock:
                    records.append((who, label, event, started, time.perf_counter(), time.thread_time() - cpu))

        def wrap(cls: Any, attr: str, label: str) -> Callable:
            original = getattr(cls, attr)

            def timed(*args: Any, **kwargs: Any) -> Any:
                return timed_call(label, original, *args, **kwargs)

            setattr(cls, attr, timed)
            return original

        patched = [(gcs_sync.source.S3Source, "open", "S3 GET: headers (the state)"),
                   (gcs_sync.destination.GcsWriter, "held", "metadata GET per destination (concurrent)"),
                   (gcs_sync.source.S3Source, "read_into", "S3 GET: body (into the staged file)"),
                   (gcs_sync.destination.GcsWriter, "upload", "upload per destination (concurrent)")]
        originals = [(cls, attr, wrap(cls, attr, label)) for cls, attr, label in patched]
        totals: dict[str, list[float]] = {"function": [], "floor": []}
        cpus: dict[str, list[float]] = {"function": [], "floor": []}
        try:
            keys = []
            for i in range(n):
                key = f"phases/{uuid.uuid4().hex[:8]}-{i}.bin"
                self.s3.put_object(Bucket=bucket, Key=key, Body=os.urandom(size))
                keys.append(key)
            for i, key in enumerate(keys):
                head = self.s3.head_object(Bucket=bucket, Key=key)
                current[:] = ["function", i]
                answer = self._invoke(bucket, key, head)
                totals["function"].append(answer["seconds"])
                cpus["function"].append(answer["cpu"])
                current[:] = ["floor", i]
                cpu, started = cpu_seconds(), time.perf_counter()
                data = timed_call("S3 GET", lambda: self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
                uploads = [self.pool.submit(timed_call, "upload per destination (threads)",
                                            self.gcs.bucket(b).blob("floor-phases/" + key).upload_from_string, data)
                           for b in destinations()]
                for upload in uploads:
                    upload.result()
                totals["floor"].append(time.perf_counter() - started)
                cpus["floor"].append(cpu_seconds() - cpu)
        finally:
            for cls, attr, original in originals:
                setattr(cls, attr, original)
        out: dict[str, dict[str, list[float]]] = {}
        for who in totals:
            spans: dict[str, dict[int, list[float]]] = {}  # phase -> event -> [start, end, cpu]
            for w, label, i, start, end, cpu in records:
                if w == who:
                    span = spans.setdefault(label, {}).setdefault(i, [start, end, 0.0])
                    span[0], span[1], span[2] = min(span[0], start), max(span[1], end), span[2] + cpu
            rows = {label: [statistics.median(e - s for s, e, _ in by_event.values()) * 1e3,
                            statistics.median(c for _, _, c in by_event.values()) * 1e3]
                    for label, by_event in spans.items()}
            other_wall = [totals[who][i] - sum(ev[i][1] - ev[i][0] for ev in spans.values() if i in ev) for i in range(n)]
            other_cpu = [cpus[who][i] - sum(ev[i][2] for ev in spans.values() if i in ev) for i in range(n)]
            out[who] = {**rows, "everything else": [statistics.median(other_wall) * 1e3, statistics.median(other_cpu) * 1e3],
                        "total": [statistics.median(totals[who]) * 1e3, statistics.median(cpus[who]) * 1e3]}
        return {"phases": out}

    @staticmethod
    def components(mib: int) -> dict:
        """CPU per GiB of the streaming path's in-process pieces, fed 1 MiB pieces (as S3Source
        reads) with no network: gcs_sync's Digests and ChunkSink, and for comparison a sink with
        the same contract that joins pieces once per chunk. Fresh objects each round."""
        import hashlib
        import resource

        from gcs_sync.metadata import Digests
        from gcs_sync.streaming import ChunkSink

        piece = os.urandom(1 << 20)
        chunk = 8 << 20

        class JoinSink:
            def __init__(self) -> None:
                self.pieces: list[bytes] = []
                self.size = 0

            def write(self, data: bytes) -> None:
                self.pieces.append(data)
                self.size += len(data)
                if self.size > chunk:
                    joined = b"".join(self.pieces)
                    self.pieces, self.size = [joined[chunk:]], len(joined) - chunk
                    joined[:chunk]  # the piece handed to the uploads

        def measure(write: Callable[[bytes], Any]) -> dict:
            before, cpu = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
            for _ in range(mib):
                write(piece)
            after = resource.getrusage(resource.RUSAGE_SELF)
            scale = 1024 / mib
            return {"cpu": (time.process_time() - cpu) * scale, "sys": (after.ru_stime - before.ru_stime) * scale,
                    "faults": (after.ru_minflt - before.ru_minflt) * scale}

        md5 = hashlib.md5()
        return {
            "Digests.update (MD5 + CRC32C)": measure(Digests().update),
            "  of which hashlib MD5": measure(md5.update),
            "Digests.update (CRC32C only: multipart or KMS ETag)": measure(Digests(md5=False).update),
            "ChunkSink.write (1 MiB pieces -> 8 MiB chunks)": measure(ChunkSink(chunk, lambda o, p: None).write),
            "for comparison: list + b''.join per chunk": measure(JoinSink().write),
        }

    # -- raw clients, to see what bounds the figures ----------------------------------------

    def s3_read(self, bucket: str, key: str) -> dict:
        started = time.perf_counter()
        body = self.s3.get_object(Bucket=bucket, Key=key)["Body"]
        first = None
        size = 0
        for chunk in body.iter_chunks(READ_CHUNK):
            if first is None:
                first = time.perf_counter() - started
            size += len(chunk)
        return {"seconds": time.perf_counter() - started, "bytes": size, "first_byte": first}

    @staticmethod
    def raw_upload(url: str, bucket: str, size: int, chunk: int, streams: int, token: str | None) -> dict:
        parts = urllib.parse.urlsplit(url)
        piece = memoryview(os.urandom(chunk))
        auth = {"Authorization": f"Bearer {token}"} if token else {}

        def one(index: int) -> str:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
            name = f"raw/{uuid.uuid4().hex}-{index}"
            conn.request("POST", f"/upload/storage/v1/b/{bucket}/o?uploadType=resumable",
                         body=json.dumps({"name": name}),
                         headers={**auth, "Content-Type": "application/json",
                                  "X-Upload-Content-Length": str(size)})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"raw upload initiation: HTTP {response.status}")
            location = urllib.parse.urlsplit(response.getheader("Location"))
            target = location.path + "?" + location.query
            offset = 0
            while offset < size:
                n = min(chunk, size - offset)
                conn.request("PUT", target, body=piece[:n], headers={
                    **auth, "Content-Range": f"bytes {offset}-{offset + n - 1}/{size}", "Content-Length": str(n)})
                response = conn.getresponse()
                response.read()
                offset += n
                if response.status not in (200, 201, 308) or (offset < size and response.status != 308):
                    raise RuntimeError(f"raw upload chunk at {offset}: HTTP {response.status}")
            conn.close()
            return name

        started = time.perf_counter()
        with ThreadPoolExecutor(streams) as pool:
            names = list(pool.map(one, range(streams)))
        return {"seconds": time.perf_counter() - started, "bytes": size * streams, "names": names}


def main() -> None:
    answers = os.fdopen(int(os.environ["BENCH_ANSWER_FD"]), "w", buffering=1)
    driver = Driver()
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        if op == "exit":
            break
        try:
            result = getattr(driver, op)(**command)
            answers.write(json.dumps({"ok": True, **result}) + "\n")
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which stops the run
            answers.write(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}",
                                      "traceback": traceback.format_exc()}) + "\n")


if __name__ == "__main__":
    main()

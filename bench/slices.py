"""One large object: the single-invocation streaming path against N workers copying its slices.

Each worker is a process standing in for a warm Lambda container: it builds the real handler
once and receives its share of the slice messages (SQS event shape), as Lambda's event source
would hand them over. Every read from S3, in the single invocation and in each worker alike, is
held to --rate MB/s (a per-container network figure), so the table shows how time falls when
the same object is read by N containers at once. Local stand-ins (moto, fake-gcs-server behind
the authenticating front), as in the tests.

    .venv/bin/python -m bench.slices --size-mb 96 --slice-mb 8 --rate 40 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MIB = 1024 * 1024


class Context:
    aws_request_id = "bench"
    function_name = "gcs-sync-bench"
    memory_limit_in_mb = 1769

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def _cap(rate_mb: float) -> None:
    """Hold every S3 read of this process to ``rate_mb`` MB/s."""
    from gcs_sync import source

    original, state = source._write, {"start": None, "bytes": 0}

    def paced(obj, sink, data):
        if state["start"] is None:
            state["start"] = time.monotonic()
        state["bytes"] += len(data)
        ahead = state["bytes"] / (rate_mb * 1e6) - (time.monotonic() - state["start"])
        if ahead > 0:
            time.sleep(ahead)
        original(obj, sink, data)

    source._write = paced


def _handler(env: dict):
    os.environ.update(env)
    import lambda_function

    lambda_function.new_container()
    return lambda_function


def _worker(env: dict, rate: float, records: list, ready, go, out) -> None:
    handler = _handler(env)
    _cap(rate)
    ready.set()
    go.wait()
    failed = []
    for record in records:
        answer = handler.lambda_handler({"Records": [record]}, Context())
        failed += answer["batchItemFailures"]
    out.put(failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=96)
    parser.add_argument("--slice-mb", type=int, default=8)
    parser.add_argument("--rate", type=float, default=40.0, help="MB/s per container (S3 reads)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()

    from tests.rig import DEFAULT_AUDIENCE, DEFAULT_SERVICE_ACCOUNT, FakeGcsServer, GcsFront, GoogleTokenServer, LocalS3
    from tests.rig.s3 import AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY

    work = Path(tempfile.mkdtemp(prefix="bench-slices-"))
    tokens = GoogleTokenServer(aws_keys={AWS_ACCESS_KEY_ID: AWS_SECRET_ACCESS_KEY}, audience=DEFAULT_AUDIENCE,
                               service_account=DEFAULT_SERVICE_ACCOUNT).start()
    gcs = FakeGcsServer(work / "gcs", backend="memory").start()
    front = GcsFront(gcs.url, tokens).start()
    s3 = LocalS3().start()
    try:
        client = s3.client()
        source = f"src-{uuid.uuid4().hex[:8]}"
        client.create_bucket(Bucket=source)
        data = os.urandom(args.size_mb * MIB)
        client.put_object(Bucket=source, Key="big.bin", Body=data, ChecksumAlgorithm="CRC32C")
        (work / "task").mkdir()
        (work / "task" / "gcp-credentials.json").write_text(json.dumps(tokens.credential_config()))
        import boto3

        sqs = boto3.client("sqs", endpoint_url=s3.url, **{k.lower(): v for k, v in s3.aws_env().items()
                                                          if k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                                   "AWS_SESSION_TOKEN")},
                           region_name=s3.aws_env()["AWS_REGION"])
        queue = sqs.create_queue(QueueName=f"bench-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        base = {**s3.aws_env(), "LAMBDA_TASK_ROOT": str(work / "task"), "AWS_LAMBDA_FUNCTION_NAME": "gcs-sync-bench",
                "GOOGLE_APPLICATION_CREDENTIALS": "gcp-credentials.json", "GCS_API_ENDPOINT": front.url,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769", "STAGING_DIR": str(work)}
        record = {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "awsRegion": "us-east-1",
                  "s3": {"bucket": {"name": source}, "object": {"key": "big.bin", "size": len(data)}}}
        rows = []

        def fresh_bucket() -> str:
            name = f"dst-{uuid.uuid4().hex[:8]}"
            gcs.create_bucket(name)
            return name

        # The single invocation: streamed, one container, capped.
        dest = fresh_bucket()
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()

        def single(env):
            handler = _handler(env)
            _cap(args.rate)
            started = time.monotonic()
            handler.lambda_handler({"Records": [record]}, Context())
            out.put(time.monotonic() - started)

        process = ctx.Process(target=single, args=({**base, "GCS_DESTINATIONS": f"gs://{dest}/"},))
        process.start()
        process.join()
        seconds = out.get()
        assert gcs.read_object(dest, "big.bin") == data
        rows.append(("single invocation (streamed)", 1, seconds))

        for workers in args.workers:
            dest = fresh_bucket()
            env = {**base, "GCS_DESTINATIONS": f"gs://{dest}/", "SLICE_QUEUE_URL": queue,
                   "AWS_ENDPOINT_URL_SQS": s3.url, "SLICE_MB": str(args.slice_mb), "SLICE_THRESHOLD_MB": "1"}
            started = time.monotonic()
            _handler(env).lambda_handler({"Records": [record]}, Context())  # plans: queues the slices
            planned = time.monotonic() - started
            records = []
            while True:
                batch = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
                if not batch:
                    break
                for m in batch:
                    sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
                    records.append({"messageId": m["MessageId"], "body": m["Body"], "eventSource": "aws:sqs",
                                    "attributes": {"ApproximateReceiveCount": "1"}})
            ready = [ctx.Event() for _ in range(workers)]
            go = ctx.Event()
            procs = [ctx.Process(target=_worker, args=(env, args.rate, records[i::workers], ready[i], go, out))
                     for i in range(workers)]
            for p in procs:
                p.start()
            for r in ready:
                r.wait()  # warm containers: the handler is built before the clock starts
            started = time.monotonic()
            go.set()
            for p in procs:
                p.join()
            seconds = time.monotonic() - started
            failed = [out.get() for _ in procs]
            assert not any(failed), failed
            assert gcs.read_object(dest, "big.bin") == data
            rows.append((f"{len(records)} slices, {workers} worker(s)", workers, seconds + planned))

        print(f"\n{args.size_mb} MiB object, {args.rate:g} MB/s per container, slices of {args.slice_mb} MiB "
              f"({os.cpu_count()} CPUs here)\n")
        print(f"| path | containers | seconds | MB/s | vs single |\n|---|---|---|---|---|")
        for name, workers, seconds in rows:
            print(f"| {name} | {workers} | {seconds:.1f} | {len(data) / seconds / 1e6:.0f} | "
                  f"{rows[0][2] / seconds:.1f}x |")
    finally:
        s3.stop()
        front.stop()
        gcs.stop()
        tokens.stop()


if __name__ == "__main__":
    main()

"""./demo.sh: the whole path on one machine, no cloud account.

Local S3 (moto) sends real S3 event notifications to a local SQS queue; the SQS batch goes to
the real handler, which authenticates through local Google STS / IAM endpoints (verifying the
signed AWS request, as Google does) and copies into two local Cloud Storage buckets.
``--serve`` starts the same servers and keeps them running for the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
import unicodedata
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

USAGE = """\
usage: ./demo.sh [--serve] [-h | --help]

Everything on this machine, no cloud account: a local S3 (with SQS and STS), a local Cloud
Storage behind a front that checks Google tokens, and local Google STS / IAM endpoints that
verify the AWS-signed request as Google does.

  ./demo.sh           upload a small tree to S3, deliver the notifications S3 sends to the real
                      handler, and show per object what happened at each destination: outcome,
                      proof (the S3 record the copy was checked against), upload or server-side
                      copy, replication latency; then a late event for an older version, which
                      is superseded. The servers stop at the end.
  ./demo.sh --serve   start the same servers with the tree in S3 (nothing copied yet), print the
                      `export` lines that point the command line at them, and keep running until
                      Ctrl-C: `python -m gcs_sync doctor`, `copy`, `sync`, `check` and `redrive`
                      then work as the README describes.
  -h, --help          show this help.
"""

TREE = {
    "reports/2026/summary.csv": b"month,total\n2026-10,42\n2026-11,57\n",
    "reports/2026/11/detail.json": json.dumps({"rows": list(range(20))}).encode(),
    "images/logo.png": os.urandom(48_000),
    "日本語 フォルダ/レポート 1.txt": "四半期の報告書です。\n".encode(),
    "empty-folder/": b"",
}
CONTENT_TYPES = {".csv": "text/csv", ".json": "application/json", ".png": "image/png", ".txt": "text/plain; charset=utf-8"}
PRIMARY, ARCHIVE = "demo-primary", "demo-archive"
SERVING = "Serving: the local servers run until Ctrl-C."  # --serve's last line before it waits
DESTINATIONS = f"gs://{PRIMARY} gs://{ARCHIVE}/from-s3/"
REWRITTEN = "reports/2026/summary.csv"  # written again, then its first event arrives late


# ------------------------------------------------------------------------------------------------
# Output: columns aligned by display width (a CJK character takes two columns)
# ------------------------------------------------------------------------------------------------

def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal: wide and full-width characters two, combining marks
    none, others one."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def pad(text: str, width: int) -> str:
    """``text`` left-aligned in ``width`` display columns."""
    return text + " " * max(0, width - display_width(text))


def columns(rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Rows of cells as lines, every column as wide as its widest cell (by display width)."""
    if not rows:
        return []
    widths = [max(display_width(row[i]) for row in rows if i < len(row)) for i in range(max(map(len, rows)))]
    return [indent + "  ".join(pad(cell, widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def say(text: str = "", *, wrap: bool = False) -> None:
    if wrap:
        import textwrap

        indent = text[: len(text) - len(text.lstrip())]
        text = textwrap.fill(text.strip(), width=100, initial_indent=indent, subsequent_indent=indent + "  ")
    print(text, flush=True)


_explained: set[str] = set()


def explain(name: str, text: str) -> None:
    """A legend line, printed the first time only."""
    if name not in _explained:
        _explained.add(name)
        say(text, wrap=True)


class Progress:
    """One line per setup step: what is being done, then how long it took."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def step(self, what: str):
        return _Step(what)


class _Step:
    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> "_Step":
        print(f"  {self.what} ...", end="", flush=True)
        self.started = time.monotonic()
        return self

    def __exit__(self, kind, *_: object) -> None:
        print(f" {'done' if kind is None else 'FAILED'} ({time.monotonic() - self.started:.1f} s)", flush=True)


# ------------------------------------------------------------------------------------------------
# The local servers
# ------------------------------------------------------------------------------------------------

class Servers:
    """The local stand-ins, started with a progress line each and stopped in reverse order."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.started: list[Any] = []

    def start(self) -> "Servers":
        import logging

        # The local servers' request logs would drown the demo's own output.
        for noisy in ("werkzeug", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        say("Starting the local servers:")
        with _Step("loading the rig (moto, boto3, google-cloud-storage)"):
            from tests.rig import DEFAULT_AUDIENCE, DEFAULT_SERVICE_ACCOUNT, FakeGcsServer, GcsFront, GoogleTokenServer, LocalS3
            from tests.rig.s3 import AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
        with _Step("Google STS and IAM Credentials stand-in (verifies the AWS-signed request)"):
            self.tokens = self._keep(GoogleTokenServer(aws_keys={AWS_ACCESS_KEY_ID: AWS_SECRET_ACCESS_KEY},
                                                       audience=DEFAULT_AUDIENCE,
                                                       service_account=DEFAULT_SERVICE_ACCOUNT).start())
        with _Step("Cloud Storage: fake-gcs-server, behind a front that checks Google tokens"):
            self.gcs = self._keep(FakeGcsServer(self.work / "gcs", backend="memory").start())
            self.front = self._keep(GcsFront(self.gcs.url, self.tokens).start())
        with _Step("S3, SQS and STS (moto)"):
            self.s3 = self._keep(LocalS3().start())
        return self

    def _keep(self, server: Any) -> Any:
        self.started.append(server)
        return server

    def stop(self) -> None:
        while self.started:
            server = self.started.pop()
            try:
                server.stop()
            except Exception as exc:  # noqa: BLE001 - stopping the rest matters more
                print(f"  (stopping {type(server).__name__}: {exc})", file=sys.stderr)

    def sqs(self) -> Any:
        import boto3

        env = self.s3.aws_env()
        return boto3.client("sqs", endpoint_url=self.s3.url, region_name=env["AWS_REGION"],
                            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                            aws_session_token=env["AWS_SESSION_TOKEN"])

    def environment(self, credentials: Path, source: str) -> dict[str, str]:
        """What the function (and the command line) needs to use these servers."""
        return {
            **self.s3.aws_env(),
            "AWS_ENDPOINT_URL_SQS": self.s3.url,
            "AWS_ENDPOINT_URL_STS": self.s3.url,
            "GCS_API_ENDPOINT": self.front.url,
            "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
            "GCS_DESTINATIONS": DESTINATIONS,
            "S3_BUCKET_NAME": source,
        }


def _prepare(servers: Servers, work: Path, source: str, *, notify_queue: bool) -> dict[str, Any]:
    """Buckets, queues and the credential configuration; returns what the run needs."""
    s3 = servers.s3.client()
    sqs = servers.sqs()
    with _Step(f"buckets: s3://{source} (versioned), gs://{PRIMARY}, gs://{ARCHIVE}"):
        s3.create_bucket(Bucket=source)
        s3.put_bucket_versioning(Bucket=source, VersioningConfiguration={"Status": "Enabled"})
        for bucket in (PRIMARY, ARCHIVE):
            servers.gcs.create_bucket(bucket)
    queue_url = queue_arn = None
    if notify_queue:
        with _Step("SQS queue gcs-sync-demo, and S3 event notifications to it"):
            queue_url = sqs.create_queue(QueueName="gcs-sync-demo")["QueueUrl"]
            queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            s3.put_bucket_notification_configuration(Bucket=source, NotificationConfiguration={
                "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]})
    credentials = work / "task" / "gcp-credentials.json"
    credentials.parent.mkdir(parents=True, exist_ok=True)
    credentials.write_text(json.dumps(servers.tokens.credential_config(), indent=2))
    return {"s3": s3, "sqs": sqs, "queue_url": queue_url, "queue_arn": queue_arn, "credentials": credentials}


def _upload(s3: Any, source: str, tree: dict[str, bytes]) -> dict[str, str]:
    """Put the tree; the version id of each key."""
    versions = {}
    for key, body in tree.items():
        suffix = Path(key).suffix
        extra = {"ContentType": CONTENT_TYPES[suffix]} if suffix in CONTENT_TYPES else {}
        answer = s3.put_object(Bucket=source, Key=key, Body=body, Metadata={"origin": "demo"}, **extra)
        versions[key] = answer.get("VersionId")
    return versions


# ------------------------------------------------------------------------------------------------
# The demo
# ------------------------------------------------------------------------------------------------

def demo() -> int:
    work = Path(tempfile.mkdtemp(prefix="gcs-sync-demo-"))
    servers = Servers(work)
    try:
        servers.start()
        return _run(servers, work)
    finally:
        servers.stop()
        shutil.rmtree(work, ignore_errors=True)


class _Captured:
    """The function's log lines and metric documents, as CloudWatch would receive them."""

    def __init__(self) -> None:
        import io
        import logging

        from gcs_sync import logs, metrics

        self.logs = io.StringIO()
        self.emf = io.StringIO()
        # Instead of stderr: the function's JSON lines, formatted as the function formats them (its
        # container configured logging when it was loaded, Lambda's init phase).
        handler = logging.StreamHandler(self.logs)
        handler.setFormatter(logs.JsonFormatter())
        logging.getLogger().handlers = [handler]
        metrics.set_output(self.emf)

    def take(self) -> tuple[list[dict], list[dict]]:
        lines = [json.loads(line) for line in self.logs.getvalue().splitlines() if line.startswith("{")]
        documents = [json.loads(line) for line in self.emf.getvalue().splitlines()]
        for stream in (self.logs, self.emf):
            stream.seek(0)
            stream.truncate()
        return lines, documents


def _run(servers: Servers, work: Path) -> int:
    source = f"demo-source-{uuid.uuid4().hex[:6]}"
    ready = _prepare(servers, work, source, notify_queue=True)
    os.environ.update(servers.environment(ready["credentials"], source))
    os.environ.update({
        # As in Lambda: a relative path, resolved against the code directory.
        "GOOGLE_APPLICATION_CREDENTIALS": "gcp-credentials.json",
        "LAMBDA_TASK_ROOT": str(ready["credentials"].parent),
        "AWS_LAMBDA_FUNCTION_NAME": "gcs-sync-demo",
        "LOG_LEVEL": "INFO",
    })
    with _Step("loading the function (lambda_function.py)"):
        import lambda_function
    captured = _Captured()

    say(f"\n1. Uploading {len(TREE)} objects to s3://{source}/ (versioned bucket)")
    versions = _upload(ready["s3"], source, TREE)
    messages = _receive(ready["sqs"], ready["queue_url"], len(TREE))
    tests = [m for m in messages if _is_test_event(m["Body"])]
    say(wrap=True, text=f"   S3 sent {len(messages)} messages to the queue: {len(messages) - len(tests)} ObjectCreated "
        f"notifications, and {len(tests)} s3:TestEvent that S3 sends when a notification configuration is "
        "saved (the function skips it).")
    records = [_sqs_record(m, ready["queue_arn"], versions) for m in messages]
    sent = {key: _event_time(m["Body"]) for m in messages for key in _keys(m["Body"])}

    say("\n2. The handler receives them as one SQS batch")
    result = _invoke(lambda_function, {"Records": records})
    lines, documents = captured.take()
    say(f"   it returned {json.dumps(result)} (no failed message: SQS deletes them all)")
    ok = not result.get("batchItemFailures")
    ok &= _report(lines, documents, servers, sent)

    say(f"\n3. {REWRITTEN} is written again: version 2")
    servers.front.reset()
    body = TREE[REWRITTEN] + b"2026-12,61\n"
    version_2 = ready["s3"].put_object(Bucket=source, Key=REWRITTEN, Body=body, ContentType="text/csv",
                                       Metadata={"origin": "demo"})["VersionId"]
    late = next(m for m in messages if REWRITTEN in _keys(m["Body"]))  # version 1's event, kept back
    fresh = _receive(ready["sqs"], ready["queue_url"], 1)
    result = _invoke(lambda_function, {"Records": [
        _sqs_record(m, ready["queue_arn"], {REWRITTEN: version_2}) for m in fresh]})
    lines, documents = captured.take()
    ok &= not result.get("batchItemFailures")
    ok &= _report(lines, documents, servers, {REWRITTEN: _event_time(fresh[0]["Body"])})

    say(f"\n4. Version 1's event arrives again, late (S3 delivers at least once, in no set order)")
    result = _invoke(lambda_function, {"Records": [
        _sqs_record(late, ready["queue_arn"], versions, message_id=str(uuid.uuid4()))]})
    lines, documents = captured.take()
    ok &= not result.get("batchItemFailures")
    outcomes = _report(lines, documents, servers, {}, expect="superseded")
    ok &= outcomes
    say("   The newer copy stays: a destination never goes back to an older state of the source.")

    say()
    say(wrap=True, text=f"Google token exchanges: STS {servers.tokens.sts_calls}, impersonation {servers.tokens.iam_calls} "
        f"(one token for every invocation of this container); unauthenticated Cloud Storage requests: "
        f"{len(servers.front.unauthorized)}")
    ok &= _listings(servers, {**TREE, REWRITTEN: body})
    say("\nDemo " + ("succeeded: the tree is in both buckets, the late event changed nothing."
                     if ok else "FAILED (see above)."))
    say(wrap=True, text="Next: ./demo.sh --serve keeps these servers running for `python -m gcs_sync doctor`, copy, "
        "sync, check and redrive.")
    return 0 if ok else 1


def _receive(sqs: Any, queue_url: str, objects: int, timeout: float = 30.0) -> list[dict]:
    """Messages until ``objects`` object notifications are in (test events come along)."""
    messages: list[dict] = []
    deadline = time.monotonic() + timeout
    while sum(not _is_test_event(m["Body"]) for m in messages) < objects:
        if time.monotonic() > deadline:
            raise RuntimeError(f"S3 sent {len(messages)} messages in {timeout:.0f} s, expected {objects} notifications")
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in answer.get("Messages", []):
            messages.append(message)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return messages


def _is_test_event(body: str) -> bool:
    return json.loads(body).get("Event") == "s3:TestEvent"


def _keys(body: str) -> list[str]:
    from urllib.parse import unquote_plus

    return [unquote_plus(r["s3"]["object"]["key"]) for r in json.loads(body).get("Records", [])]


def _event_time(body: str) -> datetime | None:
    for record in json.loads(body).get("Records", []):
        return datetime.fromisoformat(record["eventTime"].replace("Z", "+00:00"))
    return None


def _sqs_record(message: dict, queue_arn: str, versions: dict[str, str], message_id: str | None = None) -> dict:
    """The SQS record Lambda would deliver. S3 puts the object's versionId in every notification from
    a versioned bucket; the local S3 leaves it out, so it is added here from the upload's answer."""
    body = json.loads(message["Body"])
    from urllib.parse import unquote_plus

    for record in body.get("Records", []):
        obj = record["s3"]["object"]
        version = versions.get(unquote_plus(obj["key"]))
        if version and "versionId" not in obj:
            obj["versionId"] = version
    return {"messageId": message_id or message["MessageId"], "receiptHandle": message["ReceiptHandle"],
            "body": json.dumps(body), "eventSource": "aws:sqs", "eventSourceARN": queue_arn,
            "awsRegion": "us-east-1", "attributes": {}, "messageAttributes": {}}


def _invoke(lambda_function: Any, event: dict) -> Any:
    return lambda_function.lambda_handler(event, _Context())


def _report(lines: list[dict], documents: list[dict], servers: Servers, sent: dict[str, datetime | None],
            expect: str | None = None) -> bool:
    """Per object and destination: outcome, proof, how it was written, replication latency.
    ``sent``: each key's event time, in the order the events were delivered."""
    rewrites = _rewrites(servers.front.requests)
    by_source: dict[str, list[dict]] = {}
    for line in lines:
        if "destination" in line and "outcome" in line and "source" in line:
            by_source.setdefault(line["source"], []).append(line)
    latency = _latency_per_copy(by_source, documents, sent)
    ok, groups, rows = True, [], []
    for source, results in by_source.items():
        url, _, version = source.partition(" (version ")
        groups.append((f"{url}" + (f"  (version {version.rstrip(')')[:8]}…)" if version else ""), len(results)))
        for line in sorted(results, key=lambda d: d["destination"] != f"gs://{PRIMARY}/"):
            outcome = line["outcome"]
            ok &= outcome != "failed" and (expect is None or outcome == expect)
            how = ""
            if outcome in ("copied", "repaired"):
                bucket, name = line["object"][len("gs://"):].split("/", 1)
                how = "server-side copy" if (bucket, name) in rewrites else "upload"
            rows.append([line["object"], outcome, line.get("proof", ""), how,
                         latency.get((source, line["destination"]), "")])
    formatted = iter(columns(rows, indent="     "))
    for heading, count in groups:
        say(f"   {heading}")
        for _ in range(count):
            say(next(formatted))
    if any(row[3] == "server-side copy" for row in rows):
        explain("how", "   upload: the bytes read from S3, sent to the primary destination; server-side copy: "
                       "Cloud Storage copied the primary's proven copy (objects.rewrite), nothing more sent from AWS; "
                       "objects of a few KB are uploaded to each destination instead (a round trip costs more "
                       "than their egress)")
    if any(row[2] for row in rows):
        explain("proof", "   proof: the record S3 keeps of the object that the copy was checked against (crc32: "
                         "the CRC32 computed when it was uploaded)")
    if any(row[4].endswith("*") for row in rows):
        say("   * latency from the event's eventTime to the function's log line for the object (the metric "
            "documents hold no ReplicationLatency for it)", wrap=True)
    elif any(row[4] for row in rows):
        explain("latency", "   latency: ReplicationLatency, the function's metric: from the event's eventTime "
                           "(set by S3) to the proven copy")
    for line in lines:
        if line.get("level") in ("WARN", "ERROR", "FATAL"):
            say(f"   log {line['level']}: {line.get('message')} {line.get('error', '')}")
        elif line.get("message") == "record ignored":
            say(f"   skipped: {line.get('reason')}")
    summary = _metric_summary(documents)
    if summary:
        say(f"   metrics (CloudWatch EMF, {len(documents)} documents): {summary}", wrap=True)
    return ok


def _latency_per_copy(by_source: dict[str, list[dict]], documents: list[dict],
                      sent: dict[str, datetime | None]) -> dict[tuple[str, str], str]:
    """(source, destination) -> "latency N ms" for each copy written. From ReplicationLatency: its
    values for a destination follow the order of the invocation's objects (the events' order); when
    they cannot be matched, from the event time to the object's log line (marked *)."""
    metric = _replication_latency(documents)
    order = {key: i for i, key in enumerate(sent)}
    written: dict[str, list[tuple[int, str]]] = {}
    for source, results in by_source.items():
        key = source.partition(" (version ")[0].split("/", 3)[3]
        for line in results:
            if line["outcome"] in ("copied", "repaired"):
                written.setdefault(line["destination"], []).append((order.get(key, len(order)), source))
    found: dict[tuple[str, str], str] = {}
    for destination, copies in written.items():
        values = metric.get(destination, [])
        if len(values) == len(copies):
            for (_, source), value in zip(sorted(copies), values):
                found[(source, destination)] = f"latency {value:,.0f} ms"
            continue
        for _, source in copies:
            key = source.partition(" (version ")[0].split("/", 3)[3]
            line = next(l for l in by_source[source] if l["destination"] == destination)
            if sent.get(key) and line.get("timestamp"):
                late = datetime.fromisoformat(line["timestamp"]) - sent[key]  # type: ignore[operator]
                found[(source, destination)] = f"latency {late.total_seconds() * 1000:,.0f} ms*"
    return found


def _rewrites(requests: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(bucket, object) written by a server-side copy -> the object it was copied from."""
    copies = {}
    for method, path in requests:
        if method == "POST" and "/rewriteTo/b/" in path:
            origin, target = path.split("/rewriteTo/b/", 1)
            source_bucket, source_name = origin.removeprefix("/storage/v1/b/").split("/o/", 1)
            bucket, name = target.split("/o/", 1)
            copies[(unquote(bucket), unquote(name))] = f"{unquote(source_bucket)}/{unquote(source_name)}"
    return copies


def _replication_latency(documents: list[dict]) -> dict[str, list[float]]:
    """Destination -> the invocation's ReplicationLatency values, in milliseconds, in order."""
    found: dict[str, list[float]] = {}
    for document in documents:
        if "ReplicationLatency" not in document or "Destination" not in document:
            continue
        units = {m["Name"]: m.get("Unit") for d in document["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
        values = document["ReplicationLatency"]
        scale = 1000.0 if units.get("ReplicationLatency") == "Seconds" else 1.0
        found.setdefault(document["Destination"], []).extend(
            v * scale for v in (values if isinstance(values, list) else [values]))
    return found


def _metric_summary(documents: list[dict]) -> str:
    totals: dict[str, float] = {}
    for document in documents:
        names = [m["Name"] for d in document["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]]
        for name in names:
            value = document[name]
            if isinstance(value, list) or name in ("Copied", "Failed", "Bytes"):
                continue  # latencies, and the per-destination repeats of the totals
            label = f"{name}[{document['Proof']}]" if "Proof" in document else name
            totals[label] = totals.get(label, 0) + value
    return ", ".join(f"{name} {value:g}" for name, value in totals.items() if value)


def _listings(servers: Servers, tree: dict[str, bytes]) -> bool:
    ok = True
    for bucket in (PRIMARY, ARCHIVE):
        say(f"\ngs://{bucket}/")
        listing = servers.gcs.list_objects(bucket)
        rows = [[item["name"], f"{int(item['size']):,} bytes", f"crc32c={item.get('crc32c', '-')}",
                 item.get("contentType", "")] for item in listing]
        for line in columns(rows):
            say(line)
        prefix = "from-s3/" if bucket == ARCHIVE else ""
        sizes = {item["name"]: int(item["size"]) for item in listing}
        wrong = sorted(prefix + key for key, body in tree.items() if sizes.get(prefix + key) != len(body))
        if wrong:
            ok = False
            say(f"  MISSING OR WRONG SIZE: {wrong}")
    return ok


class _Context:
    aws_request_id = "demo-" + uuid.uuid4().hex[:8]

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 300_000


# ------------------------------------------------------------------------------------------------
# --serve
# ------------------------------------------------------------------------------------------------

def serve(stop: threading.Event | None = None) -> int:
    """Start the servers with the tree in S3, print the exports, run until Ctrl-C (or ``stop``)."""
    stop = stop or threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    work = Path(tempfile.mkdtemp(prefix="gcs-sync-demo-"))
    servers = Servers(work)
    try:
        servers.start()
        source = "demo-source"
        ready = _prepare(servers, work, source, notify_queue=False)
        with _Step(f"{len(TREE)} objects into s3://{source}/ (nothing copied yet)"):
            _upload(ready["s3"], source, TREE)
        with _Step("failure queue gcs-sync-demo-failures, holding one record Lambda would write there"):
            failures = _failure_queue(ready["sqs"], source)
        environment = servers.environment(ready["credentials"], source)
        say("\nIn another terminal, in this directory, paste these lines:\n")
        for name, value in environment.items():
            say(f"export {name}={shlex.quote(value)}")
        commands = [
            ("every check passes against the local servers", "doctor"),
            ("what a sync would copy", f"sync s3://{source} --dry-run"),
            ("one object, now", f"copy s3://{source}/{REWRITTEN}"),
            ("the failure queue holds one record of a failed event: what it would redrive, then redrive it",
             f"redrive {shlex.quote(failures)} --dry-run"),
            (None, f"redrive {shlex.quote(failures)}"),
            ("the rest", f"sync s3://{source}"),
            ("the audit: every destination ok", f"check s3://{source}"),
        ]
        say("\nthen, for example:")
        for why, command in commands:
            if why:
                say(f"\n# {why}")
            say(f".venv/bin/python -m gcs_sync {command}")
        say(f"""
AWS_ENDPOINT_URL_STS is where the doctor asks whose AWS credentials these are; the credential
configuration (GOOGLE_APPLICATION_CREDENTIALS) sends the token exchange to the local STS / IAM
stand-in, and GCS_API_ENDPOINT is the local Cloud Storage.""")
        say(SERVING)
        stop.wait()
        say("\nStopping the local servers.")
        return 0
    finally:
        servers.stop()
        shutil.rmtree(work, ignore_errors=True)


def _failure_queue(sqs: Any, source: str) -> str:
    """A queue holding one on-failure record (an S3 event whose retries were exhausted)."""
    url = sqs.create_queue(QueueName="gcs-sync-demo-failures")["QueueUrl"]
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    event = {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1", "eventTime": now,
        "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": source, "arn": f"arn:aws:s3:::{source}"},
               "object": {"key": "images/logo.png", "size": len(TREE["images/logo.png"])}}}]}
    record = {
        "version": "1.0", "timestamp": now,
        "requestContext": {"requestId": str(uuid.uuid4()), "condition": "RetriesExhausted", "approximateInvokeCount": 3,
                           "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:gcs-sync-demo:$LATEST"},
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorMessage": "s3://demo-source/images/logo.png -> gs://demo-primary/images/logo.png: "
                                            "Cloud Storage answered 503 (backendError)", "errorType": "CopyFailed"},
    }
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(record))
    return url


# ------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./demo.sh", usage=USAGE, add_help=False)
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("-h", "--help", action="store_true")
    args, unknown = parser.parse_known_args(argv)
    if args.help:
        print(USAGE, end="")
        return 0
    if unknown:
        print(f"./demo.sh: unknown argument {' '.join(unknown)!r}\n\n{USAGE}", end="", file=sys.stderr)
        return 2
    return serve() if args.serve else demo()


if __name__ == "__main__":
    sys.exit(main())

"""Redrive: the records in the function's failure queue, processed again by the same engine.

    python -m gcs_sync redrive FAILURE_QUEUE_URL [--dry-run] [--limit N]

Lambda writes a record to the on-failure destination when an asynchronous event's retries are
spent (``{"version": "1.0", "requestContext": {...}, "requestPayload": ORIGINAL_EVENT, ...}``).
Once the cause is fixed, each record is read from the queue and handed to the handler exactly
as the console's Test button would hand it over; the message is deleted only when everything
in it was done (no copy failed). A message whose copy fails again, or that holds no failure
record, stays in the queue. Messages read and kept are hidden from other readers while the
command runs and made visible again at its end (reading a message counts as a receive: a queue
with its own dead-letter queue moves it there after ``maxReceiveCount`` reads).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Callable

from . import events
from .errors import CopyFailed, EventError, GcsSyncError

RECEIVE_VISIBILITY = 900  # seconds a message read stays hidden from other readers while it is redriven
WAIT_SECONDS = 1  # long polling: an empty answer means the queue has nothing left to show
MAX_LISTED = 10  # objects named per message in a --dry-run line


@dataclass
class Summary:
    queue: str
    dry_run: bool
    read: int = 0
    redriven: int = 0  # processed again with nothing failed: deleted from the queue
    would_redrive: int = 0  # --dry-run: failure records that would be processed
    failed: int = 0  # processed again and something failed: kept in the queue
    not_failure_records: int = 0  # kept in the queue

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("redriven" if self.dry_run else "would_redrive")
        return data


def sqs_client(queue_url: str) -> Any:
    """An SQS client for the queue's region (from its URL, else the usual AWS settings); botocore
    reads ``AWS_ENDPOINT_URL_SQS`` itself."""
    from botocore.config import Config

    from . import aws

    return aws.client(
        "sqs", region=queue_region(queue_url),
        config=Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=3, read_timeout=20))


def queue_region(url: str) -> str | None:
    match = re.match(r"^https?://(?:sqs[.-]([a-z0-9-]+)|([a-z0-9-]+)\.queue)\.amazonaws\.com", url)
    return (match.group(1) or match.group(2)) if match else None


def run(queue_url: str, sqs: Any, process: Callable[[dict], Any], *, dry_run: bool = False,
        limit: int | None = None, say: Callable[[str], None] = print) -> Summary:
    """Read up to ``limit`` messages (all, without one) and redrive each failure record through
    ``process`` (the handler), deleting each message whose record was done."""
    summary = Summary(queue=queue_url, dry_run=dry_run)
    kept: list[str] = []  # receipt handles of messages left in the queue
    pending: dict[str, str] = {}  # received and not yet handled (released too, should the run stop)
    seen: set[str] = set()
    try:
        while limit is None or summary.read < limit:
            wanted = 10 if limit is None else min(10, limit - summary.read)
            answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=wanted, WaitTimeSeconds=WAIT_SECONDS,
                                         VisibilityTimeout=RECEIVE_VISIBILITY)
            messages = answer.get("Messages") or []
            if not messages:
                break
            pending = {m["ReceiptHandle"]: m["MessageId"] for m in messages}
            for message in messages:
                if message["MessageId"] in seen:  # delivered twice: already handled in this run
                    del pending[message["ReceiptHandle"]]
                    kept.append(message["ReceiptHandle"])
                    continue
                seen.add(message["MessageId"])
                summary.read += 1
                stays = _one(message, queue_url, sqs, process, dry_run, summary, say)
                del pending[message["ReceiptHandle"]]
                if stays:
                    kept.append(message["ReceiptHandle"])
    finally:
        _release(sqs, queue_url, kept + list(pending))
    return summary


def _one(message: dict, queue_url: str, sqs: Any, process: Callable[[dict], Any], dry_run: bool,
         summary: Summary, say: Callable[[str], None]) -> bool:
    """Handle one message; True when it stays in the queue."""
    message_id = message["MessageId"]
    record = events.failure_record(message.get("Body"))
    if record is None:
        summary.not_failure_records += 1
        say(f"kept {message_id}: not a failure record of the function (no requestContext and requestPayload)")
        return True
    described = events.describe_failure_record(record)
    if dry_run:
        summary.would_redrive += 1
        say(f"would redrive {message_id} ({described}): {_contents(record)}")
        return True
    try:
        result = process(record)
    except CopyFailed as exc:
        summary.failed += 1
        say(f"failed {message_id} ({described}), kept in the queue:\n" + "\n".join(f"  - {f}" for f in exc.failures))
        return True
    except GcsSyncError as exc:
        summary.failed += 1
        say(f"failed {message_id} ({described}), kept in the queue: {exc}")
        return True
    undone = _undone(result)
    if undone:
        summary.failed += 1
        say(f"failed {message_id} ({described}), kept in the queue: {undone}")
        return True
    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    summary.redriven += 1
    say(f"redriven {message_id} ({described}): {_counts(result)}; deleted from the queue")
    return False


def _contents(record: dict) -> str:
    """What a failure record would redrive, in a few words."""
    try:
        invocation = events.parse(record)
    except EventError as exc:
        return f"refused: {exc}"
    if isinstance(invocation, events.SqsBatch):
        refs = [r for m in invocation.messages for r in m.refs]
    elif isinstance(invocation, events.BatchOperations):
        refs = [t.ref for t in invocation.tasks if t.ref is not None]
    elif isinstance(invocation, events.Notifications):
        refs = list(invocation.refs)
    elif isinstance(invocation, events.SyncRequest):
        return f"a sync of s3://{invocation.bucket or '(S3_BUCKET_NAME)'}/{invocation.prefix}"
    else:
        return f"a {type(invocation).__name__}"
    if not refs:
        return "no object (nothing to copy)"
    names = [("delete " if r.removed else "") + r.url for r in refs[:MAX_LISTED]]
    more = f" and {len(refs) - MAX_LISTED} more" if len(refs) > MAX_LISTED else ""
    return ", ".join(names) + more


def _undone(result: Any) -> str | None:
    """What the handler's answer says was not done (shapes that report instead of raising)."""
    if not isinstance(result, dict):
        return None
    if result.get("batchItemFailures"):
        return f"{len(result['batchItemFailures'])} message(s) of the original SQS event failed"
    codes = [r.get("resultCode") for r in result.get("results", []) if isinstance(r, dict) and "resultCode" in r]
    if any(code != "Succeeded" for code in codes):
        return f"{sum(code != 'Succeeded' for code in codes)} S3 Batch Operations task(s) did not succeed"
    if result.get("ok") is False:
        return "the original request reported problems: " + json.dumps(result, ensure_ascii=False)[:500]
    return None


def _counts(result: Any) -> str:
    if not isinstance(result, dict):
        return "done"
    counts = [f"{result[k]} {k}" for k in ("copied", "repaired", "sliced", "already_current", "superseded",
                                            "skipped", "deleted") if isinstance(result.get(k), int) and result[k]]
    return ", ".join(counts) or "nothing to copy"


def _release(sqs: Any, queue_url: str, handles: list[str]) -> None:
    """Make kept messages visible again now, not after RECEIVE_VISIBILITY."""
    for handle in handles:
        try:
            sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=handle, VisibilityTimeout=0)
        except Exception:  # noqa: BLE001 - the message reappears after RECEIVE_VISIBILITY anyway
            pass

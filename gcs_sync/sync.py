"""Manual sync: copy every object under a prefix that is missing or different at a destination.

What needs copying is decided from listings alone (S3 ListObjectsV2 against each destination's
listing and the provenance metadata on its copies), so unchanged objects are never downloaded.
Work goes in chunks in key order; before each chunk the remaining time is checked, and when it
runs low the sync stops with a continuation token naming the last key whose chunk finished.
Resuming lists from just after that key, so a chain of continuations never writes an object twice.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from .config import Destination, Settings
from .destination import GcsWriter
from .errors import EventError, GcsSyncError, SourceError
from .events import ObjectRef, SyncRequest
from .plan import OK, classify
from .metadata import SourceState
from .results import FAILED, ObjectReport
from .staging import Staging
from .transfer import Copier

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
MIN_RESERVE_SECONDS = 5.0
MAX_LISTED_WOULD_COPY = 1000


@dataclass(frozen=True)
class Listed:
    key: str
    etag: str
    size: int
    last_modified: Any

    def ref(self, bucket: str) -> ObjectRef:
        return ObjectRef(bucket=bucket, key=self.key, etag=self.etag, size=self.size)

    def state(self, bucket: str) -> SourceState:
        modified = self.last_modified.replace(microsecond=0) if self.last_modified else None
        return SourceState(bucket, self.key, None, self.etag, modified, self.size)


class Budget:
    """Remaining invocation time; keeps a reserve that grows with the slowest chunk seen."""

    def __init__(self, remaining_ms: Callable[[], int] | None):
        self._remaining_ms = remaining_ms
        initial = remaining_ms() / 1000 if remaining_ms else None
        self._reserve = min(MIN_RESERVE_SECONDS, 0.2 * initial) if initial else 0.0
        self._slowest = 0.0

    def chunk_took(self, seconds: float) -> None:
        self._slowest = max(self._slowest, seconds)

    def low(self) -> bool:
        if self._remaining_ms is None:
            return False
        return self._remaining_ms() / 1000 < self._reserve + 1.5 * self._slowest


def encode_token(bucket: str, prefix: str, after: str, *, kind: str = "sync") -> str:
    fields = {"v": 1, "bucket": bucket, "prefix": prefix, "after": after}
    if kind != "sync":
        fields["kind"] = kind
    raw = json.dumps(fields, ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode("utf-8")).decode("ascii")


def decode_token(token: str, bucket: str, prefix: str, *, kind: str = "sync") -> str:
    what = "manual sync" if kind == "sync" else "audit"
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8"))
        after = data["after"]
        ok = data.get("v") == 1 and isinstance(after, str) and data.get("kind", "sync") == kind
    except (ValueError, KeyError, TypeError, UnicodeError, AttributeError):
        ok = False
    if not ok:
        raise EventError(f"{what}: the continuation token is not one {'a sync' if kind == 'sync' else 'an audit'} "
                         "returned; send the continuation from the previous result unchanged")
    if (data.get("bucket"), data.get("prefix")) != (bucket, prefix):
        raise EventError(
            f"{what}: the continuation token belongs to s3://{data.get('bucket')}/{data.get('prefix')}, "
            f"not s3://{bucket}/{prefix}; send the same bucket and prefix with it"
        )
    return after


def run(request: SyncRequest, settings: Settings, s3: Any, copier: Copier, writer: GcsWriter,
        remaining_ms: Callable[[], int] | None) -> dict:
    bucket = request.bucket or settings.default_source_bucket
    if not bucket:
        raise EventError('manual sync: no bucket given; send {"sync": {"bucket": NAME}} or set S3_BUCKET_NAME')
    if settings.source_buckets is not None and bucket not in settings.source_buckets:
        raise EventError(f"manual sync: bucket {bucket!r} is not in SOURCE_BUCKETS")
    after = decode_token(request.continuation, bucket, request.prefix) if request.continuation else ""
    budget = Budget(remaining_ms)
    summary: dict[str, Any] = {"bucket": bucket, "prefix": request.prefix, "dry_run": request.dry_run,
                               "listed": 0, "to_copy": 0}
    reports: list[ObjectReport] = []
    would_copy: list[str] = []
    chunk_size = max(1, settings.object_concurrency * 4)
    last_done = after
    stopped = False
    with Staging(settings.staging_dir) as staging:
        for page in list_pages(s3, bucket, request.prefix, after):
            summary["listed"] += len(page)
            for start in range(0, len(page), chunk_size):
                if budget.low():
                    stopped = True
                    break
                chunk = page[start:start + chunk_size]
                began = time.monotonic()
                needed = _needing_copy([i for i in chunk if settings.key_filter.allows(i.key)],
                                       bucket, settings, writer, copier.remember)
                summary["to_copy"] += len(needed)
                if request.dry_run:
                    would_copy.extend(item.key for item in needed)
                    chunk_reports = []
                else:
                    chunk_reports = copier.copy_all([item.ref(bucket) for item in needed], staging)
                    reports.extend(chunk_reports)
                budget.chunk_took(time.monotonic() - began)
                # A failure that a retry can fix (time ran out, throttling) ends this run just
                # before that key, so the continuation copies it; others are reported and passed.
                retry_from = next((item.key for item, report in zip(needed, chunk_reports)
                                   if report.outcome == FAILED and report.retryable), None)
                if retry_from is not None:
                    done_before = [item.key for item in chunk if item.key < retry_from]
                    last_done = done_before[-1] if done_before else last_done
                    stopped = True
                    break
                last_done = chunk[-1].key
            if stopped:
                break
    if stopped:
        summary["continuation"] = encode_token(bucket, request.prefix, last_done)
    summary["complete"] = not stopped
    if request.dry_run:
        summary["would_copy"] = would_copy[:MAX_LISTED_WOULD_COPY]
        if len(would_copy) > MAX_LISTED_WOULD_COPY:
            summary["would_copy_truncated"] = len(would_copy) - MAX_LISTED_WOULD_COPY
    return summary | {"reports": reports}


def list_pages(s3: Any, bucket: str, prefix: str, after: str) -> Iterator[list[Listed]]:
    params = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": PAGE_SIZE}
    if after:
        params["StartAfter"] = after
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        for page in s3.get_paginator("list_objects_v2").paginate(**params):
            yield [Listed(o["Key"], o.get("ETag", "").strip('"'), int(o.get("Size", 0)), o.get("LastModified"))
                   for o in page.get("Contents", [])]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise SourceError(f"listing s3://{bucket}/{prefix} failed ({code}); the function's role needs "
                          "s3:ListBucket on the bucket", retryable=code not in ("AccessDenied", "NoSuchBucket")) from exc
    except BotoCoreError as exc:
        raise SourceError(f"listing s3://{bucket}/{prefix} failed ({exc}); will retry", retryable=True) from exc


def _needing_copy(items: list[Listed], bucket: str, settings: Settings, writer: GcsWriter,
                  remember: Callable[[Destination, str], None]) -> list[Listed]:
    """The items some destination lacks or holds an older state of: one listing per destination.
    Names found held are remembered, so their copies look first instead of writing as new."""
    needed: set[str] = set()
    for destination in settings.destinations:
        mapped = {destination.object_name(i.key): i for i in items if destination.maps(i.key)}
        if not mapped:
            continue
        try:
            held = writer.list_held(destination, min(mapped), max(mapped))
        except GcsSyncError as exc:  # the copies will fail at this destination, each named
            log.warning("destination listing failed", extra={"fields": {
                "destination": destination.url, "error": str(exc)}})
            needed.update(i.key for i in mapped.values())
            continue
        for name, item in mapped.items():
            copy = held.get(name)
            if copy is not None:
                remember(destination, name)
            if classify(item.state(bucket), copy) != OK:  # the audit's comparison: a sync repairs its findings
                needed.add(item.key)
    return [i for i in items if i.key in needed]

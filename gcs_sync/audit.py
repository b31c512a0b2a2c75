"""The audit: compare a source prefix with every destination, write nothing.

``classify`` is the one comparison of a source object with what a destination holds under its
name; the sync uses it too ("different" = anything but ``ok``), so a sync repairs what the audit
finds. Listings decide (S3 ListObjectsV2 against each destination's listing, with the size,
CRC32C, MD5 and provenance every Cloud Storage listing returns); ``deep`` also reads each source
object whose copy looks right, proves the bytes against S3's record and compares them with the copy.
The deep read is of the state the listing saw (``IfMatch`` its ETag): an object replaced since is
not read, and the listing's verdict stands.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .config import Destination, Settings
from .errors import ChecksumMismatch, EventError, GcsSyncError
from .metadata import SourceState
from .plan import FOREIGN, MISMATCHED, MISSING, OK, STALE, classify
from .proof import check_copy

log = logging.getLogger(__name__)

EXTRA = "extra"
KINDS = (OK, MISSING, STALE, MISMATCHED, FOREIGN, EXTRA)
MAX_EXAMPLES = 100
_LAST_NAME = "\U0010ffff"  # sorts after every object name


@dataclass
class DestinationAudit:
    destination: Destination
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    examples: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None

    def add(self, kind: str, key: str) -> None:
        self.counts[kind] += 1
        if kind != OK:
            names = self.examples.setdefault(kind, [])
            if len(names) < MAX_EXAMPLES:
                names.append(key)

    @property
    def drift(self) -> bool:
        return self.error is not None or any(self.counts[k] for k in KINDS if k != OK)

    def as_dict(self) -> dict:
        data: dict[str, Any] = {"destination": self.destination.url, "counts": dict(self.counts),
                                "examples": {k: v for k, v in self.examples.items() if v}}
        if self.error:
            data["error"] = self.error
        return data


def run(bucket: str | None, prefix: str, continuation: str | None, deep: bool, settings: Settings, s3: Any,
        writer: Any, source: Any, remaining_ms: Callable[[], int] | None) -> dict:
    """Audit ``s3://bucket/prefix`` against every destination; see ``gcs_sync.audit``."""
    from .sync import Budget, decode_token, encode_token, list_pages

    bucket = bucket or settings.default_source_bucket
    if not bucket:
        raise EventError('audit: no bucket given; send {"check": {"bucket": NAME}} or set S3_BUCKET_NAME')
    if settings.source_buckets is not None and bucket not in settings.source_buckets:
        raise EventError(f"audit: bucket {bucket!r} is not in SOURCE_BUCKETS; add it there, or check another bucket")
    after = decode_token(continuation, bucket, prefix, kind="check") if continuation else ""
    audits = [DestinationAudit(d) for d in settings.destinations]
    budget = Budget(remaining_ms)
    listed, stopped = 0, False
    last_done = after
    # Where each destination's listing resumes: extras between two source keys are found too.
    listed_up_to = {a.destination.url: (a.destination.object_name(after) if after else "") for a in audits}
    for page in list_pages(s3, bucket, prefix, after):
        if budget.low():
            stopped = True
            break
        began = time.monotonic()
        wanted = [item for item in page if settings.key_filter.allows(item.key)]
        proofs = _Proofs(bucket, source) if deep else None
        for audit in audits:
            _audit_page(audit, wanted, {item.key for item in page}, bucket, prefix, listed_up_to, proofs,
                        writer, final=False)
        listed += len(wanted)
        last_done = page[-1].key
        budget.chunk_took(time.monotonic() - began)
    if not stopped:
        for audit in audits:  # copies after the last source key: extras
            _audit_page(audit, [], set(), bucket, prefix, listed_up_to, None, writer, final=True)
    result: dict[str, Any] = {
        "ok": not any(a.drift for a in audits),
        "bucket": bucket, "prefix": prefix, "listed": listed, "deep": deep,
        "destinations": [a.as_dict() for a in audits],
    }
    if stopped:
        result["continuation"] = encode_token(bucket, prefix, last_done, kind="check")
    log.info("audit summary", extra={"fields": {"bucket": bucket, "prefix": prefix, "ok": result["ok"],
                                                "counts": {a.destination.url: a.counts for a in audits}}})
    return result


def _audit_page(audit: DestinationAudit, page: list, page_keys: set[str], bucket: str, prefix: str,
                listed_up_to: dict, proofs: "_Proofs | None", writer: Any, *, final: bool) -> None:
    destination = audit.destination
    mapped = {destination.object_name(item.key): item for item in page if destination.maps(item.key)}
    start = listed_up_to[destination.url]
    end = _LAST_NAME if final else (max(mapped) if mapped else None)
    if end is None:
        return
    try:
        held = writer.list_held(destination, start or destination.prefix or "", end)
    except GcsSyncError as exc:
        audit.error = str(exc)
        return
    listed_up_to[destination.url] = end
    for name, item in mapped.items():
        kind = classify(item.state(bucket), held.get(name))
        if kind == OK and proofs is not None:
            kind = proofs.compare(item.key, item.etag, f"gs://{destination.bucket}/{name}", held[name])
        audit.add(kind, item.key)
    for name, copy in held.items():
        if name in mapped or (start and name <= start) or copy.source is None:
            continue
        if copy.source.bucket == bucket and copy.source.key.startswith(prefix) and copy.source.key not in page_keys:
            audit.add(EXTRA, copy.source.key)  # a gcs-sync copy whose source object is gone


class _Proofs:
    """``deep``: each source object of a page read once (whatever the number of destinations),
    proven against S3's record, and compared with each copy."""

    def __init__(self, bucket: str, source: Any):
        self._bucket, self._source = bucket, source
        self._readings: dict[str, Any] = {}

    def compare(self, key: str, etag: str, where: str, held: HeldObject) -> str:
        """``etag``: the listed state's; the read is pinned to it."""
        if key not in self._readings:
            self._readings[key] = self._read(key, etag)
        reading = self._readings[key]
        if isinstance(reading, GcsSyncError):
            return MISMATCHED if isinstance(reading, ChecksumMismatch) else OK
        try:
            check_copy(where, size=held.size, crc32c=held.crc32c, md5=held.md5, reading=reading)
        except ChecksumMismatch:
            return MISMATCHED
        return OK

    def _read(self, key: str, etag: str) -> Any:
        try:
            obj, body = self._source.open(self._bucket, key, etag=etag or None)
            try:
                return self._source.read_into(obj, _Discard(), body)
            finally:
                body.close()
        except GcsSyncError as exc:  # gone or replaced since the listing, or unreadable: the listing's verdict stands
            log.warning("audit could not read the source", extra={"fields": {
                "source": f"s3://{self._bucket}/{key}", "error": str(exc)}})
            return exc


class _Discard:
    """A sink for bytes that are only proven, never kept."""

    def write(self, data: bytes) -> int:
        return len(data)

"""S3 reads pinned to a version or ETag; botocore errors become ours here and nowhere else."""

from __future__ import annotations

import io
import logging
import random
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any, BinaryIO, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from .deadline import Deadline
from .errors import SourceChanged, SourceError, SourceGone, StagingError
from .metadata import HEADER_FIELDS, UNMAPPED_FIELDS, Digests, ObjectLock, SourceState
from .proof import MD5, Plan, Reading, S3Record, SourceCorrupt, choose

READ_CHUNK = 1024 * 1024
READ_ATTEMPTS = 4
CONNECT_TIMEOUT = 3.0  # botocore takes it per client, so it is fixed (and inside the deadline's reserve)
READ_TIMEOUT = 30.0  # per socket read; shortened to the time left (see bind_deadline)
RETRY_FLOOR_SECONDS = 5.0  # botocore's own retries stop when less than this is left: its sleeps can reach 4-9 s
log = logging.getLogger(__name__)
_GONE = {"NoSuchKey", "NoSuchVersion", "404", "NotFound"}
_CHANGED = {"PreconditionFailed", "412"}
_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
_RETRYABLE = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
    "InternalError", "ServiceUnavailable", "503", "500", "502", "504", "RequestLimitExceeded",
}


@dataclass(frozen=True)
class SourceObject:
    """The state of one S3 object as a HEAD or GET saw it: what every later read is pinned to."""

    bucket: str
    key: str
    version_id: str | None
    etag: str
    size: int
    last_modified: datetime | None
    headers: dict[str, str] = field(default_factory=dict)  # Blob attribute -> value
    user_metadata: dict[str, str] = field(default_factory=dict)
    unmapped: tuple[str, ...] = ()
    record: S3Record | None = None  # S3's own record of the bytes: ETag and additional checksums
    storage_class: str | None = None  # S3's (None: STANDARD), for storage_class=source
    lock: ObjectLock | None = None  # S3 Object Lock of this version, for holds=source

    @property
    def plan(self) -> Plan:
        """How this object's bytes are proven (see ``proof.choose``)."""
        return choose(self.record or S3Record(etag=self.etag))

    @property
    def md5_hex(self) -> str | None:
        """The bytes' MD5 when S3's record is one (a single-part, unencrypted upload's ETag)."""
        plan = self.plan
        return plan.expected if plan.proof == MD5 else None

    @property
    def url(self) -> str:
        version = f" (version {self.version_id})" if self.version_id else ""
        return f"s3://{self.bucket}/{self.key}{version}"

    def state(self, sequencer: str | None = None) -> SourceState:
        return SourceState(
            bucket=self.bucket,
            key=self.key,
            version_id=self.version_id,
            etag=self.etag,
            last_modified=self.last_modified,
            size=self.size,
            sequencer=sequencer,
        )


class Source(Protocol):
    def head(self, bucket: str, key: str, version_id: str | None = None) -> SourceObject: ...

    def open(self, bucket: str, key: str, version_id: str | None = None, *,
             etag: str | None = None) -> tuple[SourceObject, Any]: ...

    def read_into(self, obj: SourceObject, sink: BinaryIO, body: Any = None) -> Reading: ...


class TimeRanOut(BotoCoreError):
    """Raised from botocore's hooks instead of sending a request the invocation has no time for."""

    fmt = "the invocation's time ran out before S3 answered; raise the function's timeout"


def bind_deadline(client: Any, deadline: Deadline) -> None:
    """Bound every call of an S3 client by the invocation's deadline, through botocore's events.

    - before each attempt: the read timeout becomes the time left (capped at READ_TIMEOUT), and an
      attempt with no time left is not sent (``TimeRanOut``, retryable like any BotoCoreError);
    - botocore's retries (throttling, 5xx, resets) go on only while RETRY_FLOOR_SECONDS are left,
      so its backoff sleeps never run past the deadline; the error then surfaces at once.
    """

    def before_send(request: Any, **_: Any) -> None:
        context = getattr(request, "context", None)
        if context is not None and context.get("checksum"):
            # The checksums S3 returns are checked by ``proof.Reading`` as the bytes stream;
            # botocore would compute the same again, and only when a read hits end of stream.
            context["checksum"]["response_algorithms"] = []
        left = deadline.remaining()
        if left is None:
            return
        if left <= 0:
            raise TimeRanOut()
        context = getattr(request, "context", None)
        if context is not None:
            context["read_timeout"] = max(0.05, min(READ_TIMEOUT, left))

    def needs_retry(**_: Any) -> bool | None:
        left = deadline.remaining()
        return False if left is not None and left < RETRY_FLOOR_SECONDS else None  # None: botocore decides

    client.meta.events.register("before-send.s3", before_send, unique_id="gcs-sync-deadline-send")
    client.meta.events.register_first("needs-retry.s3", needs_retry, unique_id="gcs-sync-deadline-retry")


class S3Source:
    """``parts`` > 1: objects larger than ``part_size`` are read as that many ranged GETs of
    ``part_size`` bytes in flight (fed to the sink in order); otherwise one streamed GET."""

    def __init__(self, client: Any, deadline: Deadline | None = None, *, parts: int = 1,
                 part_size: int = 8 * 1024 * 1024):
        self._s3 = client
        self._deadline = deadline or Deadline()
        self._parts, self._part_size = parts, part_size
        self._pin_parts = True  # False once the store is seen comparing IfMatch with each part's ETag
        bind_deadline(client, self._deadline)

    def head(self, bucket: str, key: str, version_id: str | None = None) -> SourceObject:
        return _source_object(bucket, key, self._ask("HEAD", self._s3.head_object, bucket, key, version_id))

    def open(self, bucket: str, key: str, version_id: str | None = None, *,
             etag: str | None = None) -> tuple[SourceObject, Any]:
        """One GET: the object's state and its body, not read yet (the caller reads or closes it).

        The state and the bytes come from the same response, so they always belong together;
        a resumed read is then pinned to that state's version / ETag. ``etag``: only that state
        (``IfMatch``); another raises ``SourceChanged``.
        """
        response = self._ask("GET", self._s3.get_object, bucket, key, version_id, etag)
        return _source_object(bucket, key, response), response["Body"]

    def _ask(self, operation: str, call: Any, bucket: str, key: str, version_id: str | None,
             etag: str | None = None) -> dict:
        params = {"Bucket": bucket, "Key": key, "ChecksumMode": "ENABLED"}  # S3's record of the bytes
        if version_id:
            params["VersionId"] = version_id
        if etag:
            params["IfMatch"] = f'"{etag}"'
        where = _where(bucket, key, version_id)
        try:
            return call(**params)
        except ClientError as exc:
            if _code(exc) in _GONE:
                self._raise_if_bucket_missing(bucket, where)
            raise _translate(exc, where, operation) from exc
        except BotoCoreError as exc:
            raise SourceError(f"{where}: could not reach S3 ({exc}); will retry", retryable=True) from exc

    def read_into(self, obj: SourceObject, sink: BinaryIO, body: Any = None) -> Reading:
        """Stream the pinned state into ``sink``; return its digests after checking its size and
        S3's own record of its bytes (``proof``), computed as they stream.

        ``body``: the unread body of the GET ``obj`` came from (see ``open``); without it, a GET
        pinned to the state. A read cut off midway (reset, timeout, throttling) resumes from the
        byte reached, pinned to the same version / ETag, up to READ_ATTEMPTS times with jittered
        backoff.
        """
        plan = obj.plan
        digests = Reading(plan, self.part_sizes(obj, plan.parts) if plan.per_part else None)
        if self._parts > 1 and obj.size > self._part_size:
            if body is not None:
                body.close()  # the parts are asked for by range
            self._read_parts(obj, sink, digests)
        else:
            self._retrying(obj, digests, lambda attempt: self._read_from(
                obj, sink, digests, body if attempt == 1 else None))
        if digests.size != obj.size:
            raise SourceError(
                f"{obj.url}: read {digests.size} bytes, expected {obj.size}; will retry", retryable=True
            )
        digests.check(obj.url)
        return digests

    def part_sizes(self, obj: SourceObject, parts: int) -> list[int]:
        """The sizes of a multipart object's parts (one part: the object's size), from a HEAD of
        each part pinned to the state: its version, else its ETag (``IfMatch``).

        S3 answers a part's HEAD with the object's ETag; a store that compares ``IfMatch`` with the
        part's own ETag (moto) refuses every part while the object itself still matches: the
        parts are then asked unpinned (from then on, by this reader), and a changed object fails
        its proof and is read again.
        """
        if parts <= 1:
            return [obj.size] if parts == 1 else []
        try:
            sizes = self._part_heads(obj, parts, pinned=obj.version_id is None and self._pin_parts)
        except SourceChanged:
            self._ask("HEAD", self._s3.head_object, obj.bucket, obj.key, obj.version_id, obj.etag)  # raises if changed
            log.info("part HEADs unpinned: the store compares IfMatch with each part's ETag", extra={"fields": {
                "source": obj.url}})
            self._pin_parts = False
            sizes = self._part_heads(obj, parts, pinned=False)
        if sum(sizes) != obj.size:
            raise SourceCorrupt(f"{obj.url}: its {parts} parts add up to {sum(sizes)} bytes, not {obj.size}; "
                                "will retry")
        return sizes

    def _part_heads(self, obj: SourceObject, parts: int, *, pinned: bool) -> list[int]:
        def size_of(number: int) -> int:
            params = {"Bucket": obj.bucket, "Key": obj.key, "PartNumber": number}
            if obj.version_id:
                params["VersionId"] = obj.version_id
            elif pinned:
                params["IfMatch"] = f'"{obj.etag}"'
            try:
                response = self._s3.head_object(**params)
            except ClientError as exc:
                raise _translate(exc, obj.url, f"HEAD of part {number}") from exc
            except BotoCoreError as exc:
                raise SourceError(f"{obj.url}: could not reach S3 ({exc}); will retry", retryable=True) from exc
            count = response.get("PartsCount")
            if count is not None and int(count) != parts:
                raise SourceCorrupt(f"{obj.url}: S3 reports {count} parts, its record names {parts}; will retry")
            return int(response.get("ContentLength", 0))

        with ThreadPoolExecutor(min(8, parts), thread_name_prefix="gcs-sync-s3-part-head") as pool:
            return list(pool.map(size_of, range(1, parts + 1)))

    def read_range(self, obj: SourceObject, sink: Any, digests: Digests, start: int, end: int) -> None:
        """Bytes ``start``..``end`` (exclusive) of the pinned state into ``sink``, retried like any read."""
        self._retrying(obj, digests, lambda attempt: self._read_from(obj, sink, digests, None, start, end))

    def _retrying(self, obj: SourceObject, digests: Digests, read: Any) -> None:
        """``read(attempt)`` until it succeeds: a retryable failure is tried again (it resumes from
        what ``digests`` counted) up to READ_ATTEMPTS times, with jittered backoff."""
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                read(attempt)
                return
            except SourceError as exc:
                if not exc.retryable or attempt == READ_ATTEMPTS or self._deadline.expired():
                    raise
                log.info("source read resumed", extra={"fields": {
                    "source": obj.url, "offset": digests.size, "attempt": attempt, "error": str(exc)}})
                time.sleep(random.uniform(0, min(4.0, 0.25 * 2 ** attempt)))

    def _read_parts(self, obj: SourceObject, sink: BinaryIO, digests: Digests) -> None:
        """Ranged GETs, ``parts`` in flight, each pinned and retried on its own; written in order.

        Memory: up to ``parts`` + 1 parts of ``part_size`` bytes.
        """
        starts = iter(range(0, obj.size, self._part_size))
        with ThreadPoolExecutor(self._parts, thread_name_prefix="gcs-sync-s3-part") as pool:
            in_flight = deque(pool.submit(self._part, obj, start) for start in islice(starts, self._parts))
            try:
                while in_flight:
                    data = in_flight.popleft().result()
                    following = next(starts, None)
                    if following is not None:
                        in_flight.append(pool.submit(self._part, obj, following))
                    _write(obj, sink, data)
                    digests.update(data)
            finally:
                for future in in_flight:
                    future.cancel()

    def _part(self, obj: SourceObject, start: int) -> bytes:
        end = min(start + self._part_size, obj.size)
        # Counted only (the whole read is digested in order); a resumed part appends where it stopped.
        counted, buffer = Digests(md5=False, crc=False), io.BytesIO()
        self._retrying(obj, counted, lambda attempt: self._read_from(obj, buffer, counted, None, start, end))
        data = buffer.getvalue()
        if len(data) != end - start:
            raise SourceError(f"{obj.url}: read {len(data)} bytes of the range {start}-{end - 1}; will retry",
                              retryable=True)
        return data

    def _read_from(self, obj: SourceObject, sink: Any, digests: Digests, body: Any = None,
                   start: int = 0, end: int | None = None) -> None:
        """Read ``[start + what digests counted, end)`` of the pinned state into ``sink``."""
        end = obj.size if end is None else end
        params = {"Bucket": obj.bucket, "Key": obj.key, "IfMatch": f'"{obj.etag}"'}
        if obj.version_id:
            params["VersionId"] = obj.version_id
        offset = start + digests.size
        if offset >= end and (digests.size or end > start):
            return
        if offset or end < obj.size:
            params["Range"] = f"bytes={offset}-{end - 1}"
        try:
            if body is None:
                body = self._s3.get_object(**params)["Body"]
            try:
                for chunk in body.iter_chunks(READ_CHUNK):
                    _shorten_socket_timeout(body, self._deadline.remaining())
                    if self._deadline.expired():
                        raise SourceError(
                            f"{obj.url}: the invocation's time ran out after reading {digests.size} of "
                            f"{obj.size} bytes; raise the function's timeout",
                            retryable=True,
                        )
                    _write(obj, sink, chunk)
                    digests.update(chunk)
            finally:
                body.close()
        except ClientError as exc:
            raise _translate(exc, obj.url, "GET") from exc
        except (BotoCoreError, ConnectionError, OSError) as exc:
            raise SourceError(f"{obj.url}: reading from S3 failed ({type(exc).__name__}); will retry",
                              retryable=True) from exc

    def _raise_if_bucket_missing(self, bucket: str, where: str) -> None:
        """A 404 does not say whether the key or the bucket is missing: ask once."""
        try:
            self._s3.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if _code(exc) in {"404", "NoSuchBucket", "NotFound"}:
                raise SourceError(
                    f"{where}: source bucket {bucket!r} does not exist (check the event source "
                    "or SOURCE_BUCKETS)",
                    retryable=False,
                ) from exc
        except BotoCoreError:
            pass


def _write(obj: SourceObject, sink: Any, data: bytes) -> None:
    try:
        sink.write(data)
    except OSError as exc:  # the staging disk, not S3
        raise StagingError(f"{obj.url}: cannot write the staged copy ({exc.strerror}); "
                           "raise the function's ephemeral storage") from exc


def _shorten_socket_timeout(body: Any, left: float | None) -> None:
    """A body is read with the socket timeout set when its GET was sent; keep it inside the deadline.

    Only when less than READ_TIMEOUT is left: a read that then stalls fails when time runs out
    instead of up to READ_TIMEOUT later. Reaches the socket through urllib3's response; a botocore
    or urllib3 that no longer exposes it leaves the per-request timeout in place.
    """
    if left is None or left >= READ_TIMEOUT:
        return
    sock = getattr(getattr(getattr(body, "_raw_stream", None), "connection", None), "sock", None)
    if sock is not None:
        try:
            sock.settimeout(max(0.05, left))
        except OSError:
            pass


def _source_object(bucket: str, key: str, response: dict) -> SourceObject:
    etag = str(response.get("ETag", "")).strip('"')
    headers = {attr: response[field] for field, attr in HEADER_FIELDS if response.get(field)}
    return SourceObject(
        bucket=bucket,
        key=key,
        version_id=response.get("VersionId") if response.get("VersionId") not in (None, "null") else None,
        etag=etag,
        size=int(response.get("ContentLength", 0)),
        last_modified=response.get("LastModified"),
        headers=headers,
        user_metadata=dict(response.get("Metadata") or {}),
        unmapped=tuple(f for f in UNMAPPED_FIELDS if response.get(f)),
        record=S3Record.from_response(response, bucket),
        storage_class=response.get("StorageClass") or None,
        lock=ObjectLock.from_response(response),
    )


def _where(bucket: str, key: str, version_id: str | None) -> str:
    return f"s3://{bucket}/{key}" + (f" (version {version_id})" if version_id else "")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _translate(exc: ClientError, where: str, operation: str) -> Exception:
    code = _code(exc)
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in _GONE:
        return SourceGone(
            f"{where}: not found: deleted before it could be read, or no object has this key (keys in "
            "S3 events are URL-encoded: a space is '+', a literal '+' is '%2B'; this is the decoded key)")
    if code in _CHANGED:
        return SourceChanged(f"{where}: changed since it was looked up; reading the latest state")
    if code in _DENIED:
        return SourceError(
            f"{where}: S3 denied {operation} ({code}). The function's role needs s3:GetObject "
            "(and s3:GetObjectVersion for versioned buckets) on this bucket, and s3:ListBucket so "
            "that a deleted object is told apart from a forbidden one.",
            retryable=False,
        )
    if code == "NoSuchBucket":
        return SourceError(f"{where}: source bucket does not exist", retryable=False)
    if code == "InvalidObjectState":
        return SourceError(
            f"{where}: the object is archived (Glacier / Deep Archive); restore it, then copy again",
            retryable=False,
        )
    retryable = code in _RETRYABLE or (isinstance(status, int) and status >= 500)
    return SourceError(f"{where}: S3 {operation} failed ({code or status})", retryable=retryable)

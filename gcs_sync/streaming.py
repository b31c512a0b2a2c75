"""The streaming path: objects too large to stage (or over STREAM_THRESHOLD_MB).

The source is read once, in chunks, and each chunk is fed to a resumable upload at every
destination while the next chunk is read. Memory is bounded: one chunk being read plus at most
``QUEUE_DEPTH`` chunks waiting per destination. The read is pinned like the staged one; the
final chunk is held back until the whole read is verified (size, and MD5 when the ETag is one),
so a bad read never finalizes an object; each finished upload is then checked against the
source's CRC32C and MD5. Uploads are conditional on the generation seen, as in the staged path.
"""

from __future__ import annotations

import json
import logging
import re
import queue
import random
import threading
import time
from typing import Any, Callable
from urllib.parse import quote

from .config import Destination
from .deadline import MIN_CALL_SECONDS, Deadline
from .errors import DestinationError, GcsSyncError, PreconditionFailed
from .gcs_errors import RateLimited, SessionLost, classify
from .held import HeldObject
from .metadata import SourceState, copy_metadata, policy_resource
from .proof import CRC32C, MD5, b64_from_hex
from .source import SourceObject

log = logging.getLogger(__name__)
QUEUE_DEPTH = 2
ATTEMPTS = 4
CONNECT_TIMEOUT = 10.0
REQUEST_TIMEOUT = 120.0  # one chunk's PUT; shortened to what is left of the invocation
_DONE = object()

CANCEL_SECONDS = 1.0  # the one cancel request sent after the deadline


class ChunkWindow:
    """The stream a resumable upload reads from: the current chunk at its offset in the object."""

    def __init__(self) -> None:
        self._start = 0
        self._data = b""
        self._pos = 0

    def put(self, offset: int, data: bytes) -> None:
        self._start, self._data, self._pos = offset, data, offset

    def read(self, size: int = -1) -> bytes:
        begin = self._pos - self._start
        end = len(self._data) if size is None or size < 0 else begin + size
        out = self._data[begin:end]
        self._pos += len(out)
        return out

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0 or not self._start <= pos <= self._start + len(self._data):
            raise ValueError("a resumable upload may only rewind within the chunk being sent")
        self._pos = pos
        return pos


class _TimeRanOut(Exception):
    pass


class DeadlineTransport:
    """The session as google-resumable-media sees it: every request timed from the deadline.

    The library passes fixed timeouts (60 s for a status query); here each request gets what is
    left of the invocation instead, and none is sent once it is over.
    """

    def __init__(self, session: Any, deadline: Deadline):
        self._session, self._deadline = session, deadline
        self.final_hash: str | None = None  # X-Goog-Hash for the request that finishes the upload

    def request(self, method: str, url: str, data: Any = None, headers: Any = None, timeout: Any = None,
                **kwargs: Any) -> Any:
        if self._deadline.expired():
            raise _TimeRanOut()
        if self.final_hash and method == "PUT" and _finishes(headers):
            # Cloud Storage checks the hashes sent with the last chunk and refuses to finalize
            # bytes that differ (the bytes read were proven against S3's record just before).
            headers = {**headers, "X-Goog-Hash": self.final_hash}
        read = self._deadline.timeout(REQUEST_TIMEOUT)
        return self._session.request(method, url, data=data, headers=headers,
                                     timeout=(min(CONNECT_TIMEOUT, read), read), **kwargs)


def _finishes(headers: Any) -> bool:
    """Whether a chunk PUT carries the object's last byte (``Content-Range: bytes A-B/TOTAL``)."""
    match = _CONTENT_RANGE.match((headers or {}).get("content-range", "") or "")
    if not match:
        return False
    end, total = match["end"], match["total"]
    return total != "*" and (end is None and total == "0" or end is not None and int(end) + 1 == int(total))


def _message(response: Any) -> str:
    """Cloud Storage's error message in a JSON error body (else the body's text)."""
    try:
        body = json.loads(getattr(response, "content", b"") or b"{}")
        return str(body.get("error", {}).get("message") or "")
    except (ValueError, AttributeError):
        return str(getattr(response, "text", "") or "")[:300]


_CONTENT_RANGE = re.compile(r"^bytes (?:(?P<start>\d+)-(?P<end>\d+)|\*)/(?P<total>\d+|\*)$")


class DestinationStream:
    """One resumable upload, fed chunk by chunk."""

    def __init__(self, session: Any, endpoint: str, destination: Destination, name: str,
                 obj: SourceObject, state: SourceState, if_generation_match: int,
                 chunk_size: int, deadline: Deadline):
        from google import resumable_media
        from google.resumable_media.requests import ResumableUpload

        self.destination, self.name = destination, name
        self.where = f"gs://{destination.bucket}/{name}"
        self._session, self._deadline, self._window = session, deadline, ChunkWindow()
        self._transport = DeadlineTransport(session, deadline)
        url = (f"{endpoint}/upload/storage/v1/b/{quote(destination.bucket, safe='')}/o"
               f"?uploadType=resumable&ifGenerationMatch={if_generation_match}")
        if destination.kms_key:  # the JSON API's query parameter, as python-storage sends it
            url += f"&kmsKeyName={quote(destination.kms_key, safe='')}"
        self._upload = ResumableUpload(url, chunk_size)
        # No retries inside the library: its budget counts only sleeps and its status query
        # waits 60 s. _retrying() does them, each attempt timed from the deadline.
        self._upload._retry_strategy = resumable_media.RetryStrategy(max_retries=0)
        # The session's initiating resource: content headers, metadata and what the destination's
        # options ask of the copy (class, custom time, hold, retention), all kept at finalization.
        self._metadata = {"name": name, "metadata": copy_metadata(obj.user_metadata, state, destination),
                          **{_JSON_FIELDS[attr]: value for attr, value in obj.headers.items()},
                          **policy_resource(destination, storage_class=obj.storage_class,
                                            last_modified=obj.last_modified, lock=obj.lock)}
        # S3's own record, where Cloud Storage can check the same value: it then refuses to
        # finalize bytes that differ from what S3 recorded.
        plan = obj.plan
        if plan.proof == MD5:
            self._metadata["md5Hash"] = b64_from_hex(plan.expected)
        elif plan.proof == CRC32C and not plan.per_part:
            self._metadata["crc32c"] = plan.expected
        self._content_type = obj.headers.get("content_type") or "application/octet-stream"
        self._size = obj.size
        self.result: dict | None = None
        self.completed = False  # finished by a request whose answer was lost (see _recover)

    def open(self) -> None:
        self._retrying(lambda: self._upload.initiate(
            self._transport, self._window, self._metadata, self._content_type,
            total_bytes=self._size, stream_final=False), "start the upload")

    def send(self, offset: int, chunk: bytes) -> None:
        self._window.put(offset, chunk)
        end = offset + len(chunk)
        while self._window.tell() < end or (self._size == 0 and not (self._upload.finished or self.completed)):
            response = self._retrying(lambda: self._upload.transmit_next_chunk(self._transport), "upload")
            if self._upload.finished or self.completed:
                self.result = json.loads(response.content or b"{}")
                return

    def _retrying(self, fn: Callable[[], Any], action: str) -> Any:
        """``fn`` with up to ATTEMPTS tries on transient failures (a throttled finish: until the
        deadline), never sleeping past the deadline.

        Before a retry the upload asks the server how far it got and rewinds within the chunk;
        never after a refusal (a 412 or 403 is final, not a lost connection).
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                if self._upload.resumable_url and self._upload.invalid:
                    finished = self._call(self._recover, "resume the upload")
                    if finished is not None:
                        return finished
                return self._call(fn, action)
            except DestinationError as exc:
                # Throttled (429) once the whole object is read: retried until the deadline, so a hot
                # name's finish does not cost the whole object; any other failure ATTEMPTS times.
                throttled_finish = isinstance(exc, RateLimited) and self._transport.final_hash is not None
                if not exc.retryable or isinstance(exc, (PreconditionFailed, SessionLost)) or (
                        attempt >= ATTEMPTS and not throttled_finish):
                    raise
                if self._upload.resumable_url and not self._upload.invalid and not self._upload.finished:
                    self._upload._make_invalid()  # a transport error leaves the stream mid-chunk
                delay = random.uniform(0, min(4.0, 0.5 * 2 ** min(attempt, 8)))
                left = self._deadline.remaining()
                if left is not None and left < delay + MIN_CALL_SECONDS:
                    raise
                if left is None and attempt >= ATTEMPTS * 4:
                    raise  # no deadline (a terminal): a bounded number of tries
                time.sleep(delay)

    def _recover(self) -> Any:
        """Ask how far the server got; its whole answer when the lost request had finished the upload."""
        from google.resumable_media import InvalidResponse

        try:
            self._upload.recover(self._transport)
            return None
        except InvalidResponse as exc:
            if getattr(exc.response, "status_code", 0) in (200, 201):
                log.info("resumable upload had finished; its answer was lost", extra={"fields": {
                    "object": self.where}})
                self.completed = True
                return exc.response
            raise

    def finish_with(self, crc32c_b64: str | None, md5_b64: str | None) -> None:
        """The whole object's hashes, known once the read is proven: sent with the last chunk."""
        hashes = [f"crc32c={crc32c_b64}"] if crc32c_b64 else []
        if md5_b64:
            hashes.append(f"md5={md5_b64}")
        self._transport.final_hash = ",".join(hashes) or None

    def written(self) -> HeldObject:
        """What Cloud Storage holds after the upload finished (its answer to the last request)."""
        result = self.result or {}
        return HeldObject(generation=int(result.get("generation", 0)),
                          source=SourceState.from_metadata(result.get("metadata")),
                          size=int(result.get("size", -1)), crc32c=result.get("crc32c"), md5=result.get("md5Hash"))

    def cancel(self, force: bool = False) -> None:
        """Cancel the unfinished session (best effort: an abandoned session expires by itself).
        ``force``: even when the invocation's deadline has passed, with one short request."""
        url = self._upload.resumable_url
        if not url or self._upload.finished or self.completed:
            return
        try:
            if not self._deadline.expired():
                self._transport.request("DELETE", url)
            elif force:
                self._session.request("DELETE", url, timeout=(CANCEL_SECONDS, CANCEL_SECONDS))
        except Exception:  # noqa: BLE001 - an abandoned session expires by itself
            pass

    def _call(self, fn: Callable[[], Any], action: str) -> Any:
        from google.resumable_media import InvalidResponse

        try:
            return fn()
        except InvalidResponse as exc:
            status = getattr(exc.response, "status_code", 0)
            raise classify(status, _message(exc.response), bucket=self.destination.bucket, url=self.destination.url,
                           name=self.name, action=action, session=bool(self._upload.resumable_url)) from exc
        except _TimeRanOut as exc:
            raise DestinationError(f"{self.where}: the invocation's time ran out before it could {action}; "
                                   "raise the function's timeout", retryable=True) from exc
        except GcsSyncError:
            raise
        except Exception as exc:  # noqa: BLE001 - transport errors: resets, timeouts
            raise DestinationError(f"{self.where}: could not {action} ({type(exc).__name__}); will retry",
                                   retryable=True) from exc


_JSON_FIELDS = {
    "content_type": "contentType",
    "content_encoding": "contentEncoding",
    "content_disposition": "contentDisposition",
    "content_language": "contentLanguage",
    "cache_control": "cacheControl",
}


class ChunkSink:
    """Where the source read writes: hands out whole chunks, always holding the latest one back.

    The held-back chunk is the object's last: it is sent only after the read is verified.
    """

    def __init__(self, chunk_size: int, emit: Callable[[int, bytes], None]):
        self._chunk_size, self._emit = chunk_size, emit
        self._pieces: list[bytes] = []  # joined once per chunk: no per-write copying
        self._held = 0
        self._offset = 0

    def write(self, data: bytes) -> int:
        self._pieces.append(bytes(data))
        self._held += len(data)
        if self._held > self._chunk_size:
            joined = b"".join(self._pieces)
            cut = 0
            while len(joined) - cut > self._chunk_size:
                self._emit(self._offset, joined[cut:cut + self._chunk_size])
                self._offset += self._chunk_size
                cut += self._chunk_size
            rest = joined[cut:]
            self._pieces, self._held = [rest], len(rest)
        return len(data)

    def last(self) -> tuple[int, bytes]:
        return self._offset, b"".join(self._pieces)


class Feeder:
    """A worker per destination, fed through a bounded queue so reading overlaps uploading."""

    def __init__(self, stream: DestinationStream):
        self.stream = stream
        self.error: GcsSyncError | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
        self.finished = threading.Event()

    def run(self) -> None:
        try:
            self.stream.open()
            while True:
                item = self._queue.get()
                if item is _DONE:
                    return
                self.stream.send(*item)
        except Exception as exc:  # noqa: BLE001 - recorded; the reader must never block on us
            self.error = exc if isinstance(exc, GcsSyncError) else DestinationError(
                f"{self.stream.where}: upload failed: {type(exc).__name__}: {exc}", retryable=True)
            self._drain()
        finally:
            self.finished.set()

    def put(self, offset: int, chunk: bytes) -> None:
        if self.error is None and not self.finished.is_set():
            self._queue.put((offset, chunk))

    def close(self) -> None:
        if not self.finished.is_set():
            self._queue.put(_DONE)

    def _drain(self) -> None:
        """After a failure keep taking chunks so the reader never blocks on this destination."""
        while True:
            if self._queue.get() is _DONE:
                return

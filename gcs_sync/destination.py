"""Cloud Storage reads and writes with preconditions and metadata.

google-cloud-storage / google-auth / transport errors become ours here and nowhere else.
"""

from __future__ import annotations

import io
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud.storage.blob import Blob
from google.cloud.storage.retry import DEFAULT_RETRY

from .config import Destination
from .deadline import Deadline
from .errors import ChecksumMismatch, CredentialsError, DestinationError, GcsSyncError, PreconditionFailed
from .gcs_errors import ObjectHeld, bucket_missing, bucket_not_found, classify
from .metadata import POLICY, Digests, SourceState, copy_metadata, parse_rfc3339, policy_resource
from .held import HeldObject
from .source import SourceObject
from .streaming import DestinationStream

log = logging.getLogger(__name__)

# Each HTTP request: connect within CONNECT seconds, each read within READ seconds (shortened
# to the invocation's remaining time); all retries of one call end by the deadline too.
CONNECT = 10.0
READ = 120.0
UPLOAD_CHUNK = 8 * 1024 * 1024
DISCARD_ATTEMPTS = 4


class Writer(Protocol):
    """Everything the copy asks of Cloud Storage."""

    def held(self, destination: Destination, name: str) -> HeldObject | None: ...

    def upload(
        self, destination: Destination, name: str, content: bytes | str, obj: SourceObject,
        state: SourceState, digests: Digests, if_generation_match: int,
    ) -> HeldObject: ...

    def open_stream(self, destination: Destination, name: str, obj: SourceObject, state: SourceState,
                    if_generation_match: int, chunk_size: int) -> Any: ...

    def rewrite(self, source: tuple[Destination, str, int], destination: Destination, name: str,
                obj: SourceObject, state: SourceState, if_generation_match: int) -> HeldObject: ...

    def delete(self, destination: Destination, name: str, generation: int) -> None: ...

    def release_hold(self, destination: Destination, name: str) -> int | None: ...

    def discard(self, destination: Destination, name: str, generation: int) -> bool: ...

    def list_held(self, destination: Destination, first: str, last: str) -> dict[str, HeldObject]: ...


GCS_ENDPOINT = "https://storage.googleapis.com"


def settle_environment(session: Any, endpoint: str) -> None:
    """Read once what a requests session otherwise reads from the environment on every request.

    With ``trust_env`` (requests' default) each request scans the whole environment for proxy
    variables two or three times and looks for a ``.netrc``: ~0.3 ms of CPU per request with
    Lambda's ~40 variables, ~1 ms with 100, more than a small object's own work. A function's
    environment does not change while its container lives, and every request of this session
    goes to ``endpoint`` (the JSON API and uploads share its host; tokens are fetched through
    a session of their own), so the same answers are settled here, once, as requests would give
    them: the proxies for the endpoint (``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY``, none
    when ``NO_PROXY`` covers its host; before the session's own, as requests has it) and the CA
    bundle (``REQUESTS_CA_BUNDLE``, else ``CURL_CA_BUNDLE``). A ``.netrc`` is no longer read: its
    Basic credentials would replace the bearer token of every request."""
    if session is None or getattr(session, "trust_env", False) is not True:
        return
    # requests lets the environment's proxies win over the session's own
    session.proxies = {**session.proxies, **requests.utils.get_environ_proxies(endpoint)}
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:  # requests lets it win over the session's own setting
        session.verify = bundle
    session.trust_env = False


class GcsWriter:
    def __init__(self, client: Any, deadline: Deadline | None = None, *, session: Any = None,
                 endpoint: str | None = None):
        self._client = client
        self._deadline = deadline or Deadline()
        self.session = session  # the authorized HTTP session, for the streaming path's uploads
        self.endpoint = endpoint or GCS_ENDPOINT

    def _timeout(self) -> tuple[float, float]:
        return (CONNECT, self._deadline.timeout(READ))

    def _retry(self) -> Any:
        return DEFAULT_RETRY.with_timeout(self._deadline.timeout(READ))

    def _write_retry(self) -> Any:
        """The client's retries for writes, less 429: a throttled name is looked at again before it is
        written again (``transfer.Copier.apply``), never retried blind."""
        return self._retry().with_predicate(_retry_unless_throttled)

    def held(self, destination: Destination, name: str) -> HeldObject | None:
        blob = self._client.bucket(destination.bucket).blob(name)
        try:
            blob.reload(timeout=self._timeout(), retry=self._retry())
        except gexc.NotFound as exc:
            if _bucket_missing(exc):
                raise _bucket_not_found(destination) from exc
            return None
        except Exception as exc:  # noqa: BLE001 - translated, never swallowed
            raise translate(exc, destination, name, "read") from exc
        return _held(blob)

    def upload(
        self, destination: Destination, name: str, content: bytes | str, obj: SourceObject,
        state: SourceState, digests: Digests, if_generation_match: int,
    ) -> HeldObject:
        """Upload the staged object (``content``: its bytes, or the path of its staged file); what
        Cloud Storage then holds (checked by the caller).

        CRC32C (and MD5 when S3's record is one) are sent with the upload, so Cloud Storage itself
        refuses bytes that differ. A lost upload session (404 / 410 that is not a missing bucket)
        raises ``SessionLost``: ``transfer.Copier.apply`` writes the staged object again.
        """
        released = False
        for _ in range(2):  # a second time only after releasing a hold this function set
            # A bounded chunk: otherwise the client holds up to 100 MiB per upload in memory.
            blob = _PolicyBlob(name, self._client.bucket(destination.bucket), chunk_size=UPLOAD_CHUNK,
                               kms_key_name=destination.kms_key)
            for attr, value in obj.headers.items():
                setattr(blob, attr, value)
            blob.metadata = copy_metadata(obj.user_metadata, state, destination)
            _ask_policy(blob, destination, obj)
            blob.crc32c = digests.crc32c_b64
            if digests.md5_b64:
                blob.md5_hash = digests.md5_b64
            try:
                options = dict(content_type=obj.headers.get("content_type"), if_generation_match=if_generation_match,
                               checksum=None,  # our digests above are computed once, from the bytes S3 sent
                               timeout=self._timeout(), retry=self._write_retry())
                if isinstance(content, bytes):
                    blob.upload_from_file(io.BytesIO(content), size=len(content), **options)
                else:
                    blob.upload_from_filename(content, **options)
            except Exception as exc:  # noqa: BLE001
                error = translate(exc, destination, name, "write")
                if isinstance(error, ObjectHeld) and not released:
                    released = True
                    generation = self.release_hold(destination, name)
                    if generation is not None:
                        if_generation_match = generation
                        continue
                raise error from exc
            return _held(blob)
        raise AssertionError("unreachable")

    def open_stream(self, destination: Destination, name: str, obj: SourceObject, state: SourceState,
                    if_generation_match: int, chunk_size: int) -> Any:
        """A resumable upload fed chunk by chunk (``streaming.DestinationStream``).

        At a ``holds=source`` destination a replaced copy is looked at first, and a temporary hold
        gcs-sync set on it is released (``release_hold``): Cloud Storage would refuse it only at the
        final request, after every byte was sent."""
        if destination.holds and if_generation_match > 0:
            if_generation_match = self.release_hold(destination, name) or if_generation_match
        return DestinationStream(self.session, self.endpoint, destination, name, obj, state,
                                 if_generation_match, chunk_size, self._deadline)

    def release_hold(self, destination: Destination, name: str) -> int | None:
        """Release the temporary hold of the copy at ``name`` when gcs-sync set it, so a newer
        state can replace it; the generation to replace then, or None when nothing was released.

        Only at a ``holds=source`` destination, and only a copy written by gcs-sync under a policy
        with ``holds=source`` (S3's legal hold carried over) that nothing else keeps: an
        event-based hold, a retention period or a hold set by anyone else is left alone (the copy
        is then reported ``held``). S3 lets a new version become current over a version under a
        legal hold (the hold keeps that version from deletion, not from being superseded); a
        bucket without versioning keeps one generation, so the copy follows the current version,
        whose own hold (if any) the new copy carries. One metadata update, conditional on the
        generation looked at (a replaced object is not touched).
        """
        if not destination.holds:
            return None
        blob = self._client.bucket(destination.bucket).blob(name)
        try:
            blob.reload(timeout=self._timeout(), retry=self._retry())
        except gexc.NotFound:
            return None
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, destination, name, "read") from exc
        if not _releasable(blob):
            return None
        generation = int(blob.generation or 0)
        blob.temporary_hold = False
        try:
            blob.patch(if_generation_match=generation, timeout=self._timeout(), retry=self._write_retry())
        except (gexc.PreconditionFailed, gexc.NotFound):
            return None  # replaced or removed meanwhile: the write that follows sees it
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, destination, name, "update") from exc
        log.info("temporary hold released", extra={"fields": {
            "object": f"gs://{destination.bucket}/{name}", "generation": generation,
            "reason": "holds=source: replaced by a newer state of the source"}})
        # Cloud Storage keeps the generation (a metadata update bumps the metageneration).
        return int(blob.generation or generation)

    def rewrite(self, source: tuple[Destination, str, int], destination: Destination, name: str,
                obj: SourceObject, state: SourceState, if_generation_match: int) -> HeldObject:
        """Copy generation ``source[2]`` of ``source[1]`` in ``source[0]`` server-side (objects.rewrite),
        looping on the rewrite token within the deadline. The body carries the whole metadata (a
        non-empty body replaces it all): content headers, user metadata, provenance and proof."""
        from_bucket, from_name, generation = source[0].bucket, source[1], source[2]
        source_blob = self._client.bucket(from_bucket).blob(from_name, generation=generation)
        blob = self._client.bucket(destination.bucket).blob(name, kms_key_name=destination.kms_key)
        for attr, value in obj.headers.items():
            setattr(blob, attr, value)
        blob.metadata = copy_metadata(obj.user_metadata, state, destination)
        _ask_policy(blob, destination, obj)
        released = False
        while True:
            try:
                return self._rewrite(blob, source_blob, destination, name, generation, if_generation_match)
            except ObjectHeld:
                if released:
                    raise
                released = True
                again = self.release_hold(destination, name)
                if again is None:
                    raise
                if_generation_match = again

    def _rewrite(self, blob: Any, source_blob: Any, destination: Destination, name: str, generation: int,
                 if_generation_match: int) -> HeldObject:
        """objects.rewrite until done: across locations, storage classes or KMS keys Cloud Storage
        copies the bytes over several calls, each answering the token of the next (each call sends
        the same body and key, as the JSON API asks)."""
        from_bucket, from_name = source_blob.bucket.name, source_blob.name
        token = None
        try:
            while True:
                if self._deadline.expired():
                    raise DestinationError(f"gs://{destination.bucket}/{name}: the invocation's time ran out "
                                           "during a server-side copy; will retry", retryable=True)
                token, _, _ = blob.rewrite(
                    source_blob, token=token, if_generation_match=if_generation_match,
                    if_source_generation_match=generation, timeout=self._timeout(), retry=self._write_retry())
                if token is None:
                    return _held(blob)
        except GcsSyncError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, destination, name, "rewrite", source=f"gs://{from_bucket}/{from_name}") from exc

    def delete(self, destination: Destination, name: str, generation: int) -> None:
        """Delete the object only while it is still ``generation``; absent already counts as done."""
        blob = self._client.bucket(destination.bucket).blob(name)
        try:
            blob.delete(if_generation_match=generation, timeout=self._timeout(), retry=self._write_retry())
        except gexc.NotFound:
            return
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, destination, name, "delete") from exc

    def list_held(self, destination: Destination, first: str, last: str) -> dict[str, HeldObject]:
        """What the destination holds for names from ``first`` to ``last`` (inclusive), by name."""
        held: dict[str, HeldObject] = {}
        try:
            blobs = self._client.list_blobs(
                destination.bucket, prefix=destination.prefix or None, start_offset=first,
                timeout=self._timeout(), retry=self._retry(),
            )
            for blob in blobs:
                if blob.name > last:  # listings are in UTF-8 byte order, as str comparison is
                    break
                held[blob.name] = _held(blob)
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, destination, first, "list") from exc
        return held

    def discard(self, destination: Destination, name: str, generation: int) -> bool:
        """Remove a copy that failed its check, only while it is still ``generation``, retrying
        transient failures within the deadline; False when it could not be removed."""
        blob = self._client.bucket(destination.bucket).blob(name)
        for attempt in range(1, DISCARD_ATTEMPTS + 1):
            try:
                blob.delete(if_generation_match=generation, timeout=self._timeout(), retry=self._retry())
                return True
            except (gexc.NotFound, gexc.PreconditionFailed):
                return True  # already gone, or replaced by another writer: not ours to remove
            except Exception:  # noqa: BLE001 - reported by the caller
                if attempt == DISCARD_ATTEMPTS or self._deadline.expired():
                    return False
                time.sleep(min(0.2 * 2 ** attempt, max(0.0, (self._deadline.remaining() or 2.0) - 1.0)))
        return False


@dataclass(frozen=True)
class TempObject:
    """An object under the reserved prefix of sliced copies, with its own metadata."""

    name: str
    generation: int
    size: int
    crc32c: str | None
    metadata: dict


def _temp(blob: Any) -> TempObject:
    return TempObject(blob.name, int(blob.generation or 0), int(blob.size or 0), blob.crc32c, dict(blob.metadata or {}))


class SliceStore:
    """The Cloud Storage calls of sliced copies (``slices``): temporary objects under a reserved
    prefix, compose, listing. Same timeouts, retries and error translation as ``GcsWriter``."""

    def __init__(self, writer: GcsWriter):
        self._writer = writer

    @property
    def _client(self) -> Any:
        return self._writer._client

    def get(self, destination: Destination, name: str) -> TempObject | None:
        blob = self._client.bucket(destination.bucket).blob(name)
        try:
            blob.reload(timeout=self._writer._timeout(), retry=self._writer._retry())
        except gexc.NotFound as exc:
            if _bucket_missing(exc):
                raise _bucket_not_found(destination) from exc
            return None
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, destination, name, "read") from exc
        return _temp(blob)

    def upload(self, destination: Destination, name: str, path: str, crc32c: str, metadata: dict) -> TempObject:
        """Upload a staged slice only if ``name`` is absent (412 -> ``PreconditionFailed``); Cloud
        Storage refuses bytes whose CRC32C is not ``crc32c``."""
        blob = self._client.bucket(destination.bucket).blob(name, chunk_size=UPLOAD_CHUNK)
        blob.metadata = metadata
        blob.crc32c = crc32c
        try:
            blob.upload_from_filename(path, content_type="application/octet-stream", if_generation_match=0,
                                      checksum=None, timeout=self._writer._timeout(), retry=self._writer._retry())
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, destination, name, "write") from exc
        return _temp(blob)

    def compose(self, destination: Destination, sources: list[TempObject], name: str, if_generation_match: int,
                headers: dict | None = None, metadata: dict | None = None, policy: dict | None = None,
                kms_key: str | None = None) -> TempObject:
        """Compose ``sources`` (at most 32, each pinned to its generation) into ``name``, only while
        ``name`` is ``if_generation_match`` (0: absent). ``policy``: fields of the destination
        resource (``policy_resource``: class, custom time, hold, retention) and ``kms_key`` (the
        ``kmsKeyName`` query parameter) for a final object; a temporary composite takes neither
        (STANDARD, unheld: no early-deletion charge, nothing keeps it from removal).

        The request is python-storage's ``Blob.compose`` one, sent here because that method takes
        no ``kmsKeyName``; at a ``holds=source`` destination a temporary hold gcs-sync set on the
        object replaced is released first (``GcsWriter.release_hold``) when Cloud Storage refuses."""
        bucket = self._client.bucket(destination.bucket)
        blob = bucket.blob(name)
        for attr, value in (headers or {}).items():
            setattr(blob, attr, value)
        blob.metadata = metadata or {}
        if not blob.content_type:
            blob.content_type = "application/octet-stream"
        for key, value in (policy or {}).items():
            blob._patch_property(key, value)
        request = {"sourceObjects": [{"name": source.name, "generation": source.generation,
                                      "objectPreconditions": {"ifGenerationMatch": source.generation}}
                                     for source in sources],
                   "destination": blob._properties.copy()}
        released = False
        while True:
            query: dict[str, Any] = {"ifGenerationMatch": if_generation_match}
            if kms_key:
                query["kmsKeyName"] = kms_key
            try:
                answer = self._client._post_resource(
                    f"{blob.path}/compose", request, query_params=query, timeout=self._writer._timeout(),
                    retry=self._writer._write_retry(), _target_object=blob)
                blob._set_properties(answer)
                return _temp(blob)
            except gexc.NotFound as exc:
                if _bucket_missing(exc):
                    raise _bucket_not_found(destination) from exc
                raise PreconditionFailed(f"gs://{destination.bucket}/{name}: a source of the compose is gone "
                                         "(another invocation composed or removed it); looking again") from exc
            except Exception as exc:  # noqa: BLE001
                error = translate(exc, destination, name, "compose")
                if isinstance(error, ObjectHeld) and policy is not None and not released:
                    released = True
                    again = self._writer.release_hold(destination, name)
                    if again is not None:
                        if_generation_match = again
                        continue
                raise error from exc

    def listing(self, destination: Destination, prefix: str) -> list[TempObject]:
        try:
            return [_temp(blob) for blob in self._client.list_blobs(
                destination.bucket, prefix=prefix, timeout=self._writer._timeout(), retry=self._writer._retry())]
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, destination, prefix, "list") from exc

    def remove(self, destination: Destination, obj: TempObject) -> None:
        """Delete a temporary object (that generation only); already gone counts as done."""
        blob = self._client.bucket(destination.bucket).blob(obj.name)
        try:
            blob.delete(if_generation_match=obj.generation, timeout=self._writer._timeout(),
                        retry=self._writer._retry())
        except (gexc.NotFound, gexc.PreconditionFailed):
            return
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, destination, obj.name, "delete") from exc


class _PolicyBlob(Blob):
    """A blob whose upload resource also carries ``temporaryHold``: python-storage sends only its
    ``_WRITABLE_FIELDS`` (``storageClass``, ``customTime``, ``retention``, ... but no hold), and the
    JSON API takes the hold in the same resource. A held copy is then one request, not an upload
    and a metadata update a moment later (a second write of the name, within Cloud Storage's
    one write per second per name, and a window where the copy stands unheld)."""

    def _get_writable_metadata(self) -> dict:
        resource = super()._get_writable_metadata()
        for key in ("temporaryHold",):
            if key in self._changes:
                resource[key] = self._properties[key]
        return resource


def _ask_policy(blob: Any, destination: Destination, obj: SourceObject) -> None:
    """Put what ``destination``'s options ask of this copy into the resource the write sends
    (the KMS key goes with the blob: ``kmsKeyName`` / ``destinationKmsKeyName``)."""
    for key, value in policy_resource(destination, storage_class=obj.storage_class,
                                      last_modified=obj.last_modified, lock=obj.lock).items():
        blob._patch_property(key, value)


def _releasable(blob: Any) -> bool:
    """Whether the copy is under a temporary hold gcs-sync set (holds=source) and nothing else."""
    props = blob._properties
    if props.get("temporaryHold") is not True or props.get("eventBasedHold") is True:
        return False
    meta = blob.metadata or {}
    if SourceState.from_metadata(meta) is None or "holds=source" not in (meta.get(POLICY) or "").split("&"):
        return False
    now = datetime.now(timezone.utc)
    for kept in (parse_rfc3339((props.get("retention") or {}).get("retainUntilTime")),
                 parse_rfc3339(props.get("retentionExpirationTime"))):
        if kept is not None and kept > now:
            return False  # still kept by a retention period: releasing the hold would not let it be replaced
    return True


def _held(blob: Any) -> HeldObject:
    updated = blob.updated  # parsed from its text at every access
    return HeldObject(
        generation=int(blob.generation or 0),
        source=SourceState.from_metadata(blob.metadata),
        size=int(blob.size or 0),
        crc32c=blob.crc32c,
        md5=blob.md5_hash,
        updated=updated.timestamp() if updated else None,
    )


def _retry_unless_throttled(exc: Exception) -> bool:
    return not isinstance(exc, gexc.TooManyRequests) and DEFAULT_RETRY._predicate(exc)


def _bucket_missing(exc: gexc.GoogleAPICallError) -> bool:
    return bucket_missing(str(exc.message or ""))


def _bucket_not_found(destination: Destination) -> DestinationError:
    return bucket_not_found(destination.bucket, destination.url)


def translate(exc: Exception, destination: Destination, name: str, action: str, *,
              source: str | None = None) -> Exception:
    """Any exception from a Cloud Storage call -> one of ours, naming the object and destination.

    ``source``: for a server-side copy, the object copied from.
    """
    where = f"gs://{destination.bucket}/{name}"
    if isinstance(exc, gexc.GoogleAPICallError) and exc.code:
        return classify(int(exc.code), str(exc.message or exc), bucket=destination.bucket, url=destination.url,
                        name=name, action=action, source=source, session=action == "write")
    if isinstance(exc, gexc.RetryError):
        return DestinationError(f"{where}: Cloud Storage is throttling or failing ({exc}); will retry", retryable=True)
    if isinstance(exc, auth_exc.GoogleAuthError) and not isinstance(exc, auth_exc.TransportError):
        return CredentialsError(f"{where}: could not get a Google access token: {exc}", retryable=True)
    if isinstance(exc, (auth_exc.TransportError, requests.RequestException, ConnectionError, TimeoutError)):
        return DestinationError(f"{where}: network error talking to Cloud Storage ({type(exc).__name__}); will retry", retryable=True)
    try:
        from google.resumable_media import DataCorruption
    except ImportError:  # pragma: no cover
        DataCorruption = ()  # type: ignore[assignment]
    if DataCorruption and isinstance(exc, DataCorruption):
        return ChecksumMismatch(f"{where}: the upload was corrupted in transit; will retry")
    return DestinationError(f"{where}: {action} failed: {type(exc).__name__}: {exc}", retryable=False)

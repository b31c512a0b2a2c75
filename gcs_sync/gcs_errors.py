"""Cloud Storage's refusals, classified once: by HTTP status and Cloud Storage's own message, into
our errors, each saying how the copy reacts (look again, start a new session, back off, report a
held copy, fail). The client library's exceptions (``destination``) and the resumable uploads'
responses (``streaming``) both come through ``classify``.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from .errors import CredentialsError, DestinationError, GcsSyncError, PreconditionFailed

# The role deploy/gcp-setup.sh creates: exactly the permissions the function uses (its --help says
# why each); roles/storage.objectUser where a project's custom role cannot be granted.
WRITER_ROLE = "projects/PROJECT/roles/gcsSyncWriter"
ROLE_HINT = ("Grant the service account the role deploy/gcp-setup.sh creates (" + WRITER_ROLE + "), or Storage "
             "Object User (roles/storage.objectUser), on gs://{bucket}: overwriting needs storage.objects.delete as "
             "well as storage.objects.create, which Object Creator lacks.")

# Cloud Storage's messages when a hold or a retention period keeps an object from being replaced
# or deleted (403): "Object 'b/o' is under active Temporary hold and cannot be deleted, overwritten
# or archived until hold is removed.", "... is subject to object retention ... until ...", and a
# bucket's retention policy: "Object 'b/o' is subject to bucket's retention policy or object
# retention and cannot be deleted or overwritten until 2026-12-31T00:00:00Z".
_HELD = re.compile(r"(under active (temporary|event-based) hold|retention policy|object retention|"
                   r"retention period|cannot be deleted(,| or) overwritten)", re.IGNORECASE)
# Cloud Storage's sentence itself, out of the client's text around it (method, URL, JSON body).
_HELD_SENTENCE = re.compile(r"Object '[^']*' is (?:under active|subject to) [^\"\\]*")
_UNTIL = re.compile(r"until (\d{4}-\d\d-\d\dT[0-9:.]+(?:Z|[+-]\d\d:\d\d))")


class RewriteRefused(DestinationError):
    """A server-side copy was refused (403): this destination is written by upload instead."""

    def __init__(self, message: str):
        super().__init__(message, retryable=False)


class SessionLost(DestinationError):
    """A resumable upload session expired or was lost (404 / 410): start a new upload."""

    def __init__(self, message: str):
        super().__init__(message, retryable=True)


class RateLimited(DestinationError):
    """429: the object's name is being written faster than Cloud Storage allows (about one write
    per second per name). Like a 412: look again; write only if still needed, after a backoff."""

    def __init__(self, message: str):
        super().__init__(message, retryable=True)


class ObjectHeld(DestinationError):
    """The destination's copy is under a hold or a retention period: it cannot be replaced until
    released or expired (``until``: when, if Cloud Storage said)."""

    def __init__(self, message: str, until: str | None = None):
        super().__init__(message, retryable=False)
        self.until = until


def held_until(message: str) -> str | None:
    """When a held copy can be replaced, from Cloud Storage's refusal (which writes it in Pacific
    time with microseconds), as RFC 3339 UTC; None when the message names no time (a hold)."""
    match = _UNTIL.search(message or "")
    if not match:
        return None
    try:
        moment = datetime.fromisoformat(match.group(1).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def bucket_missing(message: str) -> bool:
    text = (message or "").lower()
    return "bucket" in text and "object" not in text


def bucket_not_found(bucket: str, url: str) -> DestinationError:
    return DestinationError(f"{url}: bucket {bucket!r} does not exist or the service account cannot see it; "
                            "check GCS_DESTINATIONS", retryable=False)


def classify(status: int, message: str, *, bucket: str, url: str, name: str, action: str,
             source: str | None = None, session: bool = False) -> GcsSyncError:
    """Cloud Storage's answer ``status`` / ``message`` to ``action`` on ``name`` in ``bucket`` (the
    destination ``url``) as one of ours. ``source``: the object a server-side copy reads;
    ``session``: the request belonged to a resumable upload session."""
    where = f"gs://{bucket}/{name}"
    if status == 412:
        return PreconditionFailed(f"{where}: changed while we were writing; looking again")
    if status == 429:
        return RateLimited(f"{where}: Cloud Storage refused the {action}: the name is written faster than its "
                           "limit of about one write per second (429); looking again before writing")
    if status == 404 and source and not bucket_missing(message):
        # The generation copied from is no longer live: another writer replaced the origin since
        # it was verified. Like a 412: look again, and read the source again if still due.
        return PreconditionFailed(f"{where}: the copy it is made from ({source}) was replaced since it was "
                                  "verified; looking again")
    if status == 403 and _HELD.search(message or ""):
        until = held_until(message)
        sentence = _HELD_SENTENCE.search(message)
        said = (sentence.group(0) if sentence else message).strip()
        return ObjectHeld(f"{where}: Cloud Storage keeps the current copy under a hold or retention "
                          f"({said}); it cannot be replaced"
                          + (f" before {until}" if until else " until the hold is released"), until)
    if status == 403 and source:
        return RewriteRefused(
            f"{where}: Cloud Storage refused the server-side copy from {source} (403: {message}). Grant "
            f"the service account Storage Object Viewer (roles/storage.objectViewer) on the bucket of {source}, "
            "or set FANOUT=upload (a VPC Service Controls perimeter between the buckets also refuses it)")
    if status == 403:
        return DestinationError(f"{where}: permission denied on {action}. " + ROLE_HINT.format(bucket=bucket),
                                retryable=False)
    if status == 401:
        return CredentialsError(f"{where}: Cloud Storage refused the credentials (401); run the doctor check",
                                retryable=True)
    if status in (404, 410):
        if session and not bucket_missing(message):
            return SessionLost(f"{where}: the upload session answered {status} (expired or lost); "
                               "starting a new upload")
        return bucket_not_found(bucket, url)
    if status == 400 and any(t in (message or "") for t in ("doesn't match calculated", "do not match", "checksum")):
        return DestinationError(f"{where}: Cloud Storage refused the bytes it received: they do not match the "
                                f"checksums sent with them (altered in transit: {message}); will retry",
                                retryable=True)
    if status == 400:
        return DestinationError(f"{where}: Cloud Storage refused the {action}: {message}", retryable=False)
    if status == 408 or status >= 500:
        return DestinationError(f"{where}: Cloud Storage is throttling or failing ({status}: {message}); will retry",
                                retryable=True)
    return DestinationError(f"{where}: Cloud Storage {action} failed ({status}: {message})", retryable=True)

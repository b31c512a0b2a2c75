"""Every exception gcs-sync raises, each saying whether trying again can help.

SDK exceptions are translated into these at the edges (``source.py``, ``destination.py``,
``auth.py``) with ``raise ... from exc``; everything in between speaks only these types.
"""

from __future__ import annotations


class GcsSyncError(Exception):
    """Base class. ``retryable`` tells whether the same call may succeed later."""

    retryable: bool = False


class ConfigError(GcsSyncError):
    """The environment does not describe a usable configuration.

    Carries every problem found, so one deployment fixes them all at once.
    """

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"gcs-sync configuration is not valid:\n{lines}")


class CredentialsError(GcsSyncError):
    """The Google credential configuration is missing, malformed or of a refused kind,
    or the token exchange failed."""

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


class EventError(GcsSyncError):
    """The invocation event has no shape gcs-sync accepts (or a malformed part of one)."""


class SourceGone(GcsSyncError):
    """The source object (or version) no longer exists: skipped, not failed."""


class SourceChanged(GcsSyncError):
    """The source object changed after its state was read (412 on a pinned read)."""

    retryable = True


class SourceError(GcsSyncError):
    """Reading the source failed (no such bucket, access denied, throttled, 5xx...)."""

    def __init__(self, message: str, *, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


class DestinationError(GcsSyncError):
    """Writing to or reading from a destination bucket failed."""

    def __init__(self, message: str, *, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


class PreconditionFailed(DestinationError):
    """The destination object changed since we looked (HTTP 412): look again and decide again."""

    def __init__(self, message: str):
        super().__init__(message, retryable=True)


class InvalidObjectName(GcsSyncError):
    """The destination object name is one Cloud Storage cannot hold."""


class ChecksumMismatch(GcsSyncError):
    """Bytes read or written do not match the checksum they must have."""

    retryable = True


class StagingError(GcsSyncError):
    """The object cannot be staged under the temporary directory (full, not writable)."""


class CopyFailed(GcsSyncError):
    """Raised at the end of an invocation when any object failed at any destination.

    Lambda then applies its own retries and failure destinations. The message names every
    failed object and destination.
    """

    def __init__(self, failures: list[str], summary: dict, *, retryable: bool = False):
        self.failures = list(failures)
        self.summary = summary
        self.retryable = retryable  # every failure transient: the same event may succeed later
        head = f"{len(self.failures)} copy failure(s):"
        super().__init__("\n".join([head, *(f"  - {f}" for f in self.failures)]))

"""Every exception gcs-sync raises, each saying whether trying again can help.

SDK exceptions are translated into these at the edges (``source.py``, ``destination.py``,
``auth.py``) with ``raise ... from exc``; everything in between speaks only these types.
Their text passes the redaction the log lines get (``logs.redact``): an SDK's message quoted in
one never shows a credential, wherever it is printed.
"""

from __future__ import annotations

from .logs import redact


class GcsSyncError(Exception):
    """Base class. ``retryable`` tells whether the same call may succeed later."""

    retryable: bool = False

    def __str__(self) -> str:
        return redact(super().__str__())


class Problem:
    """One thing wrong with the configuration: the variable (or field), what is wrong with it,
    and the concrete fix for that very problem."""

    __slots__ = ("variable", "wrong", "fix")

    def __init__(self, variable: str, wrong: str, fix: str | None = None):
        self.variable = variable
        self.wrong = wrong.rstrip(". ")
        self.fix = fix

    def __str__(self) -> str:
        text = f"{self.variable}: {self.wrong}"
        return f"{text}. Fix: {self.fix}" if self.fix else text

    def __repr__(self) -> str:
        return f"Problem({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


class ConfigError(GcsSyncError):
    """The environment does not describe a usable configuration.

    Carries every problem found (``issues``: each a ``Problem`` with its variable and fix;
    ``problems``: the same as text), so one deployment fixes them all at once.
    """

    def __init__(self, problems: "list[Problem | str]"):
        self.issues = [p if isinstance(p, Problem) else _problem_of_text(p) for p in problems]
        self.problems = [str(p) for p in self.issues]
        count = len(self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"the configuration is not valid ({count} problem{'s' if count != 1 else ''}, "
            f"each with its fix; environment variables are under Configuration > Environment "
            f"variables in the Lambda console):\n{lines}")


def _problem_of_text(text: str) -> Problem:
    variable, sep, wrong = str(text).partition(": ")
    if sep and variable and " " not in variable:
        return Problem(variable, wrong)
    return Problem("configuration", str(text))


class CredentialsError(GcsSyncError):
    """The Google credential configuration is missing, malformed or of a refused kind,
    or the token exchange failed. ``fix`` says what to change, when there is one thing to change."""

    def __init__(self, message: str, *, retryable: bool = False, fix: str | None = None):
        # google-auth's own text (a token endpoint's answer, the request it sent) is quoted here.
        message = redact(message).rstrip()
        fix = redact(fix) if fix else fix
        super().__init__(f"{message.rstrip('.')}. Fix: {fix}" if fix else message)
        self.retryable = retryable
        self.fix = fix
        self.detail = message


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

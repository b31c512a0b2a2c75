"""JSON log lines, one per record, scrubbed of anything that looks like a credential.

Library modules only call ``logging.getLogger(__name__)``; ``configure`` is called by the
entry points (the Lambda handler and the command line).

Every line is one JSON object in the shape of Lambda's own JSON log format: ``timestamp``
(RFC 3339, UTC), ``level`` (Lambda's names: DEBUG, INFO, WARN, ERROR, FATAL), ``logger``,
``message``, ``requestId`` during an invocation, then the record's fields at the top level.
Lambda's log-level filter reads ``level`` and ``timestamp``, so it keeps or drops these lines
as it would its own. The request id is one module-level value, set when an invocation starts:
a Lambda container runs one invocation at a time, and every thread (the copy's worker pools
included) must see it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
import traceback
from datetime import datetime, timezone
from urllib.parse import quote, quote_plus

_request_id: str | None = None  # the invocation in progress; read by every thread
_lambda_log_format: str | None = None  # AWS_LAMBDA_LOG_FORMAT, as given to configure()
_lambda_log_level: str | None = None  # AWS_LAMBDA_LOG_LEVEL (Lambda's names), as given to configure()
# Python level names -> the names Lambda's JSON format and log-level filter use.
LAMBDA_LEVEL_NAMES = {"WARNING": "WARN", "CRITICAL": "FATAL"}
_NAMES = r"(?:access_token|subject_token|id_token|refresh_token|private_key|x-amz-security-token)"
# The same separators URL-encoded, once or more (%22 / %2522 quote, %3A colon, %3D equals, %20 or +
# space, %5C backslash): a field name and its value inside URL-encoded JSON, or a form value holding it.
_PCT = r"%(?:25)*"
_QUOTED = rf"(?:{_PCT}(?:22|27|5[cC]))"
_ASSIGNED = rf"(?:{_PCT}3[aAdD])"
_SPACED = rf"(?:{_PCT}20|\+)"
_PATTERNS = (
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
    r"ya29\.[\w.\-]+",  # Google access tokens
    rf"(?i)(bearer(?:\s|{_SPACED})+)[\w.\-~+/=%]+",
    rf"(?i)((?:x-amz-)?signature(?:[\"'=:\s\\+]|{_QUOTED}|{_ASSIGNED}|{_SPACED})+)[0-9a-f]{{16,}}",
    rf"(?i)({_NAMES}[\"'\\]*\s*[:=]\s*[\"'\\]*)[^\"'&\s,}}\\]+",
    rf"(?i)({_NAMES}{_QUOTED}*{_SPACED}*{_ASSIGNED}{_SPACED}*{_QUOTED}*)"
    rf"(?:(?!{_PCT}(?:2[26cC]|27|5[cC]))[^\"'&\s,}}\\])+",
)
# Every pattern above needs one of these words: text without any skips the substitutions.
_SUSPECT = ("private", "ya29.", "bearer", "signature", "token")
_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def redact(text: str, secrets: tuple[str, ...] | None = None) -> str:
    """Remove tokens, signatures, keys and the process's own AWS secrets from ``text``; each
    known secret also in its URL-encoded (as Google's subject token carries the session token)
    and JSON-escaped forms."""
    for secret in secret_forms(_own_secrets() if secrets is None else secrets):
        if secret in text:
            text = text.replace(secret, "[redacted]")
    lowered = text.lower()
    if not any(word in lowered for word in _SUSPECT):
        return text
    for pattern in _compiled_patterns():
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[redacted]", text)
    return text


@functools.lru_cache(maxsize=1)
def _compiled_patterns() -> tuple[re.Pattern, ...]:
    """``_PATTERNS`` compiled when text first holds a suspect word: most containers write none, and
    compiling them costs ~3 ms of a cold start (bench/cold_start.py)."""
    return tuple(re.compile(pattern) for pattern in _PATTERNS)


def _own_secrets() -> tuple[str, ...]:
    return tuple(v for v in map(os.environ.get, _SECRET_VARIABLES) if v and len(v) >= 8)


@functools.lru_cache(maxsize=32)
def secret_forms(secrets: tuple[str, ...]) -> tuple[str, ...]:
    """Every form the secrets may take in text, longest first: as they are, URL-encoded
    (``quote``, with and without ``/`` kept, ``quote_plus``, and encoded twice as a form field
    holding an encoded value), and JSON-escaped (ASCII-only or not, ``/`` escaped or not)."""
    forms: set[str] = set()
    for secret in secrets:
        for form in (secret, quote(secret, safe=""), quote(secret), quote_plus(secret), quote_plus(secret, safe="/"),
                     quote_plus(quote(secret, safe="")), quote(quote(secret, safe=""), safe=""),
                     json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
                     json.dumps(secret)[1:-1].replace("/", "\\/")):  # JSON writers that escape "/"
            forms.add(form)
    return tuple(sorted(forms, key=len, reverse=True))


def scrubbed(exc: BaseException, _depth: int = 0) -> BaseException:
    """``exc`` as it may leave the process: the same exception, or — when its text, its
    attributes or the errors chained to it hold anything ``redact`` removes — a new exception of
    the same type whose message, attributes and chained causes are redacted (the traceback's
    frames kept), so that what Lambda reports and logs for an error raised to it holds no secret."""
    if not _needs_scrubbing(exc):
        return exc
    secrets = _own_secrets()
    args = tuple(_redacted(a, secrets) for a in exc.args)
    if isinstance(exc, OSError) and exc.filename is not None and len(args) == 2:
        args += (_redacted(exc.filename, secrets),)  # kept apart from args by OSError itself
    try:
        try:
            clean = type(exc)(*args)
        except Exception:  # noqa: BLE001 - an __init__ of other arguments (CopyFailed...): not called
            clean = type(exc).__new__(type(exc), *args)
        for name, value in vars(exc).items():
            setattr(clean, name, _redacted(value, secrets))
    except Exception:  # noqa: BLE001 - an exception type that cannot be rebuilt: the closest plain one
        base = next((t for t in type(exc).__mro__ if t.__module__ == "builtins"), Exception)
        clean = base(redact(f"{type(exc).__name__}: {exc}", secrets))
    cause = exc.__cause__ if exc.__cause__ is not None else (None if exc.__suppress_context__ else exc.__context__)
    clean.__cause__ = scrubbed(cause, _depth + 1) if cause is not None and _depth < 8 else None
    clean.__suppress_context__ = True
    return clean.with_traceback(exc.__traceback__)


def _needs_scrubbing(exc: BaseException) -> bool:
    try:
        text = "".join(traceback.format_exception(exc)) + repr(exc.args) + repr(vars(exc))
    except Exception:  # noqa: BLE001 - unprintable: rebuild it to be safe
        return True
    return redact(text) != text


def set_request_id(request_id: str | None) -> None:
    """Called when an invocation starts: every line written from now on, from any thread,
    carries ``requestId`` (None: no invocation, no field)."""
    global _request_id
    _request_id = request_id or None


def request_id() -> str | None:
    return _request_id


def lambda_filter_level() -> str | None:
    """The level below which Lambda itself drops JSON lines (``WARN``...), or None when it drops
    nothing gcs-sync writes at INFO (text format, no level set, or a level of INFO or lower)."""
    if _lambda_log_format == "JSON" and _lambda_log_level in ("WARN", "ERROR", "FATAL"):
        return _lambda_log_level
    return None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        secrets = _own_secrets()
        entry = {
            "timestamp": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": LAMBDA_LEVEL_NAMES.get(record.levelname, record.levelname),
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = _request_id
        if current:
            entry["requestId"] = current
        fields = getattr(record, "fields", None)
        fields = fields if isinstance(fields, dict) else None
        exception = self.formatException(record.exc_info) if record.exc_info else None
        plain = bool(getattr(record, "plain_fields", False))
        clean = None if plain else _clean_line(entry, fields, exception, secrets)
        if clean is not None:
            return clean
        entry["message"] = redact(entry["message"], secrets)
        if fields is not None:
            entry.update(fields if plain else _redacted(fields, secrets))
        if exception is not None:
            entry["exception"] = redact(exception, secrets)
        # Redacted before and after encoding: patterns see unescaped text first, and any secret
        # value the encoding could not hide is caught in the final line.
        return redact(json.dumps(entry, ensure_ascii=False, default=str), secrets)


def _clean_line(entry: dict, fields: dict | None, exception: str | None, secrets: tuple[str, ...]) -> str | None:
    """The line of ``entry`` with ``fields`` and ``exception`` when it holds nothing ``redact``
    could change, else None (the line is then redacted piece by piece, and whole).

    The line is encoded once, unredacted. When it holds no word a pattern needs (``_SUSPECT``)
    and no form of a known secret, neither does any text in it, so every redaction (of the
    message, of each field, of the exception, of the line) would return its text as it was: the
    line is the one the full path writes, for one encoding and a scan. JSON escapes character by
    character, so a text holding a word or a secret form leaves that word (letters, digits and
    dots are never escaped) or the form's escaped spelling (also looked for, ``_line_forms``) in
    the line. Only plain JSON values qualify: a value the encoder cannot write itself (an
    exception, bytes, a date...) takes the full path."""
    line_entry = dict(entry)
    if fields is not None:
        line_entry.update(fields)
    if exception is not None:
        line_entry["exception"] = exception
    try:
        line = json.dumps(line_entry, ensure_ascii=False)
    except (TypeError, ValueError):
        return None
    lowered = line.lower()
    if any(word in lowered for word in _SUSPECT) or any(form in line for form in _line_forms(secrets)):
        return None
    return line


@functools.lru_cache(maxsize=32)
def _line_forms(secrets: tuple[str, ...]) -> tuple[str, ...]:
    """Every form of the secrets (``secret_forms``), and each as a JSON string spells it."""
    forms = secret_forms(secrets)
    return tuple(dict.fromkeys(forms + tuple(json.dumps(f, ensure_ascii=False)[1:-1] for f in forms)))


def _redacted(value, secrets: tuple[str, ...]):
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
        clean = redact(text, secrets)
        return value if clean == text else clean.encode()
    if isinstance(value, dict):
        return {k: _redacted(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v, secrets) for v in value]
    if isinstance(value, BaseException):
        return scrubbed(value)
    return value


def configure(level: str = "INFO", *, lambda_format: str | None = None,
              lambda_level: str | None = None) -> None:
    """Write JSON lines to stderr, or through Lambda's own handler, replacing its formatter.

    In Lambda the runtime has already put a handler on the root logger, with a text formatter
    or, under the JSON log format, its own JSON formatter. Either way gcs-sync replaces the
    formatter (never the handler, which is how lines reach CloudWatch): one JSON object per
    line in the runtime's own shape, with gcs-sync's fields at the top level and every value
    redacted, instead of a JSON line wrapped in a text line or encoded again as a string.

    ``lambda_format`` / ``lambda_level``: Lambda's logging controls (kept from an earlier call
    when not given), so that metrics are tagged to pass Lambda's own log-level filter.
    """
    global _lambda_log_format, _lambda_log_level
    if lambda_format is not None:
        _lambda_log_format = lambda_format
    if lambda_level is not None:
        _lambda_log_level = lambda_level
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
    root.setLevel(logging.WARNING)  # keep the SDKs quiet
    logging.getLogger("gcs_sync").setLevel(level)


def configure_from(log) -> None:
    """``configure`` from a ``config.LogSettings``."""
    configure(log.level, lambda_format=log.lambda_format or "", lambda_level=log.lambda_level or "")

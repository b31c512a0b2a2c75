"""JSON log lines, one per record, scrubbed of anything that looks like a credential.

Library modules only call ``logging.getLogger(__name__)``; ``configure`` is called by the
entry points (the Lambda handler and the command line).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from datetime import datetime, timezone

_request = threading.local()
_PATTERNS = (
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"ya29\.[\w.\-]+"),  # Google access tokens
    re.compile(r"(?i)(bearer\s+)[\w.\-~+/=]+"),
    re.compile(r"(?i)((?:x-amz-)?signature[\"'=:\s]+)[0-9a-f]{16,}"),
    re.compile(r"(?i)((?:access_token|subject_token|id_token|refresh_token|private_key|x-amz-security-token)[\"']?\s*[:=]\s*[\"']?)[^\"'&\s,}]+"),
)
# Every pattern above needs one of these words: text without any skips the five substitutions.
_SUSPECT = ("private", "ya29.", "bearer", "signature", "token")
_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def redact(text: str, secrets: tuple[str, ...] | None = None) -> str:
    """Remove tokens, signatures, keys and the process's own AWS secrets from ``text``."""
    for secret in _own_secrets() if secrets is None else secrets:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    lowered = text.lower()
    if not any(word in lowered for word in _SUSPECT):
        return text
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[redacted]", text)
    return text


def _own_secrets() -> tuple[str, ...]:
    return tuple(v for v in map(os.environ.get, _SECRET_VARIABLES) if v and len(v) >= 8)


def set_request_id(request_id: str | None) -> None:
    _request.id = request_id


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage(), secrets := _own_secrets()),
        }
        request_id = getattr(_request, "id", None)
        if request_id:
            entry["requestId"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields if getattr(record, "plain_fields", False) else _redacted(fields, secrets))
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info), secrets)
        # Redacted before and after encoding: patterns see unescaped text first, and any secret
        # value the encoding could not hide is caught in the final line.
        return redact(json.dumps(entry, ensure_ascii=False, default=str), secrets)


def _redacted(value, secrets: tuple[str, ...]):
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {k: _redacted(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v, secrets) for v in value]
    return value


def configure(level: str = "INFO") -> None:
    """Send JSON lines to stderr (or Lambda's own handler), replacing any existing formatter."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
    root.setLevel(logging.WARNING)  # keep the SDKs quiet
    logging.getLogger("gcs_sync").setLevel(level)

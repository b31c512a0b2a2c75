"""Log redaction and the JSON line formatter."""

from __future__ import annotations

import io
import json
import logging

import pytest

from gcs_sync import logs
from gcs_sync.logs import JsonFormatter, redact, set_request_id

PEM = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
       "abcdefghijklmnopqrstuvwxyz0123456789+/=\n-----END PRIVATE KEY-----")
SIG = "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"


@pytest.mark.parametrize(
    "text, secret",
    [
        ("token is ya29.a0AfH6SMBx-Yz_12.34 ok", "ya29.a0AfH6SMBx-Yz_12.34"),
        ("Authorization: Bearer xyz", "xyz"),
        ("authorization: bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln~+/=", "eyJhbGciOiJSUzI1NiJ9"),
        ("POST body access_token=abc123DEF&expires_in=3599", "abc123DEF"),
        ("id_token: tok.en.value", "tok.en.value"),
        ("refresh_token='1//0gRefresh'", "1//0gRefresh"),
        ('{"subject_token": "%7B%22url%22%3A%22https%3A%2F%2Fsts"}', "%7B%22url%22%3A%22https%3A%2F%2Fsts"),
        ('{"access_token":"sts-federated-token","token_type":"Bearer"}', "sts-federated-token"),
        ("https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=" + SIG, SIG),
        ("AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/sts/aws4_request, "
         "SignedHeaders=host;x-amz-date, Signature=" + SIG, SIG),
        ("x-amz-security-token: IQoJb3JpZ2luX2VjEKsessiontoken", "IQoJb3JpZ2luX2VjEKsessiontoken"),
        ("key follows\n" + PEM + "\nend", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"),
        ("escaped " + PEM.replace("\n", "\\n"), "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"),
    ],
    ids=["ya29", "bearer", "bearer-jwt", "access_token-form", "id_token", "refresh_token", "subject_token-json",
         "access_token-json", "x-amz-signature", "sigv4-header", "security-token", "pem", "pem-escaped"],
)
def test_redact_removes_credentials(text, secret):
    out = redact(text)
    assert secret not in out
    assert "[redacted]" in out


@pytest.mark.parametrize("text", [
    '{"type": "service_account", "private_key": "' + PEM.replace("\n", "\\n") + '"}',
    '{"private_key": "' + PEM + '"}',
    "private_key=" + PEM,
], ids=["json-escaped", "raw-newlines", "form"])
def test_redact_private_key_field_holding_pem(text):
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7" not in redact(text)


def test_redact_keeps_the_surroundings():
    assert redact("Authorization: Bearer xyz") == "Authorization: Bearer [redacted]"
    assert redact("access_token=abc&expires_in=3599") == "access_token=[redacted]&expires_in=3599"
    assert redact('{"subject_token": "abc", "x": 1}') == '{"subject_token": "[redacted]", "x": 1}'
    assert redact("a " + PEM + " b") == "a [redacted] b"


@pytest.mark.parametrize("variable", ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"])
def test_redact_process_aws_secrets(monkeypatch, variable):
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY+/="
    monkeypatch.setenv(variable, secret)
    out = redact(f"signing with {secret} failed; again {secret}")
    assert secret not in out
    assert out == "signing with [redacted] failed; again [redacted]"


@pytest.mark.parametrize(
    "text",
    [
        "copied s3://src-bucket/photos/a b.jpg to gs://dest/backup/photos/a b.jpg (1305107 bytes)",
        "etag 0123456789abcdef0123456789abcdef version 3HL4kqtJlcpXroDTDmJ sequencer 0055AED6DCD90281E5",
        "GCS_DESTINATIONS: 'gs://Upper' is not valid; see the README",
        "object name 'token/key=value' has 17 bytes",
        '{"outcome": "copied", "destinations": ["gs://a/"], "size": 0}',
        "",
    ],
)
def test_redact_leaves_ordinary_text(text):
    assert redact(text) == text


def test_redact_ignores_short_or_unset_secrets(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "abc")  # too short to redact safely
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    assert redact("abc def") == "abc def"


# --------------------------------------------------------------------------- JsonFormatter


@pytest.fixture
def capture():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gcs_sync.tests.unit.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    set_request_id(None)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        set_request_id(None)


def lines(stream) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_formatter_one_object_per_record(capture):
    logger, stream = capture
    set_request_id("req-123")
    logger.info("copied %s", "s3://src/k", extra={"fields": {"outcome": "copied", "bytes": 5, "tags": ["a"]}})
    logger.warning("multi\nline message")
    set_request_id(None)
    logger.error("after the invocation")
    first, second, third = lines(stream)
    assert first["level"] == "INFO"
    assert first["message"] == "copied s3://src/k"
    assert first["logger"] == "gcs_sync.tests.unit.logs"
    assert first["requestId"] == "req-123"
    assert (first["outcome"], first["bytes"], first["tags"]) == ("copied", 5, ["a"])
    assert first["time"].endswith("+00:00")
    assert second["level"] == "WARNING" and second["message"] == "multi\nline message"
    assert second["requestId"] == "req-123"
    assert third["level"] == "ERROR" and "requestId" not in third


def test_json_formatter_ignores_non_dict_fields_and_serializes_odd_values(capture):
    logger, stream = capture
    logger.info("odd", extra={"fields": ["not", "a", "dict"]})
    logger.info("values", extra={"fields": {"path": __import__("pathlib").Path("/tmp/x"), "set": {1}}})
    first, second = lines(stream)
    assert set(first) == {"time", "level", "logger", "message"}
    assert second["path"] == "/tmp/x"
    assert second["set"] == "{1}"


def test_json_formatter_includes_exception_and_redacts(capture, monkeypatch):
    logger, stream = capture
    monkeypatch.setenv("AWS_SESSION_TOKEN", "IQoJb3JpZ2luX2VjEKsessiontoken")
    try:
        raise RuntimeError("refresh failed with ya29.SECRETTOKEN and IQoJb3JpZ2luX2VjEKsessiontoken")
    except RuntimeError:
        logger.exception("token exchange", extra={"fields": {"access_token": "plain-secret"}})
    (entry,) = lines(stream)
    raw = stream.getvalue()
    assert "RuntimeError" in entry["exception"]
    for secret in ("SECRETTOKEN", "IQoJb3JpZ2luX2VjEKsessiontoken", "plain-secret"):
        assert secret not in raw
    assert entry["access_token"] == "[redacted]"


def test_json_formatter_unicode_kept(capture):
    logger, stream = capture
    logger.info("key 日本語/😀")
    assert "日本語/😀" in stream.getvalue()
    assert lines(stream)[0]["message"] == "key 日本語/😀"


@pytest.mark.parametrize("message, secret", [
    ('STS reply {"subject_token": "SUBJECTSECRET"}', "SUBJECTSECRET"),
    ('STS reply {"access_token": "FEDERATEDSECRET"}', "FEDERATEDSECRET"),
    ('presign {"Signature": "' + SIG + '"}', SIG),
], ids=["subject_token", "access_token", "signature"])
def test_json_formatter_redacts_quoted_values_in_message(capture, message, secret):
    logger, stream = capture
    logger.info(message)
    assert secret not in stream.getvalue()


def test_configure_sets_json_formatter():
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_formatters = [h.formatter for h in saved_handlers]
    package_level = logging.getLogger("gcs_sync").level
    try:
        logs.configure("DEBUG")
        assert root.handlers and all(isinstance(h.formatter, JsonFormatter) for h in root.handlers)
        assert root.level == logging.WARNING
        assert logging.getLogger("gcs_sync").level == logging.DEBUG
    finally:
        for handler in list(root.handlers):
            if handler not in saved_handlers:
                root.removeHandler(handler)
        for handler, formatter in zip(saved_handlers, saved_formatters):
            handler.setFormatter(formatter)
        root.setLevel(saved_level)
        logging.getLogger("gcs_sync").setLevel(package_level)

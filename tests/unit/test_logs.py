"""Log redaction and the JSON line formatter."""

from __future__ import annotations

import io
import json
import logging
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from urllib.parse import quote, quote_plus

import pytest

from gcs_sync import logs
from gcs_sync.config import LogSettings
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
    assert first["timestamp"].endswith("+00:00")
    assert second["level"] == "WARN" and second["message"] == "multi\nline message"
    assert second["requestId"] == "req-123"
    assert third["level"] == "ERROR" and "requestId" not in third


def test_json_formatter_ignores_non_dict_fields_and_serializes_odd_values(capture):
    logger, stream = capture
    logger.info("odd", extra={"fields": ["not", "a", "dict"]})
    logger.info("values", extra={"fields": {"path": __import__("pathlib").Path("/tmp/x"), "set": {1}}})
    first, second = lines(stream)
    assert set(first) == {"timestamp", "level", "logger", "message"}
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


# --------------------------------------------------------------------------- request id from any thread


def test_request_id_reaches_lines_from_worker_threads(capture):
    logger, stream = capture
    set_request_id("req-threads")
    barrier = threading.Barrier(4)

    def work(i):
        barrier.wait(timeout=10)  # four distinct threads, all alive at once
        logger.info("copied %d", i, extra={"fields": {"thread": threading.current_thread().name}})

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(work, range(4)))
    entries = lines(stream)
    assert len(entries) == 4
    assert len({e["thread"] for e in entries}) == 4
    assert all(e["requestId"] == "req-threads" for e in entries)


def test_next_invocation_replaces_the_request_id_in_threads_already_running(capture):
    logger, stream = capture
    set_request_id("first")
    with ThreadPoolExecutor(max_workers=1) as pool:  # one warm worker thread, reused
        pool.submit(logger.info, "a").result()
        set_request_id("second")
        pool.submit(logger.info, "b").result()
    assert [e["requestId"] for e in lines(stream)] == ["first", "second"]


def test_timestamp_is_rfc3339_utc(capture):
    logger, stream = capture
    logger.info("x")
    stamp = lines(stream)[0]["timestamp"]
    assert datetime.fromisoformat(stamp).utcoffset().total_seconds() == 0


@pytest.mark.parametrize("level, name", [
    (logging.DEBUG, "DEBUG"), (logging.INFO, "INFO"), (logging.WARNING, "WARN"),
    (logging.ERROR, "ERROR"), (logging.CRITICAL, "FATAL"),
])
def test_levels_use_lambdas_names(capture, level, name):
    logger, stream = capture
    logger.log(level, "x")
    assert lines(stream)[0]["level"] == name


# --------------------------------------------------------------------------- Lambda's logging controls


@pytest.mark.parametrize("env, level", [
    ({}, "INFO"),
    ({"AWS_LAMBDA_LOG_LEVEL": "DEBUG", "AWS_LAMBDA_LOG_FORMAT": "JSON"}, "DEBUG"),
    ({"AWS_LAMBDA_LOG_LEVEL": "TRACE", "AWS_LAMBDA_LOG_FORMAT": "JSON"}, "DEBUG"),
    ({"AWS_LAMBDA_LOG_LEVEL": "WARN", "AWS_LAMBDA_LOG_FORMAT": "JSON"}, "WARNING"),
    ({"AWS_LAMBDA_LOG_LEVEL": "FATAL", "AWS_LAMBDA_LOG_FORMAT": "JSON"}, "ERROR"),
    ({"AWS_LAMBDA_LOG_LEVEL": "ERROR", "LOG_LEVEL": "debug"}, "DEBUG"),  # LOG_LEVEL overrides
    ({"AWS_LAMBDA_LOG_LEVEL": "DEBUG", "LOG_LEVEL": "WARN"}, "WARNING"),
    ({"AWS_LAMBDA_LOG_LEVEL": "nonsense"}, "INFO"),
    ({"LOG_LEVEL": "nonsense"}, "INFO"),  # reported by Settings, ignored here
])
def test_log_settings_follow_lambda_with_log_level_as_override(env, level):
    assert LogSettings.from_environ(env).level == level


def test_log_settings_read_lambdas_format():
    assert LogSettings.from_environ({"AWS_LAMBDA_LOG_FORMAT": "JSON"}).lambda_format == "JSON"
    assert LogSettings.from_environ({"AWS_LAMBDA_LOG_FORMAT": "Text"}).lambda_format == "Text"
    assert LogSettings.from_environ({}).lambda_format is None


@pytest.fixture
def root_restored():
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_formatters = [h.formatter for h in saved_handlers]
    package_level = logging.getLogger("gcs_sync").level
    try:
        yield root
    finally:
        for handler in list(root.handlers):
            if handler not in saved_handlers:
                root.removeHandler(handler)
        for handler in saved_handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        for handler, formatter in zip(saved_handlers, saved_formatters):
            handler.setFormatter(formatter)
        root.setLevel(saved_level)
        logging.getLogger("gcs_sync").setLevel(package_level)
        logs.configure(package_level and logging.getLevelName(package_level) or "INFO",
                       lambda_format="", lambda_level="")
        set_request_id(None)


class _RuntimeJsonFormatter(logging.Formatter):
    """Stands for the formatter Lambda's runtime installs under the JSON log format."""

    def format(self, record):
        return json.dumps({"timestamp": "t", "level": record.levelname, "message": record.getMessage()})


def test_under_lambdas_json_format_each_line_is_one_object_with_our_fields(root_restored):
    stream = io.StringIO()
    runtime_handler = logging.StreamHandler(stream)
    runtime_handler.setFormatter(_RuntimeJsonFormatter())
    for handler in list(root_restored.handlers):
        root_restored.removeHandler(handler)
    root_restored.addHandler(runtime_handler)
    logs.configure_from(LogSettings.from_environ({"AWS_LAMBDA_LOG_FORMAT": "JSON", "AWS_LAMBDA_LOG_LEVEL": "INFO"}))
    set_request_id("req-json")
    logging.getLogger("gcs_sync.tests.json").warning(
        "copy failed", extra={"fields": {"outcome": "failed", "token": "access_token=abc123secret"}})
    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert isinstance(entry["message"], str) and entry["message"] == "copy failed"  # not encoded twice
    assert entry["outcome"] == "failed" and entry["requestId"] == "req-json" and entry["level"] == "WARN"
    assert "abc123secret" not in line  # our redaction, which the runtime's formatter does not do
    assert root_restored.handlers == [runtime_handler]  # the runtime's handler kept: it feeds CloudWatch


def test_configure_sets_json_formatter(root_restored):
    logs.configure("DEBUG")
    assert root_restored.handlers and all(isinstance(h.formatter, JsonFormatter) for h in root_restored.handlers)
    assert root_restored.level == logging.WARNING
    assert logging.getLogger("gcs_sync").level == logging.DEBUG


@pytest.mark.parametrize("env, expected", [
    ({"AWS_LAMBDA_LOG_FORMAT": "JSON", "AWS_LAMBDA_LOG_LEVEL": "WARN"}, "WARN"),
    ({"AWS_LAMBDA_LOG_FORMAT": "JSON", "AWS_LAMBDA_LOG_LEVEL": "ERROR"}, "ERROR"),
    ({"AWS_LAMBDA_LOG_FORMAT": "JSON", "AWS_LAMBDA_LOG_LEVEL": "INFO"}, None),
    ({"AWS_LAMBDA_LOG_FORMAT": "Text", "AWS_LAMBDA_LOG_LEVEL": "ERROR"}, None),  # Lambda filters JSON only
    ({}, None),
])
def test_lambda_filter_level(root_restored, env, expected):
    logs.configure_from(LogSettings.from_environ(env))
    assert logs.lambda_filter_level() == expected
    logs.configure("INFO")  # a later call with the level only keeps Lambda's controls
    assert logs.lambda_filter_level() == expected


# --------------------------------------------------------------------------- encoded secrets, scrubbed errors

SESSION_TOKEN = "IQoJb3JpZ2luX2VjE/rig+session/token=="  # the characters real AWS tokens hold: / + =


@pytest.mark.parametrize("encode", [
    lambda s: s,
    lambda s: quote(s, safe=""),
    lambda s: quote(s),  # "/" kept: how google-auth quotes the subject token
    quote_plus,
    lambda s: json.dumps(s)[1:-1],
    lambda s: json.dumps(s)[1:-1].replace("/", "\\/"),
    lambda s: quote_plus(quote(s, safe="")),  # a form field holding an URL-encoded value
], ids=["plain", "quote", "quote-slash-kept", "quote_plus", "json", "json-slash-escaped", "form-of-quoted"])
@pytest.mark.parametrize("variable", ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"])
def test_every_form_of_the_process_secrets_is_redacted(monkeypatch, variable, encode):
    monkeypatch.setenv(variable, SESSION_TOKEN)
    form = encode(SESSION_TOKEN)
    out = redact(f"request was {form} and again {form}.")
    assert out == "request was [redacted] and again [redacted].", out


def test_a_url_encoded_subject_token_loses_its_signature_and_session_token():
    """The subject token google-auth sends: the signed GetCallerIdentity request, JSON, URL-quoted."""
    request = {"url": "https://sts.us-east-1.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
               "method": "POST", "headers": [
                   {"key": "Authorization", "value": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/"
                                                     f"sts/aws4_request, SignedHeaders=host;x-amz-date, Signature={SIG}"},
                   {"key": "x-amz-security-token", "value": "FwoGZXIvYXdzEPT0KEN"}]}
    subject = quote(json.dumps(request, separators=(",", ":"), sort_keys=True))
    for text in (subject, quote_plus(subject), json.dumps({"error_description": f"bad subject_token {subject}"})):
        out = redact(text)
        assert SIG not in out and "[redacted]" in out, out
    escaped = redact('{\\"x-amz-security-token\\": \\"FwoGZXIvYXdzEPT0KEN\\"}')
    assert "FwoGZXIvYXdzEPT0KEN" not in escaped
    encoded = redact(quote('{"x-amz-security-token": "FwoGZXIvYXdzEPT0KEN", "next": 1}', safe=""))
    assert "FwoGZXIvYXdzEPT0KEN" not in encoded and "next" in encoded  # stops at the value's end


def test_scrubbed_error_keeps_its_type_text_and_attributes_without_the_secret(monkeypatch):
    from gcs_sync.errors import CopyFailed

    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    encoded = quote(SESSION_TOKEN, safe="")
    try:
        try:
            raise ValueError(f"google-auth: ('Error code invalid_grant', 'subject_token={encoded}')")
        except ValueError as cause:
            raise CopyFailed([f"s3://b/k -> gs://d/k: token {encoded}"], {"results": [{"error": encoded}]},
                             retryable=True) from cause
    except CopyFailed as exc:
        clean = logs.scrubbed(exc)
    assert type(clean) is CopyFailed and clean.retryable is True
    assert clean.failures == ["s3://b/k -> gs://d/k: token [redacted]"]
    assert clean.summary == {"results": [{"error": "[redacted]"}]}
    shown = "".join(traceback.format_exception(clean)) + repr(clean.args) + repr(vars(clean))
    assert encoded not in shown and SESSION_TOKEN not in shown
    assert "1 copy failure(s):" in shown and "Error code invalid_grant" in shown  # the cause, redacted
    assert isinstance(clean.__cause__, ValueError) and clean.__traceback__ is not None


def test_an_error_without_secrets_leaves_as_it_is(monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    error = KeyError("no such bucket: b")
    assert logs.scrubbed(error) is error


@pytest.mark.parametrize("make", [
    lambda text: KeyError(text),
    lambda text: OSError(2, "No such file or directory", f"/tmp/{text}"),
    lambda text: UnicodeDecodeError("utf-8", text.encode(), 0, 1, "invalid start byte"),
], ids=["KeyError", "OSError", "UnicodeDecodeError"])
def test_any_kind_of_error_is_scrubbed(monkeypatch, make):
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    error = make(f"x{quote(SESSION_TOKEN)}")
    clean = logs.scrubbed(error)
    assert type(clean) is type(error)
    shown = "".join(traceback.format_exception(clean)) + repr(clean.args)
    assert quote(SESSION_TOKEN) not in shown and SESSION_TOKEN not in shown


def test_errors_of_the_function_redact_their_own_text(monkeypatch):
    from gcs_sync.errors import CredentialsError, SourceError

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SESSION_TOKEN)
    raw = f"Error code invalid_grant: key={quote(SESSION_TOKEN, safe='')}"
    credentials = CredentialsError(f"the token exchange failed. Detail: {raw}", fix=f"not {SESSION_TOKEN}")
    for text in (str(credentials), credentials.detail, credentials.fix, repr(credentials.args)):
        assert quote(SESSION_TOKEN, safe="") not in text and SESSION_TOKEN not in text
    assert str(SourceError(f"S3 said {quote_plus(SESSION_TOKEN)}", retryable=False)) == "S3 said [redacted]"


# --------------------------------------------------------------------------- the formatter's clean-line path

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# Secrets with the characters JSON escapes (quote, backslash, control, non-ASCII) as well as AWS's own.
ODD_SECRET = 'odd"se\\cret\t\u00e9\u2028/x'
PIECES = ["token", "Bearer ", "ya29.abc", "private", "Signature=" + SIG, "access_token=", "x-amz-security-token",
          SESSION_TOKEN, quote(SESSION_TOKEN, safe=""), quote_plus(SESSION_TOKEN), json.dumps(SESSION_TOKEN)[1:-1],
          ODD_SECRET, json.dumps(ODD_SECRET)[1:-1], quote(ODD_SECRET, safe=""), "\n", '"', "\\", "é", "s3://b/k", " "]
texts = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=8)), max_size=6).map("".join)
values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), texts),
                      lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
                      max_leaves=8)


def _full_path(record: logging.LogRecord, monkeypatch) -> str:
    """The line as the formatter writes it with every piece redacted (the clean-line path off)."""
    with monkeypatch.context() as m:
        m.setattr(logs, "_clean_line", lambda *args: None)
        return JsonFormatter().format(record)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=texts, fields=st.dictionaries(texts, values, max_size=4), secret=st.sampled_from(
    [SESSION_TOKEN, ODD_SECRET]))
def test_a_line_is_written_exactly_as_the_full_redaction_writes_it(monkeypatch, message, fields, secret):
    """Whatever the message and fields (credential words, the process's secrets in every form,
    characters JSON escapes), the clean-line path writes the full path's line or leaves it to it."""
    monkeypatch.setenv("AWS_SESSION_TOKEN", secret)
    record = logging.LogRecord("gcs_sync.t", logging.INFO, __file__, 1, "%s", (message,), None)
    record.fields = fields
    assert JsonFormatter().format(record) == _full_path(record, monkeypatch)


def test_clean_lines_skip_the_redaction_and_lines_with_a_secret_do_not(monkeypatch):
    """The clean-line path is taken for an ordinary line (redact is not called), and refused for a
    line holding a secret in any form, a credential word, or a value JSON cannot write itself."""
    monkeypatch.setenv("AWS_SESSION_TOKEN", ODD_SECRET)
    calls: list[str] = []
    real = logs.redact
    monkeypatch.setattr(logs, "redact", lambda text, secrets=None: calls.append(text) or real(text, secrets))

    def line(message: str, **fields) -> dict:
        record = logging.LogRecord("gcs_sync.t", logging.INFO, __file__, 1, message, (), None)
        record.fields = fields
        return json.loads(JsonFormatter().format(record))

    assert line("object copied", source="s3://b/k", bytes=5)["source"] == "s3://b/k" and calls == []
    for message, fields in [("x", {"error": f"failed with {ODD_SECRET}"}),
                            ("x", {"error": json.dumps({"k": ODD_SECRET})}),  # the secret's JSON spelling
                            ("x", {"error": quote(ODD_SECRET, safe="")}),
                            (f"lost {quote_plus(ODD_SECRET)}", {}),
                            ("x", {"header": "Authorization: Bearer abc.def"}),
                            ("x", {"cause": ValueError(f"bad {ODD_SECRET}")})]:
        calls.clear()
        written = json.dumps(line(message, **fields), ensure_ascii=False)
        assert calls, (message, fields)  # the full path ran
        assert "[redacted]" in written and "abc.def" not in written, written
        assert not [form for form in logs.secret_forms((ODD_SECRET,)) if form in written], written

"""An error raised to Lambda holds no secret: google-auth's raw text, chained to the function's
``CredentialsError``, passes the redaction the log lines get, in every encoded form."""

from __future__ import annotations

import json
import traceback
import urllib.parse
from urllib.parse import quote, quote_plus

import pytest

from gcs_sync.errors import CredentialsError
from tests.leaks import add_secret

# What a real session token holds besides letters: "/", "+" and "=", so that its URL-encoded form
# (the one Google's subject token carries) differs from the token itself.
SESSION_TOKEN = "FwoGZXIvYXdzEPT//////////wEaDGmk+7CjgH1YNi4kEiLAAQ/rig/scrub+test=="


def forms(secret: str) -> list[str]:
    return [secret, quote(secret, safe=""), quote(secret), quote_plus(secret), json.dumps(secret)[1:-1]]


@pytest.fixture
def sts_echoing_the_request(world, monkeypatch):
    """A token exchange refused with an answer that quotes the request it refused: the subject
    token (URL-encoded JSON of the signed AWS request, holding the session token) comes back in
    google-auth's error text."""
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    add_secret(SESSION_TOKEN, "test session token")
    seen: list[str] = []

    def handle_sts(body: bytes):
        form = dict(urllib.parse.parse_qsl(body.decode()))
        seen.append(form["subject_token"])
        return 400, {"error": "invalid_grant",
                     "error_description": f"The subject token is not valid: {form['subject_token']}"}

    monkeypatch.setattr(world.rig.tokens, "handle_sts", handle_sts)
    return seen


def test_a_credentials_error_raised_to_lambda_holds_no_form_of_the_session_token(world, sts_echoing_the_request):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    record = world.put("k.txt", b"x")
    with pytest.raises(CredentialsError) as caught:
        world.notify(record)
    (subject,) = sts_echoing_the_request[:1]
    assert quote(SESSION_TOKEN) in subject  # the request really carried it, URL-encoded ("/" kept)
    error = caught.value
    assert "the Google STS token exchange failed" in str(error) and error.retryable is False
    assert error.__cause__ is not None and "invalid_grant" in str(error.__cause__)  # the cause is kept...
    shown = "".join(traceback.format_exception(error)) + repr(error.args) + repr(vars(error))
    assert "[redacted]" in shown
    for form in forms(SESSION_TOKEN):  # ...without the secret in any form
        assert form not in shown, form

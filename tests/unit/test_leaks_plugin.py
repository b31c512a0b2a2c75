"""The no-leak plugin (tests/leaks.py) can fail: it finds a known secret and fails the session."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import quote, quote_plus

from tests.leaks import Leak, encoded_forms, find_leaks, redacted
from tests.rig.s3 import AWS_SECRET_ACCESS_KEY

ROOT = Path(__file__).resolve().parents[2]


def test_scanning_reports_a_known_secret_and_where():
    token = "ya29." + "A1b2C3d4" * 5
    texts = [
        ("log line (formatted) [gcs_sync.transfer]", '{"message": "object copied"}'),
        ("log line (formatted) [gcs_sync.auth]", f'{{"message": "refreshing with Bearer {token} now"}}'),
        ("lambda_handler raised", f"CopyFailed: signing with {AWS_SECRET_ACCESS_KEY} failed"),
    ]
    leaks = find_leaks(texts, {token: "Google access token", AWS_SECRET_ACCESS_KEY: "rig AWS secret access key"})
    assert sorted(leaks, key=lambda leak: leak.label) == [
        Leak("Google access token", redacted(token), "log line (formatted) [gcs_sync.auth]"),
        Leak("rig AWS secret access key", redacted(AWS_SECRET_ACCESS_KEY), "lambda_handler raised"),
    ]
    assert all(token not in leak.shown and AWS_SECRET_ACCESS_KEY not in leak.shown for leak in leaks)
    assert redacted(token).startswith("ya29") and token[4:] not in redacted(token)


def test_scanning_finds_nothing_in_clean_or_redacted_text():
    token = "ya29." + "Z9y8X7w6" * 5
    texts = [("log", '{"message": "Bearer [redacted]"}'), ("result", "{}"), ("empty", "")]
    assert find_leaks(texts, {token: "Google access token", "short": "ignored: too short"}) == []


def test_a_session_whose_output_holds_a_secret_fails(tmp_path):
    """A whole pytest run with the plugin: a passing test that logs the rig's AWS secret."""
    (tmp_path / "test_leaky.py").write_text(textwrap.dedent(f"""
        import logging

        def test_logs_a_secret():
            logging.getLogger("gcs_sync.leaky").error("signing with %s", {AWS_SECRET_ACCESS_KEY!r})
    """))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTEST_ADDOPTS", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.leaks", "-p", "no:cacheprovider",
         "-p", "no:randomly", "--rootdir", str(tmp_path), str(tmp_path / "test_leaky.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    output = result.stdout + result.stderr
    assert "1 passed" in output, output
    assert result.returncode == 1, output
    shown = f"LEAK: rig AWS secret access key {redacted(AWS_SECRET_ACCESS_KEY)} found in"
    assert f"{shown} log line (formatted) [gcs_sync.leaky]" in output, output
    assert f"{shown} log message (raw getMessage) [gcs_sync.leaky]" in output, output
    assert re.search(r"leak check: 1 log lines, \d+ payloads scanned, \d+ secrets known, [1-9]\d* found", output), output
    assert AWS_SECRET_ACCESS_KEY not in output


def test_encoded_forms_of_a_secret_are_searched_for_too():
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY+/="
    forms = encoded_forms({secret: "session token"})
    assert forms[secret] == "session token"
    assert forms[quote(secret, safe="")] == "session token (URL-encoded)"
    assert forms[quote(secret)] == "session token (URL-encoded, / kept)"
    assert quote_plus(secret) in forms  # the same as quote(secret, safe="") without spaces
    assert encoded_forms({"a b/c+d=efgh": "t"})["a+b%2Fc%2Bd%3Defgh"] == "t (form-encoded)"
    assert forms[secret.replace("/", "\\/")] == "session token (JSON-escaped, / escaped)"
    texts = [("subject token", "%7B%22x-amz-security-token%22%3A%22" + quote(secret, safe="") + "%22%7D"),
             ("json", '{"error": "' + secret.replace("/", "\\/") + '"}'), ("clean", "nothing here")]
    leaks = find_leaks(texts, forms)
    assert sorted((leak.label, leak.where) for leak in leaks) == [
        ("session token (JSON-escaped, / escaped)", "json"), ("session token (URL-encoded)", "subject token")]


def test_a_session_whose_handler_raises_an_encoded_secret_fails(tmp_path):
    """What lambda_function.lambda_handler raises is scanned, for every form of a secret."""
    (tmp_path / "lambda_function.py").write_text(textwrap.dedent(f"""
        def lambda_handler(event, context):
            raise RuntimeError("STS refused subject_token " + {quote(AWS_SECRET_ACCESS_KEY, safe="")!r})
    """))
    (tmp_path / "test_raises.py").write_text(textwrap.dedent("""
        import pytest
        import lambda_function

        def test_raises():
            with pytest.raises(RuntimeError):
                lambda_function.lambda_handler({}, None)
    """))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    env.pop("PYTEST_ADDOPTS", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.leaks", "-p", "no:cacheprovider",
         "-p", "no:randomly", "--rootdir", str(tmp_path), str(tmp_path / "test_raises.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    output = result.stdout + result.stderr
    assert "1 passed" in output and result.returncode == 1, output
    assert (f"LEAK: rig AWS secret access key (URL-encoded) {redacted(quote(AWS_SECRET_ACCESS_KEY, safe=''))} "
            "found in lambda_handler raised") in output, output

"""The doctor's runner and its list of checks, with plain functions as checks (no servers).

The runner: a check whose need failed is not run (and names the check that really failed), an
exception or a wrong return becomes a failed check, every detail and fix is scrubbed, nothing
raises. The list: per-destination checks come from the settings, a check whose option is unset
is not listed, and `only` selects checks with what they need.
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import quote

import pytest

from gcs_sync import doctor, runtime
from gcs_sync.config import Destination, Settings
from gcs_sync.doctor import Check, Context, failed, passed, run, select

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"
SESSION = "FwoGZXIvYXdzEBYaDH+session/token=="


def recording(name: str, calls: list, outcome):
    def check(ctx):
        calls.append(name)
        return outcome
    return check


def names_and_marks(results: list[dict]) -> list[tuple[str, bool, str]]:
    return [(r["check"], r["ok"], r["detail"]) for r in results]


def test_a_check_whose_need_failed_is_not_run_and_names_the_real_failure():
    calls: list[str] = []
    checks = [
        Check("a", recording("a", calls, failed("a broke", "fix a"))),
        Check("b", recording("b", calls, passed("fine")), needs=("a",)),
        Check("c", recording("c", calls, passed("fine")), needs=("b",)),  # waits for a, through b
        Check("d", recording("d", calls, passed("independent"))),
        Check("e", recording("e", calls, passed("fine")), needs=("d", "c")),
    ]
    results = run(checks, None, str)
    assert calls == ["a", "d"]  # b, c and e never called
    assert names_and_marks(results) == [
        ("a", False, "a broke"), ("b", False, "not run: a failed"), ("c", False, "not run: a failed"),
        ("d", True, "independent"), ("e", False, "not run: a failed")]
    assert [r["fix"] for r in results] == ["fix a", None, None, None, None]
    assert [doctor.is_not_run(r) for r in results] == [False, True, True, False, True]


def test_a_need_that_passed_lets_the_check_run():
    calls: list[str] = []
    results = run([Check("a", recording("a", calls, passed("ok"))),
                   Check("b", recording("b", calls, failed("b broke", "fix b")), needs=("a",))], None, str)
    assert calls == ["a", "b"] and results[1]["detail"] == "b broke"


def test_exceptions_and_wrong_returns_become_failed_checks_and_the_rest_still_runs():
    def boom(ctx):
        raise KeyError("missing thing")

    calls: list[str] = []
    results = run([Check("boom", boom), Check("junk", lambda ctx: "not an outcome"),
                   Check("after", recording("after", calls, passed("still ran")), needs=("junk",)),
                   Check("last", recording("last", calls, passed("still ran")))], None, str)
    assert results[0]["ok"] is False and results[0]["detail"] == "unexpected KeyError: 'missing thing'"
    assert "did not foresee" in results[0]["fix"]
    assert results[1]["ok"] is False and "returned str, not an Outcome" in results[1]["detail"]
    assert results[2]["detail"] == "not run: junk failed"
    assert calls == ["last"]


def test_a_scrubber_that_fails_does_not_make_the_runner_raise():
    def scrub(text):
        raise UnicodeError("cannot")

    results = run([Check("a", lambda ctx: passed("fine")), Check("b", lambda ctx: passed("fine"), needs=("a",))],
                  None, scrub)
    assert [(r["check"], r["ok"], r["detail"]) for r in results] == [
        ("a", False, "the health check itself failed: UnicodeError"),
        ("b", False, "the health check itself failed: UnicodeError")]  # its "not run" could not be scrubbed either


def test_every_detail_and_fix_is_scrubbed_of_the_environment_secrets_and_the_token():
    class Credentials:
        token = "ya29.not-a-pattern-match-but-the-live-token-1234"

    class Auth:
        credentials = Credentials()

    ctx = Context(environ={"AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": SESSION})
    ctx.auth = Auth()
    leaky = failed(f"secret {SECRET} and encoded {quote(SESSION, safe='')} and token {Credentials.token}",
                   f"signature=0123456789abcdef0123 session {SESSION}")
    (result,) = run([Check("leaky", lambda c: leaky)], ctx, ctx.scrub)
    text = result["detail"] + result["fix"]
    assert SECRET not in text and SESSION not in text and quote(SESSION, safe="") not in text
    assert Credentials.token not in text and "0123456789abcdef0123" not in text
    assert text.count("[redacted]") >= 4
    # The same scrubbing reaches an exception's text.
    (raised,) = run([Check("raised", lambda c: (_ for _ in ()).throw(RuntimeError(f"had {SECRET}")))],
                    ctx, ctx.scrub)
    assert SECRET not in raised["detail"] and "RuntimeError" in raised["detail"]


def test_select_takes_names_or_kinds_and_what_they_need():
    checks = [Check("configuration", lambda c: passed("")), Check("token exchange", lambda c: passed(""),
                                                                  needs=("configuration",)),
              Check("aws identity", lambda c: passed("")),
              Check("destination gs://a/", lambda c: passed(""), ("token exchange",), family="destination"),
              Check("destination gs://b/", lambda c: passed(""), ("token exchange",), family="destination"),
              Check("retention gs://b", lambda c: passed(""), ("destination gs://b/",), family="retention")]
    assert [c.name for c in select(checks, ["AWS identity"])] == ["aws identity"]
    assert [c.name for c in select(checks, ["retention gs://b"])] == [
        "configuration", "token exchange", "destination gs://b/", "retention gs://b"]
    assert [c.name for c in select(checks, ["destination"])] == [
        "configuration", "token exchange", "destination gs://a/", "destination gs://b/"]
    assert select(checks, []) == checks
    with pytest.raises(doctor.UnknownCheck) as refused:
        select(checks, ["aws identity", "nope"])
    message = str(refused.value)
    assert "'nope'" in message and "'aws identity'" in message and "--list-checks" in message
    assert "'destination'" in message  # the kinds are offered too


def settings(*destinations: Destination, **fields) -> Settings:
    return Settings(destinations=destinations, **fields)


def names(ctx: Context) -> list[str]:
    return [c.name for c in doctor.checks_for(ctx)]


def test_per_destination_checks_come_from_the_settings_and_unset_options_are_not_listed():
    plain = Destination("b1")
    cold = Destination("b2", "p/", storage_class="COLDLINE", kms_key="projects/p/locations/l/keyRings/r/cryptoKeys/k")
    held = Destination("b2", "q/", holds=True)  # same bucket: its per-bucket checks appear once
    ctx = Context(environ={}, settings=settings(plain, cold, held, fanout="upload"))
    assert names(ctx) == [
        "configuration", "credential configuration", "aws identity", "token exchange",
        "destination gs://b1/", "destination gs://b2/p/", "destination gs://b2/q/",
        "storage class gs://b2/p/", "encryption key gs://b2/p/", "holds gs://b2/q/",
        "retention gs://b1", "retention gs://b2",
        "source bucket"]
    by_name = {c.name: c for c in doctor.checks_for(ctx)}
    assert by_name["storage class gs://b2/p/"].needs == ("destination gs://b2/p/",)
    assert by_name["retention gs://b2"].needs == ("destination gs://b2/p/",)
    assert by_name["destination gs://b1/"].needs == ("configuration", "token exchange")

    sliced = replace(ctx, settings=replace(ctx.settings, slice_queue_url="https://sqs.eu-west-1.amazonaws.com/1/q",
                                           gcs_api_endpoint="https://storage-x.p.googleapis.com",
                                           source_buckets=frozenset({"src-b", "src-a"})))
    listed = names(sliced)
    assert listed[4] == "gcs endpoint"
    assert ["slice leftovers gs://b1", "slice leftovers gs://b2"] == [n for n in listed if n.startswith("slice leftovers")]
    assert listed[-3:] == ["slice queue", "source bucket s3://src-a", "source bucket s3://src-b"]


def test_a_broken_configuration_lists_placeholders_that_wait_for_it():
    ctx = Context.from_environ({"GCS_DESTINATIONS": "s3://nope"})
    assert ctx.settings is None and ctx.config_error is not None
    assert names(ctx) == ["configuration", "credential configuration", "aws identity", "token exchange",
                          "destinations", "source bucket"]


def test_run_checks_with_only_runs_the_named_check_and_what_it_needs(monkeypatch):
    env = {"GCS_DESTINATIONS": "gs://b1", "AWS_REGION": "us-east-1"}  # no AWS keys: fails without a call
    report = doctor.run_checks(env, only=["aws identity"], where=doctor.TERMINAL)
    assert [c["check"] for c in report["checks"]] == ["aws identity"]
    assert report["ok"] is False and "AWS_ACCESS_KEY_ID" in report["checks"][0]["detail"]
    assert "export" in report["checks"][0]["fix"] and "Lambda sets" not in report["checks"][0]["fix"]
    in_lambda = doctor.run_checks(env, only=["aws identity"], where=doctor.LAMBDA)
    assert "Lambda sets them" in in_lambda["checks"][0]["fix"]
    with pytest.raises(doctor.UnknownCheck):
        doctor.run_checks(env, only=["no such check"])


def test_the_place_decides_the_advice_when_aws_sts_cannot_be_reached():
    from gcs_sync.doctor import aws_checks

    local = {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:5000"}
    terminal = Context(environ=local, where=doctor.TERMINAL)
    fix = aws_checks.sts_unreachable_fix(terminal)
    assert "NAT" not in fix and "AWS_ENDPOINT_URL_STS" in fix
    assert "AWS_ENDPOINT_URL_STS=http://127.0.0.1:5000" in fix  # the local S3 is named: moto answers STS there
    assert "AWS_ENDPOINT_URL_STS=" in aws_checks.sts_refused_fix(terminal)
    lambda_fix = aws_checks.sts_unreachable_fix(Context(environ=local, where=doctor.LAMBDA))
    assert "NAT gateway" in lambda_fix and "AWS_ENDPOINT_URL_STS=" not in lambda_fix
    # Already pointed somewhere: no suggestion to set it.
    pointed = Context(environ={**local, "AWS_ENDPOINT_URL_STS": "http://127.0.0.1:5001"}, where=doctor.TERMINAL)
    assert "AWS_ENDPOINT_URL_STS=" not in aws_checks.sts_unreachable_fix(pointed)
    assert "execution role" in aws_checks.sts_refused_fix(Context(environ={}, where=doctor.LAMBDA))
    assert "NAT" not in aws_checks.unreachable_fix(terminal, "S3", "AWS_ENDPOINT_URL_S3")


def test_where_defaults_to_lambda_only_inside_lambda():
    assert Context.from_environ({"AWS_LAMBDA_FUNCTION_NAME": "fn"}).in_lambda
    assert not Context.from_environ({}).in_lambda
    assert not Context.from_environ({"AWS_LAMBDA_FUNCTION_NAME": "fn"}, where=doctor.TERMINAL).in_lambda


def test_the_doctors_sts_client_honours_aws_endpoint_url_sts(monkeypatch):
    """boto3 reads AWS_ENDPOINT_URL_STS itself when the client is built the ordinary way."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS"):
        monkeypatch.delenv(name, raising=False)
    assert runtime.aws_client("sts", "eu-west-1").meta.endpoint_url == "https://sts.eu-west-1.amazonaws.com"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    assert runtime.aws_client("sts", "eu-west-1").meta.endpoint_url == "http://127.0.0.1:4566"
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:5000")
    assert runtime.aws_client("sts", "eu-west-1").meta.endpoint_url == "http://127.0.0.1:5000"
    assert runtime.aws_client("s3", "eu-west-1").meta.endpoint_url == "http://127.0.0.1:4566"


def test_format_list_names_each_check_what_it_looks_at_and_needs():
    ctx = Context(environ={}, settings=settings(Destination("b1"), Destination("b2", storage_class="ARCHIVE")))
    lines = doctor.format_list(doctor.checks_for(ctx)).splitlines()
    (line,) = [l for l in lines if l.startswith("storage class gs://b2/")]
    assert "Autoclass" in line and line.endswith("(needs destination gs://b2/)")
    assert lines[0].startswith("configuration ") and "needs" not in lines[0]


def test_unreachable_google_token_endpoints_get_the_advice_of_where_the_doctor_runs():
    from google.auth import exceptions as auth_exc

    from gcs_sync.doctor import setup_checks
    from gcs_sync.errors import CredentialsError

    def outcome(where: str):
        ctx = Context(environ={}, where=where)
        ctx.info = {"type": "external_account", "token_url": "http://127.0.0.1:9/v1/token"}
        error = CredentialsError("token exchange failed")
        error.__cause__ = auth_exc.TransportError("connection refused")
        return setup_checks.token_failure(ctx, error)

    terminal, in_lambda = outcome(doctor.TERMINAL), outcome(doctor.LAMBDA)
    assert terminal.ok is False and "connection refused" in terminal.detail
    assert "NAT" not in terminal.fix and "http://127.0.0.1:9/v1/token" in terminal.fix
    assert "NAT gateway" in in_lambda.fix and "sts.googleapis.com" in in_lambda.fix

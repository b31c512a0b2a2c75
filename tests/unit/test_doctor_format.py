"""The doctor's pure parts: what Google sees of an AWS caller, audience parsing, the table."""

from __future__ import annotations

import pytest

from gcs_sync import doctor

AUDIENCE = "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/pool-a/providers/aws-b"


@pytest.mark.parametrize("arn, expected", [
    ("arn:aws:sts::111122223333:assumed-role/gcs-sync-role/gcs-sync-fn",
     "arn:aws:sts::111122223333:assumed-role/gcs-sync-role"),
    ("arn:aws:sts::111122223333:assumed-role/role/session/with/slashes",
     "arn:aws:sts::111122223333:assumed-role/role"),
    ("arn:aws-cn:sts::111122223333:assumed-role/r/s", "arn:aws-cn:sts::111122223333:assumed-role/r"),
    ("arn:aws:iam::111122223333:user/alice", "arn:aws:iam::111122223333:user/alice"),
    ("arn:aws:sts::123456789012:user/moto", "arn:aws:sts::123456789012:user/moto"),
    ("arn:aws:iam::111122223333:root", "arn:aws:iam::111122223333:root"),
])
def test_aws_role_attribute(arn, expected):
    assert doctor.aws_role_attribute(arn) == expected


def test_audience_and_service_account_parsing():
    assert doctor.audience_parts(AUDIENCE) == {
        "project": "123456", "location": "global", "pool": "pool-a", "provider": "aws-b"}
    assert doctor.audience_parts("//iam.googleapis.com/projects/1/whatever") is None
    assert doctor.audience_parts(None) is None
    url = ("https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/"
           "sa@p.iam.gserviceaccount.com:generateAccessToken")
    assert doctor.impersonated_email(url) == "sa@p.iam.gserviceaccount.com"
    assert doctor.impersonated_email(None) is None
    assert doctor.principal_set(AUDIENCE, "arn:aws:sts::1:assumed-role/r") == (
        "principalSet://iam.googleapis.com/projects/123456/locations/global/"
        "workloadIdentityPools/pool-a/attribute.aws_role/arn:aws:sts::1:assumed-role/r")
    assert "PROJECT_NUMBER" in doctor.principal_set("bad", None)


def test_table_of_a_healthy_report():
    report = {"ok": True, "checks": [
        {"check": "configuration", "ok": True, "detail": "1 destination(s): gs://b/", "fix": None},
        {"check": "token exchange", "ok": True, "detail": "fine", "fix": None},
    ]}
    lines = doctor.format_table(report).splitlines()
    assert lines[0].startswith("PASS  configuration ") and lines[0].endswith("gs://b/")
    assert lines[1].startswith("PASS  token exchange ")
    assert lines[-1] == "all 2 checks passed"


def test_table_of_a_broken_report_shows_fixes_under_failures_only():
    report = {"ok": False, "checks": [
        {"check": "configuration", "ok": True, "detail": "ok", "fix": None},
        {"check": "token exchange", "ok": False, "detail": "STS said no " * 20,
         "fix": "grant the thing:\ngcloud do --the=thing"},
        {"check": "destination gs://" + "b" * 60 + "/", "ok": False,
         "detail": "not run: token exchange failed", "fix": None},
        {"check": "source bucket", "ok": True, "detail": "none configured", "fix": "set SOURCE_BUCKETS"},
    ]}
    table = doctor.format_table(report)
    lines = table.splitlines()
    assert lines[1].startswith("FAIL  token exchange")
    assert any(line.strip() == "fix: grant the thing:" for line in lines)
    assert any(line.strip() == "gcloud do --the=thing" for line in lines)  # command kept whole
    assert any(line.startswith("SKIP  destination gs://bbbb") for line in lines)  # long name: own line
    assert any(line.strip() == "not run: token exchange failed" for line in lines)
    assert any(line.strip() == "hint: set SOURCE_BUCKETS" for line in lines)
    assert all(len(line) <= 112 for line in lines if "fix:" not in line and "gcloud" not in line
               and "gs://bbbb" not in line)
    assert lines[-1] == "2 of 4 checks passed; 1 failed, 1 not run (each waits for a failed check it needs)"


def test_checks_not_run_are_not_counted_as_failed():
    report = {"ok": False, "checks": [
        {"check": "configuration", "ok": False, "detail": "1 problem(s): X", "fix": "GCS_DESTINATIONS: write gs://b"},
        {"check": "token exchange", "ok": False, "detail": "not run: configuration failed", "fix": None},
        {"check": "destinations", "ok": False, "detail": "not run: configuration failed", "fix": None},
    ]}
    assert doctor.is_not_run(report["checks"][1]) and not doctor.is_not_run(report["checks"][0])
    lines = doctor.format_table(report).splitlines()
    assert lines[-1] == "0 of 3 checks passed; 1 failed, 2 not run (each waits for a failed check it needs)"
    assert [line[:4] for line in lines if line[:4] in ("FAIL", "SKIP")] == ["FAIL", "SKIP", "SKIP"]


def test_table_of_an_empty_report():
    assert doctor.format_table({"ok": False, "checks": []}) == "no checks ran"

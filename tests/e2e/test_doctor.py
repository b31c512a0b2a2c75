"""The health check against the real local servers: a healthy setup, then deliberately broken ones.

Nothing is patched except where a test says so: each setup is made through the environment, the
credential configuration file, and the rig's knobs (token server refusals, bucket permissions).
"""

from __future__ import annotations

import json

import pytest

from gcs_sync import doctor
from tests.rig import DEFAULT_SERVICE_ACCOUNT
from tests.rig.s3 import AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN

PROBE = ".gcs-sync-doctor-probe/"
MOTO_ROLE = "arn:aws:sts::123456789012:user/moto"  # what moto's GetCallerIdentity answers
OTHER_AUDIENCE = ("//iam.googleapis.com/projects/123456/locations/global/"
                  "workloadIdentityPools/pool/providers/other")
FAKE_KEY = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"
            "doctorTestKeyMaterial0123456789\n-----END PRIVATE KEY-----\n")


def configure(world, destinations: str, **extra: str) -> None:
    """The function's environment, with boto3's STS pointed at moto (it answers STS too)."""
    world.configure(destinations, AWS_ENDPOINT_URL_STS=world.rig.s3.url, **extra)


def run(world, **kwargs) -> dict:
    report = doctor.run_checks(code_dir=str(world.tmp_path / "task"), **kwargs)
    assert_shape(world, report)
    return report


def assert_shape(world, report: dict) -> None:
    assert_no_secrets(world, report)
    assert set(report) == {"ok", "checks"}
    assert report["ok"] == all(c["ok"] for c in report["checks"])
    for check in report["checks"]:
        assert set(check) == {"check", "ok", "detail", "fix"}
        assert isinstance(check["detail"], str) and check["detail"]
        assert check["fix"] is None or isinstance(check["fix"], str)
        if not check["ok"] and not check["detail"].startswith("not run:"):
            assert check["fix"], f"{check['check']} failed without a fix"


def assert_no_secrets(world, report: dict) -> None:
    text = json.dumps(report) + doctor.format_table(report)
    secrets = {AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, *world.rig.tokens.issued_access_tokens}
    leaked = [s for s in secrets if s in text]
    assert not leaked, "a credential or token reached the doctor's output"
    assert "PRIVATE KEY" not in text and "doctorTestKeyMaterial" not in text


def by_name(report: dict) -> dict[str, dict]:
    return {c["check"]: c for c in report["checks"]}


def writes(world) -> list[tuple[str, str]]:
    return [(m, p) for m, p in world.rig.front.requests if m != "GET" or p.startswith("/upload/")]


def not_run(check: dict, because: str) -> bool:
    return check["ok"] is False and check["detail"] == f"not run: {because} failed"


# -- healthy ---------------------------------------------------------------------------------------


def test_healthy_setup_passes_every_check_and_writes_nothing(world):
    plain, prefixed = world.bucket(), world.bucket()
    configure(world, f"gs://{plain}, gs://{prefixed}/mirror/", SOURCE_BUCKETS=world.source)
    world.rig.s3_client.put_object(Bucket=world.source, Key="some/object.txt", Body=b"x")

    report = run(world)

    assert report["ok"] is True, doctor.format_table(report)
    names = [c["check"] for c in report["checks"]]
    assert names == [
        "configuration", "credential configuration", "aws identity", "token exchange",
        "gcs endpoint",  # GCS_API_ENDPOINT is set (the rig's front)
        f"destination gs://{plain}/", f"destination gs://{prefixed}/mirror/",
        f"retention gs://{plain}", f"retention gs://{prefixed}",
        f"server copy gs://{plain}/ -> gs://{prefixed}/mirror/",  # FANOUT=copy, the default
        f"source bucket s3://{world.source}",
    ]
    checks = by_name(report)
    # A passing check carries no fix, except the warning about where the bearer token goes.
    assert all(c["ok"] and c["fix"] is None for c in report["checks"] if c["check"] != "gcs endpoint")
    endpoint = checks["gcs endpoint"]
    assert endpoint["ok"] is True and endpoint["detail"].startswith("warning: ")
    assert world.rig.front.url in endpoint["detail"] and "access token" in endpoint["detail"]
    assert "local endpoint" in endpoint["detail"] and "*.googleapis.com" in endpoint["fix"]
    assert checks[f"retention gs://{plain}"]["detail"].startswith("no bucket retention policy")
    assert f"gs://{prefixed}/mirror/" in checks["configuration"]["detail"]
    assert str(world.tmp_path / "task" / "gcp-credentials.json") in checks["configuration"]["detail"]
    credential = checks["credential configuration"]["detail"]
    assert "pool pool" in credential and "provider aws" in credential and "123456" in credential
    assert DEFAULT_SERVICE_ACCOUNT in credential
    assert MOTO_ROLE in checks["aws identity"]["detail"]
    assert f"attribute.aws_role = {MOTO_ROLE}" in checks["aws identity"]["detail"]
    assert DEFAULT_SERVICE_ACCOUNT in checks["token exchange"]["detail"]
    assert "some/object.txt" in checks[f"source bucket s3://{world.source}"]["detail"]

    # testIamPermissions and listings only: no upload, no delete, nothing but GETs
    assert writes(world) == []
    assert not any(m == "DELETE" for m, _ in world.rig.front.requests)
    assert ("GET", f"/storage/v1/b/{plain}/iam/testPermissions") in world.rig.front.requests
    assert ("GET", f"/storage/v1/b/{plain}") in world.rig.front.requests  # buckets.get, once per bucket
    assert world.rig.front.requests.count(("GET", f"/storage/v1/b/{plain}")) == 1
    assert world.rig.gcs.list_objects(plain) == [] and world.rig.gcs.list_objects(prefixed) == []
    assert world.rig.tokens.sts_calls == 1 and world.rig.tokens.iam_calls == 1

    table = doctor.format_table(report)
    assert table.splitlines()[-1] == "all 11 checks passed"
    assert "FAIL" not in table and "fix:" not in table and table.count("hint:") == 1


def test_no_source_bucket_configured_is_a_passing_check_with_a_hint(world):
    configure(world, f"gs://{world.bucket()}")
    report = run(world)
    source = by_name(report)["source bucket"]
    assert source["ok"] is True
    assert source["detail"] == "no source bucket configured; set SOURCE_BUCKETS to check read access"
    assert "SOURCE_BUCKETS" in source["fix"]
    assert report["ok"] is True


def test_default_source_bucket_is_checked_without_an_allow_list(world):
    configure(world, f"gs://{world.bucket()}", S3_BUCKET_NAME=world.source)
    report = run(world)
    source = by_name(report)[f"source bucket s3://{world.source}"]
    assert source["ok"] is True and "empty" in source["detail"]


# -- Google side -----------------------------------------------------------------------------------


def test_wrong_audience_fails_at_sts_with_the_pool_provider_fix(world):
    dest = world.bucket()
    config = world.tmp_path / "other-provider.json"
    config.write_text(json.dumps(world.rig.tokens.credential_config(audience=OTHER_AUDIENCE)))
    configure(world, f"gs://{dest}", GOOGLE_APPLICATION_CREDENTIALS=str(config))

    report = run(world)

    checks = by_name(report)
    assert report["ok"] is False
    assert checks["credential configuration"]["ok"] is True  # the file is well-formed
    assert "provider other" in checks["credential configuration"]["detail"]
    exchange = checks["token exchange"]
    assert exchange["ok"] is False
    assert "STS" in exchange["detail"] and "invalid_grant" in exchange["detail"]
    fix = exchange["fix"]
    assert "pool" in fix and "provider" in fix and "other" in fix
    assert "123456789012" in fix  # the AWS account id the provider must name
    assert "attribute condition" in fix and MOTO_ROLE in fix  # the aws_role value from check 3
    assert "workloadIdentityUser" not in fix
    assert not_run(checks[f"destination gs://{dest}/"], "token exchange")
    assert world.rig.tokens.iam_calls == 0
    assert world.rig.front.requests == []


def test_refused_impersonation_names_the_binding_to_grant(world):
    dest = world.bucket()
    configure(world, f"gs://{dest}")
    world.rig.tokens.refuse_impersonation = True

    report = run(world)

    exchange = by_name(report)["token exchange"]
    assert exchange["ok"] is False
    assert "impersonating" in exchange["detail"] and DEFAULT_SERVICE_ACCOUNT in exchange["detail"]
    assert "PERMISSION_DENIED" in exchange["detail"]
    fix = exchange["fix"]
    assert "roles/iam.workloadIdentityUser" in fix
    assert ("principalSet://iam.googleapis.com/projects/123456/locations/global/"
            f"workloadIdentityPools/pool/attribute.aws_role/{MOTO_ROLE}") in fix
    assert f"gcloud iam service-accounts add-iam-policy-binding {DEFAULT_SERVICE_ACCOUNT}" in fix
    assert not_run(by_name(report)[f"destination gs://{dest}/"], "token exchange")


def test_sts_refusal_is_told_apart_from_impersonation(world):
    configure(world, f"gs://{world.bucket()}")
    world.rig.tokens.refuse_sts = True
    exchange = by_name(run(world))["token exchange"]
    assert exchange["ok"] is False and "STS refused" in exchange["detail"]
    assert "attribute condition" in exchange["fix"] and "workloadIdentityUser" not in exchange["fix"]


# -- destinations ----------------------------------------------------------------------------------


def test_bucket_without_delete_permission_fails_with_object_admin_fix(world):
    creator_only, fine = world.bucket(), world.bucket()
    configure(world, f"gs://{creator_only}/in/, gs://{fine}")
    world.rig.front.permissions[creator_only] = {
        "storage.objects.create", "storage.objects.get", "storage.objects.list"}

    report = run(world)

    checks = by_name(report)
    bad = checks[f"destination gs://{creator_only}/in/"]
    assert bad["ok"] is False
    assert "can create but not overwrite" in bad["detail"] and "storage.objects.delete" in bad["detail"]
    assert "roles/storage.objectUser" in bad["fix"] and "Object Creator cannot overwrite" in bad["fix"]
    assert f"gs://{creator_only}" in bad["fix"] and DEFAULT_SERVICE_ACCOUNT in bad["fix"]
    assert checks[f"destination gs://{fine}/"]["ok"] is True
    assert report["ok"] is False
    assert writes(world) == []


@pytest.mark.parametrize("held, expected", [
    ({"storage.objects.get", "storage.objects.list"}, "cannot copy"),
    ({"storage.objects.create", "storage.objects.delete", "storage.objects.list"},
     "cannot check what the destination holds"),
    ({"storage.objects.create", "storage.objects.delete", "storage.objects.get"},
     "sync cannot compare listings"),
    (set(), "cannot copy"),
])
def test_each_missing_permission_is_explained(world, held, expected):
    dest = world.bucket()
    configure(world, f"gs://{dest}")
    world.rig.front.permissions[dest] = held
    check = by_name(run(world))[f"destination gs://{dest}/"]
    assert check["ok"] is False and expected in check["detail"]
    assert "roles/storage.objectUser" in check["fix"]


def test_missing_buckets_fail(world):
    denied, never_created, fine = world.bucket(), "never-created-doctor-bucket", world.bucket()
    configure(world, f"gs://{denied}, gs://{never_created}/p/, gs://{fine}")
    world.rig.front.deny[denied] = 404

    report = run(world)

    checks = by_name(report)
    for name in (f"gs://{denied}/", f"gs://{never_created}/p/"):
        check = checks[f"destination {name}"]
        assert check["ok"] is False and "does not exist" in check["detail"], check
        assert "GCS_DESTINATIONS" in check["fix"]
    assert checks[f"destination gs://{fine}/"]["ok"] is True
    assert report["ok"] is False


def test_bucket_refusing_all_access_fails(world):
    dest = world.bucket()
    configure(world, f"gs://{dest}")
    world.rig.front.deny[dest] = 403
    check = by_name(run(world))[f"destination gs://{dest}/"]
    assert check["ok"] is False and "no access at all" in check["detail"]
    assert "roles/storage.objectUser" in check["fix"]


def test_write_probe_writes_overwrites_and_deletes_one_object(world):
    plain, prefixed = world.bucket(), world.bucket()
    configure(world, f"gs://{plain}, gs://{prefixed}/mirror/")

    report = run(world, write_probe=True)

    assert report["ok"] is True, doctor.format_table(report)
    for bucket, prefix in ((plain, ""), (prefixed, "mirror/")):
        detail = by_name(report)[f"destination gs://{bucket}/{prefix}"]["detail"]
        assert f"created gs://{bucket}/{prefix}{PROBE}" in detail
        assert "overwritten" in detail and "deleted" in detail
        uploads = [p for m, p in world.rig.front.requests if m == "POST" and p == f"/upload/storage/v1/b/{bucket}/o"]
        assert len(uploads) == 2  # created, then overwritten
        deletes = [p for m, p in world.rig.front.requests
                   if m == "DELETE" and p.startswith(f"/storage/v1/b/{bucket}/o/")]
        assert len(deletes) == 1 and f"{prefix}{PROBE}".replace("/", "%2F") in deletes[0]
        assert world.rig.gcs.list_objects(bucket) == []


def test_write_probe_is_skipped_where_it_could_not_be_cleaned_up(world):
    dest = world.bucket()
    configure(world, f"gs://{dest}")
    world.rig.front.permissions[dest] = {"storage.objects.create", "storage.objects.get", "storage.objects.list"}
    check = by_name(run(world, write_probe=True))[f"destination gs://{dest}/"]
    assert check["ok"] is False and "write probe not tried" in check["detail"]
    assert writes(world) == []


# -- configuration and credential configuration ----------------------------------------------------


def test_bad_configuration_fails_and_checks_needing_it_are_not_run(world):
    configure(world, "s3://x")

    report = run(world)

    checks = report["checks"]
    assert report["ok"] is False
    assert checks[0]["check"] == "configuration" and checks[0]["ok"] is False
    assert "GCS_DESTINATIONS" in checks[0]["detail"] and "s3://x" in checks[0]["detail"]
    fix = checks[0]["fix"]
    assert fix.startswith("GCS_DESTINATIONS: ") and "gs://x" in fix  # the fix for this very entry
    assert "my-bucket" not in fix
    # The credential file and the AWS identity need only their own variables: checked anyway.
    assert [(c["check"], c["ok"]) for c in checks[1:3]] == [("credential configuration", True),
                                                           ("aws identity", True)]
    assert [c["check"] for c in checks[3:]] == ["token exchange", "destinations", "source bucket"]
    assert all(not_run(c, "configuration") and c["fix"] is None for c in checks[3:])
    assert world.rig.tokens.sts_calls == 0 and world.rig.front.requests == []


def test_a_bad_variable_and_a_bad_credential_file_are_reported_together(world):
    (world.tmp_path / "task" / "broken.json").write_text('{"type": "external_account",')
    configure(world, "my-bucket", GOOGLE_APPLICATION_CREDENTIALS="broken.json", OBJECT_CONCURRENCY="lots")

    checks = by_name(run(world))

    configuration = checks["configuration"]
    assert configuration["ok"] is False
    fixes = configuration["fix"].splitlines()
    assert fixes[0] == "GCS_DESTINATIONS: write gs://my-bucket"
    assert fixes[1].startswith("OBJECT_CONCURRENCY: set OBJECT_CONCURRENCY to a whole number")
    assert "GCS_DESTINATIONS" not in fixes[1]
    credential = checks["credential configuration"]
    assert credential["ok"] is False and "is not JSON" in credential["detail"]
    assert "create-cred-config" in credential["fix"]


def test_service_account_key_is_refused_with_the_opt_in_named(world):
    dest = world.bucket()
    key = world.tmp_path / "task" / "key.json"
    key.write_text(json.dumps({
        "type": "service_account", "project_id": "rig-project", "private_key_id": "abc123",
        "private_key": FAKE_KEY, "client_email": DEFAULT_SERVICE_ACCOUNT,
        "token_uri": "https://oauth2.googleapis.com/token",
    }))
    configure(world, f"gs://{dest}", GOOGLE_APPLICATION_CREDENTIALS="key.json")

    report = run(world)

    checks = by_name(report)
    credential = checks["credential configuration"]
    assert credential["ok"] is False
    assert "service-account key" in credential["detail"]
    assert "ALLOW_SERVICE_ACCOUNT_KEY=true" in credential["fix"]
    assert "keyless" in credential["fix"] and "--credentials" in credential["fix"]
    assert checks["aws identity"]["ok"] is True  # independent of the Google file
    assert not_run(checks["token exchange"], "credential configuration")
    assert not_run(checks[f"destination gs://{dest}/"], "credential configuration")


def test_missing_credential_file_says_how_to_include_it(world):
    configure(world, f"gs://{world.bucket()}", GOOGLE_APPLICATION_CREDENTIALS="missing.json")
    credential = by_name(run(world))["credential configuration"]
    assert credential["ok"] is False and "does not exist" in credential["detail"]
    assert "./build.sh --credentials" in credential["fix"]


def test_credential_configuration_with_wrong_source_is_refused(world):
    config = world.rig.tokens.credential_config()
    config["credential_source"] = {"file": "/var/run/token"}
    config["subject_token_type"] = "urn:ietf:params:oauth:token-type:jwt"
    (world.tmp_path / "task" / "oidc.json").write_text(json.dumps(config))
    configure(world, f"gs://{world.bucket()}", GOOGLE_APPLICATION_CREDENTIALS="oidc.json")
    credential = by_name(run(world))["credential configuration"]
    assert credential["ok"] is False
    assert "credential_source" in credential["detail"] and "subject_token_type" in credential["detail"]
    assert "create-cred-config" in credential["fix"] and "--aws" in credential["fix"]


# -- sources ---------------------------------------------------------------------------------------


def test_source_bucket_that_does_not_exist_fails(world):
    configure(world, f"gs://{world.bucket()}", SOURCE_BUCKETS=f"{world.source}, no-such-source-bucket")

    report = run(world)

    checks = by_name(report)
    missing = checks["source bucket s3://no-such-source-bucket"]
    assert missing["ok"] is False and "does not exist" in missing["detail"]
    assert "SOURCE_BUCKETS" in missing["fix"]
    assert checks[f"source bucket s3://{world.source}"]["ok"] is True
    assert report["ok"] is False


# -- output ----------------------------------------------------------------------------------------


def test_format_table_of_a_broken_setup_shows_each_failure_and_its_fix(world):
    creator_only, missing = world.bucket(), "never-created-doctor-bucket"
    configure(world, f"gs://{creator_only}, gs://{missing}", SOURCE_BUCKETS="no-such-source-bucket")
    world.rig.front.permissions[creator_only] = {
        "storage.objects.create", "storage.objects.get", "storage.objects.list"}

    report = run(world)
    table = doctor.format_table(report)

    failed = [c for c in report["checks"] if not c["ok"] and not doctor.is_not_run(c)]
    assert len(failed) == 3
    lines = table.splitlines()
    for check in failed:
        assert any(line.startswith("FAIL") and check["check"] in line for line in lines), check["check"]
        assert f"fix: {check['fix'].splitlines()[0]}" in table
    total = len(report["checks"])
    # The server copy between the two destinations waits for both, and each bucket's retention
    # check for its destination's: not run.
    assert lines[-1] == f"{total - 6} of {total} checks passed; 3 failed, 3 not run (each waits for a failed check it needs)"
    assert sum(line.startswith("PASS") for line in lines) == len(report["checks"]) - 6


def test_format_table_marks_checks_not_run(world):
    configure(world, "s3://x")
    table = doctor.format_table(run(world))
    assert table.splitlines()[-1] == (
        "2 of 6 checks passed; 1 failed, 3 not run (each waits for a failed check it needs)")
    assert table.count("not run: configuration failed") == 3
    assert sum(line.startswith("SKIP") for line in table.splitlines()) == 3


def test_unexpected_errors_become_failed_checks_without_secrets(world, monkeypatch):
    """The one patch here: a storage client builder that blows up, quoting a secret."""
    import gcs_sync.runtime

    dest = world.bucket()
    configure(world, f"gs://{dest}")

    def broken(*args, **kwargs):
        raise RuntimeError(f"boom with {AWS_SECRET_ACCESS_KEY} and {AWS_SESSION_TOKEN} inside")

    monkeypatch.setattr(gcs_sync.runtime, "gcs_client", broken)
    report = run(world)  # asserts no secret in the output
    check = by_name(report)[f"destination gs://{dest}/"]
    assert check["ok"] is False and "RuntimeError" in check["detail"] and "boom" in check["detail"]
    assert "[redacted]" in check["detail"]


def test_server_copies_from_the_primary_are_checked_per_destination(world):
    primary, other, walled = world.bucket(), world.bucket(), world.bucket()
    configure(world, f"gs://{primary} gs://{other} gs://{walled}", PRIMARY_DESTINATION=f"gs://{primary}")
    report = run(world)
    checks = by_name(report)
    assert checks[f"server copy gs://{primary}/ -> gs://{other}/"]["ok"] is True
    assert "leaves AWS once" in checks[f"server copy gs://{primary}/ -> gs://{other}/"]["detail"]
    # A destination this container saw refuse server-side copies is named, with the fix.
    report = run(world, refused_server_copies=(f"gs://{walled}/",))
    check = by_name(report)[f"server copy gs://{primary}/ -> gs://{walled}/"]
    assert check["ok"] is False and "403" in check["detail"] and "FANOUT=upload" in check["fix"]
    assert f"roles/storage.objectViewer on gs://{primary}" in check["fix"]


def test_fanout_upload_has_no_server_copy_check(world):
    first, second = world.bucket(), world.bucket()
    configure(world, f"gs://{first} gs://{second}", FANOUT="upload")
    assert not [c for c in run(world)["checks"] if c["check"].startswith("server copy")]


# -- destination policies, endpoints and slice leftovers ---------------------------------------------
# The local Cloud Storage answers every bucket as a plain one (no Autoclass, retention, object
# retention, lifecycle rules or default key): these tests see what the checks make of that, through
# the real clients; each other setting is tested with given bucket settings in
# tests/unit/test_doctor_policies.py.

KEY = "projects/keys-p/locations/us-central1/keyRings/ring/cryptoKeys/mirror"


def test_destination_options_get_their_checks_against_the_real_buckets(world):
    from dataclasses import replace

    from gcs_sync.config import Destination

    cold, held = world.bucket(), world.bucket()
    configure(world, f"gs://{cold} gs://{held}/p/", FANOUT="upload")
    context = doctor.Context.from_environ(code_dir=str(world.tmp_path / "task"))
    # GCS_DESTINATIONS' ?options are parsed by config; the destinations they make are these:
    context.settings = replace(context.settings, destinations=(
        Destination(cold, storage_class="COLDLINE", kms_key=KEY), Destination(held, "p/", holds=True)))

    report = doctor.report(context)
    assert_shape(world, report)

    checks = by_name(report)
    assert [c["check"] for c in report["checks"]][5:] == [
        f"destination gs://{cold}/", f"destination gs://{held}/p/", f"storage class gs://{cold}/",
        f"encryption key gs://{cold}/", f"holds gs://{held}/p/", f"retention gs://{cold}", f"retention gs://{held}",
        "source bucket"]
    storage_class = checks[f"storage class gs://{cold}/"]
    assert storage_class["ok"] is True and storage_class["detail"].startswith("warning: copies written as COLDLINE")
    assert "the bucket's default is STANDARD, Autoclass off" in storage_class["detail"]
    assert "COLDLINE 90 days" in storage_class["detail"] and "soft delete" in storage_class["detail"]
    key = checks[f"encryption key gs://{cold}/"]
    assert key["ok"] is True and "no default key" in key["detail"] and "cannot be checked" in key["detail"]
    assert "roles/cloudkms.cryptoKeyEncrypterDecrypter" in key["fix"]
    holds = checks[f"holds gs://{held}/p/"]
    assert holds["ok"] is False and "object retention" in holds["detail"] and "--enable-per-object-retention" in holds["fix"]
    assert checks[f"retention gs://{held}"]["ok"] is True
    assert report["ok"] is False  # the holds check
    for bucket in (cold, held):  # the bucket's settings, read once for all its checks
        assert world.rig.front.requests.count(("GET", f"/storage/v1/b/{bucket}")) == 1
    assert writes(world) == []

    only = doctor.report(context, doctor.select(doctor.checks_for(context), ["storage class"]))
    assert [c["check"] for c in only["checks"]] == [
        "configuration", "credential configuration", "token exchange", f"destination gs://{cold}/",
        f"storage class gs://{cold}/"]


def test_with_slicing_on_each_bucket_needs_the_lifecycle_rule_for_leftover_slices(world):
    first, second = world.bucket(), world.bucket()
    queue = f"{world.rig.s3.url}/123456789012/doctor-no-such-queue"
    configure(world, f"gs://{first}/a/ gs://{first}/b/ gs://{second}", SLICE_QUEUE_URL=queue)

    report = run(world)

    leftovers = [c for c in report["checks"] if c["check"].startswith("slice leftovers")]
    assert [c["check"] for c in leftovers] == [f"slice leftovers gs://{first}", f"slice leftovers gs://{second}"]
    for check, bucket in zip(leftovers, (first, second)):
        assert check["ok"] is False and ".gcs-sync-slices/" in check["detail"]
        assert f"gcloud storage buckets update gs://{bucket} --lifecycle-file=lifecycle.json" in check["fix"]
        assert '"matchesPrefix": [".gcs-sync-slices/"]' in check["fix"]
    assert not by_name(report)["slice queue"]["ok"]  # no such queue, told apart


def test_an_endpoint_that_is_not_googles_is_a_warning_not_a_failure(world):
    configure(world, f"gs://{world.bucket()}")
    check = by_name(run(world, only=["gcs endpoint"]))["gcs endpoint"]
    assert check["ok"] is True and "is a local endpoint" in check["detail"] and "access token" in check["detail"]


def test_the_doctor_event_keeps_its_shape(world):
    configure(world, f"gs://{world.bucket()}", SOURCE_BUCKETS=world.source)
    result = world.invoke({"doctor": {}})
    assert result["ok"] is True
    assert_shape(world, result)


# -- where it runs: a terminal or Lambda ---------------------------------------------------------------


def closed_port_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_unreachable_aws_sts_gets_the_advice_of_where_the_doctor_runs(world):
    nowhere = closed_port_url()
    configure(world, f"gs://{world.bucket()}")
    world.monkeypatch.setenv("AWS_ENDPOINT_URL_STS", nowhere)

    in_lambda = by_name(world.invoke({"doctor": {}}))["aws identity"]
    assert in_lambda["ok"] is False and nowhere in in_lambda["detail"]  # the endpoint boto3 used
    assert "NAT gateway" in in_lambda["fix"]

    done = cli(world, "doctor", "aws identity")
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines()[0].startswith("FAIL  aws identity")
    assert "NAT" not in done.stdout and "AWS_ENDPOINT_URL_STS" in done.stdout
    assert done.stdout.splitlines()[-1] == "0 of 1 checks passed; 1 failed"


def cli(world, *args: str):
    import os
    import subprocess
    import sys

    from .conftest import ROOT

    env = dict(os.environ)
    env["GOOGLE_APPLICATION_CREDENTIALS"] = os.path.join(env["LAMBDA_TASK_ROOT"], "gcp-credentials.json")
    env.pop("AWS_LAMBDA_FUNCTION_NAME", None)  # a terminal, not Lambda
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "gcs_sync", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_command_line_lists_the_checks_and_runs_one_by_name(world):
    dest = world.bucket()
    configure(world, f"gs://{dest}", SOURCE_BUCKETS=world.source)

    listed = cli(world, "doctor", "--list-checks")
    assert listed.returncode == 0, listed.stderr
    names = [line.split("  ")[0] for line in listed.stdout.splitlines()]
    assert names == ["configuration", "credential configuration", "aws identity", "token exchange", "gcs endpoint",
                     f"destination gs://{dest}/", f"retention gs://{dest}", f"source bucket s3://{world.source}"]
    assert "(needs configuration, token exchange)" in listed.stdout
    assert world.rig.tokens.sts_calls == 0 and world.rig.front.requests == []  # listed, not run
    as_json = json.loads(cli(world, "doctor", "--list-checks", "--json").stdout)
    assert as_json[5] == {"check": f"destination gs://{dest}/", "about": as_json[5]["about"],
                          "needs": ["configuration", "token exchange"]}

    one = cli(world, "doctor", "destination", "--json")
    assert one.returncode == 0, one.stderr
    assert [c["check"] for c in json.loads(one.stdout)["checks"]] == [
        "configuration", "credential configuration", "token exchange", f"destination gs://{dest}/"]

    unknown = cli(world, "doctor", "destination gs://elsewhere/")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert "no check named 'destination gs://elsewhere/'" in unknown.stderr and "--list-checks" in unknown.stderr

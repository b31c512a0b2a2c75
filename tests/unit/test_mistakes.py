"""A catalogue of realistic mistakes, and the fix each one gets.

Each row is a mistake people really make with the environment, the credential file or the
command line; the assertion is on the fix for that very mistake, not on a generic hint.
"""

from __future__ import annotations

import json

import pytest

from gcs_sync import cli
from gcs_sync.auth import credential_file_problems
from gcs_sync.config import Settings
from gcs_sync.errors import ConfigError

OK = {"GCS_DESTINATIONS": "gs://my-bucket/backup/"}
LAMBDA = {"AWS_LAMBDA_FUNCTION_NAME": "gcs-sync", "LAMBDA_TASK_ROOT": "/var/task",
          "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x" * 20}
AUDIENCE = ("//iam.googleapis.com/projects/{project}/locations/global/"
            "workloadIdentityPools/pool/providers/aws")


def problem_for(env: dict, variable: str):
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ(env, code_dir="/code", check_credential_file=False)
    matching = [p for p in caught.value.issues if p.variable == variable]
    assert len(matching) == 1, caught.value.problems
    return matching[0]


# (id, environment, variable, what the fix must say)
VARIABLES = [
    ("no-gs-scheme", {"GCS_DESTINATIONS": "my-bucket"}, "GCS_DESTINATIONS", "write gs://my-bucket"),
    ("s3-url-as-destination", {"GCS_DESTINATIONS": "s3://my-bucket/backup/"}, "GCS_DESTINATIONS",
     "gs://my-bucket/backup/"),
    ("uppercase-scheme-and-bucket", {"GCS_DESTINATIONS": "GS://My-Bucket"}, "GCS_DESTINATIONS",
     "lowercase: gs://my-bucket"),
    ("uppercase-bucket", {"GCS_DESTINATIONS": "gs://My-Bucket/x/"}, "GCS_DESTINATIONS",
     "bucket names are lowercase: write gs://my-bucket/x/"),
    ("quoted-value", {"GCS_DESTINATIONS": '"gs://my-bucket"'}, "GCS_DESTINATIONS",
     "remove the quotes: gs://my-bucket"),
    ("one-slash", {"GCS_DESTINATIONS": "gs:/my-bucket"}, "GCS_DESTINATIONS", "gs://my-bucket"),
    ("console-url", {"GCS_DESTINATIONS": "https://storage.googleapis.com/my-bucket/p/"}, "GCS_DESTINATIONS",
     "gs://my-bucket/p/"),
    ("destinations-unset", {}, "GCS_DESTINATIONS", "GCS_DESTINATIONS=gs://my-bucket/backup/"),
    ("source-s3-url", {**OK, "SOURCE_BUCKETS": "s3://my-source"}, "SOURCE_BUCKETS", "SOURCE_BUCKETS=my-source"),
    ("source-arn", {**OK, "SOURCE_BUCKETS": "arn:aws:s3:::my-source, other-src"}, "SOURCE_BUCKETS",
     "SOURCE_BUCKETS=my-source,other-src"),
    ("source-uppercase", {**OK, "SOURCE_BUCKETS": "My-Source"}, "SOURCE_BUCKETS", "SOURCE_BUCKETS=my-source"),
    ("source-is-gcs", {**OK, "SOURCE_BUCKETS": "gs://my-bucket"}, "SOURCE_BUCKETS",
     "Cloud Storage buckets go in GCS_DESTINATIONS"),
    ("default-source-with-key", {**OK, "S3_BUCKET_NAME": "s3://my-source/reports/"}, "S3_BUCKET_NAME",
     "S3_BUCKET_NAME=my-source"),
    ("concurrency-word", {**OK, "OBJECT_CONCURRENCY": "lots"}, "OBJECT_CONCURRENCY",
     "OBJECT_CONCURRENCY to a whole number of at least 1"),
    ("concurrency-number-word", {**OK, "OBJECT_CONCURRENCY": "four"}, "OBJECT_CONCURRENCY",
     "in digits: OBJECT_CONCURRENCY=4"),
    ("concurrency-negative", {**OK, "OBJECT_CONCURRENCY": "-3"}, "OBJECT_CONCURRENCY", "1 or more"),
    ("size-with-unit", {**OK, "STREAM_THRESHOLD_MB": "16MB"}, "STREAM_THRESHOLD_MB",
     "number alone: STREAM_THRESHOLD_MB=16"),
    ("fraction", {**OK, "S3_READ_PARTS": "3.7"}, "S3_READ_PARTS", "S3_READ_PARTS=4"),
    ("boolean-phrase", {**OK, "MIRROR_DELETES": "yes please"}, "MIRROR_DELETES", "MIRROR_DELETES=true"),
    ("boolean-word", {**OK, "ALLOW_SERVICE_ACCOUNT_KEY": "enabled"}, "ALLOW_SERVICE_ACCOUNT_KEY",
     "ALLOW_SERVICE_ACCOUNT_KEY=true"),
    ("log-level-word", {**OK, "LOG_LEVEL": "verbose"}, "LOG_LEVEL", "LOG_LEVEL=DEBUG"),
    ("endpoint-without-scheme", {**OK, "GCS_API_ENDPOINT": "storage.googleapis.com"}, "GCS_API_ENDPOINT",
     "GCS_API_ENDPOINT=https://storage.googleapis.com"),
    ("local-endpoint-without-scheme", {**OK, "GCS_API_ENDPOINT": "localhost:4443"}, "GCS_API_ENDPOINT",
     "GCS_API_ENDPOINT=http://localhost:4443"),
    ("endpoint-with-api-path", {**OK, "GCS_API_ENDPOINT": "https://storage.googleapis.com/storage/v1"},
     "GCS_API_ENDPOINT", "GCS_API_ENDPOINT=https://storage.googleapis.com"),
    ("credentials-unset-in-lambda", {**OK, **LAMBDA}, "GOOGLE_APPLICATION_CREDENTIALS",
     "GOOGLE_APPLICATION_CREDENTIALS=gcp-credentials.json"),
    ("staging-outside-tmp-in-lambda", {**OK, **LAMBDA, "GOOGLE_APPLICATION_CREDENTIALS": "g.json",
                                       "STAGING_DIR": "/no/such/dir"}, "STAGING_DIR", "/tmp"),
    ("compat-empty", {"GCS_BUCKET_NAME_PROD": " "}, "GCS_BUCKET_NAME_PROD", "GCS_BUCKET_NAME_PROD=my-bucket"),
    ("fanout-word", {**OK, "FANOUT": "sometimes"}, "FANOUT", "FANOUT=copy"),
    ("primary-not-a-destination", {"GCS_DESTINATIONS": "gs://my-bucket/backup/ gs://other-bucket",
                                   "PRIMARY_DESTINATION": "gs://third-bucket"}, "PRIMARY_DESTINATION",
     "PRIMARY_DESTINATION=gs://my-bucket/backup/"),
    ("slice-queue-arn", {**OK, "SLICE_QUEUE_URL": "arn:aws:sqs:eu-west-1:123456789012:gcs-sync-work"},
     "SLICE_QUEUE_URL", "SLICE_QUEUE_URL=https://sqs.eu-west-1.amazonaws.com/123456789012/gcs-sync-work"),
    ("slice-too-large", {**OK, "SLICE_MB": "10000"}, "SLICE_MB", "SLICE_MB to at most 5120"),
    ("endpoint-plain-http", {**OK, "GCS_API_ENDPOINT": "http://storage.googleapis.com"}, "GCS_API_ENDPOINT",
     "use https://: GCS_API_ENDPOINT=https://storage.googleapis.com"),
    ("endpoint-plain-http-private", {**OK, "GCS_API_ENDPOINT": "http://10.1.2.3:8080"}, "GCS_API_ENDPOINT",
     "a local emulator on a loopback host"),
    ("endpoint-listen-address", {**OK, "GCS_API_ENDPOINT": "0.0.0.0:4443"}, "GCS_API_ENDPOINT",
     "GCS_API_ENDPOINT=http://127.0.0.1:4443"),
    # destination options (after '?')
    ("option-misspelt", {"GCS_DESTINATIONS": "gs://my-bucket/?storage-class=ARCHIVE"}, "GCS_DESTINATIONS",
     "did you mean storage_class=ARCHIVE?"),
    ("option-unknown", {"GCS_DESTINATIONS": "gs://my-bucket/?tier=cold"}, "GCS_DESTINATIONS",
     "the options are storage_class (STANDARD, NEARLINE, COLDLINE, ARCHIVE or source), kms_key"),
    ("option-without-equals", {"GCS_DESTINATIONS": "gs://my-bucket/?ARCHIVE"}, "GCS_DESTINATIONS",
     "name the option: storage_class=ARCHIVE"),
    ("option-empty-value", {"GCS_DESTINATIONS": "gs://my-bucket/?storage_class="}, "GCS_DESTINATIONS",
     "give it a value: e.g. storage_class=ARCHIVE"),
    ("option-repeated", {"GCS_DESTINATIONS": "gs://my-bucket/?holds=source&holds=source"}, "GCS_DESTINATIONS",
     "give each option once"),
    ("option-after-a-comma", {"GCS_DESTINATIONS": "gs://my-bucket/?storage_class=ARCHIVE,holds=source"},
     "GCS_DESTINATIONS", "joined by '&', without spaces or commas"),
    ("class-from-s3", {"GCS_DESTINATIONS": "gs://my-bucket/?storage_class=GLACIER"}, "GCS_DESTINATIONS",
     "write storage_class=ARCHIVE, Cloud Storage's class for it"),
    ("class-legacy", {"GCS_DESTINATIONS": "gs://my-bucket/?storage_class=MULTI_REGIONAL"}, "GCS_DESTINATIONS",
     "write storage_class=STANDARD, which replaces it"),
    ("class-misspelt", {"GCS_DESTINATIONS": "gs://my-bucket/?storage_class=archiv"}, "GCS_DESTINATIONS",
     "did you mean storage_class=ARCHIVE?"),
    ("kms-key-version", {"GCS_DESTINATIONS": "gs://my-bucket/?kms_key=projects/p/locations/eu/keyRings/r/"
                                             "cryptoKeys/k/cryptoKeyVersions/1"}, "GCS_DESTINATIONS",
     "drop the version: kms_key=projects/p/locations/eu/keyRings/r/cryptoKeys/k"),
    ("kms-key-bare-name", {"GCS_DESTINATIONS": "gs://my-bucket/?kms_key=backup-key"}, "GCS_DESTINATIONS",
     "kms_key=projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/backup-key"),
    ("custom-time-true", {"GCS_DESTINATIONS": "gs://my-bucket/?custom_time=true"}, "GCS_DESTINATIONS",
     "write custom_time=source"),
    ("holds-on", {"GCS_DESTINATIONS": "gs://my-bucket/?holds=on"}, "GCS_DESTINATIONS", "write holds=source"),
    ("options-on-compat-form", {"GCS_BUCKET_NAME_PROD": "my-bucket?storage_class=ARCHIVE"}, "GCS_BUCKET_NAME_PROD",
     "set GCS_DESTINATIONS to gs://my-bucket?storage_class=ARCHIVE"),
    ("primary-with-other-options", {"GCS_DESTINATIONS": "gs://my-bucket/?storage_class=ARCHIVE gs://other-bucket",
                                    "PRIMARY_DESTINATION": "gs://my-bucket/?storage_class=COLDLINE"},
     "PRIMARY_DESTINATION", "write PRIMARY_DESTINATION=gs://my-bucket/"),
    ("same-destination-other-options", {"GCS_DESTINATIONS": "gs://my-bucket/ gs://my-bucket/?holds=source"},
     "GCS_DESTINATIONS", "list it once, with the options its copies should have"),
]


@pytest.mark.parametrize("env, variable, fix", [row[1:] for row in VARIABLES], ids=[row[0] for row in VARIABLES])
def test_variable_mistake_gets_its_own_fix(env, variable, fix):
    problem = problem_for(env, variable)
    assert fix in problem.fix
    assert str(problem).startswith(f"{variable}: ")
    if variable != "GCS_DESTINATIONS":  # no fix for another variable
        assert "GCS_DESTINATIONS=gs://" not in problem.fix


def test_trailing_spaces_and_separators_are_not_mistakes():
    settings = Settings.from_environ({"GCS_DESTINATIONS": " gs://my-bucket/backup/ ,\n", "LOG_LEVEL": "info ",
                                      "OBJECT_CONCURRENCY": " 8 ", "MIRROR_DELETES": "TRUE "})
    assert [d.url for d in settings.destinations] == ["gs://my-bucket/backup/"]
    assert (settings.log_level, settings.object_concurrency, settings.mirror_deletes) == ("INFO", 8, True)


def test_prefix_without_slash_warns_with_the_fix():
    settings = Settings.from_environ({"GCS_DESTINATIONS": "gs://my-bucket/backup"})
    (warning,) = settings.warnings
    assert "write gs://my-bucket/backup/" in warning


# --------------------------------------------------------------------------- the credential file


def _external(**overrides) -> str:
    info = {"type": "external_account", "audience": AUDIENCE.format(project="123456789012"),
            "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
            "token_url": "https://sts.googleapis.com/v1/token",
            "credential_source": {"environment_id": "aws1",
                                  "regional_cred_verification_url": "https://sts.{region}.amazonaws.com"}}
    info.update(overrides)
    return json.dumps(info)


FILES = [
    ("service-account-key", "key.json", json.dumps({"type": "service_account", "client_email": "sa@p.iam"}),
     "ALLOW_SERVICE_ACCOUNT_KEY=true"),
    ("service-account-key-keyless-way", "key.json", json.dumps({"type": "service_account"}),
     "create-cred-config"),
    ("not-json", "gcp.json", "audience = //iam.googleapis.com/...", "create-cred-config"),
    ("hand-edited-json", "gcp.json", '{"type": "external_account",}', "the JSON is broken"),
    ("aws-credentials-file", "credentials", "[default]\naws_access_key_id = AKID\n", "AWS credentials file"),
    ("pem-key", "key.pem", "-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----\n", "PEM key"),
    ("audience-with-project-id", "gcp.json", _external(audience=AUDIENCE.format(project="my-project")),
     "gcloud projects describe my-project --format='value(projectNumber)'"),
    ("oidc-not-aws", "gcp.json", _external(credential_source={"file": "/var/run/token"}), "--aws"),
    ("gcloud-login-in-lambda", "adc.json", json.dumps({"type": "authorized_user"}), "create-cred-config"),
]


@pytest.mark.parametrize("name, content, fix", [row[1:] for row in FILES], ids=[row[0] for row in FILES])
def test_credential_file_mistake_gets_its_own_fix(tmp_path, name, content, fix):
    (tmp_path / name).write_text(content, encoding="utf-8")
    env = {**OK, **LAMBDA, "LAMBDA_TASK_ROOT": str(tmp_path), "GOOGLE_APPLICATION_CREDENTIALS": name}
    problems = credential_file_problems(Settings.for_credentials(env))
    assert problems and any(fix in (p.fix or "") for p in problems), [str(p) for p in problems]
    assert all(p.variable == "GOOGLE_APPLICATION_CREDENTIALS" for p in problems)


@pytest.mark.parametrize("setting, fix", [
    ("gcp-credentials.json", "./build.sh --credentials FILE"),
    ("/Users/me/Downloads/gcp-credentials.json", "a path on the computer that built the zip"),
], ids=["missing-in-zip", "laptop-path-in-lambda"])
def test_missing_credential_file_in_lambda(tmp_path, setting, fix):
    env = {**OK, **LAMBDA, "LAMBDA_TASK_ROOT": str(tmp_path), "GOOGLE_APPLICATION_CREDENTIALS": setting}
    (problem,) = credential_file_problems(Settings.for_credentials(env))
    assert "does not exist" in problem.wrong and fix in problem.fix


def test_relative_credential_path_on_a_terminal_names_the_current_directory(tmp_path):
    env = {**OK, "GOOGLE_APPLICATION_CREDENTIALS": "conf/gcp.json", "LAMBDA_TASK_ROOT": "/var/task"}
    settings = Settings.from_environ(env, relative_to=str(tmp_path))
    assert settings.credentials_path == str(tmp_path / "conf" / "gcp.json")
    (problem,) = credential_file_problems(settings)
    assert f"resolved against the current directory ({tmp_path})" in problem.wrong
    assert "relative to the current directory" in problem.fix


def test_credential_directory_instead_of_file(tmp_path):
    env = {**OK, "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path)}
    (problem,) = credential_file_problems(Settings.for_credentials(env))
    assert "is a directory" in problem.wrong and "point GOOGLE_APPLICATION_CREDENTIALS at the JSON file" in problem.fix


def test_variables_and_credential_file_reported_together(tmp_path):
    (tmp_path / "key.json").write_text(json.dumps({"type": "service_account"}), encoding="utf-8")
    env = {**LAMBDA, "LAMBDA_TASK_ROOT": str(tmp_path), "GCS_DESTINATIONS": "my-bucket",
           "OBJECT_CONCURRENCY": "lots", "GOOGLE_APPLICATION_CREDENTIALS": "key.json"}
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ(env)
    variables = [p.variable for p in caught.value.issues]
    assert sorted(variables) == ["GCS_DESTINATIONS", "GOOGLE_APPLICATION_CREDENTIALS", "OBJECT_CONCURRENCY"]
    assert all(p.fix for p in caught.value.issues)
    assert not str(caught.value).startswith("gcs-sync")  # the command line adds the name, once


# --------------------------------------------------------------------------- the command line


@pytest.mark.parametrize("argv, fix", [
    (["copy", "gs://my-bucket/a.csv"], "e.g. s3://my-bucket/a.csv"),
    (["copy", "my-bucket/a.csv"], "write s3://my-bucket/a.csv"),
    (["copy", "s3://my-bucket"], "python -m gcs_sync sync s3://my-bucket/"),
    (["copy", "s3:/my-bucket/a.csv"], "write s3://my-bucket/a.csv"),
    (["sync", "s3://"], "s3://my-bucket/reports/"),
    (["copy"], "for example: python -m gcs_sync copy s3://"),
    (["sync"], "for example: python -m gcs_sync sync s3://"),
    (["cp", "s3://b/k"], "for example: python -m gcs_sync doctor"),
], ids=["gs-url", "no-scheme", "bucket-only", "one-slash", "no-bucket", "copy-no-argument",
        "sync-no-argument", "unknown-command"])
def test_command_line_mistake_gets_its_own_fix(capsys, argv, fix):
    try:
        status = cli.main(argv)
    except SystemExit as exc:
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    assert fix in err

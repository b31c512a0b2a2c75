"""Settings.from_environ: every variable, every problem, always with an explicit environ."""

from __future__ import annotations

import os

import pytest

from gcs_sync.config import Destination, Settings, bucket_name_problem, parse_destination
from gcs_sync.errors import ConfigError

DEST = "gs://dest-bucket"


def load(env: dict[str, str], *, code_dir: str | None = None) -> Settings:
    return Settings.from_environ(env, code_dir=code_dir)


def problems_of(env: dict[str, str], *, code_dir: str | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        Settings.from_environ(env, code_dir=code_dir)
    assert info.value.problems, "a ConfigError must carry at least one problem"
    return info.value.problems


# --------------------------------------------------------------------------- destinations


@pytest.mark.parametrize(
    "raw",
    [
        "gs://alpha,gs://beta/p/,gs://gamma",
        "gs://alpha gs://beta/p/ gs://gamma",
        "gs://alpha\ngs://beta/p/\ngs://gamma",
        "  gs://alpha ,\n\tgs://beta/p/,,  \n gs://gamma\n",
        "gs://alpha,\r\ngs://beta/p/ ,gs://gamma",
    ],
    ids=["commas", "spaces", "newlines", "mixed", "crlf-and-commas"],
)
def test_destinations_separators(raw):
    settings = load({"GCS_DESTINATIONS": raw})
    assert settings.destinations == (
        Destination("alpha"),
        Destination("beta", "p/"),
        Destination("gamma"),
    )
    assert settings.warnings == ()


@pytest.mark.parametrize(
    "text, bucket, prefix, key, object_name",
    [
        ("gs://my-bucket", "my-bucket", "", "a/b.txt", "a/b.txt"),
        ("gs://my-bucket/", "my-bucket", "", "a/b.txt", "a/b.txt"),
        ("gs://my-bucket/backup/", "my-bucket", "backup/", "a/b.txt", "backup/a/b.txt"),
        ("gs://my-bucket/x/y/z/", "my-bucket", "x/y/z/", "k", "x/y/z/k"),
        ("gs://my-bucket//double/", "my-bucket", "/double/", "k", "/double/k"),
        ("gs://my.dotted.bucket/p/", "my.dotted.bucket", "p/", "k", "p/k"),
        ("gs://under_score/p/", "under_score", "p/", "k", "p/k"),
    ],
)
def test_destination_prefix_joined_exactly(text, bucket, prefix, key, object_name):
    settings = load({"GCS_DESTINATIONS": text})
    (destination,) = settings.destinations
    assert destination.bucket == bucket
    assert destination.prefix == prefix
    assert destination.object_name(key) == object_name
    assert destination.url == f"gs://{bucket}/{prefix}"
    assert settings.warnings == ()


def test_prefix_without_trailing_slash_is_joined_as_written_with_a_warning():
    settings = load({"GCS_DESTINATIONS": "gs://my-bucket/backup"})
    (destination,) = settings.destinations
    assert destination.prefix == "backup"
    assert destination.object_name("file.txt") == "backupfile.txt"
    assert len(settings.warnings) == 1
    warning = settings.warnings[0]
    assert "GCS_DESTINATIONS" in warning
    assert "'backup'" in warning
    assert "trailing '/'" in warning


@pytest.mark.parametrize(
    "entry, fragment",
    [
        ("my-bucket", "does not start with gs://"),
        ("s3://my-bucket", "does not start with gs://"),
        ("GS://my-bucket", "does not start with gs://"),
        ("gs://", "no bucket name"),
        ("gs:///prefix/", "no bucket name"),
        ("gs://My-Bucket", "lowercase"),
        ("gs://ab", "3-63 characters"),
        ("gs://" + "a" * 64, "3-63 characters"),
        ("gs://" + ("a" * 63 + ".") * 3 + "a" * 31, "3-63 characters"),  # 223 chars with dots
        ("gs://" + "a" * 64 + ".b", "lowercase"),  # one dotted component longer than 63
        ("gs://-leading-dash", "start and end with a letter or digit"),
        ("gs://trailing-dash-", "start and end with a letter or digit"),
        ("gs://a..b", "start and end with a letter or digit"),
        ("gs://bad!chars", "lowercase"),
        ("gs://goog-bucket", "'goog'"),
        ("gs://googbucket", "'goog'"),
        ("gs://ok-bucket/" + "p" * 1024, "1024 bytes"),
    ],
)
def test_bad_destination_is_a_problem_naming_the_variable(entry, fragment):
    problems = problems_of({"GCS_DESTINATIONS": entry})
    assert len(problems) == 1, problems
    assert problems[0].startswith("GCS_DESTINATIONS: ")
    assert fragment in problems[0]


def test_prefix_containing_a_newline_is_a_problem():
    # In GCS_DESTINATIONS a newline separates entries, so "fix/" is a separate, invalid entry.
    problems = problems_of({"GCS_DESTINATIONS": "gs://my-bucket/pre\nfix/"})
    assert len(problems) == 1
    assert problems[0].startswith("GCS_DESTINATIONS: ")
    assert "'fix/'" in problems[0]


@pytest.mark.parametrize("prefix", ["pre\nfix/", "pre\rfix/", "a/\r\n/b/"])
def test_parse_destination_refuses_line_breaks_in_prefix(prefix):
    with pytest.raises(ValueError, match="line break"):
        parse_destination("gs://my-bucket/" + prefix)


def test_parse_destination_prefix_length_limit():
    assert parse_destination("gs://b-b/" + "p" * 1023).prefix == "p" * 1023
    with pytest.raises(ValueError, match="1024 bytes"):
        parse_destination("gs://b-b/" + "é" * 512)  # 1024 bytes of UTF-8


@pytest.mark.parametrize(
    "name",
    ["abc", "a" * 63, "my-bucket_1", "a.b.c", ("a" * 63 + ".") * 3 + "a" * 30, "0bucket9"],
)
def test_bucket_name_accepted(name):
    assert bucket_name_problem(name) is None


@pytest.mark.parametrize("name", ["192.168.5.4", "my-google-bucket"])
def test_bucket_name_forbidden_by_gcs_is_refused(name):
    assert bucket_name_problem(name) is not None


def test_several_problems_are_all_listed_in_one_config_error():
    env = {
        "GCS_DESTINATIONS": "my-bucket gs://Upper gs://ab gs://goog-x",
        "SOURCE_BUCKETS": "Bad_Bucket",
        "MIRROR_DELETES": "perhaps",
        "OBJECT_CONCURRENCY": "0",
        "LOG_LEVEL": "loud",
        "AWS_LAMBDA_FUNCTION_NAME": "fn",
    }
    with pytest.raises(ConfigError) as info:
        Settings.from_environ(env)
    problems = info.value.problems
    variables = [p.split(":", 1)[0] for p in problems]
    assert variables.count("GCS_DESTINATIONS") == 4
    for variable in (
        "SOURCE_BUCKETS",
        "MIRROR_DELETES",
        "OBJECT_CONCURRENCY",
        "LOG_LEVEL",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ):
        assert variables.count(variable) == 1, (variable, problems)
    assert len(problems) == 9
    message = str(info.value)
    assert message.startswith("the configuration is not valid (9 problems")
    assert "gcs-sync" not in message.split("\n")[0]  # the command line adds the name once
    for problem in problems:
        assert f"  - {problem}" in message


@pytest.mark.parametrize(
    "raw",
    ["gs://a-b gs://a-b", "gs://a-b gs://a-b/", "gs://a-b/p/,gs://a-b/p/", "gs://a-b, gs://c-d ,gs://a-b"],
)
def test_duplicate_destinations_refused(raw):
    problems = problems_of({"GCS_DESTINATIONS": raw})
    assert len(problems) == 1
    assert problems[0].startswith("GCS_DESTINATIONS: ")
    assert "listed twice" in problems[0]


def test_same_bucket_with_different_prefixes_is_not_a_duplicate():
    settings = load({"GCS_DESTINATIONS": "gs://a-b/x/ gs://a-b/y/ gs://a-b"})
    assert [d.prefix for d in settings.destinations] == ["x/", "y/", ""]


@pytest.mark.parametrize("env", [{}, {"GCS_DESTINATIONS": ""}, {"GCS_DESTINATIONS": " \n\t "}])
def test_no_destination_is_a_problem_naming_gcs_destinations(env):
    problems = problems_of(env)
    assert len(problems) == 1
    assert problems[0].startswith("GCS_DESTINATIONS: not set")


@pytest.mark.parametrize("raw", [",", " , ,\n"])
def test_destinations_of_only_separators_is_a_problem(raw):
    problems = problems_of({"GCS_DESTINATIONS": raw})
    assert any(p.startswith("GCS_DESTINATIONS: ") for p in problems)


# --------------------------------------------------------------------------- compatibility form


def test_compat_bucket_names_sorted_by_suffix():
    env = {
        "GCS_BUCKET_NAME_B": "second-bucket",
        "GCS_BUCKET_NAME_A": "gs://first-bucket/with/prefix/",
        "GCS_BUCKET_NAME_C": "  third-bucket  ",
        "GCP_PROJECT_ID_A": "project-a",
    }
    settings = load(env)
    assert settings.destinations == (
        Destination("first-bucket", "with/prefix/"),
        Destination("second-bucket"),
        Destination("third-bucket"),
    )
    assert settings.warnings == ()


def test_compat_ignored_with_warning_when_gcs_destinations_set():
    env = {
        "GCS_DESTINATIONS": "gs://main-bucket/",
        "GCS_BUCKET_NAME_1": "old-bucket",
        "GCS_BUCKET_NAME_2": "",  # would be a problem in the compatibility form
    }
    settings = load(env)
    assert settings.destinations == (Destination("main-bucket"),)
    assert len(settings.warnings) == 1
    assert "GCS_BUCKET_NAME_1" in settings.warnings[0]
    assert "GCS_BUCKET_NAME_2" in settings.warnings[0]
    assert "ignored" in settings.warnings[0]


@pytest.mark.parametrize("value", ["", "   "])
def test_compat_empty_value_is_a_problem(value):
    problems = problems_of({"GCS_BUCKET_NAME_X": value, "GCS_BUCKET_NAME_Y": "fine-bucket"})
    assert len(problems) == 1 and problems[0].startswith("GCS_BUCKET_NAME_X: empty. Fix: ")


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("Bad_Upper", "lowercase"),
        ("gs://ok-bucket/pre\nfix/", "line break"),
        ("gs://goog-x", "'goog'"),
    ],
)
def test_compat_bad_value_is_a_problem_naming_its_variable(value, fragment):
    problems = problems_of({"GCS_BUCKET_NAME_PROD": value})
    assert len(problems) == 1
    assert problems[0].startswith("GCS_BUCKET_NAME_PROD: ")
    assert fragment in problems[0]


def test_compat_duplicates_refused():
    problems = problems_of({"GCS_BUCKET_NAME_A": "same-bucket", "GCS_BUCKET_NAME_B": "gs://same-bucket"})
    assert len(problems) == 1
    assert problems[0].startswith("GCS_BUCKET_NAME_B: ")
    assert "listed twice" in problems[0]


# --------------------------------------------------------------------------- credentials


@pytest.mark.parametrize(
    "env, code_dir, expected",
    [
        ({"GOOGLE_APPLICATION_CREDENTIALS": "creds.json", "LAMBDA_TASK_ROOT": "/var/task"},
         "/code", "/var/task/creds.json"),
        ({"GOOGLE_APPLICATION_CREDENTIALS": "conf/../creds.json", "LAMBDA_TASK_ROOT": "/var/task"},
         None, "/var/task/creds.json"),
        ({"GOOGLE_APPLICATION_CREDENTIALS": "sub/creds.json"}, "/code", "/code/sub/creds.json"),
        ({"GOOGLE_APPLICATION_CREDENTIALS": "/etc/gcp/creds.json", "LAMBDA_TASK_ROOT": "/var/task"},
         "/code", "/etc/gcp/creds.json"),
        ({"GOOGLE_APPLICATION_CREDENTIALS": "  /abs/creds.json  "}, None, "/abs/creds.json"),
        ({}, "/code", None),
        ({"GOOGLE_APPLICATION_CREDENTIALS": "  "}, "/code", None),
    ],
)
def test_credentials_path(env, code_dir, expected):
    settings = load({"GCS_DESTINATIONS": DEST, **env}, code_dir=code_dir)
    assert settings.credentials_path == expected
    assert settings.in_lambda is False


def test_credentials_relative_without_any_base_uses_cwd():
    settings = load({"GCS_DESTINATIONS": DEST, "GOOGLE_APPLICATION_CREDENTIALS": "creds.json"})
    assert settings.credentials_path == os.path.join(os.getcwd(), "creds.json")


def test_credentials_unset_inside_lambda_is_a_problem():
    problems = problems_of({"GCS_DESTINATIONS": DEST, "AWS_LAMBDA_FUNCTION_NAME": "my-fn"})
    assert len(problems) == 1
    assert problems[0].startswith("GOOGLE_APPLICATION_CREDENTIALS: not set")


def test_credentials_set_inside_lambda():
    settings = load({
        "GCS_DESTINATIONS": DEST,
        "AWS_LAMBDA_FUNCTION_NAME": "my-fn",
        "LAMBDA_TASK_ROOT": "/var/task",
        "GOOGLE_APPLICATION_CREDENTIALS": "gcp-credentials.json",
    })
    assert settings.in_lambda is True
    assert settings.credentials_path == "/var/task/gcp-credentials.json"


# --------------------------------------------------------------------------- sources


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("", None),
        ("   ", None),
        ("src-bucket", {"src-bucket"}),
        ("a-b,c.d.e  fgh\nijk", {"a-b", "c.d.e", "fgh", "ijk"}),
        ("abc,abc", {"abc"}),
    ],
)
def test_source_buckets(raw, expected):
    settings = load({"GCS_DESTINATIONS": DEST, "SOURCE_BUCKETS": raw})
    assert settings.source_buckets == (None if expected is None else frozenset(expected))


def test_source_buckets_bad_names_listed_in_one_problem():
    problems = problems_of({"GCS_DESTINATIONS": DEST, "SOURCE_BUCKETS": "good-one Bad_One ab -dash " + "x" * 64})
    assert len(problems) == 1
    problem = problems[0]
    assert problem.startswith("SOURCE_BUCKETS: ")
    for name in ("Bad_One", "ab", "-dash", "x" * 64):
        assert name in problem
    assert "good-one" not in problem


def test_default_source_bucket():
    assert load({"GCS_DESTINATIONS": DEST, "S3_BUCKET_NAME": " src-b "}).default_source_bucket == "src-b"
    assert load({"GCS_DESTINATIONS": DEST}).default_source_bucket is None
    problems = problems_of({"GCS_DESTINATIONS": DEST, "S3_BUCKET_NAME": "Not A Bucket"})
    assert len(problems) == 1 and problems[0].startswith("S3_BUCKET_NAME: ")


# --------------------------------------------------------------------------- flags


@pytest.mark.parametrize("variable, attribute", [
    ("MIRROR_DELETES", "mirror_deletes"),
    ("ALLOW_SERVICE_ACCOUNT_KEY", "allow_service_account_key"),
])
@pytest.mark.parametrize("value, expected", [
    (None, False), ("", False), ("true", True), ("TRUE", True), (" yes ", True), ("1", True),
    ("on", True), ("false", False), ("False", False), ("0", False), ("no", False), ("off", False),
])
def test_flags(variable, attribute, value, expected):
    env = {"GCS_DESTINATIONS": DEST}
    if value is not None:
        env[variable] = value
    assert getattr(load(env), attribute) is expected


@pytest.mark.parametrize("variable", ["MIRROR_DELETES", "ALLOW_SERVICE_ACCOUNT_KEY"])
@pytest.mark.parametrize("value", ["garbage", "2", "enabled", "truee"])
def test_flag_garbage_is_a_problem(variable, value):
    problems = problems_of({"GCS_DESTINATIONS": DEST, variable: value})
    assert len(problems) == 1
    assert problems[0].startswith(f"{variable}: ")
    assert "not true or false" in problems[0]


# --------------------------------------------------------------------------- concurrency


@pytest.mark.parametrize(
    "memory, expected",
    [(None, 4), ("128", 2), ("512", 2), ("768", 3), ("1024", 4), ("3008", 11), ("4096", 16), ("10240", 16)],
)
def test_object_concurrency_default_from_memory(memory, expected):
    env = {"GCS_DESTINATIONS": DEST}
    if memory is not None:
        env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = memory
    assert load(env).object_concurrency == expected


@pytest.mark.parametrize("value, expected", [("1", 1), ("7", 7), (" 32 ", 32), ("", 4)])
def test_object_concurrency_explicit(value, expected):
    settings = load({"GCS_DESTINATIONS": DEST, "OBJECT_CONCURRENCY": value})
    assert settings.object_concurrency == expected


@pytest.mark.parametrize(
    "variable, value, fragment",
    [
        ("OBJECT_CONCURRENCY", "0", "below the minimum of 1"),
        ("OBJECT_CONCURRENCY", "-3", "below the minimum of 1"),
        ("OBJECT_CONCURRENCY", "four", "not a whole number"),
        ("OBJECT_CONCURRENCY", "2.5", "not a whole number"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "64", "below the minimum of 128"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "lots", "not a whole number"),
    ],
)
def test_integer_problems(variable, value, fragment):
    problems = problems_of({"GCS_DESTINATIONS": DEST, variable: value})
    assert len(problems) == 1
    assert problems[0].startswith(f"{variable}: ")
    assert fragment in problems[0]


# --------------------------------------------------------------------------- endpoint, log level, staging


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None),
        ("", None),
        ("https://storage.googleapis.com", "https://storage.googleapis.com"),
        ("https://storage.googleapis.com/", "https://storage.googleapis.com"),
        ("http://127.0.0.1:4443///", "http://127.0.0.1:4443"),
        ("  https://private.example/storage/  ", "https://private.example/storage"),
    ],
)
def test_gcs_api_endpoint(value, expected):
    env = {"GCS_DESTINATIONS": DEST}
    if value is not None:
        env["GCS_API_ENDPOINT"] = value
    assert load(env).gcs_api_endpoint == expected


@pytest.mark.parametrize(
    "value", ["storage.googleapis.com", "ftp://host", "https://", "https:///path", "//host", "localhost:4443"]
)
def test_gcs_api_endpoint_invalid(value):
    problems = problems_of({"GCS_DESTINATIONS": DEST, "GCS_API_ENDPOINT": value})
    assert len(problems) == 1
    assert problems[0].startswith("GCS_API_ENDPOINT: ")
    assert "http(s) URL" in problems[0]


@pytest.mark.parametrize(
    "value, expected",
    [(None, "INFO"), ("", "INFO"), ("debug", "DEBUG"), (" Warning ", "WARNING"), ("ERROR", "ERROR"),
     ("TRACE", "DEBUG"), ("warn", "WARNING"), ("FATAL", "ERROR")],  # Lambda's own names too
)
def test_log_level(value, expected):
    env = {"GCS_DESTINATIONS": DEST}
    if value is not None:
        env["LOG_LEVEL"] = value
    assert load(env).log_level == expected


@pytest.mark.parametrize("value", ["verbose", "loud", "5"])
def test_log_level_invalid(value):
    problems = problems_of({"GCS_DESTINATIONS": DEST, "LOG_LEVEL": value})
    assert len(problems) == 1 and problems[0].startswith("LOG_LEVEL: ")


def test_staging_dir(tmp_path):
    assert load({"GCS_DESTINATIONS": DEST, "STAGING_DIR": str(tmp_path)}).staging_dir == str(tmp_path)
    assert os.path.isdir(load({"GCS_DESTINATIONS": DEST}).staging_dir)


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: (p / "file").write_text("x") and p / "file"])
def test_staging_dir_must_be_a_directory(tmp_path, make):
    path = make(tmp_path)
    problems = problems_of({"GCS_DESTINATIONS": DEST, "STAGING_DIR": str(path)})
    assert len(problems) == 1
    assert problems[0].startswith("STAGING_DIR: ")
    assert str(path) in problems[0]


# --------------------------------------------------------------------------- the rest


def test_aws_and_project_fields():
    settings = load({
        "GCS_DESTINATIONS": DEST,
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "GOOGLE_CLOUD_PROJECT": " my-project ",
    })
    assert settings.aws_region == "eu-west-1"
    assert settings.aws_keys_present is True
    assert settings.google_cloud_project == "my-project"


@pytest.mark.parametrize(
    "env, region, keys",
    [
        ({}, None, False),
        ({"AWS_DEFAULT_REGION": "us-east-1"}, "us-east-1", False),
        ({"AWS_ACCESS_KEY_ID": "AKID"}, None, False),
        ({"AWS_SECRET_ACCESS_KEY": "s"}, None, False),
    ],
)
def test_aws_region_and_keys(env, region, keys):
    settings = load({"GCS_DESTINATIONS": DEST, **env})
    assert settings.aws_region == region
    assert settings.aws_keys_present is keys
    assert settings.google_cloud_project is None


def test_minimal_settings_defaults():
    settings = load({"GCS_DESTINATIONS": DEST})
    assert settings.destinations == (Destination("dest-bucket"),)
    assert settings.credentials_path is None
    assert settings.mirror_deletes is False
    assert settings.allow_service_account_key is False
    assert settings.source_buckets is None
    assert settings.gcs_api_endpoint is None
    assert settings.in_lambda is False
    assert settings.warnings == ()


# --------------------------------------------------------------------------- destination options

KEY = "projects/my-project/locations/europe-west1/keyRings/backup/cryptoKeys/copies"


@pytest.mark.parametrize(
    "query, fields, policy",
    [
        ("storage_class=ARCHIVE", {"storage_class": "ARCHIVE"}, "storage_class=ARCHIVE"),
        ("storage_class=coldline", {"storage_class": "COLDLINE"}, "storage_class=COLDLINE"),
        ("storage_class=Nearline", {"storage_class": "NEARLINE"}, "storage_class=NEARLINE"),
        ("storage_class=standard", {"storage_class": "STANDARD"}, "storage_class=STANDARD"),
        ("storage_class=source", {"storage_class": "source"}, "storage_class=source"),
        ("storage_class=SOURCE", {"storage_class": "source"}, "storage_class=source"),
        (f"kms_key={KEY}", {"kms_key": KEY}, f"kms_key={KEY}"),
        ("custom_time=source", {"custom_time": True}, "custom_time=source"),
        ("holds=source", {"holds": True}, "holds=source"),
        # written in any order: the policy text is always in the same one
        (f"holds=source&custom_time=source&kms_key={KEY}&storage_class=archive",
         {"storage_class": "ARCHIVE", "kms_key": KEY, "custom_time": True, "holds": True},
         f"storage_class=ARCHIVE&kms_key={KEY}&custom_time=source&holds=source"),
    ],
)
def test_destination_options(query, fields, policy):
    settings = load({"GCS_DESTINATIONS": f"gs://my-bucket/backup/?{query}"})
    (destination,) = settings.destinations
    assert destination == Destination("my-bucket", "backup/", **fields)
    assert destination.policy == policy
    assert destination.url == "gs://my-bucket/backup/"  # results and PRIMARY_DESTINATION name it so
    assert destination.object_name("a/b.txt") == "backup/a/b.txt"
    assert parse_destination(f"{destination.url}?{destination.policy}") == destination
    assert settings.warnings == ()


def test_no_options_keep_the_buckets_defaults():
    (destination,) = load({"GCS_DESTINATIONS": "gs://my-bucket/backup/"}).destinations
    assert (destination.storage_class, destination.kms_key, destination.custom_time, destination.holds) == (
        None, None, False, False)
    assert destination.policy is None


def test_options_per_destination_and_with_a_source_prefix():
    settings = load({"GCS_DESTINATIONS": "gs://hot-copy/ incoming/=gs://cold-copy/in/?storage_class=ARCHIVE&holds=source,"
                                         "gs://bucket-c?custom_time=source"})
    hot, cold, third = settings.destinations
    assert hot == Destination("hot-copy") and hot.policy is None
    assert cold == Destination("cold-copy", "in/", "incoming/", storage_class="ARCHIVE", holds=True)
    assert cold.maps("incoming/x") and not cold.maps("other/x")
    assert cold.object_name("incoming/a.txt") == "in/a.txt"
    assert cold.url == "gs://cold-copy/in/"
    assert third == Destination("bucket-c", custom_time=True) and third.url == "gs://bucket-c/"


def test_a_question_mark_in_the_source_prefix_is_not_an_option():
    (destination,) = load({"GCS_DESTINATIONS": "why?/=gs://my-bucket/p/?holds=source"}).destinations
    assert (destination.source_prefix, destination.prefix, destination.holds) == ("why?/", "p/", True)


def test_options_on_a_prefix_without_slash_keep_them_in_the_warnings_fix():
    settings = load({"GCS_DESTINATIONS": "gs://my-bucket/backup?storage_class=archive"})
    (warning,) = settings.warnings
    assert "write gs://my-bucket/backup/?storage_class=ARCHIVE" in warning


@pytest.mark.parametrize(
    "query, wrong, fix",
    [
        ("storge_class=ARCHIVE", "unknown option 'storge_class'", "did you mean storage_class=ARCHIVE?"),
        ("storageClass=ARCHIVE", "unknown option 'storageClass'", "did you mean storage_class=ARCHIVE?"),
        ("kmsKeyName=" + KEY, "unknown option 'kmsKeyName'", "did you mean kms_key="),
        ("legal_hold=source", "unknown option 'legal_hold'", "did you mean holds=source?"),
        ("color=blue", "unknown option 'color'", "the options are storage_class"),
        ("storage_class", "has no '='", "storage_class=ARCHIVE"),
        ("ARCHIVE", "has no '='", "storage_class=ARCHIVE"),
        ("storage_class:ARCHIVE", "has no '='", "storage_class=ARCHIVE"),
        ("storage_class=", "empty value", "storage_class=ARCHIVE"),
        ("kms_key=", "empty value", "kms_key=projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY"),
        ("", "an empty option", "remove the '?'"),
        ("holds=source&&custom_time=source", "an empty option", "write ?holds=source&custom_time=source"),
        ("storage_class=ARCHIVE&storage_class=COLDLINE", "storage_class is given twice", "once"),
        ("storage_class=GLACIER", "'GLACIER' is S3's", "storage_class=ARCHIVE"),
        ("storage_class=DEEP_ARCHIVE", "is S3's", "storage_class=ARCHIVE"),
        ("storage_class=glacier-ir", "is S3's", "storage_class=COLDLINE"),
        ("storage_class=STANDARD_IA", "is S3's", "storage_class=NEARLINE"),
        ("storage_class=MULTI_REGIONAL", "legacy", "storage_class=STANDARD"),
        ("storage_class=REGIONAL", "legacy", "storage_class=STANDARD"),
        ("storage_class=DURABLE_REDUCED_AVAILABILITY", "legacy", "storage_class=STANDARD"),
        ("storage_class=COLDLNE", "no storage class 'COLDLNE'", "did you mean storage_class=COLDLINE?"),
        ("storage_class=CHEAP", "no storage class 'CHEAP'", "STANDARD, NEARLINE, COLDLINE and ARCHIVE"),
        (f"kms_key={KEY}/cryptoKeyVersions/3", "names a key version", f"drop the version: kms_key={KEY}"),
        ("kms_key=copies", "a key's name alone", "kms_key=projects/PROJECT/locations/LOCATION/keyRings/RING/"
                                                 "cryptoKeys/copies"),
        ("kms_key=keyRings/backup/cryptoKeys/copies", "not a full Cloud KMS key resource name",
         "kms_key=projects/PROJECT/locations/LOCATION/keyRings/backup/cryptoKeys/copies"),
        (f"kms_key=//cloudkms.googleapis.com/{KEY}", "not written as a Cloud KMS key resource name",
         f"write kms_key={KEY}"),
        (f"kms_key={KEY.replace('keyRings', 'keyrings')}", "not written as", f"write kms_key={KEY}"),
        ("custom_time=true", "custom_time takes only the value source", "write custom_time=source"),
        ("holds=yes", "holds takes only the value source", "write holds=source"),
        ("holds=off", "holds takes only the value source", "remove holds=off to leave it off"),
    ],
)
def test_destination_option_mistakes(query, wrong, fix):
    entry = f"gs://my-bucket/backup/?{query}"
    with pytest.raises(ConfigError) as info:
        load({"GCS_DESTINATIONS": entry})
    (problem,) = info.value.issues
    assert problem.variable == "GCS_DESTINATIONS"
    assert problem.wrong.startswith(f"{entry!r}: ")  # names the destination
    assert wrong in problem.wrong
    assert fix in problem.fix


def test_every_option_mistake_of_a_destination_is_listed():
    entry = "gs://my-bucket/?storage_class=GLACIER&holds=true&colour=red"
    problems = problems_of({"GCS_DESTINATIONS": entry})
    assert len(problems) == 3, problems
    assert all(p.startswith(f"GCS_DESTINATIONS: {entry!r}: ") for p in problems)


@pytest.mark.parametrize("raw", ["gs://my-bucket/?storage_class=ARCHIVE,holds=source",
                                 "gs://my-bucket/?storage_class=ARCHIVE &holds=source"])
def test_options_split_off_by_a_separator(raw):
    problems = problems_of({"GCS_DESTINATIONS": raw})
    assert len(problems) == 1
    assert "is an option on its own, not a destination" in problems[0]
    assert "without spaces or commas" in problems[0]


def test_a_question_mark_in_a_prefix_starts_the_options():
    problems = problems_of({"GCS_DESTINATIONS": "gs://my-bucket/what?/x"})
    assert len(problems) == 1 and "a prefix cannot hold one" in problems[0]


def test_same_destination_with_different_options_is_listed_twice():
    problems = problems_of({"GCS_DESTINATIONS": "gs://a-b/p/ gs://a-b/p/?storage_class=ARCHIVE"})
    assert problems == ["GCS_DESTINATIONS: gs://a-b/p/ is listed twice, with different options. Fix: list it "
                        "once, with the options its copies should have"]


def test_options_on_the_compatibility_form_are_refused():
    problems = problems_of({"GCS_BUCKET_NAME_A": "bucket-a?storage_class=ARCHIVE", "GCS_BUCKET_NAME_B": "bucket-b"})
    assert len(problems) == 1
    assert problems[0].startswith("GCS_BUCKET_NAME_A: 'gs://bucket-a?storage_class=ARCHIVE' has destination options")
    assert "set GCS_DESTINATIONS to gs://bucket-a?storage_class=ARCHIVE,gs://bucket-b and remove" in problems[0]


@pytest.mark.parametrize("primary", [
    "gs://cold-copy/in/",
    "gs://cold-copy/in/?storage_class=ARCHIVE",
    "incoming/=gs://cold-copy/in/?storage_class=ARCHIVE",
    "incoming/=gs://cold-copy/in/",
])
def test_primary_destination_matches_with_or_without_its_options(primary):
    settings = load({"GCS_DESTINATIONS": "gs://hot-copy incoming/=gs://cold-copy/in/?storage_class=ARCHIVE",
                     "PRIMARY_DESTINATION": primary})
    assert settings.primary_destination == "gs://cold-copy/in/"
    assert settings.primary_destination == settings.destinations[1].url


@pytest.mark.parametrize("primary", ["gs://cold-copy/in/?storage_class=COLDLINE",
                                     "gs://cold-copy/in/?storage_class=GLACIER",
                                     "gs://hot-copy/?holds=source"])
def test_primary_destination_with_other_options_is_a_problem(primary):
    problems = problems_of({"GCS_DESTINATIONS": "gs://hot-copy incoming/=gs://cold-copy/in/?storage_class=ARCHIVE",
                            "PRIMARY_DESTINATION": primary})
    (problem,) = problems
    url = primary.partition("?")[0]
    assert problem.startswith(f"PRIMARY_DESTINATION: {primary!r}: the options after '?' are not those")
    assert f"write PRIMARY_DESTINATION={url}:" in problem


# --------------------------------------------------------------------------- endpoint: the token's way


@pytest.mark.parametrize("value", [
    "http://127.0.0.1:4443", "http://127.8.9.10:4443/", "http://localhost:4443", "http://LOCALHOST",
    "http://[::1]:4443", "https://storage.googleapis.com", "https://10.0.0.5:8443",
])
def test_gcs_api_endpoint_loopback_or_https_accepted(value):
    assert load({"GCS_DESTINATIONS": DEST, "GCS_API_ENDPOINT": value}).gcs_api_endpoint == value.rstrip("/")


@pytest.mark.parametrize("value, host, fix", [
    ("http://storage.googleapis.com", "storage.googleapis.com", "GCS_API_ENDPOINT=https://storage.googleapis.com"),
    ("http://10.0.0.5:4443/", "10.0.0.5", "GCS_API_ENDPOINT=https://10.0.0.5:4443"),
    ("http://0.0.0.0:4443", "0.0.0.0", "GCS_API_ENDPOINT=https://0.0.0.0:4443"),
    ("http://localhost.example.com", "localhost.example.com", "https://localhost.example.com"),
    ("http://private.example/storage/v1", "private.example", "GCS_API_ENDPOINT=https://private.example;"),
])
def test_gcs_api_endpoint_plain_http_elsewhere_is_refused(value, host, fix):
    (problem,) = problems_of({"GCS_DESTINATIONS": DEST, "GCS_API_ENDPOINT": value})
    assert problem.startswith(f"GCS_API_ENDPOINT: {value!r} is plain http:// to {host} ")
    assert "bearer token" in problem and "clear text" in problem
    assert fix in problem
    assert "loopback host (localhost, 127.0.0.1, [::1])" in problem


def test_bare_listen_address_gets_a_loopback_url():
    (problem,) = problems_of({"GCS_DESTINATIONS": DEST, "GCS_API_ENDPOINT": "0.0.0.0:4443"})
    assert "GCS_API_ENDPOINT=http://127.0.0.1:4443" in problem
    assert load({"GCS_DESTINATIONS": DEST, "GCS_API_ENDPOINT": "http://127.0.0.1:4443"})  # the fix is accepted


def test_parse_destination_of_nothing_says_what_to_write():
    with pytest.raises(ValueError, match="does not start with gs://"):
        parse_destination("")

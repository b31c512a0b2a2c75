"""Credential configuration checks: pure logic of gcs_sync.auth (no token exchange)."""

from __future__ import annotations

import json

import pytest
from google.auth import exceptions as auth_exc
from google.auth import impersonated_credentials
from google.oauth2 import utils as oauth2_utils

from gcs_sync.auth import config_problems, describe_refresh_error, read_credential_config
from gcs_sync.config import Destination, Settings
from gcs_sync.errors import CredentialsError

AUDIENCE = ("//iam.googleapis.com/projects/123456789012/locations/global/"
            "workloadIdentityPools/aws-pool/providers/aws-provider")
IMPERSONATION_URL = ("https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/"
                     "gcs-sync@my-project.iam.gserviceaccount.com:generateAccessToken")


def good_config(**overrides) -> dict:
    info = {
        "universe_domain": "googleapis.com",
        "type": "external_account",
        "audience": AUDIENCE,
        "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
        "token_url": "https://sts.googleapis.com/v1/token",
        "credential_source": {
            "environment_id": "aws1",
            "region_url": "http://169.254.169.254/latest/meta-data/placement/availability-zone",
            "url": "http://169.254.169.254/latest/meta-data/iam/security-credentials",
            "regional_cred_verification_url":
                "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
        },
        "service_account_impersonation_url": IMPERSONATION_URL,
    }
    for key, value in overrides.items():
        if value is _DELETE:
            info.pop(key, None)
        else:
            info[key] = value
    return info


_DELETE = object()


def make_settings(**kwargs) -> Settings:
    defaults = dict(destinations=(Destination("dest-bucket"),), aws_region="us-east-1", aws_keys_present=True)
    defaults.update(kwargs)
    return Settings(**defaults)


SA_KEY = {"type": "service_account", "project_id": "p", "private_key_id": "1",
          "private_key": "-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----\n",
          "client_email": "sa@p.iam.gserviceaccount.com", "token_uri": "https://oauth2.googleapis.com/token"}


def test_good_external_account_config_has_no_problems():
    assert config_problems(good_config(), make_settings()) == []


def test_good_config_without_impersonation_has_no_problems():
    info = good_config(service_account_impersonation_url=_DELETE)
    assert config_problems(info, make_settings()) == []


def test_service_account_key_refused_by_default():
    problems = config_problems(SA_KEY, make_settings())
    assert len(problems) == 1
    assert "service-account key" in problems[0]
    assert "ALLOW_SERVICE_ACCOUNT_KEY=true" in problems[0]
    assert "create-cred-config" in problems[0]


def test_service_account_key_allowed_when_asked():
    assert config_problems(SA_KEY, make_settings(allow_service_account_key=True)) == []


def test_authorized_user_only_outside_lambda():
    info = {"type": "authorized_user", "client_id": "c", "client_secret": "s", "refresh_token": "r"}
    assert config_problems(info, make_settings(in_lambda=False)) == []
    problems = config_problems(info, make_settings(in_lambda=True))
    assert len(problems) == 1 and "'authorized_user'" in problems[0]


@pytest.mark.parametrize("kind", [None, "impersonated_service_account", "external_account_authorized_user",
                                  "EXTERNAL_ACCOUNT", 5])
def test_wrong_type(kind):
    info = good_config(type=kind)
    problems = config_problems(info, make_settings())
    assert len(problems) == 1
    assert f"type is {kind!r}, expected 'external_account'" in problems[0]


@pytest.mark.parametrize(
    "source",
    [
        {"file": "/var/run/token"},
        {"url": "http://127.0.0.1/token", "headers": {}},
        {"executable": {"command": "/bin/token"}},
        {"environment_id": "azure1"},
        "aws1",
        None,
    ],
    ids=["file", "url", "executable", "azure", "string", "none"],
)
def test_non_aws_credential_source(source):
    problems = config_problems(good_config(credential_source=source), make_settings())
    assert len(problems) == 1
    assert "credential_source is not an AWS source" in problems[0]


@pytest.mark.parametrize(
    "audience",
    [
        "",
        None,
        123,
        "//iam.googleapis.com/locations/global/workforcePools/pool/providers/p",
        "https://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x",
        "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/pool",
    ],
)
def test_bad_audience(audience):
    problems = config_problems(good_config(audience=audience), make_settings())
    assert len(problems) == 1
    assert problems[0].startswith(f"audience {audience!r} is not of the form")


@pytest.mark.parametrize("token_type", ["urn:ietf:params:oauth:token-type:jwt", "", None, "aws4_request"])
def test_bad_subject_token_type(token_type):
    problems = config_problems(good_config(subject_token_type=token_type), make_settings())
    assert len(problems) == 1
    assert problems[0].startswith("subject_token_type must be urn:ietf:params:aws:token-type:aws4_request. Fix: ")


@pytest.mark.parametrize(
    "url",
    [
        "",
        5,
        "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com",
        "https://iamcredentials.googleapis.com/v1/projects/-/sa@p.iam.gserviceaccount.com:generateAccessToken",
        "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/sa@p:generateIdToken",
    ],
)
def test_bad_impersonation_url(url):
    problems = config_problems(good_config(service_account_impersonation_url=url), make_settings())
    assert len(problems) == 1
    assert problems[0].startswith(
        "service_account_impersonation_url must end in serviceAccounts/EMAIL:generateAccessToken. Fix: ")
    assert "--service-account=EMAIL" in problems[0]


def test_missing_region_and_keys():
    problems = config_problems(good_config(), make_settings(aws_region=None, aws_keys_present=False))
    assert len(problems) == 2
    assert "AWS_REGION" in problems[0]
    assert "AWS_ACCESS_KEY_ID" in problems[1] and "AWS_SECRET_ACCESS_KEY" in problems[1]
    only_region = config_problems(good_config(), make_settings(aws_region=None))
    assert len(only_region) == 1 and "AWS_REGION" in only_region[0]
    only_keys = config_problems(good_config(), make_settings(aws_keys_present=False))
    assert len(only_keys) == 1 and "AWS_ACCESS_KEY_ID" in only_keys[0]


def test_all_problems_listed_together():
    info = good_config(credential_source={"file": "x"}, audience="bad", subject_token_type="x",
                       service_account_impersonation_url="bad")
    problems = config_problems(info, make_settings(aws_region=None, aws_keys_present=False))
    assert len(problems) == 6


# --------------------------------------------------------------------------- read_credential_config


def _settings_for(path) -> Settings:
    return make_settings(credentials_path=str(path))


def test_read_good_file(tmp_path):
    path = tmp_path / "creds.json"
    path.write_text(json.dumps(good_config()), encoding="utf-8")
    assert read_credential_config(_settings_for(path)) == good_config()


@pytest.mark.parametrize(
    "content, fragment",
    [
        (None, "does not exist"),
        ("this is not json", "is not JSON"),
        ("", "is not JSON"),
        ("[1, 2, 3]", "is not a JSON object"),
        ('"external_account"', "is not a JSON object"),
        (b"\xff\xfe\x00garbage", "cannot read"),
        (json.dumps(SA_KEY), "ALLOW_SERVICE_ACCOUNT_KEY"),
        (json.dumps(good_config(audience="bad", subject_token_type="x")), "audience 'bad'"),
    ],
    ids=["missing", "not-json", "empty", "array", "string", "not-utf8", "sa-key", "bad-fields"],
)
def test_read_bad_file(tmp_path, content, fragment):
    path = tmp_path / "creds.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(CredentialsError) as info:
        read_credential_config(_settings_for(path))
    message = str(info.value)
    assert message.startswith("GOOGLE_APPLICATION_CREDENTIALS: ")
    assert str(path) in message
    assert fragment in message
    assert info.value.retryable is False


def test_read_directory_is_a_credentials_error(tmp_path):
    with pytest.raises(CredentialsError, match="GOOGLE_APPLICATION_CREDENTIALS: .* is a directory") as info:
        read_credential_config(_settings_for(tmp_path))
    assert info.value.fix and "gcp-credentials.json" in info.value.fix


def test_read_problems_joined_in_one_error(tmp_path):
    path = tmp_path / "creds.json"
    path.write_text(json.dumps(good_config(audience="bad", subject_token_type="x")), encoding="utf-8")
    with pytest.raises(CredentialsError) as info:
        read_credential_config(_settings_for(path))
    assert "audience 'bad'" in str(info.value) and "subject_token_type must be" in str(info.value)
    assert "; " in str(info.value)


# --------------------------------------------------------------------------- describe_refresh_error


class _Response:
    def __init__(self, status: int, body: str):
        self.status = status
        self.data = body.encode("utf-8")
        self.headers = {}


def _impersonation_error() -> Exception:
    """The RefreshError google-auth itself raises when IAM Credentials refuses impersonation."""
    body = json.dumps({"error": {"code": 403, "status": "PERMISSION_DENIED",
                                 "message": "Permission 'iam.serviceAccounts.getAccessToken' denied"}})

    def request(**_kwargs):
        return _Response(403, body)

    with pytest.raises(auth_exc.RefreshError) as info:
        impersonated_credentials._make_iam_token_request(
            request, "sa@p.iam.gserviceaccount.com", {}, {"scope": ["s"], "lifetime": "3600s"})
    return info.value


def _sts_error() -> Exception:
    """The OAuthError google-auth raises when Google STS refuses the token exchange."""
    body = json.dumps({"error": "invalid_grant",
                       "error_description": "The given credential is rejected by the attribute condition."})
    with pytest.raises(auth_exc.GoogleAuthError) as info:  # OAuthError, not a RefreshError
        oauth2_utils.handle_error_response(body)
    return info.value


def test_describe_impersonation_failure():
    text = describe_refresh_error(_impersonation_error())
    assert text.startswith("impersonating the service account failed")
    assert "roles/iam.workloadIdentityUser" in text
    assert "PERMISSION_DENIED" in text  # the detail is kept
    assert "STS" not in text.split("Detail:")[0]


def test_describe_sts_failure():
    error = _sts_error()
    text = describe_refresh_error(error)
    assert text.startswith("the Google STS token exchange failed")
    assert "impersonating" not in text
    assert str(error)[:50] in text


@pytest.mark.parametrize("message", [
    "Unable to retrieve AWS region", "Unable to retrieve AWS security credentials", "something else"])
def test_describe_failure_before_sts(message):
    text = describe_refresh_error(auth_exc.RefreshError(message))
    assert text.startswith("building the AWS subject token failed")
    assert message in text


def test_describe_truncates_long_detail():
    text = describe_refresh_error(auth_exc.RefreshError("§" * 5000))
    assert text.count("§") == 400


class _StubCredentials:
    def __init__(self, error: Exception):
        self.valid = False
        self.error = error
        self.calls = 0

    def refresh(self, request):
        self.calls += 1
        raise self.error


@pytest.mark.parametrize(
    "make, retryable, start",
    [
        (_sts_error, False, "the Google STS token exchange failed"),
        (_impersonation_error, False, "impersonating the service account failed"),
        (lambda: auth_exc.TransportError("connection refused"), True, "could not reach the Google token endpoint"),
    ],
    ids=["sts", "impersonation", "transport"],
)
def test_ensure_token_translates_failures(make, retryable, start):
    from gcs_sync.auth import GoogleAuth

    credentials = _StubCredentials(make())
    auth = GoogleAuth(credentials)
    with pytest.raises(CredentialsError) as info:
        auth.ensure_token()
    assert str(info.value).startswith(start)
    assert info.value.retryable is retryable
    assert credentials.calls == 1


@pytest.mark.parametrize("quota", [None, "from-config"])
@pytest.mark.parametrize("environment", [None, "from-env"])
def test_the_functions_credentials_are_what_google_auth_would_load(monkeypatch, quota, environment):
    import google.auth

    from gcs_sync.auth import load_credentials

    info = good_config(**({"quota_project_id": quota} if quota else {}))
    if environment:
        monkeypatch.setenv("GOOGLE_CLOUD_QUOTA_PROJECT", environment)
    else:
        monkeypatch.delenv("GOOGLE_CLOUD_QUOTA_PROJECT", raising=False)
    ours, theirs = load_credentials(info), google.auth.load_credentials_from_dict(info)[0]
    assert type(ours) is type(theirs)
    assert ours.info == theirs.info and ours.quota_project_id == theirs.quota_project_id == (environment or quota)
    assert ours.service_account_email == theirs.service_account_email


def test_other_kinds_of_credentials_load_the_generic_way():
    from gcs_sync.auth import load_credentials

    user = {"type": "authorized_user", "client_id": "i", "client_secret": "s", "refresh_token": "r"}
    assert type(load_credentials(user)).__module__ == "google.oauth2.credentials"


def test_loading_the_functions_credentials_imports_no_user_credential_modules(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "wif.json"
    path.write_text(json.dumps(good_config()))
    code = ("import sys\nfrom gcs_sync.auth import load_credentials\nimport json\n"
            f"load_credentials(json.load(open({str(path)!r})))\n"
            "print(sorted(m for m in sys.modules if m.startswith(('google.oauth2.credentials', 'google.oauth2.reauth'))))")
    from pathlib import Path

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("text, retryable", [
    ("Error code 503: Service Unavailable", True),
    ("RESOURCE_EXHAUSTED: Quota exceeded", True),
    ("reason: backendError", True),
    ("Rate Limit Exceeded", True),
    ("Read Timed Out", True),
    ("invalid_grant: the subject token is invalid", False),
    ("Error code 4290: not a status", False),
])
def test_a_failed_token_exchange_is_retryable_when_google_says_it_is_transient(text, retryable):
    from gcs_sync.auth import GoogleAuth

    class Failing:
        valid = False

        def refresh(self, request):
            raise auth_exc.RefreshError(text)

    with pytest.raises(CredentialsError) as raised:
        GoogleAuth(Failing()).ensure_token()
    assert raised.value.retryable is retryable, text

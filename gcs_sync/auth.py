"""Google credentials from the Workload Identity Federation credential configuration.

Built once per container and shared by every destination and warm invocation, so the token
exchange (STS, then service-account impersonation) happens once per token lifetime.
"""

from __future__ import annotations

import json
import os
import re
import threading
from typing import Any

import google.auth
import google.auth.aws
import google.auth.transport.requests
from google.auth import exceptions as auth_exc

from .config import Settings
from .deadline import Deadline
from .errors import CredentialsError, Problem

SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)

KEYLESS_HELP = (
    "gcs-sync authenticates without keys: create a Workload Identity Federation credential "
    "configuration with `gcloud iam workload-identity-pools create-cred-config ... --aws` "
    "(see the README) and point GOOGLE_APPLICATION_CREDENTIALS at it."
)
VARIABLE = "GOOGLE_APPLICATION_CREDENTIALS"
REGENERATE = (
    "regenerate it with `gcloud iam workload-identity-pools create-cred-config "
    "projects/PROJECT_NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER "
    "--service-account=EMAIL --aws --output-file=gcp-credentials.json` (or deploy/gcp-setup.sh) "
    "and rebuild with ./build.sh --credentials gcp-credentials.json"
)
_IN_ZIP = (
    "include the credential configuration in the zip with ./build.sh --credentials FILE (it lands "
    "at gcp-credentials.json) and set GOOGLE_APPLICATION_CREDENTIALS=gcp-credentials.json"
)


def read_credential_config(settings: Settings) -> dict:
    """Load and check the credential configuration file; raise CredentialsError saying what is
    wrong and how to fix it."""
    info, problems = _load(settings)
    if problems:
        path = settings.credentials_path
        if info is not None:  # the file loaded: its fields are wrong
            wrong = f"{VARIABLE}: {path}: " + "; ".join(p.wrong for p in problems)
        else:
            wrong = f"{VARIABLE}: " + "; ".join(p.wrong for p in problems)
        fixes = list(dict.fromkeys(p.fix for p in problems if p.fix))
        raise CredentialsError(wrong, fix="; ".join(fixes) or None) from problems[0].cause
    return info  # type: ignore[return-value]


def credential_file_problems(settings: Settings) -> list[Problem]:
    """Every problem of the credential configuration file, each with its fix (empty when it is
    usable, or when GOOGLE_APPLICATION_CREDENTIALS is not set)."""
    if settings.credentials_path is None:
        return []
    info, problems = _load(settings)
    if info is not None:
        return [Problem(p.variable, f"{settings.credentials_path}: {p.wrong}" if p.variable == VARIABLE
                        else p.wrong, p.fix) for p in problems]
    return [Problem(p.variable, p.wrong, p.fix) for p in problems]


class _FileProblem:
    __slots__ = ("wrong", "fix", "cause", "variable")

    def __init__(self, wrong: str, fix: str | None, cause: BaseException | None = None,
                 variable: str = VARIABLE):
        self.wrong, self.fix, self.cause, self.variable = wrong, fix, cause, variable


def _load(settings: Settings) -> tuple[dict | None, list[_FileProblem]]:
    path = settings.credentials_path
    where = _where(settings)
    try:
        with open(path, encoding="utf-8") as handle:  # type: ignore[arg-type]
            text = handle.read()
    except FileNotFoundError as exc:
        return None, [_FileProblem(f"{where} does not exist", _missing_fix(settings), exc)]
    except IsADirectoryError as exc:
        return None, [_FileProblem(
            f"{where} is a directory, not a file",
            f"point {VARIABLE} at the JSON file itself (e.g. {os.path.join(str(path), 'gcp-credentials.json')})",
            exc)]
    except PermissionError as exc:
        return None, [_FileProblem(f"cannot read {where}: permission denied",
                                   "make the file readable (chmod 644 FILE; ./build.sh --credentials "
                                   "does this in the zip)", exc)]
    except UnicodeDecodeError as exc:
        return None, [_FileProblem(f"cannot read {where}: it is not UTF-8 text ({exc.reason})",
                                   "point it at the JSON credential configuration; " + REGENERATE, exc)]
    except OSError as exc:
        return None, [_FileProblem(f"cannot read {where}: {exc.strerror or exc}", "fix the path or the file", exc)]
    try:
        info = json.loads(text)
    except ValueError as exc:
        stripped = text.lstrip()
        if "PRIVATE KEY-----" in text:
            fix = ("this is a PEM key, not a credential configuration: gcs-sync needs no key; " + REGENERATE)
        elif stripped.startswith("[default]") or "aws_access_key_id" in text:
            fix = ("this is an AWS credentials file; gcs-sync needs Google's credential configuration "
                   "(the AWS side comes from the function's role): " + REGENERATE)
        elif stripped.startswith("{"):
            fix = "the JSON is broken (edited by hand?): " + REGENERATE
        else:
            fix = "point it at the JSON credential configuration; " + REGENERATE
        return None, [_FileProblem(f"{where} is not JSON ({exc})", fix, exc)]
    if not isinstance(info, dict):
        return None, [_FileProblem(f"{where} is not a JSON object", REGENERATE)]
    return info, [_FileProblem(p.wrong, p.fix, variable=p.variable) for p in config_issues(info, settings)]


def _where(settings: Settings) -> str:
    if settings.credentials_base and settings.credentials_setting:
        return (f"{settings.credentials_setting!r} (resolved against {settings.credentials_base} "
                f"to {settings.credentials_path})")
    return str(settings.credentials_path)


def _missing_fix(settings: Settings) -> str:
    setting = settings.credentials_setting or settings.credentials_path or ""
    if settings.in_lambda:
        if os.path.isabs(setting) and not setting.startswith(("/var/task", "/opt", "/tmp")):
            return ("that is a path on the computer that built the zip, not inside the function: "
                    + _IN_ZIP)
        return _IN_ZIP
    if settings.credentials_base:
        return (f"give the path of the file create-cred-config wrote, relative to the current "
                f"directory or absolute (export {VARIABLE}=/path/to/gcp-credentials.json)")
    return f"correct the path: {VARIABLE} must name the file create-cred-config wrote"


def config_problems(info: dict, settings: Settings) -> list[str]:
    """What is wrong with a credential configuration for use from Lambda, each with its fix
    (empty when fine)."""
    return [str(p).removeprefix(f"{VARIABLE}: ") for p in config_issues(info, settings)]


def config_issues(info: dict, settings: Settings) -> list[Problem]:
    """``config_problems`` as ``Problem`` values: what is wrong and its fix, apart."""
    kind = info.get("type")
    if kind == "service_account":
        if settings.allow_service_account_key:
            return []
        return [Problem(
            VARIABLE,
            f"this is a service-account key (for {info.get('client_email', '?')}), which gcs-sync "
            "refuses by default: a long-lived key in a zip is a standing secret",
            "switch to the keyless setup: `gcloud iam workload-identity-pools create-cred-config ... "
            "--aws` (or deploy/gcp-setup.sh) writes gcp-credentials.json; build with ./build.sh "
            "--credentials gcp-credentials.json. To use the key anyway, set "
            "ALLOW_SERVICE_ACCOUNT_KEY=true on the function (and for ./build.sh)")]
    if kind == "authorized_user" and not settings.in_lambda:
        return []  # a person's gcloud login, for the command line
    if kind != "external_account":
        what = {"authorized_user": " (a person's gcloud login, which cannot be used in Lambda)",
                None: " (no type: not a Google credential file)"}.get(kind, "")
        return [Problem(VARIABLE, f"type is {kind!r}, expected 'external_account'{what}",
                        "use the Workload Identity Federation credential configuration: " + REGENERATE)]
    problems = []
    source = info.get("credential_source")
    if not isinstance(source, dict) or not str(source.get("environment_id", "")).startswith("aws"):
        problems.append(Problem(
            VARIABLE, "credential_source is not an AWS source (environment_id 'aws1'), so it cannot "
            "use the function's AWS role", "create the configuration for AWS: " + REGENERATE))
    audience = info.get("audience", "")
    if not (isinstance(audience, str) and audience.startswith("//iam.googleapis.com/")
            and "/workloadIdentityPools/" in audience and "/providers/" in audience):
        problems.append(Problem(
            VARIABLE,
            f"audience {audience!r} is not of the form //iam.googleapis.com/projects/NUMBER/locations/"
            "global/workloadIdentityPools/POOL/providers/PROVIDER", REGENERATE))
    else:
        project = re.match(r"^//iam\.googleapis\.com/projects/([^/]+)/", audience)
        if project and not project.group(1).isdigit():
            name = project.group(1)
            problems.append(Problem(
                VARIABLE,
                f"audience names the project {name!r} where Google expects the project number",
                f"replace {name} in the audience with the project's number (`gcloud projects describe "
                f"{name} --format='value(projectNumber)'`), or regenerate the file with create-cred-config "
                "projects/PROJECT_NUMBER/..."))
    if info.get("subject_token_type") != "urn:ietf:params:aws:token-type:aws4_request":
        problems.append(Problem(
            VARIABLE, "subject_token_type must be urn:ietf:params:aws:token-type:aws4_request",
            "set it to that value, or " + REGENERATE))
    url = info.get("service_account_impersonation_url")
    if url is not None and not (isinstance(url, str) and url.endswith(":generateAccessToken")
                                and "/serviceAccounts/" in url):
        problems.append(Problem(
            VARIABLE,
            "service_account_impersonation_url must end in serviceAccounts/EMAIL:generateAccessToken",
            "regenerate it with --service-account=EMAIL: " + REGENERATE))
    if not settings.aws_region:
        problems.append(Problem(
            "AWS_REGION", "the AWS credential source needs AWS_REGION, which is not set",
            "Lambda sets it; on a terminal export AWS_REGION=REGION (e.g. AWS_REGION=us-east-1)"))
    if not settings.aws_keys_present:
        problems.append(Problem(
            "AWS_ACCESS_KEY_ID",
            "the AWS credential source needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the "
            "environment, which are not set",
            "Lambda sets them from the function's role; on a terminal export a role's temporary "
            "credentials: eval \"$(aws configure export-credentials --format env)\""))
    return problems


class _BoundedRequest(google.auth.transport.requests.Request):
    """google-auth's HTTP transport, each call's timeout shortened to the invocation's deadline."""

    def __init__(self, deadline: Deadline):
        super().__init__()
        self._deadline = deadline

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        timeout = self._deadline.timeout(timeout if isinstance(timeout, (int, float)) else 120.0)
        return super().__call__(url, method=method, body=body, headers=headers, timeout=timeout, **kwargs)


_TRANSIENT = re.compile(r"\b(429|500|502|503|504)\b|unavailable|rate.?limit|resource_exhausted|backenderror|"
                        r"internal error|timed? ?out", re.IGNORECASE)


class GoogleAuth:
    """One credentials object per container, refreshed under a lock before work fans out."""

    def __init__(self, credentials: Any, deadline: Deadline | None = None):
        self.credentials = credentials
        self._lock = threading.Lock()
        self._request = _BoundedRequest(deadline or Deadline())

    @classmethod
    def from_settings(cls, settings: Settings, deadline: Deadline | None = None) -> "GoogleAuth":
        if settings.credentials_path is None:
            try:
                credentials, _ = google.auth.default()
            except auth_exc.DefaultCredentialsError as exc:
                raise CredentialsError(
                    "GOOGLE_APPLICATION_CREDENTIALS is not set and no default Google credentials "
                    "were found",
                    fix="export GOOGLE_APPLICATION_CREDENTIALS=/path/to/gcp-credentials.json (the "
                    "Workload Identity Federation configuration the function uses), or log in with "
                    "`gcloud auth application-default login` to copy as yourself",
                ) from exc
        else:
            info = read_credential_config(settings)
            try:
                # Loaded without scopes and without a project lookup (no call to
                # cloudresourcemanager); scopes are added below.
                credentials, _ = google.auth.load_credentials_from_dict(info)
            except auth_exc.GoogleAuthError as exc:
                raise CredentialsError(f"GOOGLE_APPLICATION_CREDENTIALS: google-auth cannot load "
                                       f"{settings.credentials_path}: {exc}", fix=REGENERATE) from exc
        if getattr(credentials, "requires_scopes", False) or hasattr(credentials, "with_scopes"):
            credentials = credentials.with_scopes(list(SCOPES))
        return cls(credentials, deadline)

    def ensure_token(self) -> None:
        """Refresh now if needed, once, on the calling thread; translate failures."""
        if self.credentials.valid:
            return
        with self._lock:
            if self.credentials.valid:
                return
            try:
                self.credentials.refresh(self._request)
            except auth_exc.TransportError as exc:
                raise CredentialsError(
                    f"could not reach the Google token endpoint: {exc}", retryable=True
                ) from exc
            except auth_exc.GoogleAuthError as exc:  # RefreshError, OAuthError, ...
                if getattr(exc, "retryable", False) or _TRANSIENT.search(str(exc)):
                    raise CredentialsError(
                        f"the Google token exchange is temporarily unavailable; a retry will try again. "
                        f"Detail: {str(exc)[:300]}", retryable=True) from exc
                raise CredentialsError(describe_refresh_error(exc), retryable=False) from exc


def describe_refresh_error(exc: Exception) -> str:
    """Tell a failure at STS (pool / provider / condition) from one at impersonation (binding),
    and both from a failure to build the signed AWS request before either is called."""
    text = str(exc)
    if not isinstance(exc, auth_exc.OAuthError) and "impersonated credentials" not in text:
        return (
            "building the AWS subject token failed before Google was called: the AWS region or "
            f"credentials could not be read (Lambda sets AWS_REGION and the role's keys). Detail: {text[:400]}"
        )
    if "impersonated credentials" in text:
        return (
            "impersonating the service account failed (PERMISSION_DENIED at IAM Credentials): the "
            "workload identity pool principal lacks roles/iam.workloadIdentityUser on the service "
            "account, or the binding's attribute.aws_role does not match the function's role. "
            f"Detail: {text[:400]}"
        )
    return (
        "the Google STS token exchange failed: check the pool and AWS provider in the audience, "
        "the provider's AWS account id, and its attribute condition against the function's role. "
        f"Detail: {text[:400]}"
    )

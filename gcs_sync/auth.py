"""Google credentials from the Workload Identity Federation credential configuration.

Built once per container and shared by every destination and warm invocation, so the token
exchange (STS, then service-account impersonation) happens once per token lifetime.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import google.auth
import google.auth.aws
import google.auth.transport.requests
from google.auth import exceptions as auth_exc

from .config import Settings
from .deadline import Deadline
from .errors import CredentialsError

SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)

KEYLESS_HELP = (
    "gcs-sync authenticates without keys: create a Workload Identity Federation credential "
    "configuration with `gcloud iam workload-identity-pools create-cred-config ... --aws` "
    "(see the README) and point GOOGLE_APPLICATION_CREDENTIALS at it."
)


def read_credential_config(settings: Settings) -> dict:
    """Load and check the credential configuration file; raise CredentialsError saying what is wrong."""
    path = settings.credentials_path
    try:
        with open(path, encoding="utf-8") as handle:  # type: ignore[arg-type]
            info = json.load(handle)
    except FileNotFoundError as exc:
        raise CredentialsError(
            f"GOOGLE_APPLICATION_CREDENTIALS: {path} does not exist. Include the credential "
            "configuration in the zip (./build.sh --credentials FILE) or fix the path; a relative "
            "path is resolved against the function's code directory."
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"GOOGLE_APPLICATION_CREDENTIALS: cannot read {path}: {exc}") from exc
    except ValueError as exc:
        raise CredentialsError(f"GOOGLE_APPLICATION_CREDENTIALS: {path} is not JSON ({exc})") from exc
    if not isinstance(info, dict):
        raise CredentialsError(f"GOOGLE_APPLICATION_CREDENTIALS: {path} is not a JSON object")
    problems = config_problems(info, settings)
    if problems:
        raise CredentialsError(f"GOOGLE_APPLICATION_CREDENTIALS: {path}: " + "; ".join(problems))
    return info


def config_problems(info: dict, settings: Settings) -> list[str]:
    """What is wrong with a credential configuration for use from Lambda (empty when fine)."""
    kind = info.get("type")
    if kind == "service_account":
        if settings.allow_service_account_key:
            return []
        return [
            "this is a service-account key, which gcs-sync refuses by default: a long-lived key in a "
            "zip is a standing secret. " + KEYLESS_HELP + " To use the key anyway, set "
            "ALLOW_SERVICE_ACCOUNT_KEY=true."
        ]
    if kind == "authorized_user" and not settings.in_lambda:
        return []  # a person's gcloud login, for the command line
    if kind != "external_account":
        return [f"type is {kind!r}, expected 'external_account'. " + KEYLESS_HELP]
    problems = []
    source = info.get("credential_source")
    if not isinstance(source, dict) or not str(source.get("environment_id", "")).startswith("aws"):
        problems.append(
            "credential_source is not an AWS source (environment_id 'aws1'); create the "
            "configuration with `create-cred-config ... --aws`"
        )
    audience = info.get("audience", "")
    if not (isinstance(audience, str) and audience.startswith("//iam.googleapis.com/")
            and "/workloadIdentityPools/" in audience and "/providers/" in audience):
        problems.append(
            f"audience {audience!r} is not of the form //iam.googleapis.com/projects/NUMBER/locations/"
            "global/workloadIdentityPools/POOL/providers/PROVIDER"
        )
    if info.get("subject_token_type") != "urn:ietf:params:aws:token-type:aws4_request":
        problems.append("subject_token_type must be urn:ietf:params:aws:token-type:aws4_request")
    url = info.get("service_account_impersonation_url")
    if url is not None and not (isinstance(url, str) and url.endswith(":generateAccessToken")
                                and "/serviceAccounts/" in url):
        problems.append(
            "service_account_impersonation_url must end in serviceAccounts/EMAIL:generateAccessToken"
        )
    if not settings.aws_region:
        problems.append("the AWS credential source needs AWS_REGION (Lambda sets it; set it when running elsewhere)")
    if not settings.aws_keys_present:
        problems.append(
            "the AWS credential source needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the "
            "environment (Lambda sets them from the function's role)"
        )
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
                    "were found. " + KEYLESS_HELP
                ) from exc
        else:
            info = read_credential_config(settings)
            try:
                # Loaded without scopes and without a project lookup (no call to
                # cloudresourcemanager); scopes are added below.
                credentials, _ = google.auth.load_credentials_from_dict(info)
            except auth_exc.GoogleAuthError as exc:
                raise CredentialsError(f"GOOGLE_APPLICATION_CREDENTIALS: {exc}") from exc
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

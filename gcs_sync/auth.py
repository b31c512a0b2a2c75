"""Google credentials from the Workload Identity Federation credential configuration.

Built once per container and shared by every destination and warm invocation, so the token
exchange (STS, then service-account impersonation) happens once per token lifetime.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import google.auth
import google.auth.aws
import google.auth.transport.requests
from google.auth import exceptions as auth_exc

from .config import Settings
from .credential_config import (
    REGENERATE,
    VARIABLE,
    config_issues,
    config_problems,
    credential_file_problems,
    read_credential_config,
)
from .deadline import Deadline
from .errors import CredentialsError

# The credential file's checks live in credential_config (config lists them too); named here as well
# for the callers that know them as auth's.
__all__ = ["SCOPES", "KEYLESS_HELP", "VARIABLE", "REGENERATE", "GoogleAuth", "config_issues",
           "config_problems", "credential_file_problems", "describe_refresh_error", "read_credential_config"]

SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)

KEYLESS_HELP = (
    "gcs-sync authenticates without keys: create a Workload Identity Federation credential "
    "configuration with `gcloud iam workload-identity-pools create-cred-config ... --aws` "
    "(see the README) and point GOOGLE_APPLICATION_CREDENTIALS at it."
)


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

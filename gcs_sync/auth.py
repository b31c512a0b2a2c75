"""Google credentials from the Workload Identity Federation credential configuration.

Built once per container and shared by every destination and warm invocation, so the token
exchange (STS, then service-account impersonation) happens once per token lifetime.
"""

from __future__ import annotations

import re
import threading
from typing import Any
from urllib.parse import urlsplit

import google.auth
import google.auth.aws
import google.auth.transport.requests
from google.auth import exceptions as auth_exc

from .config import Settings
from .credential_config import (
    AWS_SUBJECT_TOKEN_TYPE,
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


GOOGLE_DOMAIN = "googleapis.com"


def _on_google(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host == GOOGLE_DOMAIN or host.endswith("." + GOOGLE_DOMAIN)


def location_lookup_wanted(info: dict, settings: Settings) -> bool:
    """Whether google-auth's "allowed locations" lookup has a Google to ask.

    google-auth (>= 2.55) asks Google's IAM for the service account's regional access boundary
    (``allowedLocations``) in a background thread started by the first request made with the
    credentials (a copy of the transport is made on that request's path: ~4 ms here), again an hour
    before the answer expires (6 h) or, after a failure, when its cooldown ends (15 min, doubling);
    the answer travels as ``x-allowed-locations`` on later requests, for Google's services to read.
    ``bench/location_lookup.py`` measures it.
    Its address is fixed (``iamcredentials.googleapis.com``: no option or variable of 2.62 moves
    it, and ``GOOGLE_AUTH_TRUST_BOUNDARY_ENABLED`` is no longer read). So it is kept only when the
    credentials and Cloud Storage are Google's: the token exchange (``token_url``), the
    impersonation (``service_account_impersonation_url``) and ``GCS_API_ENDPOINT`` when set are
    all on googleapis.com. Against stand-ins (a local run) it would only call Google from a
    machine that may not reach it, and send nothing anyone reads."""
    urls = (info.get("token_url"), info.get("service_account_impersonation_url"), settings.gcs_api_endpoint)
    return all(_on_google(url) for url in urls if isinstance(url, str) and url)


def _without_location_lookup(credentials: Any) -> None:
    """Switch the lookup off on these credentials (external_account: the impersonated credentials
    it makes are reached only through this hook). google-auth has no public switch: this replaces
    the hook its requests call (``before_request`` -> ``_after_refresh``); a test proves a local
    token refresh and request reach no other host, so a renamed hook is caught there."""
    if hasattr(credentials, "_maybe_start_regional_access_boundary_refresh"):
        credentials._maybe_start_regional_access_boundary_refresh = lambda request, url: None


# Searched in the lowered text of a failed token exchange: compiled with IGNORECASE it took ~4 ms of
# a cold start (bench/cold_start.py), ~0.4 ms without.
_TRANSIENT = re.compile(r"\b(429|500|502|503|504)\b|unavailable|rate.?limit|resource_exhausted|backenderror|"
                        r"internal error|timed? ?out")


class GoogleAuth:
    """One credentials object per container, refreshed under a lock before work fans out."""

    def __init__(self, credentials: Any, deadline: Deadline | None = None):
        self.credentials = credentials
        self._lock = threading.Lock()
        self._request = _BoundedRequest(deadline or Deadline())

    @classmethod
    def from_settings(cls, settings: Settings, deadline: Deadline | None = None) -> "GoogleAuth":
        info: dict | None = None
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
                credentials = load_credentials(info)
            except (auth_exc.GoogleAuthError, ValueError) as exc:
                raise CredentialsError(f"GOOGLE_APPLICATION_CREDENTIALS: google-auth cannot load "
                                       f"{settings.credentials_path}: {exc}", fix=REGENERATE) from exc
        if getattr(credentials, "requires_scopes", False) or hasattr(credentials, "with_scopes"):
            credentials = credentials.with_scopes(list(SCOPES))
        if info is not None and not location_lookup_wanted(info, settings):
            # After the copies made above: a copy (with_scopes) would not keep it.
            _without_location_lookup(credentials)
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
                if getattr(exc, "retryable", False) or _TRANSIENT.search(str(exc).lower()):
                    raise CredentialsError(
                        f"the Google token exchange is temporarily unavailable; a retry will try again. "
                        f"Detail: {str(exc)[:300]}", retryable=True) from exc
                raise CredentialsError(describe_refresh_error(exc), retryable=False) from exc


def load_credentials(info: dict) -> Any:
    """The credentials of a credential configuration, as ``google.auth.load_credentials_from_dict``
    makes them. The function's own kind (external_account, AWS) is made directly: the generic path
    imports google-auth's user-credential and reauthentication modules only to ask whether these are
    user credentials (~10 ms of every cold start, measured in bench/cold_start.py)."""
    if info.get("type") == "external_account" and info.get("subject_token_type") == AWS_SUBJECT_TOKEN_TYPE:
        # from_info takes the configuration's quota project; GOOGLE_CLOUD_QUOTA_PROJECT overrides it.
        return google.auth.aws.Credentials.from_info(info).with_quota_project_from_environment()
    credentials, _ = google.auth.load_credentials_from_dict(info)
    return credentials


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

"""Pure helpers of the doctor: what Google sees of an AWS caller, credential configuration parts,
one-line renderings of SDK errors. No I/O (``load_json`` aside), unit-tested."""

from __future__ import annotations

import json
import re
from typing import Any

_AUDIENCE = re.compile(
    r"^//iam\.googleapis\.com/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/"
    r"workloadIdentityPools/(?P<pool>[^/]+)/providers/(?P<provider>[^/]+)$"
)
_SA_EMAIL = re.compile(r"/serviceAccounts/(?P<email>[^/:]+):generateAccessToken$")
_ASSUMED_ROLE = re.compile(r"^(?P<head>arn:[^:]+:sts::\d+:assumed-role/[^/]+)/.+$")
_HTTP_PREFIX = re.compile(r"^(?:GET|HEAD|POST|PUT|PATCH|DELETE) \S+: ")


def aws_role_attribute(arn: str) -> str:
    """The value Google's default AWS mapping gives ``attribute.aws_role`` for a caller ARN.

    ``arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`` -> ``arn:aws:sts::ACCOUNT:assumed-role/ROLE``;
    any other ARN is kept as it is.
    """
    match = _ASSUMED_ROLE.match(arn)
    return match.group("head") if match else arn


def audience_parts(audience: Any) -> dict[str, str] | None:
    """``{"project", "location", "pool", "provider"}`` of a workload identity audience, or None."""
    match = _AUDIENCE.match(audience) if isinstance(audience, str) else None
    return match.groupdict() if match else None


def impersonated_email(url: Any) -> str | None:
    """The service account email in a ``service_account_impersonation_url``, or None."""
    match = _SA_EMAIL.search(url) if isinstance(url, str) else None
    return match.group("email") if match else None


def principal_set(audience: Any, role_value: str | None) -> str:
    """The IAM member for every session of one AWS role in the audience's pool."""
    parts = audience_parts(audience) or {"project": "PROJECT_NUMBER", "pool": "POOL"}
    return (
        f"principalSet://iam.googleapis.com/projects/{parts['project']}/locations/global/"
        f"workloadIdentityPools/{parts['pool']}/attribute.aws_role/{role_value or 'ROLE_VALUE'}"
    )


def member(info: dict | None, role_value: str | None) -> str:
    """The IAM member the bucket roles are granted to, from the credential configuration."""
    info = info or {}
    email = impersonated_email(info.get("service_account_impersonation_url"))
    if email:
        return f"serviceAccount:{email}"
    if info.get("type") == "service_account" and info.get("client_email"):
        return f"serviceAccount:{info['client_email']}"
    if info.get("type") == "external_account":
        return principal_set(info.get("audience"), role_value)
    return "the identity gcs-sync uses"


def role_name(role_value: str | None) -> str:
    """``the role NAME`` for an assumed-role ARN; else the execution role, unnamed."""
    value = role_value or ""
    if ":assumed-role/" in value:
        return "the role " + value.rsplit("/", 1)[-1]
    return "the function's execution role"


def brief(exc: BaseException, limit: int = 300) -> str:
    """A one-line, bounded rendering of an SDK exception."""
    from google.auth import exceptions as auth_exc

    args = getattr(exc, "args", ())
    if isinstance(exc, auth_exc.OAuthError) and args:
        message = str(args[0])  # "Error code X: description"; args[1] is the raw body
    elif isinstance(exc, auth_exc.RefreshError) and len(args) == 2 and isinstance(args[1], str):
        message = f"{args[0]}: {error_text(args[1])}"  # (message, response body)
    else:
        message = getattr(exc, "message", None) or str(exc)
        # google-api-core prefixes "GET https://...: "; the check already names the bucket
        message = _HTTP_PREFIX.sub("", str(message))
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_text(body: str) -> str:
    """The status and message of a Google JSON error body (or the body as it is)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return ": ".join(str(error.get(k)) for k in ("status", "message") if error.get(k))
    if isinstance(data, dict) and data.get("error_description"):
        return f"{data.get('error')}: {data['error_description']}"
    return body


def load_json(path: str | None) -> Any:
    """The JSON in ``path``, or None when it cannot be read or parsed."""
    try:
        with open(path, encoding="utf-8") as handle:  # type: ignore[arg-type]
            return json.load(handle)
    except (OSError, ValueError, TypeError):
        return None

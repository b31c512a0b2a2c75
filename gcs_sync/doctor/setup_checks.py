"""Checks of the setup every copy needs: the configuration, the credential configuration, the
token exchange, and where the Cloud Storage requests (and the token) go."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from ..errors import ConfigError, CredentialsError
from .context import Context
from .identity import audience_parts, brief, impersonated_email, load_json, principal_set
from .runner import NOT_RUN, Outcome, failed, passed, warning

CONFIGURATION = "configuration"
CREATE_CRED_CONFIG = (
    "`gcloud iam workload-identity-pools create-cred-config projects/NUMBER/locations/global/"
    "workloadIdentityPools/POOL/providers/PROVIDER --service-account=EMAIL --aws "
    "--output-file=gcp-credentials.json`")
_GOOGLE_HOST = re.compile(r"(^|\.)googleapis\.com$")
_LOOPBACK = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+|::1)$")


def configuration(ctx: Context) -> Outcome:
    """The environment parses into settings; what they say, and their warnings."""
    error = ctx.config_error
    if isinstance(error, ConfigError):
        issues = error.issues
        fixes = [f"{p.variable}: {p.fix}" for p in issues if p.fix]
        return failed(f"{len(issues)} problem(s): " + " | ".join(f"{p.variable}: {p.wrong}" for p in issues),
                      "\n".join(fixes) or "correct the variables named in the detail")
    if error is not None or ctx.settings is None:
        raise error or RuntimeError("no settings")  # the runner reports it as unexpected
    settings = ctx.settings
    parts = [f"{len(settings.destinations)} destination(s): " + ", ".join(d.url for d in settings.destinations)]
    if settings.credentials_path:
        parts.append(f"credential configuration: {settings.credentials_path}")
    else:
        parts.append("GOOGLE_APPLICATION_CREDENTIALS not set (outside Lambda: Application "
                     "Default Credentials are used)")
    if (settings.source_buckets is not None and settings.default_source_bucket
            and settings.default_source_bucket not in settings.source_buckets):
        parts.append(f"note: S3_BUCKET_NAME {settings.default_source_bucket} is not in "
                     "SOURCE_BUCKETS, so a manual sync of it would be refused")
    parts.extend(f"warning: {w}" for w in settings.warnings)
    return passed("; ".join(parts))


def credential_configuration(ctx: Context) -> Outcome:
    """The Workload Identity Federation file is usable (checked even when other variables are wrong)."""
    from ..auth import read_credential_config

    settings = ctx.credential_settings()
    if settings.credentials_path is None:
        if settings.in_lambda:  # a configuration problem, with its fix, in that check
            return failed(f"{NOT_RUN}{CONFIGURATION} failed (GOOGLE_APPLICATION_CREDENTIALS is not "
                          "set, so there is no file to check)", None)
        return passed("GOOGLE_APPLICATION_CREDENTIALS is not set; Application Default "
                      "Credentials are used (command line only: Lambda needs the file)")
    try:
        info = read_credential_config(settings)
    except CredentialsError as exc:
        return failed(str(exc), credential_fix(ctx, exc))
    ctx.info = info
    kind = info.get("type")
    if kind == "service_account":
        return passed(f"service-account key for {info.get('client_email', '?')}, allowed by "
                      "ALLOW_SERVICE_ACCOUNT_KEY=true (a standing secret; the keyless setup is preferred)")
    if kind == "authorized_user":
        return passed("a person's gcloud login (authorized_user): fine for the command line, "
                      "refused inside Lambda")
    parts = audience_parts(info.get("audience"))
    where = (f"pool {parts['pool']}, provider {parts['provider']} (project number "
             f"{parts['project']})") if parts else f"audience {info.get('audience')}"
    email = impersonated_email(info.get("service_account_impersonation_url"))
    who = (f"impersonates {email}" if email else
           "no service account impersonation: the federated identity itself needs the bucket roles")
    return passed(f"external_account, AWS source; {where}; {who}")


def credential_fix(ctx: Context, exc: CredentialsError) -> str:
    """The fix for an unusable credential configuration, from what is wrong with it."""
    from ..auth import config_problems

    if exc.fix:
        return exc.fix
    cause = exc.__cause__
    settings = ctx.credential_settings()
    if isinstance(cause, FileNotFoundError):
        return ("include the credential configuration in the zip (./build.sh --credentials "
                "gcp-credentials.json) and set GOOGLE_APPLICATION_CREDENTIALS to its path "
                "relative to the code directory, e.g. GOOGLE_APPLICATION_CREDENTIALS="
                "gcp-credentials.json")
    if cause is not None:  # unreadable, not JSON
        return (f"recreate the file with {CREATE_CRED_CONFIG} (or deploy/gcp-setup.sh) and rebuild "
                "with ./build.sh --credentials")
    info = load_json(settings.credentials_path)
    kind = info.get("type") if isinstance(info, dict) else None
    if kind == "service_account":
        return ("switch to the keyless setup: run deploy/gcp-setup.sh (Workload Identity pool, AWS "
                "provider, binding) and build with ./build.sh --credentials gcp-credentials.json; "
                "or, to keep the key, opt in with ALLOW_SERVICE_ACCOUNT_KEY=true")
    if kind != "external_account":
        return ("use a Workload Identity Federation credential configuration made with "
                "`gcloud iam workload-identity-pools create-cred-config ... --aws`")
    text = " ".join(config_problems(info, settings))
    fixes = []
    if any(k in text for k in ("credential_source", "audience", "subject_token_type",
                               "service_account_impersonation_url")):
        fixes.append(f"regenerate it with {CREATE_CRED_CONFIG} and rebuild with ./build.sh "
                     "--credentials gcp-credentials.json")
    if "AWS_REGION" in text or "AWS_ACCESS_KEY_ID" in text:
        fixes.append(
            "run with the function role's credentials in the environment: Lambda sets "
            "AWS_REGION and the keys; elsewhere export them (e.g. `eval \"$(aws configure "
            "export-credentials --format env)\"` and AWS_REGION)")
    return "; ".join(fixes) or "correct the credential configuration as the detail says"


def token_exchange(ctx: Context) -> Outcome:
    """Google STS accepts the AWS identity, then the service account is impersonated."""
    from .. import runtime

    assert ctx.settings is not None
    try:
        auth = runtime.google_auth(ctx.settings)
    except CredentialsError as exc:
        return failed(f"could not load the credentials: {exc}",
                      "correct GOOGLE_APPLICATION_CREDENTIALS as the detail says")
    ctx.auth = auth  # set first: the scrubber hides its token whatever happens next
    try:
        auth.ensure_token()
    except CredentialsError as exc:
        ctx.auth = None
        return token_failure(ctx, exc)
    credentials = auth.credentials
    info = ctx.info or {}
    email = (impersonated_email(info.get("service_account_impersonation_url"))
             or getattr(credentials, "service_account_email", None))
    expiry = getattr(credentials, "expiry", None)
    until = f"; valid until {expiry:%Y-%m-%d %H:%M} UTC" if expiry else ""
    if info.get("type") == "external_account":
        how = (f"Google STS accepted the AWS identity and {email} was impersonated" if email
               else "Google STS accepted the AWS identity (federated token, no impersonation)")
    else:
        how = f"obtained an access token ({type(credentials).__name__})"
    return passed(how + until)


def token_failure(ctx: Context, exc: CredentialsError) -> Outcome:
    """Which step of the exchange failed (network, STS, impersonation), and the fix for it."""
    from google.auth import exceptions as auth_exc

    cause = exc.__cause__
    info = ctx.info or {}
    audience = info.get("audience")
    parts = audience_parts(audience) or {"project": "PROJECT_NUMBER", "pool": "POOL", "provider": "PROVIDER"}
    email = impersonated_email(info.get("service_account_impersonation_url")) or "SERVICE_ACCOUNT_EMAIL"
    if isinstance(cause, auth_exc.TransportError):
        return failed(f"could not reach Google's token endpoints: {cause}", unreachable_google_fix(ctx))
    if isinstance(cause, auth_exc.RefreshError) and "impersonated credentials" in str(cause):
        principal = principal_set(audience, ctx.role_value)
        return failed(
            f"Google STS accepted the AWS identity, but impersonating {email} was refused: {brief(cause)}",
            f"grant roles/iam.workloadIdentityUser on {email} to {principal}:\n"
            f"gcloud iam service-accounts add-iam-policy-binding {email} "
            f"--role=roles/iam.workloadIdentityUser --member='{principal}'")
    if isinstance(cause, auth_exc.OAuthError):
        text = str(cause)
        hints = []
        if "invalid_target" in text:
            hints.append("the pool or provider in the audience does not exist or is disabled")
        if "condition" in text.lower():
            hints.append("the provider's attribute condition rejected this role")
        account = ctx.aws_account or "the function's AWS account id"
        role = ctx.role_value or "ROLE_VALUE (see the aws identity check)"
        return failed(
            f"Google STS refused the token exchange for pool {parts['pool']}, provider "
            f"{parts['provider']}: {brief(cause)}",
            ("; ".join(hints) + ". " if hints else "")
            + f"Check that the audience names the right pool and provider "
            f"(gcloud iam workload-identity-pools providers describe {parts['provider']} "
            f"--workload-identity-pool={parts['pool']} --location=global), that the provider's "
            f"AWS account id is {account}, and that its attribute condition admits "
            f"attribute.aws_role == '{role}'")
    return failed(f"the token exchange failed: {exc}", "see the detail; the aws identity check shows the AWS side")


def unreachable_google_fix(ctx: Context) -> str:
    """What to do when Google's token endpoints cannot be reached, where the doctor runs."""
    if ctx.in_lambda:
        return ("the function needs outbound HTTPS to sts.googleapis.com and iamcredentials.googleapis.com "
                "(a function in a VPC needs a NAT gateway)")
    info = ctx.info or {}
    urls = [u for u in (info.get("token_url"), info.get("service_account_impersonation_url")) if u]
    named = f" ({', '.join(str(u) for u in urls)})" if urls else ""
    return ("check this machine's network access (and any HTTPS proxy) to the credential configuration's "
            f"token endpoints{named}")


def is_google_host(host: str) -> bool:
    """Whether a host is Google's API domain (``*.googleapis.com``, private endpoints included)."""
    return bool(_GOOGLE_HOST.search(host.lower().rstrip(".")))


def gcs_endpoint(ctx: Context) -> Outcome:
    """GCS_API_ENDPOINT: every Cloud Storage request, with its bearer token, goes there."""
    assert ctx.settings is not None
    endpoint = ctx.settings.gcs_api_endpoint or "https://storage.googleapis.com"
    host = (urlsplit(endpoint).hostname or "").lower()
    if is_google_host(host):
        return passed(f"{endpoint}: a Google endpoint")
    kind = "a local endpoint (an emulator?)" if _LOOPBACK.match(host) else "not a Google endpoint"
    return warning(
        f"GCS_API_ENDPOINT {endpoint} is {kind}: every Cloud Storage request goes there carrying the "
        "service account's access token (in its Authorization header), which lets whoever answers act as "
        "the service account until the token expires",
        "leave GCS_API_ENDPOINT unset for Cloud Storage itself, or use a Google host (*.googleapis.com, "
        "private endpoints such as storage-NAME.p.googleapis.com included); keep another host only "
        "if you run it and trust it with the token")

"""Health check ("doctor"): is this function's setup able to copy, and if not, what to change.

Runs the same checks for the ``{"doctor": {}}`` event and for ``python -m gcs_sync doctor``:

1. ``configuration``            the environment parses (``Settings.from_environ``)
2. ``credential configuration`` the Workload Identity Federation file is usable (``auth.py``'s checks)
3. ``aws identity``             the AWS role in the environment, and what Google sees of it
4. ``token exchange``           Google STS, then service-account impersonation
5. ``destination gs://B/P``     one per destination: ``testIamPermissions`` (+ an optional probe)
6. ``source bucket s3://NAME``  one per source bucket: list and HEAD

It builds its own settings and clients from the environment, so it works when the configuration
is broken (that is when it is needed), and it never raises: an unexpected exception becomes a
failed check. The credential configuration is checked even when other variables are wrong, so
every problem of both is reported at once. A check that cannot run because one it depends on
failed is still reported, with ``ok`` false (the report's shape has no third value) and detail
``not run: <check> failed`` naming the failure it waits for; the table marks it SKIP and counts
it apart from the failures. Nothing is written anywhere unless
``write_probe=True``. Every detail and fix passes through ``logs.redact``.

The AWS clients (and google-auth's AWS signer) read keys and endpoints from the process
environment, as in Lambda; ``environ`` feeds the settings.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from . import logs
from .config import Destination, Settings
from .errors import ConfigError, CredentialsError

PERMISSIONS = (
    "storage.objects.create",
    "storage.objects.delete",
    "storage.objects.get",
    "storage.objects.list",
)
PROBE_DIR = ".gcs-sync-doctor-probe/"

CONFIGURATION = "configuration"
CREDENTIAL_CONFIGURATION = "credential configuration"
AWS_IDENTITY = "aws identity"
TOKEN_EXCHANGE = "token exchange"
DESTINATIONS = "destinations"  # stands for every destination when they are not known
SOURCE_BUCKET = "source bucket"
NOT_RUN = "not run: "
SLICE_QUEUE = "slice queue"
LAMBDA_MAX_TIMEOUT = 900  # seconds: the queue's visibility timeout must cover any function timeout

_AUDIENCE = re.compile(
    r"^//iam\.googleapis\.com/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/"
    r"workloadIdentityPools/(?P<pool>[^/]+)/providers/(?P<provider>[^/]+)$"
)
_SA_EMAIL = re.compile(r"/serviceAccounts/(?P<email>[^/:]+):generateAccessToken$")
_ASSUMED_ROLE = re.compile(r"^(?P<head>arn:[^:]+:sts::\d+:assumed-role/[^/]+)/.+$")
_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

_AWS_CONNECT_TIMEOUT = 5
_AWS_READ_TIMEOUT = 15
_GCS_TIMEOUT = (10, 30)
_GCS_RETRY_DEADLINE = 30.0


# -- pure helpers (unit-tested) ----------------------------------------------------------------


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


def format_table(report: dict) -> str:
    """A terminal table: mark, check, detail; ``fix:`` lines under failures; a final count.

    Marks: PASS, FAIL, and SKIP for a check not run because an earlier one failed (counted
    apart: it did not fail, it waits for the failure it names).
    """
    checks = list(report.get("checks") or [])
    width = min(40, max((len(str(c.get("check", ""))) for c in checks), default=0))
    indent = " " * (4 + 2 + width + 2)
    lines: list[str] = []
    for check in checks:
        name = str(check.get("check", ""))
        detail = str(check.get("detail") or "")
        not_run = is_not_run(check)
        mark = "PASS" if check.get("ok") else ("SKIP" if not_run else "FAIL")
        wrapped = textwrap.wrap(detail, width=max(40, 110 - len(indent)),
                                break_long_words=False, break_on_hyphens=False) or [""]
        if len(name) > width:
            lines.append(f"{mark}  {name}")
            lines.extend(indent + part for part in wrapped)
        else:
            lines.append(f"{mark}  {name.ljust(width)}  {wrapped[0]}".rstrip())
            lines.extend(indent + part for part in wrapped[1:])
        if check.get("fix"):
            # Not wrapped: a fix often holds a command meant to be copied whole. A passing
            # check may carry a suggestion too (shown as a hint).
            label = "hint: " if check.get("ok") else "fix: "
            fix_lines = str(check["fix"]).splitlines() or [""]
            lines.append(f"{indent}{label}{fix_lines[0]}")
            lines.extend(f"{indent}{' ' * len(label)}{line}" for line in fix_lines[1:])
    total = len(checks)
    skipped = [c for c in checks if is_not_run(c)]
    failed = [c for c in checks if not c.get("ok") and not is_not_run(c)]
    if not total:
        lines.append("no checks ran")
    elif not failed and not skipped:
        lines.append(f"all {total} checks passed")
    else:
        passed = total - len(failed) - len(skipped)
        parts = [f"{len(failed)} failed"] + ([f"{len(skipped)} not run (each waits for a failed "
                                               "check it needs)"] if skipped else [])
        lines.append(f"{passed} of {total} checks passed; " + ", ".join(parts))
    return "\n".join(lines)


def is_not_run(check: dict) -> bool:
    """Whether a check was not run because a check it needs failed (not a failure of its own)."""
    return not check.get("ok") and str(check.get("detail") or "").startswith(NOT_RUN)


# -- the checks ------------------------------------------------------------------------------


@dataclass
class _Outcome:
    ok: bool
    detail: str
    fix: str | None = None


def _passed(detail: str) -> _Outcome:
    return _Outcome(True, detail)


def _failed(detail: str, fix: str | None) -> _Outcome:
    return _Outcome(False, detail, fix)


def run_checks(
    environ: Mapping[str, str] | None = None,
    *,
    code_dir: str | None = None,
    relative_to: str | None = None,
    write_probe: bool = False,
    refused_server_copies: tuple[str, ...] = (),
) -> dict:
    """Run every check; return ``{"ok": bool, "checks": [{check, ok, detail, fix}, ...]}``. Never raises.

    ``relative_to``: what a relative GOOGLE_APPLICATION_CREDENTIALS is resolved against (the
    command line passes the current directory); by default the function's code directory.
    ``refused_server_copies``: destinations whose server-side copies this container saw refused.
    """
    doctor = _Doctor(os.environ if environ is None else environ, code_dir, write_probe, relative_to)
    doctor.refused_server_copies = set(refused_server_copies)
    try:
        doctor.run()
    except Exception as exc:  # noqa: BLE001 - the doctor reports, it never raises
        try:
            doctor.record("doctor", _failed(
                f"the health check itself failed: {type(exc).__name__}: {exc}",
                "report this as a gcs-sync bug, with this detail",
            ))
        except Exception:  # noqa: BLE001 - even the message could not be rendered
            doctor.results.append({"check": "doctor", "ok": False, "detail": (
                f"the health check itself failed: {type(exc).__name__}"), "fix": None})
    checks = doctor.results
    return {"ok": bool(checks) and all(c["ok"] for c in checks), "checks": checks}


class _Doctor:
    def __init__(self, environ: Mapping[str, str], code_dir: str | None, write_probe: bool,
                 relative_to: str | None = None):
        self.environ = environ
        self.code_dir = code_dir
        self.relative_to = relative_to
        self.write_probe = write_probe
        self.results: list[dict] = []
        self._root_failure: dict[str, str] = {}  # failed check -> the check that really failed
        self.settings: Settings | None = None
        self.info: dict | None = None
        self.role_value: str | None = None
        self.aws_account: str | None = None
        self.auth: Any = None
        self.storage: Any = None
        self.permissions: dict[str, set[str]] = {}  # destination URL -> permissions held on its bucket
        self.refused_server_copies: set[str] = set()

    # -- bookkeeping -------------------------------------------------------------------------

    def record(self, name: str, outcome: _Outcome) -> None:
        if not outcome.ok:
            self._root_failure.setdefault(name, name)
        self.results.append({
            "check": name,
            "ok": bool(outcome.ok),
            "detail": self._scrub(outcome.detail),
            "fix": self._scrub(outcome.fix) if outcome.fix else None,
        })

    def check(self, name: str, needs: tuple[str, ...], body: Callable[[], _Outcome]) -> bool:
        for need in needs:
            if need in self._root_failure:
                root = self._root_failure[need]
                self._root_failure[name] = root
                self.record(name, _failed(f"{NOT_RUN}{root} failed", None))
                return False
        try:
            outcome = body()
        except Exception as exc:  # noqa: BLE001 - becomes a failed check
            outcome = _failed(
                f"unexpected {type(exc).__name__}: {exc}",
                "the health check did not foresee this error: the detail names it (if it looks "
                "like a gcs-sync bug, report it with this detail)",
            )
        self.record(name, outcome)
        return outcome.ok

    def _scrub(self, text: str) -> str:
        text = str(text)
        for name in _SECRET_VARIABLES:  # the environ given may differ from os.environ
            secret = self.environ.get(name)
            if secret and len(secret) >= 8:
                text = text.replace(secret, "[redacted]")
        token = getattr(getattr(self.auth, "credentials", None), "token", None)
        if isinstance(token, str) and len(token) >= 8:
            text = text.replace(token, "[redacted]")
        return logs.redact(text)

    # -- order and dependencies ----------------------------------------------------------------

    def run(self) -> None:
        self.check(CONFIGURATION, (), self._configuration)
        # Both need only the credential variables, so they run whatever else is wrong.
        self.check(CREDENTIAL_CONFIGURATION, (), self._credential_configuration)
        self.check(AWS_IDENTITY, (), self._aws_identity)
        # Runs even when the AWS identity check failed: boto3 may not reach AWS STS where Google
        # can (and Google's answer then says more).
        self.check(TOKEN_EXCHANGE, (CONFIGURATION, CREDENTIAL_CONFIGURATION), self._token_exchange)
        destinations = self.settings.destinations if self.settings else ()
        if not destinations:
            self.check(DESTINATIONS, (CONFIGURATION, TOKEN_EXCHANGE), lambda: _failed(
                "no destination configured", "set GCS_DESTINATIONS"))
        for destination in destinations:
            self.check(f"destination {destination.url}", (CONFIGURATION, TOKEN_EXCHANGE),
                       lambda d=destination: self._destination(d))
        if self.settings and self.settings.fanout == "copy" and len(destinations) > 1:
            primary = next((d for d in destinations if d.url == self.settings.primary_destination), destinations[0])
            for target in destinations:
                if target is not primary:
                    self.check(f"server copy {primary.url} -> {target.url}",
                               (f"destination {primary.url}", f"destination {target.url}"),
                               lambda p=primary, t=target: self._server_copy(p, t))
        if self.settings and self.settings.slice_queue_url:
            self.check(SLICE_QUEUE, (CONFIGURATION,), self._slice_queue)
        sources = self._source_buckets()
        if sources is None:
            self.check(SOURCE_BUCKET, (CONFIGURATION,), lambda: _Outcome(
                True, "no source bucket configured; set SOURCE_BUCKETS to check read access",
                "set SOURCE_BUCKETS to the buckets whose notifications this function receives, so "
                "the health check (and the handler) know which buckets to expect"))
        else:
            for bucket in sources:
                self.check(f"source bucket s3://{bucket}", (CONFIGURATION,),
                           lambda b=bucket: self._source_bucket(b))

    def _source_buckets(self) -> list[str] | None:
        settings = self.settings
        if settings is None:
            return None
        if settings.source_buckets:
            return sorted(settings.source_buckets)
        if settings.default_source_bucket:
            return [settings.default_source_bucket]
        return None

    # -- 1. configuration ------------------------------------------------------------------------

    def _configuration(self) -> _Outcome:
        try:
            settings = Settings.from_environ(self.environ, code_dir=self.code_dir, relative_to=self.relative_to,
                                             check_credential_file=False)  # its own check follows
        except ConfigError as exc:
            issues = exc.issues
            fixes = [f"{p.variable}: {p.fix}" for p in issues if p.fix]
            return _failed(
                f"{len(issues)} problem(s): " + " | ".join(f"{p.variable}: {p.wrong}" for p in issues),
                "\n".join(fixes) or "correct the variables named in the detail",
            )
        self.settings = settings
        parts = [
            f"{len(settings.destinations)} destination(s): "
            + ", ".join(d.url for d in settings.destinations)
        ]
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
        return _passed("; ".join(parts))

    # -- 2. credential configuration ---------------------------------------------------------------

    def _credential_configuration(self) -> _Outcome:
        from .auth import config_problems, read_credential_config

        settings = self._credential_settings()
        if settings.credentials_path is None:
            if settings.in_lambda:  # a configuration problem, with its fix, in that check
                return _failed(f"{NOT_RUN}{CONFIGURATION} failed (GOOGLE_APPLICATION_CREDENTIALS is not "
                               "set, so there is no file to check)", None)
            return _passed("GOOGLE_APPLICATION_CREDENTIALS is not set; Application Default "
                           "Credentials are used (command line only: Lambda needs the file)")
        try:
            info = read_credential_config(settings)
        except CredentialsError as exc:
            return _failed(str(exc), self._credential_fix(exc, config_problems))
        self.info = info
        kind = info.get("type")
        if kind == "service_account":
            return _passed(
                f"service-account key for {info.get('client_email', '?')}, allowed by "
                "ALLOW_SERVICE_ACCOUNT_KEY=true (a standing secret; the keyless setup is preferred)")
        if kind == "authorized_user":
            return _passed("a person's gcloud login (authorized_user): fine for the command line, "
                           "refused inside Lambda")
        parts = audience_parts(info.get("audience"))
        where = (f"pool {parts['pool']}, provider {parts['provider']} (project number "
                 f"{parts['project']})") if parts else f"audience {info.get('audience')}"
        email = impersonated_email(info.get("service_account_impersonation_url"))
        who = (f"impersonates {email}" if email else
               "no service account impersonation: the federated identity itself needs the bucket roles")
        return _passed(f"external_account, AWS source; {where}; {who}")

    def _credential_settings(self) -> Settings:
        """The settings, or (when other variables are wrong) just the credential variables."""
        if self.settings is not None:
            return self.settings
        return Settings.for_credentials(self.environ, code_dir=self.code_dir, relative_to=self.relative_to)

    def _credential_fix(self, exc: CredentialsError, config_problems: Callable) -> str:
        if exc.fix:
            return exc.fix
        cause = exc.__cause__
        path = self._credential_settings().credentials_path
        if isinstance(cause, FileNotFoundError):
            return ("include the credential configuration in the zip (./build.sh --credentials "
                    "gcp-credentials.json) and set GOOGLE_APPLICATION_CREDENTIALS to its path "
                    "relative to the code directory, e.g. GOOGLE_APPLICATION_CREDENTIALS="
                    "gcp-credentials.json")
        if cause is not None:  # unreadable, not JSON
            return ("recreate the file with `gcloud iam workload-identity-pools create-cred-config "
                    "projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER "
                    "--service-account=EMAIL --aws --output-file=gcp-credentials.json` (or "
                    "deploy/gcp-setup.sh) and rebuild with ./build.sh --credentials")
        info = _load_json(path)
        problems = config_problems(info, self._credential_settings()) if isinstance(info, dict) else []
        fixes: list[str] = []
        kind = info.get("type") if isinstance(info, dict) else None
        if kind == "service_account":
            fixes.append(
                "switch to the keyless setup: run deploy/gcp-setup.sh (Workload Identity pool, AWS "
                "provider, binding) and build with ./build.sh --credentials gcp-credentials.json; "
                "or, to keep the key, opt in with ALLOW_SERVICE_ACCOUNT_KEY=true")
        elif kind != "external_account":
            fixes.append(
                "use a Workload Identity Federation credential configuration made with "
                "`gcloud iam workload-identity-pools create-cred-config ... --aws`")
        else:
            text = " ".join(problems)
            if any(k in text for k in ("credential_source", "audience", "subject_token_type",
                                       "service_account_impersonation_url")):
                fixes.append(
                    "regenerate it with `gcloud iam workload-identity-pools create-cred-config "
                    "projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER "
                    "--service-account=EMAIL --aws --output-file=gcp-credentials.json` and rebuild "
                    "with ./build.sh --credentials gcp-credentials.json")
            if "AWS_REGION" in text or "AWS_ACCESS_KEY_ID" in text:
                fixes.append(
                    "run with the function role's credentials in the environment: Lambda sets "
                    "AWS_REGION and the keys; elsewhere export them (e.g. `eval \"$(aws configure "
                    "export-credentials --format env)\"` and AWS_REGION)")
        return "; ".join(fixes) or "correct the credential configuration as the detail says"

    # -- 3. aws identity ---------------------------------------------------------------------------

    def _aws_identity(self) -> _Outcome:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        settings = self._credential_settings()
        missing = []
        if not settings.aws_region:
            missing.append("AWS_REGION")
        if not settings.aws_keys_present:
            missing.append("AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
        if missing:
            return _failed(
                f"{' and '.join(missing)} not set in the environment; Google's AWS credential "
                "source reads them from there",
                "Lambda sets them from the execution role; elsewhere export the role's temporary "
                "credentials (`eval \"$(aws configure export-credentials --format env)\"`) and "
                "AWS_REGION")
        client = boto3.session.Session().client(
            "sts", region_name=settings.aws_region, config=Config(
                connect_timeout=_AWS_CONNECT_TIMEOUT, read_timeout=_AWS_READ_TIMEOUT,
                retries={"mode": "standard", "max_attempts": 2}))
        try:
            identity = client.get_caller_identity()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            return _failed(
                f"AWS STS GetCallerIdentity refused the credentials in the environment "
                f"({error.get('Code', '?')}: {error.get('Message', '')})",
                "the AWS credentials are invalid or expired: in Lambda they come from the execution "
                "role (check it exists and trusts lambda.amazonaws.com); elsewhere refresh them "
                "(aws sso login / export new temporary credentials)")
        except BotoCoreError as exc:
            return _failed(
                f"could not call AWS STS GetCallerIdentity in {settings.aws_region}: {exc}",
                "the function cannot reach sts.REGION.amazonaws.com: a function in a VPC needs a "
                "NAT gateway or an STS interface endpoint (Google's token exchange needs internet "
                "access as well)")
        arn = str(identity.get("Arn", ""))
        self.aws_account = identity.get("Account")
        self.role_value = aws_role_attribute(arn)
        detail = (f"region {settings.aws_region}; caller {arn}; Google sees "
                  f"attribute.aws_role = {self.role_value}")
        if ":assumed-role/" not in arn:
            detail += " (not an assumed role: in Lambda the caller is the execution role's session)"
        return _passed(detail)

    # -- 4. token exchange -------------------------------------------------------------------------

    def _token_exchange(self) -> _Outcome:
        from .auth import GoogleAuth

        settings = self.settings
        assert settings is not None
        try:
            auth = GoogleAuth.from_settings(settings)
        except CredentialsError as exc:
            return _failed(f"could not load the credentials: {exc}",
                           "correct GOOGLE_APPLICATION_CREDENTIALS as the detail says")
        self.auth = auth
        try:
            auth.ensure_token()
        except CredentialsError as exc:
            self.auth = None
            return self._token_failure(exc)
        credentials = auth.credentials
        info = self.info or {}
        email = (impersonated_email(info.get("service_account_impersonation_url"))
                 or getattr(credentials, "service_account_email", None))
        expiry = getattr(credentials, "expiry", None)
        until = f"; valid until {expiry:%Y-%m-%d %H:%M} UTC" if expiry else ""
        if info.get("type") == "external_account":
            how = (f"Google STS accepted the AWS identity and {email} was impersonated" if email
                   else "Google STS accepted the AWS identity (federated token, no impersonation)")
        else:
            how = f"obtained an access token ({type(credentials).__name__})"
        return _passed(how + until)

    def _token_failure(self, exc: CredentialsError) -> _Outcome:
        from google.auth import exceptions as auth_exc

        cause = exc.__cause__
        info = self.info or {}
        audience = info.get("audience")
        parts = audience_parts(audience) or {
            "project": "PROJECT_NUMBER", "pool": "POOL", "provider": "PROVIDER"}
        email = impersonated_email(info.get("service_account_impersonation_url")) or "SERVICE_ACCOUNT_EMAIL"
        role = self.role_value or "ROLE_VALUE (see the aws identity check)"
        if isinstance(cause, auth_exc.TransportError):
            return _failed(
                f"could not reach Google's token endpoints: {cause}",
                "the function needs outbound HTTPS to sts.googleapis.com and "
                "iamcredentials.googleapis.com (a function in a VPC needs a NAT gateway)")
        if isinstance(cause, auth_exc.RefreshError) and "impersonated credentials" in str(cause):
            member = principal_set(audience, self.role_value)
            return _failed(
                f"Google STS accepted the AWS identity, but impersonating {email} was refused: "
                f"{_brief(cause)}",
                f"grant roles/iam.workloadIdentityUser on {email} to {member}:\n"
                f"gcloud iam service-accounts add-iam-policy-binding {email} "
                f"--role=roles/iam.workloadIdentityUser --member='{member}'")
        if isinstance(cause, auth_exc.OAuthError):
            text = str(cause)
            hints = []
            if "invalid_target" in text:
                hints.append("the pool or provider in the audience does not exist or is disabled")
            if "condition" in text.lower():
                hints.append("the provider's attribute condition rejected this role")
            account = self.aws_account or "the function's AWS account id"
            return _failed(
                f"Google STS refused the token exchange for pool {parts['pool']}, provider "
                f"{parts['provider']}: {_brief(cause)}",
                ("; ".join(hints) + ". " if hints else "")
                + f"Check that the audience names the right pool and provider "
                f"(gcloud iam workload-identity-pools providers describe {parts['provider']} "
                f"--workload-identity-pool={parts['pool']} --location=global), that the provider's "
                f"AWS account id is {account}, and that its attribute condition admits "
                f"attribute.aws_role == '{role}'")
        return _failed(f"the token exchange failed: {exc}",
                       "see the detail; the aws identity check shows the AWS side")

    # -- 5. destinations ---------------------------------------------------------------------------

    def _storage_client(self) -> Any:
        if self.storage is None:
            from .runtime import gcs_client

            settings = self.settings
            assert settings is not None
            self.storage = gcs_client(settings, self.auth, len(settings.destinations) + 2)
        return self.storage

    def _member(self) -> str:
        info = self.info or {}
        email = impersonated_email(info.get("service_account_impersonation_url"))
        if email:
            return f"serviceAccount:{email}"
        if info.get("type") == "service_account" and info.get("client_email"):
            return f"serviceAccount:{info['client_email']}"
        if info.get("type") == "external_account":
            return principal_set(info.get("audience"), self.role_value)
        return "the identity gcs-sync uses"

    def _destination(self, destination: Destination) -> _Outcome:
        from google.api_core import exceptions as api_exc
        from google.api_core.retry import Retry
        from google.cloud.storage.retry import DEFAULT_RETRY

        client = self._storage_client()
        bucket = client.bucket(destination.bucket)
        grant = (f"gcloud storage buckets add-iam-policy-binding gs://{destination.bucket} "
                 f"--member='{self._member()}' --role=roles/storage.objectAdmin")
        retry: Retry = DEFAULT_RETRY.with_deadline(_GCS_RETRY_DEADLINE)
        try:
            held = set(bucket.test_iam_permissions(list(PERMISSIONS), timeout=_GCS_TIMEOUT, retry=retry))
        except api_exc.NotFound as exc:
            return self._bucket_missing(destination, exc)
        except api_exc.Forbidden as exc:
            return _failed(
                f"403 on bucket {destination.bucket} itself: no access at all ({_brief(exc)})",
                f"grant roles/storage.objectAdmin on the bucket: {grant}; if it is granted, look "
                "for a VPC Service Controls perimeter or organization policy denying access")
        except api_exc.Unauthorized as exc:
            return _failed(f"Cloud Storage refused the token (401): {_brief(exc)}",
                           "the token from the token exchange is not accepted; check "
                           "GCS_API_ENDPOINT points at Cloud Storage")
        except api_exc.GoogleAPICallError as exc:
            return _failed(f"testIamPermissions on {destination.bucket} failed: HTTP "
                           f"{exc.code}: {_brief(exc)}", "retry; if it persists, see the detail")
        self.permissions[destination.url] = held
        missing = [p for p in PERMISSIONS if p not in held]
        problems = []
        if "storage.objects.create" in missing:
            problems.append("storage.objects.create missing: cannot copy anything here")
        elif "storage.objects.delete" in missing:
            problems.append("storage.objects.delete missing: can create but not overwrite "
                            "(a changed source object would fail to copy)")
        if "storage.objects.get" in missing:
            problems.append("storage.objects.get missing: cannot check what the destination holds "
                            "(ordering, already-current)")
        if "storage.objects.list" in missing:
            problems.append("storage.objects.list missing: sync cannot compare listings")
        notes = []
        if "storage.objects.list" in held:
            try:
                listed = list(client.list_blobs(destination.bucket, prefix=destination.prefix,
                                                max_results=1, timeout=_GCS_TIMEOUT, retry=retry))
            except api_exc.NotFound as exc:
                return self._bucket_missing(destination, exc)
            except api_exc.GoogleAPICallError as exc:
                problems.append(f"listing {destination.url} failed: HTTP {exc.code}: {_brief(exc)}")
            else:
                notes.append("listing works (" + ("objects present" if listed else "empty") + ")")
        if problems:
            if self.write_probe:
                problems.append("write probe not tried: with these permissions it could fail or "
                                "leave its object behind")
            fix = f"grant roles/storage.objectAdmin (Object Creator cannot overwrite): {grant}"
            if missing == ["storage.objects.list"]:
                fix = f"grant roles/storage.objectAdmin, which includes storage.objects.list: {grant}"
            return _failed("; ".join(problems), fix)
        detail = "create, delete (overwrite), get and list permitted"
        if notes:
            detail += "; " + "; ".join(notes)
        if not self.write_probe:
            return _passed(detail)
        return self._probe(bucket, destination, detail, grant)

    def _server_copy(self, primary: Destination, target: Destination) -> _Outcome:
        """FANOUT=copy: objects.rewrite from the primary needs storage.objects.get on the primary's
        bucket and create + delete on the target's (both asked with testIamPermissions above)."""
        fix = (f"grant roles/storage.objectViewer on gs://{primary.bucket} to {self._member()} (a VPC "
               "Service Controls perimeter around one bucket also refuses it), or set FANOUT=upload to "
               "upload to every destination from the function")
        if "storage.objects.get" not in self.permissions.get(primary.url, set()):
            return _failed(f"storage.objects.get missing on {primary.bucket}: the server-side copy from "
                           f"{primary.url} is refused, so {target.url} is uploaded to instead", fix)
        if target.url in self.refused_server_copies:
            return _failed(f"this container saw Cloud Storage refuse (403) server-side copies from {primary.url} "
                           f"to {target.url}; it uploads to {target.url} instead (one more transfer out of AWS)",
                           fix)
        return _passed(f"objects.rewrite from {primary.url} permitted: each object leaves AWS once")

    def _bucket_missing(self, destination: Destination, exc: Exception) -> _Outcome:
        return _failed(
            f"bucket {destination.bucket} does not exist, or this identity may not see it "
            f"(404: {_brief(exc)})",
            f"create the bucket (gcloud storage buckets create gs://{destination.bucket}) or "
            "correct the name in GCS_DESTINATIONS")

    def _probe(self, bucket: Any, destination: Destination, detail: str, grant: str) -> _Outcome:
        """Write, overwrite and delete one probe object; report each step."""
        from google.api_core import exceptions as api_exc

        name = destination.object_name(PROBE_DIR + uuid.uuid4().hex)
        url = f"gs://{destination.bucket}/{name}"
        blob = bucket.blob(name)
        steps: list[str] = []
        step = "create (ifGenerationMatch=0)"
        try:
            blob.upload_from_string(b"gcs-sync doctor probe 1\n", content_type="text/plain",
                                    if_generation_match=0, timeout=_GCS_TIMEOUT)
            steps.append(f"created {url} (generation {blob.generation})")
            step = "overwrite (ifGenerationMatch=its generation)"
            blob.upload_from_string(b"gcs-sync doctor probe 2\n", content_type="text/plain",
                                    if_generation_match=blob.generation, timeout=_GCS_TIMEOUT)
            steps.append(f"overwritten (generation {blob.generation})")
            step = "delete"
            blob.delete(if_generation_match=blob.generation, timeout=_GCS_TIMEOUT)
            steps.append("deleted")
        except api_exc.GoogleAPICallError as exc:
            steps.append(f"{step} failed: HTTP {exc.code}: {_brief(exc)}")
            if len(steps) > 1:  # created: try to clean up
                try:
                    blob.delete(timeout=_GCS_TIMEOUT)
                    steps.append("probe deleted")
                except api_exc.GoogleAPICallError:
                    steps.append(f"probe object left at {url}: delete it by hand")
            return _failed(f"{detail}; write probe: " + "; ".join(steps),
                           f"grant roles/storage.objectAdmin: {grant}")
        return _passed(f"{detail}; write probe: " + "; ".join(steps))

    # -- 6. source buckets -------------------------------------------------------------------------

    def _source_bucket(self, name: str) -> _Outcome:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        settings = self.settings
        assert settings is not None
        client = boto3.session.Session().client(
            "s3", region_name=settings.aws_region, config=Config(
                connect_timeout=_AWS_CONNECT_TIMEOUT, read_timeout=_AWS_READ_TIMEOUT,
                retries={"mode": "standard", "max_attempts": 3}))
        role = self._role_name()
        try:
            listing = client.list_objects_v2(Bucket=name, MaxKeys=1)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "?"))
            if code in ("NoSuchBucket", "404"):
                return _failed(f"bucket {name} does not exist ({code})",
                               "correct the name in SOURCE_BUCKETS / S3_BUCKET_NAME")
            return _failed(
                f"cannot list s3://{name} ({code}: {exc.response.get('Error', {}).get('Message', '')})",
                f"allow s3:ListBucket on arn:aws:s3:::{name} to {role} (and check the bucket "
                "policy does not deny it)")
        except BotoCoreError as exc:
            return _failed(f"could not reach S3 for s3://{name}: {exc}",
                           "check network access to S3 (a function in a VPC needs an S3 endpoint "
                           "or a NAT gateway) and AWS_ENDPOINT_URL_S3 if set")
        contents = listing.get("Contents") or []
        if not contents:
            return _passed(f"s3://{name} is listable and empty (object read access not tried)")
        key = contents[0]["Key"]
        try:
            client.head_object(Bucket=name, Key=key)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "?"))
            if code in ("NoSuchKey", "404", "NotFound"):
                return _passed(f"s3://{name} is listable; {key!r} was deleted meanwhile "
                               "(object read access not tried)")
            return _failed(
                f"s3://{name} is listable but reading {key!r} is refused ({code})",
                f"allow s3:GetObject (and s3:GetObjectVersion) on arn:aws:s3:::{name}/* to "
                f"{role}; for SSE-KMS objects also kms:Decrypt on the key")
        except BotoCoreError as exc:
            return _failed(f"could not reach S3 for s3://{name}: {exc}",
                           "check network access to S3")
        return _passed(f"s3://{name} is listable and {key!r} is readable (HEAD)")

    def _slice_queue(self) -> _Outcome:
        """SLICE_QUEUE_URL: the queue exists and answers this role, and its visibility timeout covers
        an invocation. sqs:SendMessage itself cannot be tried without sending a message (a slice
        task would then be copied); the role's policy is not read."""
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        settings = self.settings
        assert settings is not None
        url = settings.slice_queue_url
        region = re.match(r"^https?://sqs[.-]([a-z0-9-]+)\.amazonaws\.com", url or "")
        client = boto3.session.Session().client(
            "sqs", region_name=region.group(1) if region else settings.aws_region, config=Config(
                connect_timeout=_AWS_CONNECT_TIMEOUT, read_timeout=_AWS_READ_TIMEOUT,
                retries={"mode": "standard", "max_attempts": 3}))
        role = self._role_name()
        try:
            attributes = client.get_queue_attributes(
                QueueUrl=url, AttributeNames=["VisibilityTimeout", "RedrivePolicy", "QueueArn"])["Attributes"]
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "?"))
            if "NonExistentQueue" in code or code == "404":
                return _failed(f"SLICE_QUEUE_URL {url}: no such queue ({code})",
                               "set SLICE_QUEUE_URL to the function's own queue URL (the template's WorkQueue)")
            return _failed(f"SLICE_QUEUE_URL {url}: refused ({code})",
                           f"allow sqs:GetQueueAttributes and sqs:SendMessage on the queue to {role} "
                           "(deploy/template.yaml grants both when UseQueue=true)")
        except BotoCoreError as exc:
            return _failed(f"could not reach SQS for {url}: {exc}",
                           "check network access to SQS and AWS_ENDPOINT_URL_SQS if set")
        visibility = int(attributes.get("VisibilityTimeout", "0") or 0)
        dead_letter = "a dead-letter queue" if attributes.get("RedrivePolicy") else "no dead-letter queue"
        if visibility < LAMBDA_MAX_TIMEOUT:
            return _failed(
                f"{url}: VisibilityTimeout is {visibility} s, below {LAMBDA_MAX_TIMEOUT} s; a slice still being copied "
                "could be delivered to a second invocation (the function cannot read its own timeout, so the "
                "check asks for Lambda's maximum)",
                f"set the queue's VisibilityTimeout to at least the function's timeout ({LAMBDA_MAX_TIMEOUT} s covers "
                "any; AWS advises 6 x the timeout: the template sets 5400 s)")
        return _passed(f"{url} answers; VisibilityTimeout {visibility} s covers an invocation; {dead_letter} "
                       "(sqs:SendMessage is granted by the template; it cannot be tried without sending a task)")

    def _role_name(self) -> str:
        value = self.role_value or ""
        if ":assumed-role/" in value:
            return "the role " + value.rsplit("/", 1)[-1]
        return "the function's execution role"


def _brief(exc: BaseException, limit: int = 300) -> str:
    """A one-line, bounded rendering of an SDK exception."""
    from google.auth import exceptions as auth_exc

    args = getattr(exc, "args", ())
    if isinstance(exc, auth_exc.OAuthError) and args:
        message = str(args[0])  # "Error code X: description"; args[1] is the raw body
    elif isinstance(exc, auth_exc.RefreshError) and len(args) == 2 and isinstance(args[1], str):
        message = f"{args[0]}: {_error_text(args[1])}"  # (message, response body)
    else:
        message = getattr(exc, "message", None) or str(exc)
        # google-api-core prefixes "GET https://...: "; the check already names the bucket
        message = re.sub(r"^(?:GET|HEAD|POST|PUT|PATCH|DELETE) \S+: ", "", str(message))
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_text(body: str) -> str:
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


def _load_json(path: str | None) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:  # type: ignore[arg-type]
            return json.load(handle)
    except (OSError, ValueError, TypeError):
        return None

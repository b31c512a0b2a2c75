"""The Workload Identity Federation credential configuration file: read and checked.

Pure checks of the file ``GOOGLE_APPLICATION_CREDENTIALS`` names, against the few settings that
judge it (where it was resolved, Lambda or a terminal, the AWS region and keys); no google-auth.
``config`` lists these problems with the variables' own, and ``auth`` reads the file before
building credentials from it, so both depend on this module and neither on the other.
"""

from __future__ import annotations

import json
import os
import re
from typing import Protocol

from .errors import CredentialsError, Problem


class CredentialSettings(Protocol):
    """What judging the credential file needs from ``config.Settings``."""

    @property
    def credentials_path(self) -> str | None: ...

    @property
    def credentials_setting(self) -> str | None: ...

    @property
    def credentials_base(self) -> str | None: ...

    @property
    def allow_service_account_key(self) -> bool: ...

    @property
    def aws_region(self) -> str | None: ...

    @property
    def aws_keys_present(self) -> bool: ...

    @property
    def in_lambda(self) -> bool: ...


AWS_SUBJECT_TOKEN_TYPE = "urn:ietf:params:aws:token-type:aws4_request"
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


def read_credential_config(settings: CredentialSettings) -> dict:
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


def credential_file_problems(settings: CredentialSettings) -> list[Problem]:
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


def _load(settings: CredentialSettings) -> tuple[dict | None, list[_FileProblem]]:
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


def _where(settings: CredentialSettings) -> str:
    if settings.credentials_base and settings.credentials_setting:
        return (f"{settings.credentials_setting!r} (resolved against {settings.credentials_base} "
                f"to {settings.credentials_path})")
    return str(settings.credentials_path)


def _missing_fix(settings: CredentialSettings) -> str:
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


def config_problems(info: dict, settings: CredentialSettings) -> list[str]:
    """What is wrong with a credential configuration for use from Lambda, each with its fix
    (empty when fine)."""
    return [str(p).removeprefix(f"{VARIABLE}: ") for p in config_issues(info, settings)]


def config_issues(info: dict, settings: CredentialSettings) -> list[Problem]:
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
    if info.get("subject_token_type") != AWS_SUBJECT_TOKEN_TYPE:
        problems.append(Problem(
            VARIABLE, f"subject_token_type must be {AWS_SUBJECT_TOKEN_TYPE}",
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

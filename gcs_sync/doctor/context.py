"""What the doctor's checks share, in one explicit object: the settings (or why they could not
be made), what earlier checks learnt (the credential configuration, the AWS caller, the Google
credentials, each destination's permissions), and the clients, built on first use by ``runtime``
(the one composition root) and kept for the checks that follow."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import quote

from .. import logs
from ..config import Settings
from ..errors import ConfigError

GCS_TIMEOUT = (10, 30)  # connect, read (seconds) of each Cloud Storage call
GCS_RETRY_DEADLINE = 30.0
LAMBDA = "lambda"
TERMINAL = "terminal"
SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@dataclass(frozen=True)
class BucketFacts:
    """What the checks read of a destination bucket's resource (``buckets.get``)."""

    name: str
    location: str = ""
    storage_class: str = "STANDARD"
    autoclass: bool = False
    default_kms_key: str | None = None
    retention_period: int | None = None  # seconds of the bucket retention policy
    retention_locked: bool = False
    object_retention: bool = False  # objectRetention.mode == "Enabled"
    lifecycle_rules: tuple[dict, ...] = ()
    soft_delete_seconds: int | None = None
    project_number: str | None = None

    @classmethod
    def of(cls, bucket: Any) -> "BucketFacts":
        """From a ``google.cloud.storage.Bucket`` loaded with ``reload``/``get_bucket``."""
        soft_delete = getattr(bucket, "soft_delete_policy", None)
        seconds = getattr(soft_delete, "retention_duration_seconds", None)
        period = bucket.retention_period
        return cls(
            name=bucket.name,
            location=str(bucket.location or ""),
            storage_class=str(bucket.storage_class or "STANDARD"),
            autoclass=bool(bucket.autoclass_enabled),
            default_kms_key=bucket.default_kms_key_name or None,
            retention_period=int(period) if period else None,
            retention_locked=bool(bucket.retention_policy_locked),
            object_retention=bucket.object_retention_mode == "Enabled",
            lifecycle_rules=tuple(dict(rule) for rule in bucket.lifecycle_rules),
            soft_delete_seconds=int(seconds) if seconds is not None else None,
            project_number=str(bucket.project_number) if bucket.project_number else None,
        )


@dataclass
class Context:
    """Everything the checks share. Each field after ``settings`` is written by the check named
    beside it and read by the checks that need that check."""

    environ: Mapping[str, str]
    code_dir: str | None = None
    relative_to: str | None = None
    where: str = TERMINAL  # LAMBDA or TERMINAL: which advice fits (a NAT gateway means nothing on a laptop)
    write_probe: bool = False
    refused_server_copies: frozenset[str] = frozenset()
    settings: Settings | None = None
    config_error: Exception | None = None  # why there are no settings
    info: dict | None = None  # credential configuration: the file's JSON
    role_value: str | None = None  # aws identity: attribute.aws_role as Google sees it
    aws_account: str | None = None  # aws identity
    auth: Any = None  # token exchange: GoogleAuth holding a token
    permissions: dict[str, set[str]] = field(default_factory=dict)  # destination: URL -> held
    clients: dict[Any, Any] = field(default_factory=dict)
    buckets: dict[str, Any] = field(default_factory=dict)  # name -> BucketFacts or the exception

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, *, code_dir: str | None = None,
                     relative_to: str | None = None, where: str | None = None, write_probe: bool = False,
                     refused_server_copies: tuple[str, ...] = ()) -> "Context":
        """Parse the settings (a broken configuration is kept, for its check to report). Never raises."""
        env = os.environ if environ is None else environ
        context = cls(environ=env, code_dir=code_dir, relative_to=relative_to,
                      where=where or (LAMBDA if env.get("AWS_LAMBDA_FUNCTION_NAME") else TERMINAL),
                      write_probe=write_probe, refused_server_copies=frozenset(refused_server_copies))
        try:
            context.settings = Settings.from_environ(env, code_dir=code_dir, relative_to=relative_to,
                                                     check_credential_file=False)  # its own check follows
        except ConfigError as exc:
            context.config_error = exc
        except Exception as exc:  # noqa: BLE001 - reported by the configuration check
            context.config_error = exc
        return context

    @property
    def in_lambda(self) -> bool:
        return self.where == LAMBDA

    def credential_settings(self) -> Settings:
        """The settings, or (when other variables are wrong) just the credential variables."""
        if self.settings is not None:
            return self.settings
        return Settings.for_credentials(self.environ, code_dir=self.code_dir, relative_to=self.relative_to)

    def member(self) -> str:
        from .identity import member

        return member(self.info, self.role_value)

    def role_name(self) -> str:
        from .identity import role_name

        return role_name(self.role_value)

    # -- clients, from the composition root -------------------------------------------------------

    def storage(self) -> Any:
        """The Cloud Storage client, with the token exchange's credentials."""
        if "storage" not in self.clients:
            from .. import runtime

            assert self.settings is not None
            self.clients["storage"] = runtime.gcs_client(self.settings, self.auth, len(self.settings.destinations) + 2)
        return self.clients["storage"]

    def aws(self, service: str, region: str | None, *, attempts: int = 3) -> Any:
        """A boto3 client for short calls; endpoints from boto3's own AWS_ENDPOINT_URL_* variables."""
        key = (service, region, attempts)
        if key not in self.clients:
            from .. import runtime

            self.clients[key] = runtime.aws_client(service, region, attempts=attempts)
        return self.clients[key]

    def bucket(self, name: str) -> BucketFacts:
        """The bucket's resource, read once (``buckets.get``); raises the client's error, every time."""
        if name not in self.buckets:
            from google.cloud.storage.retry import DEFAULT_RETRY

            try:
                loaded = self.storage().get_bucket(name, timeout=GCS_TIMEOUT,
                                                   retry=DEFAULT_RETRY.with_deadline(GCS_RETRY_DEADLINE))
                self.buckets[name] = BucketFacts.of(loaded)
            except Exception as exc:  # noqa: BLE001 - kept, and raised again to each check asking
                self.buckets[name] = exc
        found = self.buckets[name]
        if isinstance(found, Exception):
            raise found
        return found

    # -- output ------------------------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """``text`` without the AWS secrets of the environment checked, the Google token, or
        anything ``logs.redact`` recognises (in plain and URL-encoded forms)."""
        secrets = [self.environ.get(name) for name in SECRET_VARIABLES]
        token = getattr(getattr(self.auth, "credentials", None), "token", None)
        secrets.append(token if isinstance(token, str) else None)
        for secret in secrets:
            if secret and len(secret) >= 8:
                for form in {secret, quote(secret, safe=""), quote(quote(secret, safe=""), safe="")}:
                    text = text.replace(form, "[redacted]")
        return logs.redact(text)

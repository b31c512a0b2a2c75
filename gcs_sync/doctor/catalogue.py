"""The list of checks, in the order they run. Those of each destination are generated from the
settings: one line in ``PER_DESTINATION`` per kind. A new check is one function (taking the
``Context``, and the destination for a per-destination one, returning an ``Outcome``) and one line
here; what it needs is named, and the runner skips it when that failed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..config import Destination, Settings
from . import aws_checks, bucket_checks, policy_checks, setup_checks
from .context import Context
from .runner import Check, Outcome, failed

CONFIGURATION = setup_checks.CONFIGURATION
CREDENTIAL_CONFIGURATION = "credential configuration"
AWS_IDENTITY = "aws identity"
TOKEN_EXCHANGE = "token exchange"
GCS_ENDPOINT = "gcs endpoint"
DESTINATIONS = "destinations"  # stands for every destination when they are not known
SERVER_COPY = "server copy"
SLICE_QUEUE = "slice queue"
SOURCE_BUCKET = "source bucket"

ONCE = (
    Check(CONFIGURATION, setup_checks.configuration, (), "the environment variables parse into settings"),
    Check(CREDENTIAL_CONFIGURATION, setup_checks.credential_configuration, (),
          "the Workload Identity Federation credential configuration is usable"),
    Check(AWS_IDENTITY, aws_checks.aws_identity, (),
          "AWS STS GetCallerIdentity (AWS_ENDPOINT_URL_STS honoured) and the aws_role Google sees"),
    Check(TOKEN_EXCHANGE, setup_checks.token_exchange, (CONFIGURATION, CREDENTIAL_CONFIGURATION),
          "Google STS accepts the AWS identity; the service account is impersonated"),
)


@dataclass(frozen=True)
class PerDestination:
    """A kind of check run for each destination (``per_bucket``: once per bucket) when ``when``."""

    family: str
    run: Callable[[Context, Destination], Outcome]
    about: str
    needs: tuple[str, ...] = ("destination {url}",)
    when: Callable[[Settings, Destination], Any] = lambda settings, dest: True
    per_bucket: bool = False

    def name(self, dest: Destination) -> str:
        return f"{self.family} gs://{dest.bucket}" if self.per_bucket else f"{self.family} {dest.url}"


PER_DESTINATION = (
    PerDestination("destination", bucket_checks.destination,
                   "testIamPermissions: create, delete (to overwrite), get, list; --write-probe writes",
                   needs=(CONFIGURATION, TOKEN_EXCHANGE)),
    PerDestination("storage class", policy_checks.storage_class,
                   "storage_class=: the bucket honours it (no Autoclass); cold classes' minimum durations",
                   when=lambda settings, dest: dest.storage_class),
    PerDestination("encryption key", policy_checks.encryption_key,
                   "kms_key=: the bucket's default key and location; the service agent's grant",
                   when=lambda settings, dest: dest.kms_key),
    PerDestination("holds", policy_checks.holds,
                   "holds=source: object retention enabled on the bucket, storage.objects.setRetention held",
                   when=lambda settings, dest: dest.holds),
    PerDestination("retention", policy_checks.retention,
                   "the bucket's retention policy: copies it keeps from being replaced", per_bucket=True),
    PerDestination("slice leftovers", policy_checks.slice_leftovers,
                   "SLICE_QUEUE_URL: a lifecycle rule deletes abandoned .gcs-sync-slices/ objects",
                   when=lambda settings, dest: settings.slice_queue_url, per_bucket=True),
)


def checks_for(ctx: Context) -> list[Check]:
    """Every check this configuration has, in order (the configuration unreadable: placeholders)."""
    settings = ctx.settings
    checks = list(ONCE)
    if settings is None:
        return checks + [_no_destinations(), _no_sources()]
    if settings.gcs_api_endpoint:
        checks.append(Check(GCS_ENDPOINT, setup_checks.gcs_endpoint, (CONFIGURATION,),
                            "GCS_API_ENDPOINT: a Google host, or where the bearer token goes instead"))
    if not settings.destinations:
        checks.append(_no_destinations())
    checks.extend(destination_checks(settings))
    checks.extend(server_copy_checks(settings))
    if settings.slice_queue_url:
        checks.append(Check(SLICE_QUEUE, aws_checks.slice_queue, (CONFIGURATION,),
                            "SLICE_QUEUE_URL answers; its visibility timeout covers an invocation"))
    checks.extend(source_checks(settings))
    return checks


def destination_checks(settings: Settings) -> list[Check]:
    checks: list[Check] = []
    seen: set[str] = set()
    for kind in PER_DESTINATION:
        for dest in settings.destinations:
            name = kind.name(dest)
            if name in seen or not kind.when(settings, dest):
                continue
            seen.add(name)
            needs = tuple(n.format(url=dest.url, bucket=dest.bucket) for n in kind.needs)
            checks.append(Check(name, lambda ctx, run=kind.run, d=dest: run(ctx, d), needs, kind.about, kind.family))
    return checks


def server_copy_checks(settings: Settings) -> list[Check]:
    """FANOUT=copy with two or more destinations: the primary's copies to each other one."""
    destinations = settings.destinations
    if settings.fanout != "copy" or len(destinations) < 2:
        return []
    primary = next((d for d in destinations if d.url == settings.primary_destination), destinations[0])
    return [Check(f"{SERVER_COPY} {primary.url} -> {target.url}",
                  lambda ctx, p=primary, t=target: bucket_checks.server_copy(ctx, p, t),
                  (f"destination {primary.url}", f"destination {target.url}"),
                  "objects.rewrite from the primary destination is permitted", SERVER_COPY)
            for target in destinations if target is not primary]


def source_checks(settings: Settings) -> list[Check]:
    if settings.source_buckets:
        names = sorted(settings.source_buckets)
    elif settings.default_source_bucket:
        names = [settings.default_source_bucket]
    else:
        return [Check(SOURCE_BUCKET, aws_checks.no_source_bucket, (CONFIGURATION,),
                      "SOURCE_BUCKETS / S3_BUCKET_NAME name the buckets to check", SOURCE_BUCKET)]
    return [Check(f"{SOURCE_BUCKET} s3://{name}", lambda ctx, n=name: aws_checks.source_bucket(ctx, n),
                  (CONFIGURATION,), "the bucket can be listed and an object read (HEAD)", SOURCE_BUCKET)
            for name in names]


def _no_destinations() -> Check:
    return Check(DESTINATIONS, lambda ctx: failed("no destination configured", "set GCS_DESTINATIONS"),
                 (CONFIGURATION, TOKEN_EXCHANGE), "each destination's checks, once the configuration parses",
                 "destination")


def _no_sources() -> Check:
    return Check(SOURCE_BUCKET, aws_checks.no_source_bucket, (CONFIGURATION,),
                 "each source bucket's checks, once the configuration parses", SOURCE_BUCKET)

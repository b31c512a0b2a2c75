"""Checks of each destination bucket's settings (``buckets.get``) against what gcs-sync writes
there: the destination options (storage class, encryption key, holds), the bucket's retention
policy, and the lifecycle rule that removes abandoned slices.

Reading a bucket's settings needs ``storage.buckets.get``, which the object roles do not hold:
where it is refused, a check passes saying it could not look, and how to look by hand.
"""

from __future__ import annotations

import json
import re

from ..config import Destination
from ..slices import RESERVED_PREFIX as SLICES_PREFIX
from .context import BucketFacts, Context
from .identity import brief
from .runner import Outcome, failed, passed, warning

CLASSES = ("STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE")
SOURCE = "source"
MINIMUM_DAYS = {"NEARLINE": 30, "COLDLINE": 90, "ARCHIVE": 365}
SLICES_MAX_DAYS = 7  # a rule slower than this leaves abandoned slices billed for long
SLICES_RULE = {"action": {"type": "Delete"}, "condition": {"age": 2, "matchesPrefix": [SLICES_PREFIX]}}
KMS_KEY = re.compile(r"^projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/keyRings/(?P<ring>[^/]+)"
                     r"/cryptoKeys/(?P<key>[^/]+)$")
# Predefined dual-regions: their keys live in the multi-region that holds them.
DUAL_REGION_KEY_LOCATION = {"nam4": "us", "eur4": "eu", "eur5": "eu", "eur7": "eu", "eur8": "eu", "asia1": "asia"}
_DAY = 86400


def bucket_or_outcome(ctx: Context, bucket: str, fields: str) -> BucketFacts | Outcome:
    """The bucket's settings, or the outcome of a check that could not read them."""
    from google.api_core import exceptions as api_exc

    try:
        return ctx.bucket(bucket)
    except api_exc.Forbidden as exc:
        return passed(
            f"not checked: this identity may not read gs://{bucket}'s settings (storage.buckets.get: "
            f"{brief(exc, 120)})",
            f"grant storage.buckets.get on gs://{bucket} to {ctx.member()} (roles/storage.legacyBucketReader "
            f"holds it) so the doctor can look, or look yourself: gcloud storage buckets describe "
            f"gs://{bucket} --format='json({fields})'")
    except api_exc.NotFound as exc:
        return failed(f"bucket {bucket} does not exist ({brief(exc, 120)})",
                      "create it or correct the name in GCS_DESTINATIONS")
    except api_exc.GoogleAPICallError as exc:
        return failed(f"reading gs://{bucket}'s settings failed: HTTP {exc.code}: {brief(exc)}",
                      "retry; if it persists, see the detail")


def storage_class(ctx: Context, dest: Destination) -> Outcome:
    """storage_class=: the class exists, the bucket honours it, and what cold classes cost."""
    wanted = str(dest.storage_class or "")
    name = wanted.upper() if wanted.lower() != SOURCE else SOURCE
    if name not in CLASSES and name != SOURCE:
        return failed(f"storage_class={wanted} is not a Cloud Storage class",
                      f"write one of {', '.join(CLASSES)}, or storage_class=source, in GCS_DESTINATIONS")
    facts = bucket_or_outcome(ctx, dest.bucket, "autoclass,storage_class,soft_delete_policy")
    if isinstance(facts, Outcome):
        return facts
    if facts.autoclass:
        return failed(
            f"gs://{dest.bucket} has Autoclass on: every object written there starts in STANDARD whatever "
            f"class the request names, so storage_class={wanted} has no effect",
            f"remove storage_class from {dest.url} in GCS_DESTINATIONS and let Autoclass choose, or turn "
            f"Autoclass off: gcloud storage buckets update gs://{dest.bucket} --no-enable-autoclass")
    classes = list(CLASSES) if name == SOURCE else [name]
    what = ("S3's classes mapped (STANDARD, NEARLINE, COLDLINE or ARCHIVE per object)" if name == SOURCE
            else name)
    detail = f"copies written as {what}; the bucket's default is {facts.storage_class}, Autoclass off"
    cold = [c for c in classes if c in ("COLDLINE", "ARCHIVE")]
    if not cold:
        return passed(detail + (f" (NEARLINE: minimum storage duration 30 days)" if "NEARLINE" in classes else ""))
    return warning(detail + "; " + cold_note(cold, facts),
                   f"if keys under {dest.url} are overwritten often, write them as STANDARD (or NEARLINE, 30 "
                   f"days) instead; to stop soft delete billing replaced copies: gcloud storage buckets update "
                   f"gs://{dest.bucket} --clear-soft-delete (replaced copies can then not be restored)")


def cold_note(cold: list[str], facts: BucketFacts) -> str:
    durations = " and ".join(f"{c} {MINIMUM_DAYS[c]} days" for c in cold)
    soft = facts.soft_delete_seconds
    if soft is None:  # not in the resource: Cloud Storage's default is 7 days
        soft_text = "soft delete (7 days unless the bucket says otherwise) keeps each replaced copy billed that long"
    elif soft:
        soft_text = f"soft delete keeps each replaced copy billed for {soft / _DAY:g} more days"
    else:
        soft_text = "soft delete is off"
    return (f"minimum storage durations: {durations}: a copy replaced or deleted sooner (an S3 key "
            f"overwritten often) is charged as if kept that long (early-deletion charge), reads cost a "
            f"retrieval fee, and {soft_text}")


def encryption_key(ctx: Context, dest: Destination) -> Outcome:
    """kms_key=: the key name, the bucket's default key and location; what only Cloud KMS can tell."""
    key = str(dest.kms_key or "")
    parts = KMS_KEY.match(key)
    if not parts:
        return failed(f"kms_key={key} is not a Cloud KMS key name",
                      "write the full name: kms_key=projects/P/locations/L/keyRings/R/cryptoKeys/K")
    facts = bucket_or_outcome(ctx, dest.bucket, "default_kms_key,location,project_number")
    if isinstance(facts, Outcome):
        return facts
    if facts.default_kms_key == key:
        detail = "the bucket's default key too"
    elif facts.default_kms_key:
        detail = f"overrides the bucket's default key {facts.default_kms_key} for these copies"
    else:
        detail = "the bucket has no default key: only gcs-sync's copies use this one"
    agent = (f"service-{facts.project_number}@gs-project-accounts.iam.gserviceaccount.com" if facts.project_number
             else "the Cloud Storage service agent of the bucket's project")
    grant = (f"gcloud kms keys add-iam-policy-binding {parts['key']} --keyring={parts['ring']} "
             f"--location={parts['location']} --project={parts['project']} --member=serviceAccount:{agent} "
             "--role=roles/cloudkms.cryptoKeyEncrypterDecrypter")
    unknown = (f"that the key exists and is enabled, and that {agent} holds Encrypter/Decrypter on it, cannot be "
               "checked without Cloud KMS access (the function has none): a copy would fail with a 403 naming the key")
    location = facts.location.lower()
    expected = DUAL_REGION_KEY_LOCATION.get(location, location)
    if location and parts["location"].lower() != expected:
        return warning(f"key in {parts['location']} but gs://{dest.bucket} is in {facts.location}: Cloud Storage "
                       f"uses keys in the bucket's location ({expected}); {detail}; {unknown}",
                       f"use a key in {expected}; grant the service agent on it: {grant}")
    return passed(f"kms_key {key}: {detail}; {unknown}", f"grant it if not done: {grant}")


def holds(ctx: Context, dest: Destination) -> Outcome:
    """holds=source: the bucket has object retention enabled, and this identity may set retention."""
    facts = bucket_or_outcome(ctx, dest.bucket, "object_retention")
    if isinstance(facts, Outcome):
        return facts
    if not facts.object_retention:
        return failed(
            f"gs://{dest.bucket} does not have object retention enabled: an S3 retain-until date cannot be "
            "given to its copies there (legal holds, as temporaryHold, need no bucket setting)",
            "object retention is chosen when a bucket is created: create one with `gcloud storage buckets "
            "create gs://NEW_BUCKET --enable-per-object-retention` and point GCS_DESTINATIONS at it, or remove "
            f"holds=source from {dest.url}")
    from google.api_core import exceptions as api_exc

    try:
        held = set(ctx.storage().bucket(dest.bucket).test_iam_permissions(["storage.objects.setRetention"]))
    except api_exc.GoogleAPICallError as exc:
        return failed(f"testIamPermissions on {dest.bucket} failed: HTTP {exc.code}: {brief(exc)}",
                      "retry; if it persists, see the detail")
    if "storage.objects.setRetention" not in held:
        return failed(f"storage.objects.setRetention missing on {dest.bucket}: copies of objects under an S3 "
                      "retention cannot be given theirs",
                      f"run deploy/gcp-setup.sh with --holds (its role then holds storage.objects.setRetention) for gs://{dest.bucket} "
                      f"to {ctx.member()}")
    return passed("object retention enabled and storage.objects.setRetention held: S3 legal holds become "
                  "temporaryHold, retain-until dates the copies' retention (GOVERNANCE -> Unlocked, COMPLIANCE -> "
                  "Locked); a copy so held cannot be replaced until released or expired (outcome held)",
                  "the source's Object Lock is read with HeadObject: the function's role needs "
                  "s3:GetObjectRetention and s3:GetObjectLegalHold on the source objects")


def retention(ctx: Context, dest: Destination) -> Outcome:
    """The bucket's retention policy (and object retention): what they mean for overwrites."""
    facts = bucket_or_outcome(ctx, dest.bucket, "retention_policy,object_retention")
    if isinstance(facts, Outcome):
        return facts
    objects = ("; object retention enabled: a copy given a retention cannot be replaced until it ends"
               if facts.object_retention else "")
    if not facts.retention_period:
        return passed(f"no bucket retention policy: copies can be replaced when their source changes{objects}")
    period = facts.retention_period
    days = f"{period / _DAY:g} days" if period >= _DAY else f"{period} s"
    locked = "locked (it cannot be removed or shortened)" if facts.retention_locked else "unlocked"
    return warning(
        f"gs://{dest.bucket} has a retention policy of {days}, {locked}: a copy cannot be replaced or deleted "
        f"until it is {days} old, so a source object changed sooner gets outcome held (reported, not failed; "
        f"`check` reports the copy stale) until a sync after the period copies it{objects}",
        "that is what the policy is for; if the mirror must follow every change, use a bucket without one"
        + ("" if facts.retention_locked else
           f" (an unlocked policy can be removed: gcloud storage buckets update gs://{dest.bucket} "
           "--clear-retention-period)"))


def covers_slices(rule: dict) -> bool:
    """Whether a lifecycle rule deletes live objects under ``.gcs-sync-slices/`` by age alone."""
    action = rule.get("action") or {}
    condition = rule.get("condition") or {}
    if action.get("type") != "Delete" or not isinstance(condition.get("age"), int):
        return False
    prefixes = condition.get("matchesPrefix")
    if prefixes is not None and not any(SLICES_PREFIX.startswith(p) for p in prefixes):
        return False
    classes = condition.get("matchesStorageClass")
    if classes is not None and "STANDARD" not in classes:
        return False
    narrowing = set(condition) - {"age", "matchesPrefix", "matchesStorageClass", "isLive"}
    return not narrowing and condition.get("isLive", True) is True


def slice_leftovers(ctx: Context, dest: Destination) -> Outcome:
    """SLICE_QUEUE_URL: a lifecycle rule removes the slices of abandoned copies."""
    facts = bucket_or_outcome(ctx, dest.bucket, "lifecycle_config")
    if isinstance(facts, Outcome):
        return facts
    rules = [r for r in facts.lifecycle_rules if covers_slices(r)]
    age = min((r["condition"]["age"] for r in rules), default=None)
    if age is not None and age <= SLICES_MAX_DAYS:
        return passed(f"a lifecycle rule deletes objects under {SLICES_PREFIX} after {age} day(s)")
    merged = {"rule": [*facts.lifecycle_rules, SLICES_RULE]}
    kept = f", keeping its {len(facts.lifecycle_rules)} rule(s)" if facts.lifecycle_rules else ""
    fix = (f"add the rule{kept} (a lifecycle file replaces the bucket's rules, so it holds them all):\n"
           f"echo '{json.dumps(merged)}' > lifecycle.json\n"
           f"gcloud storage buckets update gs://{dest.bucket} --lifecycle-file=lifecycle.json")
    if age is not None:
        return warning(f"the lifecycle rule that deletes objects under {SLICES_PREFIX} waits {age} days: the slices "
                       "of an abandoned copy stay billed that long (2 days is enough)", fix)
    return failed(
        f"gs://{dest.bucket} has no lifecycle rule deleting objects under {SLICES_PREFIX}: the slices of a copy "
        "abandoned midway (an invocation that died, a changed source) stay there, billed", fix)

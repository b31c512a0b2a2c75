"""What a write asks Cloud Storage to keep on an object, and when Cloud Storage refuses to replace it.

fake-gcs-server keeps some of these fields and drops others (see ``DIFFERENCES.md``); ``GcsFront``
records what each write asked for with the generation it made, merges the record into every
object resource it relays, and refuses what Cloud Storage refuses: a replace or delete of an object
under a hold or a retention period (403), a second mutation of one name within a second (429).
Pure functions here; the state lives in ``GcsFront``.

Cloud Storage's answers, as measured against it (2026-09) and quoted by its clients:

* hold: 403, reason ``forbidden``, "Object 'B/N' is under active Temporary hold and cannot be
  deleted, overwritten or archived until hold is removed." (``Event-Based hold`` for the other);
* retention (object retention or a bucket retention policy): 403, reason ``retentionPolicyNotMet``,
  "Object 'B/N' is subject to bucket's retention policy or object retention and cannot be deleted
  or overwritten until 2026-09-30T15:58:01.185839-07:00" (Pacific time, microseconds);
* a precondition is checked first (412 before 403); a metadata update goes through (it is how a
  hold is released); a resumable upload over a kept object starts, takes every byte and is refused
  at its final request;
* rate: 429, reason ``rateLimitExceeded``, "The object B/N exceeded the rate limit for object
  mutation operations (create, update, and delete). Please reduce your request rate. See
  https://cloud.google.com/storage/docs/gcs429."
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

__all__ = [
    "KEPT_FIELDS",
    "asked_in_resource",
    "bucket_defaults",
    "kept_refusal",
    "merge_bucket",
    "merge_object",
    "parse_time",
    "rate_limited_body",
]

# Fields of an object resource a write may ask for and the front keeps (kmsKeyName comes from the
# query: ``kmsKeyName`` on uploads and compose, ``destinationKmsKeyName`` on rewrite and copy).
KEPT_FIELDS = ("storageClass", "customTime", "temporaryHold", "eventBasedHold", "retention")
# Bucket fields the front keeps (fake-gcs-server ignores them in a bucket PATCH).
BUCKET_FIELDS = ("retentionPolicy", "objectRetention", "defaultEventBasedHold", "storageClass", "encryption")
_KEY_VERSION = "/cryptoKeyVersions/1"

try:
    from zoneinfo import ZoneInfo

    _PACIFIC: dt.tzinfo = ZoneInfo("America/Los_Angeles")
except Exception:  # noqa: BLE001 - no tz database: UTC, still an RFC 3339 time
    _PACIFIC = dt.timezone.utc


def asked_in_resource(resource: Any, kms_key: str | None) -> dict[str, Any]:
    """The kept fields an object resource (upload metadata, rewrite body, compose ``destination``)
    asks for, plus the KMS key of the query; {} when it asks for none."""
    asked = {k: resource[k] for k in KEPT_FIELDS if isinstance(resource, dict) and k in resource}
    if kms_key:
        asked["kmsKeyName"] = kms_key
    return asked


def parse_time(value: Any) -> dt.datetime | None:
    """An RFC 3339 time as Cloud Storage writes it (``Z`` or an offset, any fraction); None if not one."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("z", "Z")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    if "." in text:  # Python < 3.11 parses only 3 or 6 fraction digits
        head, _, rest = text.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{(rest[:digits] + '000000')[:6]}{rest[digits:]}"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _refusal_time(when: dt.datetime) -> str:
    """As Cloud Storage's retention message writes it: Pacific time, microseconds, offset."""
    return when.astimezone(_PACIFIC).isoformat(timespec="microseconds")


def retention_expiration(obj: dict[str, Any], bucket_policy: dict[str, Any] | None,
                         fields: dict[str, Any]) -> dt.datetime | None:
    """When a bucket retention policy stops keeping the object (timeCreated + period); None when
    there is no policy or an event-based hold defers it."""
    if not bucket_policy or fields.get("eventBasedHold") is True:
        return None
    try:
        period = int(bucket_policy.get("retentionPeriod", 0))
    except (TypeError, ValueError):
        return None
    created = parse_time(obj.get("timeCreated"))
    if period <= 0 or created is None:
        return None
    return created + dt.timedelta(seconds=period)


def kept_refusal(bucket: str, name: str, obj: dict[str, Any], fields: dict[str, Any],
                 bucket_policy: dict[str, Any] | None, now: dt.datetime) -> tuple[str, str] | None:
    """(reason, message) of Cloud Storage's 403 when the live object ``obj`` (with the front's
    recorded ``fields``) cannot be replaced or deleted now; None when it can."""
    for field, label in (("eventBasedHold", "Event-Based"), ("temporaryHold", "Temporary")):
        if fields.get(field) is True:
            return "forbidden", (f"Object '{bucket}/{name}' is under active {label} hold and cannot be deleted, "
                                 "overwritten or archived until hold is removed.")
    until = [t for t in (retention_expiration(obj, bucket_policy, fields),
                         parse_time((fields.get("retention") or {}).get("retainUntilTime")
                                    if isinstance(fields.get("retention"), dict) else None))
             if t is not None and t > now]
    if until:
        return "retentionPolicyNotMet", (
            f"Object '{bucket}/{name}' is subject to bucket's retention policy or object retention and cannot "
            f"be deleted or overwritten until {_refusal_time(max(until))}")
    return None


def merge_object(obj: dict[str, Any], fields: dict[str, Any], bucket_policy: dict[str, Any] | None) -> None:
    """Put what the front keeps for this generation into an object resource, as Cloud Storage shows it."""
    for key, value in fields.items():
        if key == "kmsKeyName":
            obj[key] = value if "/cryptoKeyVersions/" in value else value + _KEY_VERSION
        elif value is None:
            obj.pop(key, None)
        else:
            obj[key] = value
    expires = retention_expiration(obj, bucket_policy, fields)
    if expires is not None:
        obj["retentionExpirationTime"] = _rfc3339(expires)


def bucket_defaults(kept: dict[str, Any]) -> dict[str, Any]:
    """What a bucket's kept fields give a new object that asks for none of it: its default storage
    class, its default KMS key, its default event-based hold."""
    defaults: dict[str, Any] = {}
    if isinstance(kept.get("storageClass"), str):
        defaults["storageClass"] = kept["storageClass"]
    encryption = kept.get("encryption")
    if isinstance(encryption, dict) and isinstance(encryption.get("defaultKmsKeyName"), str):
        defaults["kmsKeyName"] = encryption["defaultKmsKeyName"]
    if kept.get("defaultEventBasedHold") is True:
        defaults["eventBasedHold"] = True
    return defaults


def merge_bucket(resource: dict[str, Any], kept: dict[str, Any]) -> None:
    """Put the bucket fields the front keeps into a bucket resource."""
    for key, value in kept.items():
        if value is None:
            resource.pop(key, None)
        else:
            resource[key] = value


def bucket_fields_asked(body: bytes, now: dt.datetime) -> dict[str, Any]:
    """The kept bucket fields a bucket PATCH asks for (``retentionPolicy`` gets its effectiveTime)."""
    try:
        resource = json.loads(body) if body else {}
    except ValueError:
        return {}
    if not isinstance(resource, dict):
        return {}
    asked = {k: resource[k] for k in BUCKET_FIELDS if k in resource}
    policy = asked.get("retentionPolicy")
    if isinstance(policy, dict):
        asked["retentionPolicy"] = {"retentionPeriod": str(policy.get("retentionPeriod", "0")),
                                    "effectiveTime": _rfc3339(now)}
    return asked


def rate_limited_body(bucket: str, name: str) -> dict[str, Any]:
    message = (f"The object {bucket}/{name} exceeded the rate limit for object mutation operations "
               "(create, update, and delete). Please reduce your request rate. "
               "See https://cloud.google.com/storage/docs/gcs429.")
    return {"error": {"code": 429, "message": message,
                      "errors": [{"message": message, "domain": "usageLimits", "reason": "rateLimitExceeded"}]}}

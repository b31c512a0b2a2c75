"""The S3 -> Cloud Storage field table, provenance metadata and checksums. Pure."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

import google_crc32c

# Custom metadata that records where a copy came from (read back by the ordering rule).
PROVENANCE_PREFIX = "gcs-sync-"
SOURCE_BUCKET = "gcs-sync-source-bucket"
SOURCE_KEY = "gcs-sync-source-key"
SOURCE_VERSION = "gcs-sync-source-version"
SOURCE_ETAG = "gcs-sync-source-etag"
SOURCE_LAST_MODIFIED = "gcs-sync-source-last-modified"
SOURCE_SIZE = "gcs-sync-source-size"
SOURCE_SEQUENCER = "gcs-sync-source-sequencer"
SOURCE_CRC32C = "gcs-sync-source-crc32c"  # the CRC32C of the source bytes, when known at write time
PROOF = "gcs-sync-proof"  # the S3 record the copy was proven against (see proof.PROOFS)
POLICY = "gcs-sync-policy"  # the destination options the copy was written under (config.Destination.policy)

# S3 response field -> Cloud Storage object attribute (python-storage Blob property).
HEADER_FIELDS: tuple[tuple[str, str], ...] = (
    ("ContentType", "content_type"),
    ("ContentEncoding", "content_encoding"),
    ("ContentDisposition", "content_disposition"),
    ("ContentLanguage", "content_language"),
    ("CacheControl", "cache_control"),
)
# S3 fields Cloud Storage has no place for: their presence is logged, never silently dropped.
UNMAPPED_FIELDS = ("Expires", "WebsiteRedirectLocation", "ObjectLockMode", "ObjectLockLegalHoldStatus")

# S3 storage class -> Cloud Storage's, for ``storage_class=source`` (S3 names no class for STANDARD).
# A class S3 adds later (or an Outposts / Snow one) is hot storage: STANDARD.
S3_STORAGE_CLASSES = {
    "STANDARD": "STANDARD", "INTELLIGENT_TIERING": "STANDARD", "REDUCED_REDUNDANCY": "STANDARD",
    "EXPRESS_ONEZONE": "STANDARD",
    "STANDARD_IA": "NEARLINE", "ONEZONE_IA": "NEARLINE",
    "GLACIER_IR": "COLDLINE",
    "GLACIER": "ARCHIVE", "DEEP_ARCHIVE": "ARCHIVE", "GLACIER_DEEP_ARCHIVE": "ARCHIVE",
}
# S3 Object Lock retention mode -> Cloud Storage object retention mode.
LOCK_MODES = {"GOVERNANCE": "Unlocked", "COMPLIANCE": "Locked"}

_PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")
# S3 Express One Zone ("directory") buckets are named BASE--AZ-ID--x-s3; their ETags are not MD5s
# of the bytes, even when they are 32 hex digits.
DIRECTORY_BUCKET_SUFFIX = "--x-s3"
_ACME = ".well-known/acme-challenge/"
MAX_NAME_BYTES = 1024


@dataclass(frozen=True)
class SourceState:
    """Which state of a source object a copy holds, as recorded in its provenance metadata."""

    bucket: str
    key: str
    version_id: str | None
    etag: str
    last_modified: datetime | None
    size: int | None = None
    sequencer: str | None = None
    crc32c: str | None = None  # of the bytes, as recorded on a copy (not part of the state's identity)
    proof: str | None = None

    def to_metadata(self) -> dict[str, str]:
        meta = {
            SOURCE_BUCKET: self.bucket,
            SOURCE_KEY: self.key,
            SOURCE_ETAG: self.etag,
        }
        if self.version_id:
            meta[SOURCE_VERSION] = self.version_id
        if self.last_modified is not None:
            meta[SOURCE_LAST_MODIFIED] = format_time(self.last_modified)
        if self.size is not None:
            meta[SOURCE_SIZE] = str(self.size)
        if self.sequencer:
            meta[SOURCE_SEQUENCER] = self.sequencer
        if self.crc32c:
            meta[SOURCE_CRC32C] = self.crc32c
        if self.proof:
            meta[PROOF] = self.proof
        return meta

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str] | None) -> "SourceState | None":
        """The recorded source state, or None when the object was not written by gcs-sync."""
        if not meta or SOURCE_BUCKET not in meta or SOURCE_KEY not in meta or SOURCE_ETAG not in meta:
            return None
        size = meta.get(SOURCE_SIZE)
        return cls(
            bucket=meta[SOURCE_BUCKET],
            key=meta[SOURCE_KEY],
            version_id=meta.get(SOURCE_VERSION) or None,
            etag=meta[SOURCE_ETAG],
            last_modified=parse_time(meta.get(SOURCE_LAST_MODIFIED)),
            size=int(size) if size and size.isdigit() else None,
            sequencer=meta.get(SOURCE_SEQUENCER) or None,
            crc32c=meta.get(SOURCE_CRC32C) or None,
            proof=meta.get(PROOF) or None,
        )


@dataclass(frozen=True)
class ObjectLock:
    """S3 Object Lock of one object version, as HeadObject / GetObject answer it (the fields are
    there only when the caller may s3:GetObjectLegalHold / s3:GetObjectRetention)."""

    legal_hold: bool = False
    mode: str | None = None  # GOVERNANCE | COMPLIANCE
    retain_until: datetime | None = None

    @classmethod
    def from_response(cls, response: Mapping[str, Any]) -> "ObjectLock | None":
        hold = str(response.get("ObjectLockLegalHoldStatus") or "").upper()
        mode = str(response.get("ObjectLockMode") or "").upper() or None
        until = response.get("ObjectLockRetainUntilDate")
        if isinstance(until, str):
            until = parse_rfc3339(until)
        if not hold and not mode and until is None:
            return None
        return cls(legal_hold=hold == "ON", mode=mode, retain_until=until if isinstance(until, datetime) else None)


def gcs_storage_class(s3_class: str | None) -> str:
    """Cloud Storage's class for an S3 storage class (None: S3's STANDARD)."""
    return S3_STORAGE_CLASSES.get((s3_class or "STANDARD").upper(), "STANDARD")


def policy_resource(destination: Any, *, storage_class: str | None, last_modified: datetime | None,
                    lock: ObjectLock | None, now: datetime | None = None) -> dict[str, Any]:
    """The fields of the Cloud Storage object resource (JSON API names) that ``destination``'s
    options ask of a copy of the source object whose S3 class is ``storage_class``, Last-Modified
    ``last_modified`` and Object Lock ``lock``. The KMS key is not here: it is a query parameter
    (``kmsKeyName`` / ``destinationKmsKeyName``). {} when the destination sets no option.

    - ``storage_class``: the class named, or (``source``) S3's mapped by ``S3_STORAGE_CLASSES``;
    - ``custom_time=source``: ``customTime`` = the source's Last-Modified;
    - ``holds=source``: a legal hold ON -> ``temporaryHold: true``; a retain-until date still to
      come -> ``retention`` (GOVERNANCE -> ``Unlocked``, COMPLIANCE -> ``Locked``). A date already
      past keeps nothing (Cloud Storage refuses a retention in the past).
    """
    fields: dict[str, Any] = {}
    wanted = getattr(destination, "storage_class", None)
    if wanted == "source":
        fields["storageClass"] = gcs_storage_class(storage_class)
    elif wanted:
        fields["storageClass"] = wanted
    if getattr(destination, "custom_time", False) and last_modified is not None:
        fields["customTime"] = format_rfc3339(last_modified)
    if getattr(destination, "holds", False) and lock is not None:
        if lock.legal_hold:
            fields["temporaryHold"] = True
        moment = now or datetime.now(timezone.utc)
        if lock.retain_until is not None and lock.retain_until > moment:
            fields["retention"] = {"mode": LOCK_MODES.get(lock.mode or "", "Unlocked"),
                                   "retainUntilTime": format_rfc3339(lock.retain_until)}
    return fields


def copy_metadata(user: Mapping[str, str] | None, state: "SourceState", destination: Any = None) -> dict[str, str]:
    """The custom metadata of a copy: the source's user metadata, the provenance, and the policy it
    was written under (``gcs-sync-policy``: the destination's options, when it sets any)."""
    meta = {**user_metadata(user), **state.to_metadata()}
    policy = getattr(destination, "policy", None)
    if policy:
        meta[POLICY] = policy
    return meta


def format_rfc3339(value: datetime) -> str:
    """RFC 3339 in UTC, milliseconds when the time has a fraction (Cloud Storage's own form)."""
    value = value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str | None) -> datetime | None:
    """An RFC 3339 time (``Z`` or an offset, any fraction), or None when it is not one."""
    if not text:
        return None
    value = text.strip().replace("z", "Z")
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    match = re.match(r"^(.*?T\d\d:\d\d:\d\d)(?:\.(\d+))?(.*)$", value)
    if match:  # Python 3.10 takes only 3 or 6 fraction digits
        fraction = ((match.group(2) or "") + "000000")[:6]
        value = match.group(1) + ("." + fraction if match.group(2) else "") + match.group(3)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def format_time(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def user_metadata(s3_metadata: Mapping[str, str] | None) -> dict[str, str]:
    """S3 user metadata (x-amz-meta-*) for the copy, minus anything posing as our provenance."""
    return {k: v for k, v in (s3_metadata or {}).items() if not k.lower().startswith(PROVENANCE_PREFIX)}


def is_directory_bucket(bucket: str | None) -> bool:
    """Whether ``bucket`` is an S3 directory bucket (S3 Express One Zone), by its name."""
    return bool(bucket) and bucket.endswith(DIRECTORY_BUCKET_SUFFIX)


def etag_is_digest(bucket: str | None, *, encrypted_with_kms_or_customer_key: bool) -> bool:
    """Whether S3 derived the object's ETag from its bytes (an MD5, or the MD5 of its parts' MD5s).

    Not for SSE-KMS / SSE-C objects, and never in directory buckets (S3 Express One Zone).
    """
    return not encrypted_with_kms_or_customer_key and not is_directory_bucket(bucket)


def plain_md5(etag: str | None, *, encrypted_with_kms_or_customer_key: bool, bucket: str | None = None) -> str | None:
    """The object's MD5 (hex) when its ETag is one, else None.

    Multipart ETags ("...-N") and the ETags of SSE-KMS / SSE-C objects or of objects in directory
    buckets (``bucket`` ending ``--x-s3``) are not MD5s of the bytes.
    """
    if not etag or not etag_is_digest(bucket, encrypted_with_kms_or_customer_key=encrypted_with_kms_or_customer_key):
        return None
    etag = etag.strip('"').lower()
    return etag if _PLAIN_MD5.match(etag) else None


def object_name_problem(name: str) -> str | None:
    """Why Cloud Storage cannot hold an object named ``name``, or None when it can."""
    if not name:
        return "the object name is empty"
    if "\r" in name or "\n" in name:
        return "Cloud Storage object names cannot contain carriage returns or line feeds"
    if name in (".", ".."):
        return f"Cloud Storage objects cannot be named {name!r}"
    if name.startswith(_ACME):
        return f"Cloud Storage object names cannot start with {_ACME!r}"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "the object name is not valid UTF-8"
    if size > MAX_NAME_BYTES:
        return f"the object name is {size} bytes of UTF-8; Cloud Storage allows at most {MAX_NAME_BYTES}"
    return None


class Digests:
    """CRC32C and MD5 of a byte stream, fed as it is read.

    ``md5=False`` when there is no MD5 to check it against (a multipart or KMS ETag): CRC32C
    alone then proves that Cloud Storage holds the bytes read, and MD5 (~1.4 CPU-s per GiB, the
    largest cost of a large copy) is skipped. ``crc=False`` as well: a byte count only.
    """

    def __init__(self, *, md5: bool = True, crc: bool = True) -> None:
        self._crc = google_crc32c.Checksum() if crc else None
        self._md5 = hashlib.md5() if md5 else None  # integrity check against S3's ETag, not a security use
        self.size = 0

    def update(self, chunk: bytes) -> None:
        if self._crc is not None:
            self._crc.update(chunk)
        if self._md5 is not None:
            self._md5.update(chunk)
        self.size += len(chunk)

    @property
    def crc32c_b64(self) -> str | None:
        return None if self._crc is None else base64.b64encode(self._crc.digest()).decode("ascii")

    @property
    def md5_hex(self) -> str | None:
        return None if self._md5 is None else self._md5.hexdigest()

    @property
    def md5_b64(self) -> str | None:
        return None if self._md5 is None else base64.b64encode(self._md5.digest()).decode("ascii")

    def md5_differs(self, reported: str | None) -> bool:
        """Whether Cloud Storage's base64 MD5 contradicts ours (never when either is unknown)."""
        return bool(reported) and self._md5 is not None and reported != self.md5_b64

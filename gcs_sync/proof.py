"""How a copy is proven: S3's own record of an object's bytes, checked while they stream.

S3 keeps, for every object, its ETag and (for objects written since 2025, and whenever the
uploader asked) an additional checksum: full-object (CRC64NVME, CRC32C, CRC32, or SHA-1 / SHA-256
of a single-part upload) or composite (the checksum of the parts' checksums, shown as ``value-N``).
``choose`` picks the cheapest of those S3 holds; ``Reading`` computes it as the bytes are read
(never a second read), with the CRC32C that Cloud Storage checks; ``check_copy`` is the one check
of a finished copy, whatever wrote it.

Proof names (recorded on the copy and in every result): ``crc64nvme``, ``crc32c``, ``crc32``,
``sha256``, ``sha1``, ``md5``, ``multipart-etag``, or ``none`` when S3 holds nothing that can be
checked (SSE-KMS / SSE-C objects, or objects in directory buckets, without an additional
checksum): such a copy is checked against the bytes read alone.

Only S3's own record proves a copy. User metadata an uploader wrote beside the bytes (rclone's
``md5chksum``, the whole object's MD5) is carried to the copy like any other user metadata but
never taken as a proof: S3 did not compute it, and anyone who may write the object may write it.
An rclone multipart upload is proven by its multipart ETag, which S3 computed from the parts it
received.

Where S3 (or an S3-compatible store) gives a CRC32 / CRC32C of a multipart object without saying
whether it is full-object or composite (no ``ChecksumType``, no ``-N``), both are computed in the
one read and the bytes decide (``Plan.undecided``). SHA-1 / SHA-256 of a multipart object can only
be composite, and CRC64NVME only full-object.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import sys
import threading
import zlib
from dataclasses import dataclass
from typing import Any, Mapping

import google_crc32c

from .errors import ChecksumMismatch
from .metadata import Digests, etag_is_digest

CRC64NVME, CRC32C, CRC32, SHA256, SHA1 = "crc64nvme", "crc32c", "crc32", "sha256", "sha1"
MD5, MULTIPART_ETAG, NONE = "md5", "multipart-etag", "none"
PROOFS = (CRC64NVME, CRC32C, CRC32, SHA256, SHA1, MD5, MULTIPART_ETAG, NONE)
# S3 response field -> algorithm, in the order a full-object checksum is preferred (cheapest first).
CHECKSUM_FIELDS = (
    ("ChecksumCRC32C", CRC32C), ("ChecksumCRC64NVME", CRC64NVME), ("ChecksumCRC32", CRC32),
    ("ChecksumSHA256", SHA256), ("ChecksumSHA1", SHA1),
)
_COMPOSITE = re.compile(r"^(?P<value>[A-Za-z0-9+/=]+)-(?P<parts>\d+)$")
_MULTIPART_ETAG = re.compile(r"^[0-9a-f]{32}-(?P<parts>\d+)$")
_PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")
LAZY_DIR = "lazy"  # beside lambda_function.py in the zip: dependencies imported only when needed


@dataclass(frozen=True)
class S3Record:
    """What S3 recorded about an object's bytes when it was uploaded."""

    etag: str
    checksums: tuple[tuple[str, str], ...] = ()  # (algorithm, value as S3 gives it)
    checksum_type: str | None = None  # FULL_OBJECT / COMPOSITE, when S3 says
    etag_is_digest: bool = True  # False for SSE-KMS / SSE-C and directory buckets: not derived from the bytes

    @classmethod
    def from_response(cls, response: Mapping[str, Any], bucket: str | None = None) -> "S3Record":
        """S3's record from a HEAD / GET answer; ``bucket``: the object's bucket (a directory
        bucket's ETags are not digests)."""
        encrypted = response.get("ServerSideEncryption") in ("aws:kms", "aws:kms:dsse") or bool(
            response.get("SSECustomerAlgorithm"))
        return cls(
            etag=str(response.get("ETag", "")).strip('"').lower(),
            checksums=tuple((alg, str(response[f])) for f, alg in CHECKSUM_FIELDS if response.get(f)),
            checksum_type=response.get("ChecksumType") or None,
            etag_is_digest=etag_is_digest(bucket, encrypted_with_kms_or_customer_key=encrypted),
        )


@dataclass(frozen=True)
class Plan:
    """The proof chosen for one object: what to compute and the value S3 holds."""

    proof: str
    expected: str | None = None  # S3's value: base64 for checksums, hex for ETags; no "-N"
    parts: int = 0  # > 0: computed part by part over this many parts (composite, multipart ETag)
    # S3 did not say whether ``expected`` (a CRC32 / CRC32C of a multipart object) is full-object or
    # composite: both are computed (parts > 0) and the bytes match one or are refused.
    undecided: bool = False

    @property
    def per_part(self) -> bool:
        return self.parts > 0


def choose(record: S3Record) -> Plan:
    """The cheapest proof S3 holds: a full-object checksum, else a composite (or undecided) one,
    else the ETag.

    The type of a checksum shown without ``-N`` and without ``ChecksumType`` (moto, S3-compatible
    stores, some HEAD answers): full-object for a single-part upload (its ETag has no ``-N``) and
    for CRC64NVME; composite for SHA-1 / SHA-256 of a multipart object; for CRC32 / CRC32C of a
    multipart object, undecided: the bytes decide. The ETag's ``-N`` gives the number of parts.
    """
    parts_from_etag = _MULTIPART_ETAG.match(record.etag)
    etag_parts = int(parts_from_etag["parts"]) if parts_from_etag else 0
    per_part: list[Plan] = []
    for algorithm, value in record.checksums:
        match = _COMPOSITE.match(value)
        if match:
            per_part.append(Plan(algorithm, match["value"], int(match["parts"])))
        elif record.checksum_type == "FULL_OBJECT" or (record.checksum_type is None and (
                not etag_parts or algorithm == CRC64NVME)):
            return Plan(algorithm, value)
        elif etag_parts:  # COMPOSITE shown without "-N", or a multipart object's checksum of no stated type
            undecided = record.checksum_type is None and algorithm in (CRC32, CRC32C)
            per_part.append(Plan(algorithm, value, etag_parts, undecided=undecided))
    if per_part:
        return per_part[0]
    if record.etag_is_digest and _PLAIN_MD5.match(record.etag):
        return Plan(MD5, record.etag)
    if record.etag_is_digest and parts_from_etag:
        return Plan(MULTIPART_ETAG, record.etag.split("-")[0], etag_parts)
    return Plan(NONE)


class _Crc32:
    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes) -> None:
        self._value = zlib.crc32(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


class _Crc64Nvme:
    def __init__(self) -> None:
        self._crc = crc64nvme_function()
        self._value = 0

    def update(self, data: bytes) -> None:
        self._value = self._crc(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(8, "big")


_LAZY_LOCK = threading.Lock()


def crc64nvme_function() -> Any:
    """awscrt's CRC64NVME, imported on first use: the zip keeps awscrt outside the import path
    (under ``lazy/``) so that botocore does not load it at every cold start."""
    with _LAZY_LOCK:
        try:
            from awscrt import checksums
        except ImportError:
            root = os.environ.get("LAMBDA_TASK_ROOT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            lazy = os.path.join(root, LAZY_DIR)
            if lazy not in sys.path:
                sys.path.append(lazy)
            from awscrt import checksums
    return checksums.crc64nvme


def hasher(algorithm: str) -> Any:
    if algorithm == CRC32C:
        return google_crc32c.Checksum()
    if algorithm == CRC32:
        return _Crc32()
    if algorithm == CRC64NVME:
        return _Crc64Nvme()
    return hashlib.new(algorithm)  # md5 (an integrity check against S3's ETag), sha1, sha256


class Reading(Digests):
    """Every digest one read needs, fed in order: the CRC32C of the whole (what Cloud Storage
    checks), its MD5 when S3's ETag is one, and the chosen proof (whole, part by part, or both
    when the plan is undecided).

    ``part_sizes``: the sizes of the object's parts, for a proof computed part by part. An empty
    part (a zero-byte object uploaded as one empty part, a last part of 0 bytes) adds no byte to
    the read but still has its digest among the parts'.
    """

    def __init__(self, plan: Plan, part_sizes: list[int] | None = None) -> None:
        super().__init__(md5=plan.proof == MD5)
        self.plan = plan
        whole = (not plan.per_part or plan.undecided) and plan.proof not in (NONE, MD5, CRC32C)
        self._whole = hasher(plan.proof) if whole else None
        self._part_algorithm = MD5 if plan.proof == MULTIPART_ETAG else plan.proof
        self._ends: list[int] = []
        if plan.per_part:
            sizes = part_sizes or []
            if len(sizes) != plan.parts:
                raise ValueError(f"{plan.parts} parts expected, {len(sizes)} sizes given")
            total = 0
            for size in sizes:
                total += size
                self._ends.append(total)
        self._part_digests: list[bytes] = []
        self._part = hasher(self._part_algorithm) if plan.per_part else None
        self._close_parts(0)  # empty parts at the start: an empty object of one empty part

    def update(self, chunk: bytes) -> None:
        start = self.size
        super().update(chunk)
        if self._whole is not None:
            self._whole.update(chunk)
        if self._part is None:
            return
        offset, rest = start, chunk
        ends, index = self._ends, len(self._part_digests)
        while rest:
            end = ends[index] if index < len(ends) else offset + len(rest)
            take = min(len(rest), end - offset)
            # Sliced only where a part ends inside the chunk (once per part).
            self._part.update(rest if take == len(rest) else rest[:take])
            offset += take
            rest = rest[take:] if take < len(rest) else b""
            index = self._close_parts(offset)

    def _close_parts(self, offset: int) -> int:
        """Digest every part that ends at ``offset`` (more than one when parts are empty); the
        index of the part being read."""
        index = len(self._part_digests)
        while self._part is not None and index < len(self._ends) and self._ends[index] <= offset:
            self._part_digests.append(self._part.digest())
            self._part = hasher(self._part_algorithm)
            index += 1
        return index

    @property
    def computed(self) -> str | None:
        """The proof's value over the bytes read, in the form S3 gives it (without ``-N``); for an
        undecided plan, the composite one."""
        plan = self.plan
        if plan.proof == NONE:
            return None
        if plan.proof == MD5:
            return self.md5_hex
        if plan.per_part:
            combined = hasher(self._part_algorithm)
            combined.update(b"".join(self._part_digests))
            digest = combined.digest()
            return digest.hex() if plan.proof == MULTIPART_ETAG else _b64(digest)
        return self.computed_whole

    @property
    def computed_whole(self) -> str | None:
        """The full-object checksum of the bytes read (None when the plan has none)."""
        if self.plan.proof == CRC32C:
            return self.crc32c_b64
        return None if self._whole is None else _b64(self._whole.digest())

    def check(self, where: str) -> None:
        """Raise ``SourceCorrupt`` when the bytes read are not those S3 recorded."""
        plan = self.plan
        if plan.proof == NONE:
            return
        if plan.undecided and self.computed_whole == plan.expected:
            return  # S3's value is the full-object one
        if plan.per_part and len(self._part_digests) != plan.parts:
            raise SourceCorrupt(f"{where}: read {len(self._part_digests)} of the {plan.parts} parts S3 "
                                f"recorded; will retry")
        if self.computed != plan.expected:
            read = (f"full object {self.computed_whole}, of its {plan.parts} parts {self.computed}"
                    if plan.undecided else self.computed)
            raise SourceCorrupt(
                f"{where}: the bytes read do not match S3's {plan.proof} record of the object "
                f"(S3: {plan.expected}, read: {read}); nothing was written, will retry")


class SourceCorrupt(ChecksumMismatch):
    """The bytes read from S3 differ from S3's own record of the object."""


@dataclass(frozen=True)
class Fingerprint:
    """What a verified copy holds (size, CRC32C, MD5): the expected values of copies made from it."""

    size: int
    crc32c_b64: str | None
    md5_b64: str | None = None
    plan: Plan = Plan(NONE)

    def md5_differs(self, reported: str | None) -> bool:
        return bool(reported) and self.md5_b64 is not None and reported != self.md5_b64


def check_copy(where: str, *, size: int, crc32c: str | None, md5: str | None, reading: Any) -> None:
    """The one check of a finished copy: Cloud Storage's size, CRC32C and MD5 against the source's
    (``reading``: the ``Reading`` of the source, or the ``Fingerprint`` of the copy it was made from)."""
    problems = []
    if size != reading.size:
        problems.append(f"{size} bytes, the source has {reading.size}")
    if crc32c != reading.crc32c_b64:
        problems.append(f"crc32c {crc32c}, the source has {reading.crc32c_b64}")
    if reading.md5_differs(md5):
        problems.append(f"md5 {md5}, the source has {reading.md5_b64}")
    if problems:
        raise ChecksumMismatch(f"{where}: Cloud Storage holds " + "; ".join(problems))


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def b64_from_hex(value: str) -> str:
    return _b64(bytes.fromhex(value))


def copy_disagrees(claimed: Any, *, size: int, crc32c: str | None, md5: str | None) -> str | None:
    """Why a copy is not what its provenance ``claimed`` (a ``SourceState``) says, or None.

    Compared where comparable: the size always; the CRC32C when the copy recorded its source's;
    the MD5 when the copy was proven against an MD5 ETag. A copy not written by gcs-sync
    (``claimed`` None) claims nothing.
    """
    if claimed is None:
        return None
    if claimed.size is not None and size != claimed.size:
        return f"holds {size} bytes where its source had {claimed.size}"
    if claimed.crc32c and crc32c and crc32c != claimed.crc32c:
        return f"has crc32c {crc32c} where its source had {claimed.crc32c}"
    if claimed.proof == MD5 and md5 and _PLAIN_MD5.match(claimed.etag or "") and md5 != b64_from_hex(claimed.etag):
        return f"has md5 {md5} where its source had {b64_from_hex(claimed.etag)}"
    return None


# ------------------------------------------------------------------ CRC combination (sliced copies)

_CRCS = {  # name -> (reflected polynomial, width in bits)
    CRC32C: (0x82F63B78, 32),
    CRC32: (0xEDB88320, 32),
    CRC64NVME: (0x9A6C9329AC4BC9B5, 64),
}


def _gf2_times(matrix: list[int], vector: int) -> int:
    total, i = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[i]
        vector >>= 1
        i += 1
    return total


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, row) for row in matrix]


def crc_combine(algorithm: str, crc1: int, crc2: int, len2: int) -> int:
    """The CRC of A + B from crc(A), crc(B) and len(B), for the reflected CRCs S3 and Cloud
    Storage use (initial value and final XOR all ones): zlib's crc32_combine, for any width."""
    poly, width = _CRCS[algorithm]
    if len2 <= 0:
        return crc1
    odd = [poly] + [1 << i for i in range(width - 1)]  # the operator for one zero bit
    even = _gf2_square(odd)  # two zero bits
    odd = _gf2_square(even)  # four zero bits
    while True:
        even = _gf2_square(odd)  # the first pass applies one zero byte
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _gf2_square(even)
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    return crc_combine(CRC32C, crc1, crc2, len2)


def combine_b64(algorithm: str, pieces: list[tuple[str, int]]) -> str:
    """The base64 CRC of the concatenation of pieces given as (base64 CRC, length)."""
    width = _CRCS[algorithm][1] // 8
    total = None
    for value, length in pieces:
        crc = int.from_bytes(base64.b64decode(value), "big")
        total = crc if total is None else crc_combine(algorithm, total, crc, length)
    return base64.b64encode((total or 0).to_bytes(width, "big")).decode("ascii")

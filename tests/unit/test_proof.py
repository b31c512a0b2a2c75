"""The proof of a copy: which S3 record is chosen, and that each is recomputed exactly as S3 does.

Expected values are S3's own (from its documentation's algorithms, and as moto and AWS compute
them), recomputed here independently of ``gcs_sync.proof``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zlib

import google_crc32c
import pytest

from gcs_sync.errors import ChecksumMismatch
from gcs_sync.metadata import SourceState
from gcs_sync.proof import (
    Plan, Reading, S3Record, SourceCorrupt, check_copy, choose, copy_disagrees, crc64nvme_function,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def crc32(data: bytes) -> bytes:
    return zlib.crc32(data).to_bytes(4, "big")


def crc32c(data: bytes) -> bytes:
    return google_crc32c.value(data).to_bytes(4, "big")


def crc64(data: bytes) -> bytes:
    return crc64nvme_function()(data, 0).to_bytes(8, "big")


HASH = {"crc32": crc32, "crc32c": crc32c, "crc64nvme": crc64,
        "sha256": lambda d: hashlib.sha256(d).digest(), "sha1": lambda d: hashlib.sha1(d).digest()}


@pytest.mark.parametrize(("response", "expected"), [
    # Full-object checksums first, whatever else S3 holds.
    ({"ETag": '"5d41402abc4b2a76b9719d911017c592"', "ChecksumCRC64NVME": "M3eFcAZSQlc=",
      "ChecksumType": "FULL_OBJECT"}, Plan("crc64nvme", "M3eFcAZSQlc=")),
    ({"ETag": '"5d41402abc4b2a76b9719d911017c592"', "ChecksumCRC32": "NhCmhg=="}, Plan("crc32", "NhCmhg==")),
    ({"ETag": '"abc-2"', "ChecksumCRC32C": "6yMOCw==", "ChecksumType": "FULL_OBJECT"}, Plan("crc32c", "6yMOCw==")),
    ({"ETag": '"5d41402abc4b2a76b9719d911017c592"', "ChecksumSHA256": "LPJN="}, Plan("sha256", "LPJN=")),
    # Composite: part by part, N from the value (GET) or from the ETag (HEAD shows no "-N").
    ({"ETag": '"728d947792886ef6d048956d0a336f63-2"', "ChecksumCRC32": "iJEDpA==-2",
      "ChecksumType": "COMPOSITE"}, Plan("crc32", "iJEDpA==", 2)),
    ({"ETag": '"728d947792886ef6d048956d0a336f63-2"', "ChecksumCRC32": "iJEDpA==",
      "ChecksumType": "COMPOSITE"}, Plan("crc32", "iJEDpA==", 2)),
    # No additional checksum: the ETag.
    ({"ETag": '"5D41402ABC4B2A76B9719D911017C592"'}, Plan("md5", "5d41402abc4b2a76b9719d911017c592")),
    ({"ETag": '"49277b9d306312371983933d746d4dc6-2"'}, Plan("multipart-etag", "49277b9d306312371983933d746d4dc6", 2)),
    # KMS / SSE-C: the ETag is not derived from the bytes; nothing to check without a checksum.
    ({"ETag": '"5d41402abc4b2a76b9719d911017c592"', "ServerSideEncryption": "aws:kms"}, Plan("none")),
    ({"ETag": '"49277b9d306312371983933d746d4dc6-2"', "SSECustomerAlgorithm": "AES256"}, Plan("none")),
    ({"ETag": '"5d41402abc4b2a76b9719d911017c592"', "ServerSideEncryption": "aws:kms",
      "ChecksumCRC32C": "mnG7TA=="}, Plan("crc32c", "mnG7TA==")),
])
def test_the_cheapest_record_s3_holds_is_chosen(response, expected):
    assert choose(S3Record.from_response(response)) == expected


MULTIPART = '"728d947792886ef6d048956d0a336f63-2"'


@pytest.mark.parametrize(("response", "expected"), [
    # No ChecksumType and no "-N" (moto's HEAD, S3-compatible stores): a multipart object's CRC32 /
    # CRC32C may be either kind: the bytes decide; SHA-1 / SHA-256 can only be composite, CRC64NVME
    # only full-object; a single-part upload's checksum is full-object.
    ({"ETag": MULTIPART, "ChecksumCRC32": "iJEDpA=="}, Plan("crc32", "iJEDpA==", 2, undecided=True)),
    ({"ETag": MULTIPART, "ChecksumCRC32C": "6yMOCw=="}, Plan("crc32c", "6yMOCw==", 2, undecided=True)),
    ({"ETag": MULTIPART, "ChecksumSHA256": "LPJN="}, Plan("sha256", "LPJN=", 2)),
    ({"ETag": MULTIPART, "ChecksumSHA1": "qvTG="}, Plan("sha1", "qvTG=", 2)),
    ({"ETag": MULTIPART, "ChecksumCRC64NVME": "M3eFcAZSQlc="}, Plan("crc64nvme", "M3eFcAZSQlc=")),
    ({"ETag": '"5d41402abc4b2a76b9719d911017c592"', "ChecksumCRC32C": "mnG7TA=="}, Plan("crc32c", "mnG7TA==")),
    # S3 said which: no guessing.
    ({"ETag": MULTIPART, "ChecksumCRC32": "iJEDpA==", "ChecksumType": "FULL_OBJECT"}, Plan("crc32", "iJEDpA==")),
    ({"ETag": MULTIPART, "ChecksumCRC32C": "6yMOCw==", "ChecksumType": "COMPOSITE"}, Plan("crc32c", "6yMOCw==", 2)),
    # A one-part multipart upload: ETag and composite checksum ending "-1".
    ({"ETag": '"aea50a3df6771e52c1ee242cc8a0d6d0-1"', "ChecksumCRC32C": "YNaDgA==-1", "ChecksumType": "COMPOSITE"},
     Plan("crc32c", "YNaDgA==", 1)),
    ({"ETag": '"aea50a3df6771e52c1ee242cc8a0d6d0-1"'}, Plan("multipart-etag", "aea50a3df6771e52c1ee242cc8a0d6d0", 1)),
])
def test_a_checksum_of_no_stated_type_is_decided_by_what_s3_allows(response, expected):
    assert choose(S3Record.from_response(response)) == expected


@pytest.mark.parametrize(("response", "directory", "general"), [
    # 32 hex digits, and still not an MD5 in a directory bucket.
    ({"ETag": '"5d41402abc4b2a76b9719d911017c592"'}, Plan("none"), Plan("md5", "5d41402abc4b2a76b9719d911017c592")),
    ({"ETag": MULTIPART}, Plan("none"), Plan("multipart-etag", "728d947792886ef6d048956d0a336f63", 2)),
    ({"ETag": '"5d41402abc4b2a76b9719d911017c592"', "ChecksumCRC32": "NhCmhg=="}, Plan("crc32", "NhCmhg=="),
     Plan("crc32", "NhCmhg==")),
])
def test_a_directory_buckets_etag_is_never_taken_for_a_digest(response, directory, general):
    assert choose(S3Record.from_response(response, "logs--use1-az4--x-s3")) == directory
    assert choose(S3Record.from_response(response, "logs--use1-az4")) == general


def _read(plan: Plan, data: bytes, sizes: list[int] | None = None, chunk: int = 777) -> Reading:
    reading = Reading(plan, sizes)
    for i in range(0, len(data), chunk):
        reading.update(data[i:i + chunk])
    return reading


def test_a_zero_byte_object_of_one_empty_part_is_proven_by_its_multipart_etag():
    plan = choose(S3Record(etag="59adb24ef3cdbe0297f05b395827453f-1"))  # MD5 of the empty part's MD5, -1
    assert plan == Plan("multipart-etag", "59adb24ef3cdbe0297f05b395827453f", 1)
    reading = _read(plan, b"", [0])
    reading.check("s3://b/empty")  # no byte read, and still one part
    assert reading.computed == plan.expected and reading.size == 0


@pytest.mark.parametrize("sizes", [[6000, 0], [0, 6000], [3000, 0, 3000], [6000, 0, 0]],
                         ids=["last empty", "first empty", "middle empty", "two last empty"])
@pytest.mark.parametrize("algorithm", ["md5", "crc32c", "sha256"])
def test_an_empty_part_counts_in_the_composite_and_adds_no_byte(sizes, algorithm):
    data = os.urandom(sum(sizes))
    pieces, start = [], 0
    for size in sizes:
        pieces.append(data[start:start + size])
        start += size
    digest = (lambda d: hashlib.md5(d).digest()) if algorithm == "md5" else HASH[algorithm]
    combined = digest(b"".join(digest(p) for p in pieces))
    if algorithm == "md5":
        plan = choose(S3Record(etag=f"{combined.hex()}-{len(sizes)}"))
    else:
        plan = Plan(algorithm, b64(combined), len(sizes))
    for chunk in (1000, 3000, 6000, 7000):  # part ends inside, at and beyond a chunk's end
        reading = _read(plan, data, sizes, chunk)
        reading.check("s3://b/k")
    # The same bytes without the empty part are another object.
    fewer = [s for s in sizes if s] or [0]
    with pytest.raises(ValueError):
        Reading(plan, fewer)


@pytest.mark.parametrize("algorithm", ["crc32", "crc32c"])
@pytest.mark.parametrize("kind", ["full object", "composite"])
def test_an_undecided_crc_is_proven_by_whichever_the_bytes_match(algorithm, kind):
    parts = [os.urandom(5000), os.urandom(5000), os.urandom(77)]
    data = b"".join(parts)
    value = (HASH[algorithm](data) if kind == "full object"
             else HASH[algorithm](b"".join(HASH[algorithm](p) for p in parts)))
    plan = choose(S3Record.from_response({"ETag": '"0123456789abcdef0123456789abcdef-3"',
                                          f"Checksum{algorithm.upper()}": b64(value)}))
    assert plan.undecided and plan.parts == 3
    _read(plan, data, [len(p) for p in parts]).check("s3://b/k")
    flipped = data[:100] + bytes([data[100] ^ 1]) + data[101:]
    with pytest.raises(SourceCorrupt, match=r"full object .*, of its 3 parts "):
        _read(plan, flipped, [len(p) for p in parts]).check("s3://b/k")
    # Other part boundaries: still the full object's value when that is S3's, never the composite.
    shifted = _read(plan, data, [4999, 5001, 77])
    if kind == "full object":
        shifted.check("s3://b/k")
    else:
        with pytest.raises(SourceCorrupt):
            shifted.check("s3://b/k")


def test_hello_matches_the_values_s3_gives():
    # What S3 (and moto) return for the 5 bytes "hello" with each algorithm.
    known = {"crc32": "NhCmhg==", "crc32c": "mnG7TA==", "crc64nvme": "M3eFcAZSQlc=",
             "sha256": "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=", "sha1": "qvTGHdzF6KLavt4PO0gs2a6pQ00="}
    for algorithm, value in known.items():
        reading = Reading(Plan(algorithm, value))
        reading.update(b"he")
        reading.update(b"llo")
        reading.check("s3://b/hello")
        assert reading.computed == value


@pytest.mark.parametrize("algorithm", sorted(HASH))
def test_full_object_checksums_catch_one_flipped_byte(algorithm):
    data = os.urandom(100_000)
    plan = Plan(algorithm, b64(HASH[algorithm](data)))
    good = Reading(plan)
    for i in range(0, len(data), 7777):
        good.update(data[i:i + 7777])
    good.check("s3://b/k")
    bad = Reading(plan)
    bad.update(data[:500] + bytes([data[500] ^ 1]) + data[501:])
    with pytest.raises(SourceCorrupt, match=rf"s3://b/k: .*S3's {algorithm} record"):
        bad.check("s3://b/k")


@pytest.mark.parametrize("algorithm", ["crc32", "crc32c", "sha256", "sha1"])
def test_composite_checksums_are_recomputed_part_by_part(algorithm):
    parts = [os.urandom(5000), os.urandom(5000), os.urandom(123)]
    combined = b64(HASH[algorithm](b"".join(HASH[algorithm](p) for p in parts)))
    record = S3Record.from_response({"ETag": '"x-3"', f"Checksum{algorithm.upper()}": f"{combined}-3",
                                     "ChecksumType": "COMPOSITE"})
    plan = choose(record)
    assert plan == Plan(algorithm, combined, 3)
    data = b"".join(parts)
    reading = Reading(plan, [len(p) for p in parts])
    for i in range(0, len(data), 999):  # chunks that straddle part boundaries
        reading.update(data[i:i + 999])
    reading.check("s3://b/k")
    # The same bytes cut at other boundaries are not what S3 recorded.
    shifted = Reading(plan, [4999, 5001, 123])
    shifted.update(data)
    with pytest.raises(SourceCorrupt):
        shifted.check("s3://b/k")


def test_multipart_etag_is_the_md5_of_the_parts_md5s():
    parts = [os.urandom(6000), os.urandom(6000), b"tail"]
    etag = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    plan = choose(S3Record(etag=f"{etag}-3"))
    assert plan.proof == "multipart-etag"
    reading = Reading(plan, [len(p) for p in parts])
    reading.update(b"".join(parts))
    reading.check("s3://b/k")
    assert reading.md5_b64 is None  # no whole-object MD5 exists to send Cloud Storage
    short = Reading(plan, [len(p) for p in parts])
    short.update(b"".join(parts)[:-1])
    with pytest.raises(SourceCorrupt, match="2 of the 3 parts"):
        short.check("s3://b/k")


def test_an_md5_etag_is_also_sent_to_cloud_storage():
    reading = Reading(choose(S3Record(etag=hashlib.md5(b"abc").hexdigest())))
    reading.update(b"abc")
    reading.check("s3://b/k")
    assert reading.md5_b64 == b64(hashlib.md5(b"abc").digest())
    assert reading.crc32c_b64 == b64(crc32c(b"abc"))


def test_nothing_to_check_is_said_not_faked():
    reading = Reading(choose(S3Record(etag="whatever", etag_is_digest=False)))
    reading.update(b"abc")
    reading.check("s3://b/k")  # nothing S3 holds can refuse it
    assert reading.plan.proof == "none" and reading.computed is None


def test_check_copy_names_every_disagreement():
    reading = Reading(Plan("md5", hashlib.md5(b"abc").hexdigest()))
    reading.update(b"abc")
    check_copy("gs://d/k", size=3, crc32c=reading.crc32c_b64, md5=reading.md5_b64, reading=reading)
    with pytest.raises(ChecksumMismatch) as caught:
        check_copy("gs://d/k", size=2, crc32c="AAAAAA==", md5="AAAA", reading=reading)
    message = str(caught.value)
    assert message.startswith("gs://d/k: ") and "2 bytes" in message and "crc32c AAAAAA==" in message
    assert "md5 AAAA" in message


def test_a_copy_that_disagrees_with_its_provenance_says_why():
    claimed = SourceState("src", "k", None, hashlib.md5(b"abc").hexdigest(), None, size=3,
                          crc32c=b64(crc32c(b"abc")), proof="md5")
    good = dict(size=3, crc32c=b64(crc32c(b"abc")), md5=b64(hashlib.md5(b"abc").digest()))
    assert copy_disagrees(claimed, **good) is None
    assert "2 bytes" in copy_disagrees(claimed, **{**good, "size": 2})
    assert "crc32c" in copy_disagrees(claimed, **{**good, "crc32c": "AAAAAA=="})
    assert "md5" in copy_disagrees(claimed, **{**good, "md5": "AAAA"})
    assert copy_disagrees(None, **{**good, "size": 2}) is None  # not ours: claims nothing
    # A copy from before checksums were recorded is compared by size alone.
    old = SourceState("src", "k", None, "e-2", None, size=3)
    assert copy_disagrees(old, **{**good, "crc32c": "AAAAAA=="}) is None
    assert copy_disagrees(old, **{**good, "size": 4}) is not None


def test_plain_md5_is_none_in_a_directory_bucket():
    from gcs_sync.metadata import plain_md5

    etag = '"5d41402abc4b2a76b9719d911017c592"'
    assert plain_md5(etag, encrypted_with_kms_or_customer_key=False, bucket="b") == etag.strip('"')
    assert plain_md5(etag, encrypted_with_kms_or_customer_key=False, bucket="b--use1-az4--x-s3") is None

"""S3 reads pinned to the state they started from: the HEADs that find a multipart object's part
sizes, and the audit's deep read, carry ``IfMatch`` (or the version), against a stand-in that
answers as S3 does, and as moto does (``IfMatch`` compared with the part's own ETag)."""

from __future__ import annotations

import threading

import pytest
from botocore.exceptions import ClientError
from botocore.hooks import HierarchicalEmitter

from gcs_sync.errors import SourceChanged
from gcs_sync.source import S3Source, SourceObject

ETAG = "0123456789abcdef0123456789abcdef-3"
SIZES = [5000, 5000, 0]  # the last part empty


class Meta:
    def __init__(self) -> None:
        self.events = HierarchicalEmitter()


class PartStore:
    """HEAD of an object or one of its parts. ``etag``: the object's current ETag; ``parts_own_etag``:
    compare ``IfMatch`` with each part's own ETag, as moto does (S3 compares it with the object's)."""

    def __init__(self, etag: str = ETAG, parts_own_etag: bool = False):
        self.meta = Meta()
        self.etag, self.parts_own_etag = etag, parts_own_etag
        self.calls: list[dict] = []
        self._lock = threading.Lock()

    def head_object(self, **params):
        with self._lock:
            self.calls.append(params)
        number = params.get("PartNumber")
        compared = f"part-{number}" if number and self.parts_own_etag else self.etag
        if "IfMatch" in params and params["IfMatch"].strip('"') != compared:
            raise ClientError({"Error": {"Code": "PreconditionFailed", "Message": "At least one of the pre-conditions"},
                               "ResponseMetadata": {"HTTPStatusCode": 412}}, "HeadObject")
        if number:
            return {"ContentLength": SIZES[number - 1], "PartsCount": len(SIZES), "ETag": f'"{compared}"'}
        return {"ContentLength": sum(SIZES), "ETag": f'"{self.etag}"'}


def obj(version_id: str | None = None) -> SourceObject:
    return SourceObject(bucket="src", key="k", version_id=version_id, etag=ETAG, size=sum(SIZES), last_modified=None)


def test_part_heads_carry_the_etag_in_an_unversioned_bucket():
    store = PartStore()
    assert S3Source(store).part_sizes(obj(), 3) == SIZES
    assert sorted(c["PartNumber"] for c in store.calls) == [1, 2, 3]
    assert all(c["IfMatch"] == f'"{ETAG}"' and "VersionId" not in c for c in store.calls)


def test_part_heads_of_an_object_replaced_meanwhile_are_refused():
    store = PartStore(etag="fedcba9876543210fedcba9876543210-3")  # what the object is now
    with pytest.raises(SourceChanged):
        S3Source(store).part_sizes(obj(), 3)


def test_part_heads_carry_the_version_in_a_versioned_bucket():
    store = PartStore(etag="whatever-3")  # a version never changes: nothing to compare
    assert S3Source(store).part_sizes(obj("v1"), 3) == SIZES
    assert all(c["VersionId"] == "v1" and "IfMatch" not in c for c in store.calls)


def test_a_store_comparing_each_parts_own_etag_is_asked_again_unpinned_once_the_object_matches():
    store = PartStore(parts_own_etag=True)
    source = S3Source(store)
    assert source.part_sizes(obj(), 3) == SIZES
    whole = [c for c in store.calls if "PartNumber" not in c]
    assert whole == [{"Bucket": "src", "Key": "k", "ChecksumMode": "ENABLED", "IfMatch": f'"{ETAG}"'}]
    assert sorted(c["PartNumber"] for c in store.calls if "PartNumber" in c and "IfMatch" not in c) == [1, 2, 3]
    store.calls.clear()  # the same reader then asks such a store unpinned at once
    source.part_sizes(obj(), 3)
    assert len(store.calls) == 3 and not any("IfMatch" in c for c in store.calls)


def test_a_one_part_object_needs_no_head():
    store = PartStore()
    assert S3Source(store).part_sizes(obj(), 1) == [sum(SIZES)]
    assert store.calls == []

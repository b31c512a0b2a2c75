"""Every copy is proven against S3's own record of the object, and a wrong copy does not stay wrong.

Objects are uploaded to moto the ways real uploaders do (each additional checksum, single-part and
multipart, full-object and composite, none at all) and copied by the real handler, staged and
streamed; S3's record is made to disagree with the bytes by changing what moto stored (as a
corrupted read would), and destination copies are damaged behind the function's back.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.request

import boto3
import google_crc32c
import pytest
from botocore.config import Config

from gcs_sync.errors import CopyFailed
from tests.rig.faults import FaultPlan, FaultProxy

from .conftest import flip_stored_byte

MIB = 1024 * 1024
PART = 64 * 1024  # real S3's smallest part is 5 MiB; moto's is lowered (see small_parts) to keep the suite fast
STREAMED = {"STREAM_THRESHOLD_MB": "0", "STREAM_CHUNK_MB": "1"}


@pytest.fixture(autouse=True)
def small_parts(monkeypatch):
    import moto.s3.models

    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", PART)


def crc32c_b64(data: bytes) -> str:
    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


def plain_client(world):
    """A client that sends no additional checksum: what S3 gets from older SDKs and tools."""
    return boto3.client("s3", endpoint_url=world.rig.s3.url, region_name="us-east-1",
                        config=Config(request_checksum_calculation="when_required"))


def put_multipart(world, key: str, parts: list[bytes], algorithm: str | None = None,
                  checksum_type: str | None = None, client=None) -> dict:
    s3 = client or world.rig.s3_client
    extra = {"ChecksumAlgorithm": algorithm, "ChecksumType": checksum_type} if algorithm else {}
    upload = s3.create_multipart_upload(Bucket=world.source, Key=key, **extra)
    done = []
    for number, data in enumerate(parts, 1):
        part = s3.upload_part(Bucket=world.source, Key=key, UploadId=upload["UploadId"], PartNumber=number,
                              Body=data, **({"ChecksumAlgorithm": algorithm} if algorithm else {}))
        entry = {"PartNumber": number, "ETag": part["ETag"]}
        if algorithm:
            entry[f"Checksum{algorithm}"] = part[f"Checksum{algorithm}"]
        done.append(entry)
    response = s3.complete_multipart_upload(
        Bucket=world.source, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": done},
        **({"ChecksumType": checksum_type} if algorithm else {}))
    return world.record(key, size=sum(map(len, parts)), etag=response["ETag"].strip('"'),
                        event="ObjectCreated:CompleteMultipartUpload")


def overwrite_behind_our_back(world, bucket: str, name: str, data: bytes, metadata: dict) -> None:
    """Write straight to the Cloud Storage backend (not through the function), keeping provenance."""
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Type: application/json\r\n\r\n"
            f"{json.dumps({'name': name, 'metadata': metadata})}\r\n--{boundary}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        f"{world.rig.gcs.url}/upload/storage/v1/b/{bucket}/o?uploadType=multipart", data=body, method="POST",
        headers={"Content-Type": f"multipart/related; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


CASES = [
    # (name, how the object is uploaded, the proof it must get)
    ("crc32 single (current SDKs' default)", dict(single="CRC32"), "crc32"),
    ("crc32c single", dict(single="CRC32C"), "crc32c"),
    ("crc64nvme single (S3's default)", dict(single="CRC64NVME"), "crc64nvme"),
    ("sha256 single", dict(single="SHA256"), "sha256"),
    ("sha1 single", dict(single="SHA1"), "sha1"),
    ("no checksum, single part", dict(single=None), "md5"),
    ("crc64nvme multipart, full object", dict(multi=("CRC64NVME", "FULL_OBJECT")), "crc64nvme"),
    ("crc32c multipart, full object", dict(multi=("CRC32C", "FULL_OBJECT")), "crc32c"),
    ("crc32 multipart, composite (upload_file's default)", dict(multi=("CRC32", "COMPOSITE")), "crc32"),
    ("crc32c multipart, composite", dict(multi=("CRC32C", "COMPOSITE")), "crc32c"),
    ("sha256 multipart, composite", dict(multi=("SHA256", "COMPOSITE")), "sha256"),
    ("sha1 multipart, composite", dict(multi=("SHA1", "COMPOSITE")), "sha1"),
    ("no checksum, multipart", dict(multi=None), "multipart-etag"),
]


def upload(world, key: str, how: dict) -> tuple[dict, bytes]:
    if "single" in how:
        body = os.urandom(2 * PART + 17)
        if how["single"] is None:
            response = plain_client(world).put_object(Bucket=world.source, Key=key, Body=body)
        else:
            response = world.rig.s3_client.put_object(Bucket=world.source, Key=key, Body=body,
                                                      ChecksumAlgorithm=how["single"])
        return world.record(key, size=len(body), etag=response["ETag"].strip('"')), body
    parts = [os.urandom(PART), os.urandom(PART), os.urandom(1234)]
    if how["multi"] is None:
        record = put_multipart(world, key, parts, client=plain_client(world))
    else:
        record = put_multipart(world, key, parts, *how["multi"])
    return record, b"".join(parts)


@pytest.mark.parametrize("path", ["staged", "streamed"])
def test_every_kind_of_s3_record_proves_the_copy(world, path):
    dest = world.bucket()
    extra = STREAMED if path == "streamed" else {}
    world.configure(f"gs://{dest}", **extra)
    uploaded = {f"{i:02d}.bin": (name, upload(world, f"{i:02d}.bin", how), proof)
                for i, (name, how, proof) in enumerate(CASES)}
    summary = world.notify(*(record for _, (record, _), _ in uploaded.values()))
    assert summary["failed"] == 0 and summary["copied"] == len(CASES), summary
    proofs = {r["source"].rsplit("/", 1)[1]: r["destinations"][0]["proof"] for r in summary["results"]}
    for key, (name, (_, body), proof) in uploaded.items():
        assert proofs[key] == proof, f"{name}: proven by {proofs[key]}, expected {proof}"
        meta = world.gcs_object(dest, key)
        assert meta["metadata"]["gcs-sync-proof"] == proof, name
        assert meta["crc32c"] == crc32c_b64(body) and world.gcs_bytes(dest, key) == body, name


def test_the_proof_is_in_the_log_line_of_each_copy(world, caplog):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    record, _ = upload(world, "logged.bin", dict(single="CRC64NVME"))
    with caplog.at_level("INFO"):
        world.notify(record)
    lines = [r for r in caplog.records if r.getMessage() == "object copied"]
    assert [line.fields["proof"] for line in lines] == ["crc64nvme"]


@pytest.mark.parametrize("path", ["staged", "streamed"])
@pytest.mark.parametrize("how", [dict(single="CRC32C"), dict(single=None), dict(multi=("CRC32", "COMPOSITE")),
                                 dict(multi=None)], ids=["crc32c", "md5", "composite", "multipart-etag"])
def test_bytes_that_differ_from_s3s_record_are_refused_and_nothing_is_written(world, path, how):
    first, second = world.bucket(), world.bucket()
    extra = STREAMED if path == "streamed" else {}
    world.configure(f"gs://{first}, gs://{second}", **extra)
    good, good_body = upload(world, "good.bin", dict(single="CRC32"))
    record, body = upload(world, "bad.bin", how)
    # S3 now serves bytes that are not those it recorded at upload (one byte flipped, same size).
    flip_stored_byte(world, "bad.bin", len(body) // 2)
    with pytest.raises(CopyFailed) as caught:
        world.notify(record, good)
    message = str(caught.value)
    for dest in (first, second):
        assert f"s3://{world.source}/bad.bin -> gs://{dest}/bad.bin" in message
        assert world.gcs_object(dest, "bad.bin") is None  # nothing, not a wrong copy
        assert world.gcs_bytes(dest, "good.bin") == good_body  # the other object is copied
    assert "do not match S3's" in message
    assert caught.value.summary["copied"] == 1 and caught.value.summary["failed"] == 1


def test_a_copy_with_right_provenance_but_wrong_bytes_or_size_is_repaired(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    records = {}
    bodies = {}
    for key in ("truncated.bin", "flipped.bin", "fine.bin"):
        records[key], bodies[key] = upload(world, key, dict(single="CRC64NVME"))
    assert world.notify(*records.values())["copied"] == 3
    # Damage two copies behind the function's back, keeping their provenance metadata.
    for key, damaged in (("truncated.bin", bodies["truncated.bin"][:PART]),
                         ("flipped.bin", bytes([bodies["flipped.bin"][0] ^ 1]) + bodies["flipped.bin"][1:])):
        meta = world.gcs_object(dest, key)
        overwrite_behind_our_back(world, dest, key, damaged, meta["metadata"])
        assert world.gcs_bytes(dest, key) == damaged
    # The next delivery of the same events repairs exactly the damaged two.
    summary = world.notify(*records.values())
    outcomes = {r["source"].rsplit("/", 1)[1]: r["destinations"][0]["outcome"] for r in summary["results"]}
    assert outcomes == {"truncated.bin": "repaired", "flipped.bin": "repaired", "fine.bin": "already_current"}
    for key, body in bodies.items():
        assert world.gcs_bytes(dest, key) == body
    assert world.notify(*records.values())["already_current"] == 3


def test_a_lost_upload_session_starts_a_new_upload_not_a_missing_bucket(world):
    dest = world.bucket()
    proxy = FaultProxy(world.rig.front.url, seed=1, name="gcs-404", plan=FaultPlan(
        status=1.0, statuses=(404,), max_faults=1,
        match=lambda method, path: method == "PUT" and "upload_id=" in path)).start()
    try:
        # Staged objects over 8 MiB go up in a resumable session too.
        for path, extra in (("staged", {"STREAM_THRESHOLD_MB": "64"}),
                            ("streamed", {"STREAM_THRESHOLD_MB": "1", "STREAM_CHUNK_MB": "1"})):
            proxy.plan.max_faults = proxy.total + 1
            world.configure(f"gs://{dest}", GCS_API_ENDPOINT=proxy.url, **extra)
            body = os.urandom(9 * MIB)
            response = world.rig.s3_client.put_object(Bucket=world.source, Key=f"{path}.bin", Body=body)
            record = world.record(f"{path}.bin", size=len(body), etag=response["ETag"].strip('"'))
            before = proxy.total
            summary = world.notify(record)
            assert proxy.total == before + 1, f"{path}: the 404 was not injected"
            assert summary["copied"] == 1, f"{path}: {summary}"
            assert world.gcs_bytes(dest, f"{path}.bin") == body
    finally:
        proxy.stop()


def test_only_the_bytes_read_are_checked_when_s3_holds_nothing_and_it_says_so(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    body = os.urandom(100_000)
    response = plain_client(world).put_object(Bucket=world.source, Key="kms.bin", Body=body,
                                              ServerSideEncryption="aws:kms")
    summary = world.notify(world.record("kms.bin", size=len(body), etag=response["ETag"].strip('"')))
    assert summary["results"][0]["destinations"][0]["proof"] == "none"
    meta = world.gcs_object(dest, "kms.bin")
    assert meta["metadata"]["gcs-sync-proof"] == "none" and meta["crc32c"] == crc32c_b64(body)


@pytest.mark.parametrize("path", ["staged", "streamed"])
def test_bytes_altered_on_their_way_from_s3_are_refused_and_the_retry_copies_them(world, path):
    first, second = world.bucket(), world.bucket()
    record, body = upload(world, "in-transit.bin", dict(single="CRC32"))
    proxy = FaultProxy(world.rig.s3.url, seed=7, name="s3-corrupt", plan=FaultPlan(
        corrupt=1.0, corrupt_body="response", max_faults=1, flavor="s3",
        match=lambda method, p: method == "GET" and "in-transit.bin" in p)).start()
    try:
        world.configure(f"gs://{first}, gs://{second}", AWS_ENDPOINT_URL_S3=proxy.url,
                        **(STREAMED if path == "streamed" else {}))
        with pytest.raises(CopyFailed) as caught:
            world.notify(record)
        assert proxy.injected["corrupt_response"] == 1
        for dest in (first, second):
            assert f"s3://{world.source}/in-transit.bin -> gs://{dest}/in-transit.bin" in str(caught.value)
            assert world.gcs_object(dest, "in-transit.bin") is None
        assert "do not match S3's crc32 record" in str(caught.value) and caught.value.retryable
        summary = world.notify(record)  # Lambda's retry: the fault does not repeat
        assert summary["copied"] == 1
        assert world.gcs_bytes(first, "in-transit.bin") == body == world.gcs_bytes(second, "in-transit.bin")
    finally:
        proxy.stop()


@pytest.mark.parametrize("path", ["staged", "streamed"])
def test_bytes_altered_on_their_way_to_cloud_storage_are_refused_by_it(world, path):
    dest = world.bucket()
    record, body = upload(world, "upload.bin", dict(single="CRC32"))
    # The request carrying the bytes: a multipart POST (staged), a chunk PUT (streamed).
    carrier = "PUT" if path == "streamed" else "POST"
    proxy = FaultProxy(world.rig.front.url, seed=8, name="gcs-corrupt", plan=FaultPlan(
        corrupt=1.0, corrupt_body="request", max_faults=1,
        match=lambda method, p: method == carrier and p.startswith("/upload/"))).start()
    try:
        world.configure(f"gs://{dest}", GCS_API_ENDPOINT=proxy.url, **(STREAMED if path == "streamed" else {}))
        since = len(world.rig.front.requests)
        if path == "staged":  # a refused upload fails the copy; Lambda's retry copies it
            with pytest.raises(CopyFailed) as caught:
                world.notify(record)
            assert "refused the bytes it received" in str(caught.value) and caught.value.retryable
            assert world.gcs_object(dest, "upload.bin") is None  # refused: nothing was finalized
            assert world.notify(record)["copied"] == 1
        else:  # a refused chunk is sent again within the invocation (after asking how far it got)
            assert world.notify(record)["copied"] == 1
            chunk_puts = [p for m, p in world.rig.front.requests[since:] if m == "PUT" and p.startswith("/upload/")]
            assert len(chunk_puts) >= 2
        assert proxy.injected["corrupt_request"] == 1
        assert not [p for m, p in world.rig.front.requests[since:] if m == "DELETE"]  # no bad copy was made
        assert world.gcs_bytes(dest, "upload.bin") == body
    finally:
        proxy.stop()

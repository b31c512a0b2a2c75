"""Objects as real clients leave them in S3, copied and proven: directly (staged, streamed) and sliced.

The objects are written once per module into moto by the real AWS CLI v1 (``aws s3 cp`` with its
8 MiB parts and default CRC32, ``--checksum-algorithm SHA256 / CRC32C``, ``aws s3api`` for
multipart uploads made part by part) and by rclone (``rclone copyto``: multipart, no additional
checksum, the whole object's MD5 as ``md5chksum`` user metadata), then copied by the real handler.
Every copy at every destination must hold the bytes and name the proof expected of its shape.

moto's GET answers a multipart object's checksum as S3 does (``value-N``, ``ChecksumType``); a store
that omits both (as S3-compatible stores may, and moto's HEAD does) is made by removing the type
from what moto stored: the CRC32 / CRC32C are then decided by the bytes (``proof.Plan.undecided``).
moto compares a part HEAD's ``IfMatch`` with the part's own ETag (S3: with the object's), so the
part sizes are asked again unpinned there.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import pytest

from .test_slices import Sliced

MIB = 1024 * 1024
BIN = Path(sys.executable).parent
DIRECTORY_BUCKET = f"shapes-{os.urandom(4).hex()}--use1-az4--x-s3"  # S3 Express One Zone's: BASE--AZ-ID--x-s3
SMALL_PART = 64 * 1024  # moto's smallest part while the shapes are written (real S3: 5 MiB)


@dataclass(frozen=True)
class Shape:
    key: str
    data: bytes
    proof: str  # what every copy must be proven by
    bucket: str
    etag: str = ""
    multipart: bool = False

    @property
    def sliced(self) -> bool:
        """Whether the sliced world (SLICE_THRESHOLD_MB=1) slices it."""
        return len(self.data) >= MIB


@dataclass
class Shapes:
    bucket: str
    items: list[Shape]


def _aws_config(path: Path, *lines: str) -> None:
    path.write_text("[default]\n" + "".join(f"{line}\n" for line in lines))


def _run(argv: list, env: dict, cwd: Path) -> str:
    done = subprocess.run([str(a) for a in argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{argv[:3]} failed ({done.returncode}): {done.stderr[-2000:]}"
    return done.stdout


def _write_shapes(rig, folder: Path, bucket: str) -> list[Shape]:
    """Every shape, written by the real clients: the AWS CLI (``aws_cli_shapes.py``, which says
    which command writes which) and rclone side by side."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    env = {**base, **rig.s3.aws_env(), "AWS_SHARED_CREDENTIALS_FILE": str(folder / "no-credentials"),
           "AWS_S3_DISABLE_EXPRESS_SESSION_AUTH": "true"}  # moto has no CreateSession for directory buckets
    # The CLI's default part size (8 MiB), multipart from 1 MB: a 1.5 MiB file is a one-part upload.
    _aws_config(folder / "defaults", "s3 =", "  multipart_threshold = 1MB")
    _aws_config(folder / "small", "s3 =", "  multipart_threshold = 5MB", "  multipart_chunksize = 5MB")
    _aws_config(folder / "plain", "request_checksum_calculation = when_required")
    files = folder / "files"
    (files / "cli").mkdir(parents=True)

    def file(name: str, size: int) -> bytes:
        data = os.urandom(size)
        (files / name).write_bytes(data)
        return data

    shapes = [
        # aws s3 cp, its defaults: one PUT for the empty file, else multipart, 8 MiB parts, CRC32 (no type).
        Shape("cli/empty.txt", file("cli/empty.txt", 0), "crc32", bucket),
        Shape("cli/one-part.bin", file("cli/one-part.bin", MIB + MIB // 2), "crc32", bucket, multipart=True),
        Shape("cli/8mib-parts.bin", file("cli/8mib-parts.bin", 8 * MIB + 1000), "crc32", bucket, multipart=True),
        # --checksum-algorithm: two 5 MiB+ parts (SHA-256: composite; CRC32C: decided by the bytes), one part (SHA-1).
        Shape("sha256.bin", file("sha256.bin", 5 * MIB + 1000), "sha256", bucket, multipart=True),
        Shape("crc32c.bin", file("crc32c.bin", 5 * MIB + 2000), "crc32c", bucket, multipart=True),
        Shape("sha1.bin", file("sha1.bin", MIB + 3000), "sha1", bucket, multipart=True),
        # aws s3api part by part: a zero-byte object of one empty part; a one-part upload with a
        # composite CRC32C (ETag and checksum ending "-1"); a multipart upload whose last part is empty.
        Shape("api/empty-part", file("empty", 0), "multipart-etag", bucket, multipart=True),
        Shape("api/one-part-composite.bin", file("one-part-composite.bin", MIB + 5000), "crc32c", bucket,
              multipart=True),
        Shape("api/last-part-empty.bin", file("first-part", MIB + 6000), "multipart-etag", bucket, multipart=True),
        # A directory bucket: its ETag is 32 hex digits but not an MD5; no checksum: nothing proves it.
        Shape("plain.bin", file("plain.bin", 40_000), "none", DIRECTORY_BUCKET),
        # rclone: multipart, no additional checksum; S3's multipart ETag proves it (not md5chksum).
        Shape("rclone.bin", file("rclone.bin", 5 * MIB + 4000), "multipart-etag", bucket, multipart=True),
    ]

    def rclone() -> None:
        remote = {"TYPE": "s3", "PROVIDER": "Other", "ENDPOINT": rig.s3.url, "REGION": env["AWS_REGION"],
                  "ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"], "SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
                  "FORCE_PATH_STYLE": "true"}
        renv = {**base, "RCLONE_CONFIG": str(folder / "no-rclone.conf"),
                **{f"RCLONE_CONFIG_SRC_{k}": v for k, v in remote.items()}}
        _run([BIN / "rclone", "copyto", "rclone.bin", f"src:{bucket}/rclone.bin", "--s3-upload-cutoff", "1M",
              "--s3-chunk-size", "5M", "--s3-no-check-bucket"], renv, files)

    with ThreadPoolExecutor(1) as pool:
        beside = pool.submit(rclone)
        _run([sys.executable, Path(__file__).with_name("aws_cli_shapes.py"), rig.s3.url, bucket, DIRECTORY_BUCKET,
              folder], env, files)
        beside.result()
    return shapes


@pytest.fixture(scope="module")
def shapes(rig, tmp_path_factory) -> Shapes:
    import moto.s3.models

    bucket = f"shapes-{os.urandom(6).hex()}"
    rig.s3_client.create_bucket(Bucket=bucket)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", SMALL_PART)
        written = _write_shapes(rig, tmp_path_factory.mktemp("shapes"), bucket)
    items = []
    for shape in written:
        client = rig.s3_client if shape.bucket == bucket else _directory_client(rig)
        head = client.head_object(Bucket=shape.bucket, Key=shape.key)
        assert head["ContentLength"] == len(shape.data), shape.key
        items.append(Shape(shape.key, shape.data, shape.proof, shape.bucket, head["ETag"].strip('"'),
                           shape.multipart))
    return Shapes(bucket, items)


def _directory_client(rig):
    import boto3
    from botocore.config import Config

    env = rig.s3.aws_env()
    return boto3.client("s3", endpoint_url=rig.s3.url, region_name=env["AWS_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                        config=Config(s3={"addressing_style": "path", "disable_s3_express_session_auth": True}))


def crc32c_b64(data: bytes) -> str:
    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


def records(world, shapes: Shapes) -> list[dict]:
    return [world.record(s.key, size=len(s.data), etag=s.etag, bucket=s.bucket,
                         event="ObjectCreated:CompleteMultipartUpload" if s.multipart else "ObjectCreated:Put")
            for s in shapes.items]


def assert_copies(world, shapes: Shapes, destinations: list[str], *, rclone: bool = True) -> None:
    for shape in shapes.items:
        for dest in destinations:
            meta = world.gcs_object(dest, shape.key)
            assert meta is not None, f"gs://{dest}/{shape.key} missing"
            assert world.gcs_bytes(dest, shape.key) == shape.data, f"gs://{dest}/{shape.key}: other bytes"
            custom = meta.get("metadata", {})
            assert custom.get("gcs-sync-proof") == shape.proof, (shape.key, dest, custom)
            assert int(meta["size"]) == len(shape.data) and meta["crc32c"] == crc32c_b64(shape.data), shape.key
            assert custom["gcs-sync-source-bucket"] == shape.bucket and custom["gcs-sync-source-etag"] == shape.etag
    if not rclone:
        return
    written = next(s for s in shapes.items if s.key == "rclone.bin")
    for dest in destinations:  # rclone's own record travels as the user metadata it is
        assert world.gcs_object(dest, written.key)["metadata"]["md5chksum"] == base64.b64encode(
            hashlib.md5(written.data).digest()).decode()


def test_the_clients_left_the_shapes_they_are_known_for(rig, shapes):
    """What the tests below rely on: the shapes are what real S3 would hold (as moto shows them)."""
    by_key = {s.key: s for s in shapes.items}
    assert by_key["cli/8mib-parts.bin"].etag.endswith("-2") and by_key["cli/one-part.bin"].etag.endswith("-1")
    assert by_key["api/empty-part"].etag == "59adb24ef3cdbe0297f05b395827453f-1"  # MD5 of the empty part's MD5, -1
    assert by_key["api/last-part-empty.bin"].etag.endswith("-2") and by_key["rclone.bin"].etag.endswith("-2")
    part = rig.s3_client.head_object(Bucket=shapes.bucket, Key="cli/8mib-parts.bin", PartNumber=1)
    assert part["ContentLength"] == 8 * MIB  # the AWS CLI's default part size
    composite = rig.s3_client.get_object(Bucket=shapes.bucket, Key="api/one-part-composite.bin",
                                         ChecksumMode="ENABLED")
    composite["Body"].close()
    assert composite["ChecksumCRC32C"].endswith("-1") and composite["ChecksumType"] == "COMPOSITE"
    cli = rig.s3_client.get_object(Bucket=shapes.bucket, Key="crc32c.bin", ChecksumMode="ENABLED")
    cli["Body"].close()  # the AWS CLI names no type: S3's default for CRC32C, composite
    assert cli["ChecksumCRC32C"].endswith("-2") and cli["ChecksumType"] == "COMPOSITE"
    assert "md5chksum" in rig.s3_client.head_object(Bucket=shapes.bucket, Key="rclone.bin")["Metadata"]
    plain = by_key["plain.bin"]
    assert len(plain.etag) == 32 and plain.bucket.endswith("--x-s3")


@pytest.mark.parametrize("path", ["staged", "streamed"])
def test_every_shape_is_copied_directly_with_its_proof(world, shapes, path):
    dests = [world.bucket(), world.bucket()]
    extra = ({"STREAM_THRESHOLD_MB": "64"} if path == "staged" else
             {"STREAM_THRESHOLD_MB": "0", "STREAM_CHUNK_MB": "1", "FANOUT": "upload"})  # every destination streamed
    world.configure(" ".join(f"gs://{d}/" for d in dests), AWS_S3_DISABLE_EXPRESS_SESSION_AUTH="true", **extra)
    summary = world.notify(*records(world, shapes))
    assert summary["failed"] == 0 and summary["copied"] == len(shapes.items), summary
    for result in summary["results"]:
        key = result["source"].split("/", 3)[3]
        expected = next(s.proof for s in shapes.items if s.key == key)
        assert [d["proof"] for d in result["destinations"]] == [expected, expected], result
    assert_copies(world, shapes, dests)


def test_every_shape_is_copied_sliced_with_its_proof(world, shapes):
    world.monkeypatch.setenv("AWS_S3_DISABLE_EXPRESS_SESSION_AUTH", "true")
    sliced = Sliced(world)  # from 1 MiB, in 1 MiB slices aligned with the S3 parts
    summary = world.notify(*records(world, shapes))
    outcomes = {r["source"].split("/", 3)[3]: r["outcome"] for r in summary["results"]}
    assert outcomes == {s.key: "sliced" if s.sliced else "copied" for s in shapes.items}, outcomes
    messages = sliced.messages()
    # One slice per part larger than a slice (8 MiB + 1000 bytes: 2; 5 MiB + a few: 2 each); the
    # one-part objects: 1 each; an empty last part joins the slice before it.
    per_key = {"cli/8mib-parts.bin": 2, "sha256.bin": 2, "crc32c.bin": 2, "rclone.bin": 2}
    keys = sorted(next(iter(json.loads(m["body"]).values()))["key"] for m in messages)
    assert keys == sorted(k for s in shapes.items if s.sliced for k in [s.key] * per_key.get(s.key, 1)), keys
    assert sliced.deliver(messages) == []
    assert_copies(world, shapes, sliced.dests)
    assert sliced.temporary() == []


@contextlib.contextmanager
def types_omitted(bucket: str, keys: list[str]):
    """S3's record of ``keys`` without its ChecksumType (and so without ``-N``), as an S3-compatible
    store may answer; restored after."""
    from moto.s3.models import s3_backends

    stored = [backend.buckets[bucket].keys[key] for account in s3_backends.values() for backend in account.values()
              if bucket in backend.buckets for key in keys]
    assert len(stored) == len(keys)
    kept = [(k.checksum_type, k.metadata.get("x-amz-checksum-type")) for k in stored]
    for item in stored:
        item.checksum_type = None
        item.metadata.pop("x-amz-checksum-type", None)  # kept from the upload's request, and answered
    try:
        yield
    finally:
        for item, (kind, header) in zip(stored, kept):
            item.checksum_type = kind
            if header:
                item.metadata["x-amz-checksum-type"] = header


@pytest.mark.parametrize("path", ["staged", "streamed", "sliced"])
def test_a_store_that_omits_the_checksum_type_has_the_bytes_decide_it(world, shapes, path, monkeypatch):
    import moto.s3.models

    from .test_proof import put_multipart

    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", SMALL_PART)
    parts = [os.urandom(MIB), os.urandom(SMALL_PART), os.urandom(1000)]
    full = put_multipart(world, "full-object.bin", parts, "CRC32", "FULL_OBJECT")  # what newer SDKs send
    composite = [s for s in shapes.items if s.key in ("crc32c.bin", "cli/one-part.bin")]
    chosen = Shapes(shapes.bucket, composite)
    every = [*records(world, chosen), full]
    if path == "sliced":
        sliced = Sliced(world)
    else:
        dests = [world.bucket(), world.bucket()]
        world.configure(" ".join(f"gs://{d}/" for d in dests), **(
            {"STREAM_THRESHOLD_MB": "64"} if path == "staged" else
            {"STREAM_THRESHOLD_MB": "0", "STREAM_CHUNK_MB": "1", "FANOUT": "upload"}))
    with types_omitted(shapes.bucket, [s.key for s in composite]), types_omitted(world.source, ["full-object.bin"]):
        head = world.rig.s3_client.get_object(Bucket=world.source, Key="full-object.bin", ChecksumMode="ENABLED")
        head["Body"].close()
        assert "ChecksumType" not in head and not head["ChecksumCRC32"].endswith("-3")
        summary = world.notify(*every)
        assert summary["failed"] == 0, summary
        if path == "sliced":
            assert sliced.deliver(sliced.messages()) == []
            dests = sliced.dests
    assert_copies(world, chosen, dests, rclone=False)
    data = b"".join(parts)
    for dest in dests:
        meta = world.gcs_object(dest, "full-object.bin")
        assert world.gcs_bytes(dest, "full-object.bin") == data and meta["metadata"]["gcs-sync-proof"] == "crc32"

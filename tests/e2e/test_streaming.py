"""The streaming path (objects over STREAM_THRESHOLD_MB, or larger than the free staging space),
exercised with a tiny threshold and chunk so CI stays fast."""

from __future__ import annotations

import os

import pytest

import gcs_sync.source
import gcs_sync.staging
import lambda_function
from gcs_sync.errors import CopyFailed
from gcs_sync.plan import upload_each_max

from .conftest import flip_stored_byte

MIB = 1024 * 1024


def stream_everything(world, destinations: str, **extra: str) -> None:
    world.configure(destinations, STREAM_THRESHOLD_MB="0", STREAM_CHUNK_MB="1", **extra)


@pytest.mark.parametrize("fanout", ["copy", "upload"])
@pytest.mark.parametrize("size", [0, 1, 256 * 1024, MIB - 1, MIB, 2 * MIB, 3 * MIB + 17])
def test_streamed_objects_land_whole_at_every_destination(world, size, fanout):
    plain, prefixed = world.bucket(), world.bucket()
    stream_everything(world, f"gs://{plain} gs://{prefixed}/p/", FANOUT=fanout)
    body = os.urandom(size)
    summary = world.notify(world.put("big/file.bin", body, ContentType="application/x-big",
                                     CacheControl="no-cache", Metadata={"k": "v"}))
    assert summary["copied"] == 1 and summary["bytes"] == 2 * size, summary
    for bucket, name in ((plain, "big/file.bin"), (prefixed, "p/big/file.bin")):
        assert world.gcs_bytes(bucket, name) == body
        meta = world.gcs_object(bucket, name)
        assert meta["contentType"] == "application/x-big" and meta["cacheControl"] == "no-cache"
        assert meta["metadata"]["k"] == "v" and meta["metadata"]["gcs-sync-source-key"] == "big/file.bin"
    requests = world.rig.front.requests
    sessions = {p for m, p in requests if m == "POST" and p.startswith("/upload/")}
    rewrites = [p for m, p in requests if m == "POST" and "/rewriteTo/" in p]
    if fanout == "copy" and size >= upload_each_max(1024):  # uploaded to the first destination, copied
        assert sessions == {f"/upload/storage/v1/b/{plain}/o"} and len(rewrites) == 1
    else:  # FANOUT=upload, or an object small enough to be uploaded to both at once (plan.upload_each_max)
        assert sessions == {f"/upload/storage/v1/b/{plain}/o", f"/upload/storage/v1/b/{prefixed}/o"} and not rewrites
    if size > MIB:  # really chunked: several requests to one resumable session
        puts = [p for m, p in requests if m == "PUT" and p.startswith("/upload/")]
        assert len(puts) >= len(sessions) * ((size + MIB - 1) // MIB)


def test_the_staging_disk_is_not_used_when_streaming(world, monkeypatch):
    dest = world.bucket()
    stream_everything(world, f"gs://{dest}")
    files = []
    original = gcs_sync.staging.Staging.file

    def watched(self, size, what):
        files.append(what)
        return original(self, size, what)

    monkeypatch.setattr(gcs_sync.staging.Staging, "file", watched)
    world.notify(world.put("s.bin", os.urandom(2 * MIB)))
    assert files == [] and world.staging_leftovers() == []


def test_an_object_larger_than_the_free_space_streams_instead_of_failing(world, small_disk):
    dest = world.bucket()
    world.configure(f"gs://{dest}", STREAM_CHUNK_MB="1", STREAM_THRESHOLD_MB="64")
    small_disk(100 * 1024)
    body = os.urandom(MIB + 5)
    small = world.put("small.txt", b"fits")
    summary = world.notify(world.put("large.bin", body), small)
    assert summary["copied"] == 2
    assert world.gcs_bytes(dest, "large.bin") == body and world.gcs_bytes(dest, "small.txt") == b"fits"


def test_a_bad_read_finalizes_nothing(world, monkeypatch):
    dest = world.bucket()
    stream_everything(world, f"gs://{dest}")
    # S3 serves bytes that disagree with its own record (one byte flipped): the read is refused
    # after the last byte, and the held-back final chunk is never sent.
    body = os.urandom(3 * MIB)
    record = world.put("bad.bin", body)
    flip_stored_byte(world, "bad.bin", len(body) // 2)
    with pytest.raises(CopyFailed) as caught:
        world.notify(record)
    assert "do not match S3's crc32 record" in str(caught.value) and f"gs://{dest}/bad.bin" in str(caught.value)
    assert world.gcs_object(dest, "bad.bin") is None


def test_a_concurrent_newer_write_wins_over_a_streamed_older_one(world, monkeypatch):
    dest = world.bucket()
    stream_everything(world, f"gs://{dest}")
    old = world.put("race.bin", os.urandom(2 * MIB))
    world.notify(old)
    new_body = os.urandom(2 * MIB)
    world.rig.s3_client.put_object(Bucket=world.source, Key="race.bin", Body=new_body)
    # The late event for the old state reads the current state (unversioned bucket), so it
    # copies the new bytes; a second copy of the same event after that is already current.
    assert world.notify(old)["copied"] == 1
    assert world.gcs_bytes(dest, "race.bin") == new_body
    assert world.notify(old)["already_current"] == 1


def test_a_412_at_initiation_looks_again(world, monkeypatch):
    import gcs_sync.streaming as streaming
    from .test_ordering import invoke, new_container

    dest = world.bucket()
    stream_everything(world, f"gs://{dest}")
    world.notify(world.put("c.bin", os.urandom(MIB + 1)))
    second = os.urandom(MIB + 2)
    record = world.put("c.bin", second)
    original = streaming.DestinationStream.open
    raced = []
    rival = new_container(world, str(world.tmp_path / "rival-tmp"))  # another Lambda container

    def racing_open(self):
        """Just before our upload starts, another container copies the same newest state."""
        if not raced:
            raced.append(True)
            assert invoke(rival, {"Records": [record]})["copied"] == 1
        return original(self)

    monkeypatch.setattr(streaming.DestinationStream, "open", racing_open)
    summary = world.notify(record)
    assert raced and summary["failed"] == 0 and summary["already_current"] == 1, summary
    assert world.gcs_bytes(dest, "c.bin") == second
    assert world.staging_leftovers() == []


@pytest.mark.parametrize("path", ["streamed", "staged"])
@pytest.mark.parametrize("size", [MIB + 1, 5 * MIB + 12345])
def test_ranged_reads_in_parallel_assemble_the_object_in_order(world, path, size):
    """S3_READ_PARTS=3: the object is read as 1 MiB ranged GETs, three in flight, through a
    proxy that cuts some of their answers midway; each part resumes on its own."""
    from tests.rig.faults import FaultPlan, FaultProxy

    plain, prefixed = world.bucket(), world.bucket()
    proxy = FaultProxy(world.rig.s3.url, seed=31, name="s3-parts", plan=FaultPlan(
        reset_response=0.3, max_faults=3, flavor="s3", match=lambda m, p: m == "GET" and "ranged" in p)).start()
    try:
        threshold = "0" if path == "streamed" else "64"
        world.configure(f"gs://{plain} gs://{prefixed}/p/", AWS_ENDPOINT_URL_S3=proxy.url, S3_READ_PARTS="3",
                        STREAM_CHUNK_MB="1", STREAM_THRESHOLD_MB=threshold)
        body = os.urandom(size)
        summary = world.notify(world.put("ranged/file.bin", body))
        print(f"\n[parts] {path} {size} bytes: {proxy.summary()}")
        assert summary["copied"] == 1 and summary["bytes"] == 2 * size, summary
        assert world.gcs_bytes(plain, "ranged/file.bin") == body
        assert world.gcs_bytes(prefixed, "p/ranged/file.bin") == body
        parts = -(-size // MIB)
        assert proxy.requests >= 1 + parts  # the GET giving the state, then one per part
        assert proxy.injected["reset_response"] >= 1, "no part was cut: the schedule proves nothing"
        assert world.staging_leftovers() == []
    finally:
        proxy.stop()


def test_ranged_reads_stay_pinned_to_the_state_read_first(world, monkeypatch):
    """The object changes after its state was read: the parts are asked for with IfMatch, S3
    refuses them, and the copy starts again from the new state: never a mix of the two."""
    dest = world.bucket()
    world.configure(f"gs://{dest}", S3_READ_PARTS="2", STREAM_CHUNK_MB="1", STREAM_THRESHOLD_MB="0")
    first, second = os.urandom(3 * MIB), os.urandom(3 * MIB + 5)
    record = world.put("ranged/moving.bin", first)
    real = gcs_sync.source.S3Source.read_into
    calls = []

    def read_into(self, obj, sink, body=None):  # the Source protocol's read, observed
        calls.append(obj.etag)
        if len(calls) == 1:
            world.rig.s3_client.put_object(Bucket=world.source, Key="ranged/moving.bin", Body=second)
        return real(self, obj, sink, body)

    monkeypatch.setattr(gcs_sync.source.S3Source, "read_into", read_into)
    summary = world.notify(record)
    assert summary["copied"] == 1, summary
    assert len(calls) == 2 and calls[0] != calls[1]
    assert world.gcs_bytes(dest, "ranged/moving.bin") == second


def test_an_upload_stopped_by_the_deadline_is_cancelled(world):
    """A streamed upload that the invocation's deadline stops is not left open until Cloud Storage
    expires it (a week): its session is cancelled (best effort, logged), nothing is finalized, and
    the failure is retryable so Lambda's retry copies the object."""
    from .conftest import CountdownContext

    dest = world.bucket()
    world.configure(f"gs://{dest}", STREAM_CHUNK_MB="1", STREAM_THRESHOLD_MB="0")
    body = os.urandom(12 * MIB)
    record = world.put("slow.bin", body)
    world.rig.front.latency_ms = 400  # each chunk takes longer than the budget allows for twelve
    try:
        with pytest.raises(Exception) as raised:
            lambda_function.lambda_handler({"Records": [record]}, CountdownContext(3.0))
    finally:
        world.rig.front.latency_ms = 0
    assert "slow.bin" in str(raised.value)
    cancels = [path for method, path in world.rig.front.requests
               if method == "DELETE" and path.startswith("/upload/")]
    assert len(cancels) == 1, world.rig.front.requests[-5:]
    assert world.gcs_object(dest, "slow.bin") is None


def test_a_large_streamed_copy_measures_the_containers_throughput(world, monkeypatch):
    """What decides slicing (``budget``) starts from the assumed throughput and takes the container's
    own from its first large copy written whole; small copies say nothing about it."""
    import gcs_sync.budget
    from gcs_sync.handler import Container

    from .conftest import FakeContext

    monkeypatch.setattr(gcs_sync.budget, "MEASURE_MIN_BYTES", 2 * MIB)
    stream_everything(world, f"gs://{world.bucket()} gs://{world.bucket()}", FANOUT="upload")
    container = Container(code_dir=str(world.tmp_path / "task"))
    try:
        small = world.put("measure/small.bin", os.urandom(MIB))
        assert container.handle({"Records": [small]}, FakeContext())["copied"] == 1
        budget = container.runtime.copier.budget
        assert not budget.measured and budget.throughput == gcs_sync.budget.ASSUMED_THROUGHPUT
        large = world.put("measure/large.bin", os.urandom(3 * MIB))
        assert container.handle({"Records": [large]}, FakeContext())["copied"] == 1
        assert budget.measured and 0 < budget.throughput != gcs_sync.budget.ASSUMED_THROUGHPUT
    finally:
        container.reset()

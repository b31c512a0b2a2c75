"""``transfer.Copier`` with fakes behind its ``Source`` and ``Writer`` protocols: which way each
destination is written, and the one policy every way shares (prove, look again after a 412,
fall back after a refused server-side copy)."""

from __future__ import annotations

import base64
import hashlib
import io
import threading
from datetime import datetime, timezone

import google_crc32c
import pytest

from gcs_sync.config import Settings, parse_destination
from gcs_sync.gcs_errors import RewriteRefused
from gcs_sync.held import HeldObject
from gcs_sync.errors import DestinationError, PreconditionFailed
from gcs_sync.events import ObjectRef
from gcs_sync.metadata import SourceState
from gcs_sync.proof import Reading, S3Record
from gcs_sync.source import SourceObject
from gcs_sync.staging import Staging
from gcs_sync.transfer import Copier

LM = datetime(2026, 12, 1, tzinfo=timezone.utc)
# Over plan.upload_each_max at the default 1024 MB: FANOUT=copy uploads once and copies server-side
# (smaller objects are uploaded to every destination at once: tests/unit/test_small_path.py).
BIG = 20_000


def b64_crc(data: bytes) -> str:
    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


class FakeSource:
    def __init__(self, objects: dict[str, bytes]):
        self.objects = objects
        self.reads = 0

    def _obj(self, bucket: str, key: str) -> SourceObject:
        data = self.objects[key]
        etag = hashlib.md5(data).hexdigest()
        return SourceObject(bucket, key, None, etag, len(data), LM, record=S3Record(etag=etag))

    def head(self, bucket, key, version_id=None):
        return self._obj(bucket, key)

    def open(self, bucket, key, version_id=None):
        return self._obj(bucket, key), io.BytesIO(self.objects[key])

    def read_into(self, obj, sink, body=None):
        self.reads += 1
        reading = Reading(obj.plan)
        data = self.objects[obj.key]
        for i in range(0, max(1, len(data)), 1000):
            piece = data[i:i + 1000]
            sink.write(piece)
            reading.update(piece)
        reading.check(obj.url)
        return reading


class FakeWriter:
    """A bucket store with generations and preconditions, as Cloud Storage answers."""

    def __init__(self):
        self.store: dict[tuple[str, str], tuple[int, bytes, dict]] = {}
        self.calls: list[tuple] = []
        self.refuse_upload: set[str] = set()  # buckets answering 403 to uploads
        self.refuse_rewrite: set[str] = set()  # target buckets answering 403 to rewrites
        self.sneak_in: dict[tuple[str, str], tuple[bytes, dict]] = {}  # written by another writer first
        self._generation = 0
        self._lock = threading.Lock()

    def _put(self, bucket, name, data, metadata, if_generation_match):
        with self._lock:
            if (bucket, name) in self.sneak_in:
                sneaked, meta = self.sneak_in.pop((bucket, name))
                self._generation += 1
                self.store[(bucket, name)] = (self._generation, sneaked, meta)
            current = self.store.get((bucket, name), (0, b"", {}))[0]
            if current != if_generation_match:
                raise PreconditionFailed(f"gs://{bucket}/{name}: changed")
            self._generation += 1
            self.store[(bucket, name)] = (self._generation, data, metadata)
            return self._held(bucket, name)

    def _held(self, bucket, name):
        generation, data, metadata = self.store[(bucket, name)]
        return HeldObject(generation, SourceState.from_metadata(metadata), len(data), b64_crc(data),
                          base64.b64encode(hashlib.md5(data).digest()).decode())

    def held(self, destination, name):
        with self._lock:
            return self._held(destination.bucket, name) if (destination.bucket, name) in self.store else None

    def upload(self, destination, name, content, obj, state, digests, if_generation_match):
        self.calls.append(("upload", destination.bucket, name))
        if destination.bucket in self.refuse_upload:
            raise DestinationError(f"gs://{destination.bucket}/{name}: permission denied", retryable=False)
        if isinstance(content, bytes):  # staged in memory
            return self._put(destination.bucket, name, content, state.to_metadata(), if_generation_match)
        with open(content, "rb") as f:  # the staged file's path
            return self._put(destination.bucket, name, f.read(), state.to_metadata(), if_generation_match)

    def open_stream(self, destination, name, obj, state, if_generation_match, chunk_size):
        raise AssertionError("these tests stage every object")

    def rewrite(self, origin, destination, name, obj, state, if_generation_match):
        self.calls.append(("rewrite", origin[0].bucket, destination.bucket, name))
        if destination.bucket in self.refuse_rewrite:
            raise RewriteRefused(f"gs://{destination.bucket}/{name}: refused")
        with self._lock:
            generation, data, _ = self.store[(origin[0].bucket, origin[1])]
        assert generation == origin[2], "a rewrite must be pinned to the verified generation"
        return self._put(destination.bucket, name, data, state.to_metadata(), if_generation_match)

    def delete(self, destination, name, generation):
        self.store.pop((destination.bucket, name), None)

    def discard(self, destination, name, generation):
        self.store.pop((destination.bucket, name), None)
        return True

    def list_held(self, destination, first, last):
        return {}


def copier(tmp_path, buckets, *, objects, **settings):
    source, writer = FakeSource(objects), FakeWriter()
    dests = tuple(parse_destination(f"gs://{b}") for b in buckets)  # names of 3+ characters
    config = Settings(destinations=dests, staging_dir=str(tmp_path), object_concurrency=2, **settings)
    return Copier(config, source, writer), source, writer


def copy(c, key, tmp_path):
    with Staging(str(tmp_path)) as staging:
        return c.copy(ObjectRef(bucket="src", key=key, size=None), staging)


def outcomes(report):
    return [(r.destination, r.outcome) for r in report.results]


def test_fanout_copy_uploads_once_and_copies_inside_cloud_storage(tmp_path):
    c, source, writer = copier(tmp_path, ["aaa", "bbb", "ccc"], objects={"k": b"x" * BIG})
    report = copy(c, "k", tmp_path)
    assert outcomes(report) == [("gs://aaa/", "copied"), ("gs://bbb/", "copied"), ("gs://ccc/", "copied")]
    assert sorted(call[0] for call in writer.calls) == ["rewrite", "rewrite", "upload"]
    assert [call for call in writer.calls if call[0] == "upload"] == [("upload", "aaa", "k")]
    assert source.reads == 1
    assert {writer.store[(b, "k")][1] for b in ("aaa", "bbb", "ccc")} == {b"x" * BIG}
    assert all(r.proof == "md5" for r in report.results)


def test_fanout_upload_writes_every_destination_from_the_function(tmp_path):
    c, _, writer = copier(tmp_path, ["aaa", "bbb"], objects={"k": b"y"}, fanout="upload")
    copy(c, "k", tmp_path)
    assert sorted(writer.calls) == [("upload", "aaa", "k"), ("upload", "bbb", "k")]


def test_the_primary_destination_setting_chooses_the_upload(tmp_path):
    c, _, writer = copier(tmp_path, ["aaa", "bbb"], objects={"k": b"y" * BIG}, primary_destination="gs://bbb/")
    copy(c, "k", tmp_path)
    assert [call for call in writer.calls if call[0] == "upload"] == [("upload", "bbb", "k")]
    assert ("rewrite", "bbb", "aaa", "k") in writer.calls


def test_a_destination_already_current_is_copied_from_without_reading_the_source(tmp_path):
    c, source, writer = copier(tmp_path, ["aaa", "bbb"], objects={"k": b"z" * BIG})
    copy(c, "k", tmp_path)
    writer.store.pop(("bbb", "k"))  # b lost its copy; a still holds exactly this state
    writer.calls.clear()
    reads = source.reads
    report = copy(c, "k", tmp_path)
    assert outcomes(report) == [("gs://aaa/", "already_current"), ("gs://bbb/", "copied")]
    assert writer.calls == [("rewrite", "aaa", "bbb", "k")] and source.reads == reads


def test_a_failed_primary_passes_the_upload_to_the_next_destination(tmp_path):
    c, _, writer = copier(tmp_path, ["bad", "bbb", "ccc"], objects={"k": b"q" * BIG})
    writer.refuse_upload.add("bad")
    report = copy(c, "k", tmp_path)
    assert outcomes(report) == [("gs://bad/", "failed"), ("gs://bbb/", "copied"), ("gs://ccc/", "copied")]
    assert [call for call in writer.calls if call[0] == "upload"] == [("upload", "bad", "k"), ("upload", "bbb", "k")]
    assert ("rewrite", "bbb", "ccc", "k") in writer.calls


def test_a_refused_server_copy_falls_back_to_an_upload_and_is_remembered(tmp_path, caplog):
    c, _, writer = copier(tmp_path, ["aaa", "walled"], objects={"k": b"w" * BIG, "l": b"v" * BIG})
    writer.refuse_rewrite.add("walled")
    with caplog.at_level("WARNING"):
        assert outcomes(copy(c, "k", tmp_path))[1] == ("gs://walled/", "copied")
        writer.calls.clear()
        copy(c, "l", tmp_path)
    assert ("upload", "walled", "l") in writer.calls and not any(
        call[0] == "rewrite" and call[2] == "walled" for call in writer.calls)
    assert c.refused_server_copies == ["gs://walled/"]
    warnings = [r for r in caplog.records if "server-side copy refused" in r.getMessage()]
    assert len(warnings) == 1  # once per container


def test_a_412_on_a_server_copy_looks_again_and_a_newer_copy_wins(tmp_path):
    c, _, writer = copier(tmp_path, ["aaa", "bbb"], objects={"k": b"old" * BIG})
    newer = SourceState("src", "k", None, "e2", datetime(2030, 1, 1, tzinfo=timezone.utc), size=3).to_metadata()
    writer.sneak_in[("bbb", "k")] = (b"new", newer)
    report = copy(c, "k", tmp_path)
    assert outcomes(report) == [("gs://aaa/", "copied"), ("gs://bbb/", "superseded")]
    assert writer.store[("bbb", "k")][1] == b"new"


@pytest.mark.parametrize("fanout", ["copy", "upload"])
def test_one_destination_is_written_the_same_whatever_the_fanout(tmp_path, fanout):
    c, _, writer = copier(tmp_path, ["aaa"], objects={"k": b"1"}, fanout=fanout)
    copy(c, "k", tmp_path)
    assert writer.calls == [("upload", "aaa", "k")]


def test_an_origin_already_current_and_a_destination_refusing_copies_are_both_served(tmp_path):
    c, source, writer = copier(tmp_path, ["aaa", "bbb", "walled"], objects={"k": b"o" * BIG})
    writer.refuse_rewrite.add("walled")
    copy(c, "k", tmp_path)  # walled is now known to refuse server-side copies
    writer.store.pop(("bbb", "k"))
    writer.store.pop(("walled", "k"))
    writer.calls.clear()
    report = copy(c, "k", tmp_path)
    assert outcomes(report) == [("gs://aaa/", "already_current"), ("gs://bbb/", "copied"), ("gs://walled/", "copied")]
    assert sorted(writer.calls) == [("rewrite", "aaa", "bbb", "k"), ("upload", "walled", "k")]

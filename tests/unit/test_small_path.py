"""The small-object path: every destination uploaded at once below ``plan.upload_each_max``, and
names this container wrote written against their remembered generation without a look (a 412
then looks and decides as usual). Fakes behind ``Source`` / ``Writer``, as in test_copier."""

from __future__ import annotations

import hashlib
import io
from datetime import datetime, timedelta, timezone

import pytest

from gcs_sync.config import Settings, parse_destination
from gcs_sync.errors import SourceGone
from gcs_sync.events import ObjectRef
from gcs_sync.held import HeldObject
from gcs_sync.known import KnownNames, WRITE_AS_NEW_MAX
from gcs_sync.metadata import SourceState
from gcs_sync.plan import remembered_is_older, upload_each_max
from gcs_sync.proof import S3Record
from gcs_sync.source import SourceObject
from gcs_sync.staging import Staging
from gcs_sync.transfer import Copier

from .test_copier import FakeSource, FakeWriter

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)


class TimedSource(FakeSource):
    """Each ``put`` is one second later than the last: every new state is ordered after the others."""

    def __init__(self):
        super().__init__({})
        self.modified: dict[str, datetime] = {}
        self.opens = 0
        self.heads = 0
        self.tick = 0

    def put(self, key: str, data: bytes) -> ObjectRef:
        self.objects[key] = data
        self.tick += 1
        self.modified[key] = T0 + timedelta(seconds=self.tick)
        return ObjectRef(bucket="src", key=key, size=len(data), etag=hashlib.md5(data).hexdigest())

    def _obj(self, bucket, key):
        data = self.objects[key]
        etag = hashlib.md5(data).hexdigest()
        return SourceObject(bucket, key, None, etag, len(data), self.modified[key], record=S3Record(etag=etag))

    def head(self, bucket, key, version_id=None):
        self.heads += 1
        if key not in self.objects:
            raise SourceGone(f"s3://{bucket}/{key}: deleted")
        return super().head(bucket, key, version_id)

    def open(self, bucket, key, version_id=None):
        self.opens += 1
        return self._obj(bucket, key), io.BytesIO(self.objects[key])


class LookingWriter(FakeWriter):
    """Counts the looks (``held``) and records each upload's precondition."""

    def __init__(self):
        super().__init__()
        self.looks: list[tuple[str, str]] = []
        self.preconditions: list[tuple[str, int]] = []

    def held(self, destination, name):
        self.looks.append((destination.bucket, name))
        return super().held(destination, name)

    def upload(self, destination, name, path, obj, state, digests, if_generation_match):
        self.preconditions.append((destination.bucket, if_generation_match))
        return super().upload(destination, name, path, obj, state, digests, if_generation_match)


def make(tmp_path, buckets=("aaa", "bbb"), **settings):
    source, writer = TimedSource(), LookingWriter()
    dests = tuple(parse_destination(f"gs://{b}") for b in buckets)
    config = Settings(destinations=dests, staging_dir=str(tmp_path), object_concurrency=2, **settings)
    return Copier(config, source, writer), source, writer


def run(copier, ref, tmp_path):
    with Staging(str(tmp_path)) as staging:
        report = copier.copy(ref, staging)
    return [(r.destination, r.outcome) for r in report.results]


def generation(writer, bucket, name="k"):
    return writer.store[(bucket, name)][0]


# -- upload to each below the break-even size ------------------------------------------------------


def test_the_break_even_size_follows_the_functions_memory():
    assert 10 * 1024 < upload_each_max(1024) < 12 * 1024  # 60 ms of 1 GB against 0.09 USD/GB
    assert upload_each_max(128) * 8 == pytest.approx(upload_each_max(1024), abs=8)
    assert upload_each_max(3008) > upload_each_max(1024) > upload_each_max(128)


@pytest.mark.parametrize("memory_mb", [128, 1024, 3008])
def test_below_the_break_even_every_destination_is_uploaded_at_once_above_it_copied(tmp_path, memory_mb):
    limit = upload_each_max(memory_mb)
    c, source, writer = make(tmp_path, ("aaa", "bbb", "ccc"), memory_mb=memory_mb)
    small, large = source.put("small", b"s" * (limit - 1)), source.put("large", b"l" * limit)
    assert run(c, small, tmp_path) == [(f"gs://{b}/", "copied") for b in ("aaa", "bbb", "ccc")]
    assert sorted(writer.calls) == [("upload", b, "small") for b in ("aaa", "bbb", "ccc")]
    writer.calls.clear()
    assert run(c, large, tmp_path) == [(f"gs://{b}/", "copied") for b in ("aaa", "bbb", "ccc")]
    assert sorted(call[0] for call in writer.calls) == ["rewrite", "rewrite", "upload"]
    for key, body in (("small", b"s" * (limit - 1)), ("large", b"l" * limit)):
        assert {writer.store[(b, key)][1] for b in ("aaa", "bbb", "ccc")} == {body}


def test_a_small_object_new_to_the_container_is_one_read_and_create_only_uploads_with_no_look(tmp_path):
    c, source, writer = make(tmp_path)
    assert run(c, source.put("k", b"first"), tmp_path) == [("gs://aaa/", "copied"), ("gs://bbb/", "copied")]
    assert writer.looks == [] and sorted(writer.preconditions) == [("aaa", 0), ("bbb", 0)]
    assert source.opens == 1 and source.heads == 0  # one GET, which brought the checksums


# -- names this container wrote: their generation remembered ---------------------------------------


def test_a_newer_state_of_a_name_it_wrote_is_written_on_the_remembered_generation_without_a_look(tmp_path):
    c, source, writer = make(tmp_path)
    run(c, source.put("k", b"first"), tmp_path)
    remembered = {b: generation(writer, b) for b in ("aaa", "bbb")}
    writer.preconditions.clear()
    assert run(c, source.put("k", b"second"), tmp_path) == [("gs://aaa/", "copied"), ("gs://bbb/", "copied")]
    assert writer.looks == []
    assert sorted(writer.preconditions) == sorted(remembered.items())
    assert {writer.store[(b, "k")][1] for b in ("aaa", "bbb")} == {b"second"}
    assert source.opens == 2 and source.heads == 0


def test_the_same_state_again_is_looked_up_and_writes_nothing(tmp_path):
    c, source, writer = make(tmp_path)
    ref = source.put("k", b"first")
    run(c, ref, tmp_path)
    writer.preconditions.clear()
    assert run(c, ref, tmp_path) == [("gs://aaa/", "already_current"), ("gs://bbb/", "already_current")]
    assert sorted(writer.looks) == [("aaa", "k"), ("bbb", "k")] and writer.preconditions == []


def test_a_copy_replaced_since_by_a_newer_state_gets_a_412_then_a_look_and_stays(tmp_path):
    c, source, writer = make(tmp_path)
    run(c, source.put("k", b"first"), tmp_path)
    stale = source.put("k", b"second")
    newer = SourceState("src", "k", None, "e3", T0 + timedelta(days=1), size=5).to_metadata()
    writer.sneak_in[("bbb", "k")] = (b"third", newer)  # another container, just before our write
    assert run(c, stale, tmp_path) == [("gs://aaa/", "copied"), ("gs://bbb/", "superseded")]
    assert writer.store[("bbb", "k")][1] == b"third"
    assert ("bbb", "k") in writer.looks and ("aaa", "k") not in writer.looks  # only the 412 looked


def test_a_copy_deleted_since_gets_a_412_then_a_look_and_is_written_create_only(tmp_path):
    c, source, writer = make(tmp_path)
    run(c, source.put("k", b"first"), tmp_path)
    gone = generation(writer, "aaa")
    writer.store.pop(("aaa", "k"))
    writer.preconditions.clear()
    assert run(c, source.put("k", b"second"), tmp_path)[0] == ("gs://aaa/", "copied")
    assert [p for p in writer.preconditions if p[0] == "aaa"] == [("aaa", gone), ("aaa", 0)]
    assert writer.looks == [("aaa", "k")] and writer.store[("aaa", "k")][1] == b"second"


def test_an_object_grown_past_the_small_size_is_looked_up_even_when_remembered(tmp_path):
    c, source, writer = make(tmp_path)
    run(c, source.put("k", b"first"), tmp_path)
    ref = source.put("k", b"small")  # the event's size
    source.objects["k"] = b"g" * (WRITE_AS_NEW_MAX + 1)  # what S3 holds when it is read
    run(c, ref, tmp_path)
    assert sorted(writer.looks) == [("aaa", "k"), ("bbb", "k")]


# -- the pure parts -------------------------------------------------------------------------------


def state(etag: str, seconds: int, sequencer: str | None = None) -> SourceState:
    return SourceState("src", "k", None, etag, T0 + timedelta(seconds=seconds), size=3, sequencer=sequencer)


def held(of: SourceState, **overrides) -> HeldObject:
    fields = {"generation": 7, "source": of, "size": of.size, "crc32c": None, "md5": None, **overrides}
    return HeldObject(**fields)


def test_only_an_older_remembered_state_is_written_over_without_a_look():
    old, new = state("a", 1), state("b", 2)
    assert remembered_is_older(new, held(old))
    assert not remembered_is_older(old, held(new))  # the destination is ahead: look
    assert not remembered_is_older(new, held(new))  # the same state: look (already current?)
    assert not remembered_is_older(state("b", 1), held(state("a", 1)))  # undecided: look
    assert remembered_is_older(state("b", 1, "0B"), held(state("a", 1, "0A")))  # sequencers decide
    assert not remembered_is_older(new, held(new, size=99))  # a copy that disagrees: look


def test_known_names_recall_what_was_written_and_forget_the_oldest_first():
    a, b = parse_destination("gs://bucket-a/"), parse_destination("gs://bucket-b/")
    known = KnownNames(limit=2)
    written = held(state("a", 1))
    known.add((a, "x"), written)
    known.add((b, "x"))  # found held by a sync: known, nothing to plan on
    known.add((a, "f"), held(state("a", 1), source=None))  # a foreign object: look first
    assert known.recall((a, "f")) == (True, None) and known.recall((b, "x")) == (True, None)
    assert known.recall((a, "x")) == (False, None)  # the oldest went first
    known.add((a, "x"), written)
    assert known.recall((a, "x")) == (True, written) and (a, "x") in known and (b, "y") not in known


def test_a_name_whose_copy_this_container_deleted_is_written_create_only_next(tmp_path):
    c, source, writer = make(tmp_path, mirror_deletes=True)
    run(c, source.put("k", b"first"), tmp_path)
    del source.objects["k"]
    with Staging(str(tmp_path)):
        deleted = c.delete(ObjectRef(bucket="src", key="k", removed=True))
    assert [r.outcome for r in deleted.results] == ["deleted", "deleted"]
    writer.looks.clear()
    writer.preconditions.clear()
    assert run(c, source.put("k", b"again"), tmp_path) == [("gs://aaa/", "copied"), ("gs://bbb/", "copied")]
    assert sorted(writer.preconditions) == [("aaa", 0), ("bbb", 0)] and writer.looks == []  # no 412 first

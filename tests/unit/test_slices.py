"""Slicing, pure parts: CRC combination, slice ranges, the decision to slice, the task's wire form."""

from __future__ import annotations

import base64
import json
import os
import zlib

import google_crc32c
import pytest

from gcs_sync import events
from gcs_sync.config import Settings
from gcs_sync.errors import ConfigError
from gcs_sync.events import SliceTask
from gcs_sync.proof import combine_b64, crc32c_combine, crc_combine
from gcs_sync.budget import GCS_MAX_OBJECT, TooLarge, needs_slicing
from gcs_sync.slices import MIB, slice_ranges


def _b64(value: int, width: int = 4) -> str:
    return base64.b64encode(value.to_bytes(width, "big")).decode()


@pytest.mark.parametrize("split", [0, 1, 7, 4096, 99_999, 100_000])
def test_crc32c_combine_equals_the_crc32c_of_the_whole(split):
    data = os.urandom(100_000)
    a, b = data[:split], data[split:]
    assert crc32c_combine(google_crc32c.value(a), google_crc32c.value(b), len(b)) == google_crc32c.value(data)


def test_crc32_combine_equals_zlib():
    data = os.urandom(12_345)
    assert crc_combine("crc32", zlib.crc32(data[:100]), zlib.crc32(data[100:]), len(data) - 100) == zlib.crc32(data)


def test_crc64nvme_combine_equals_awscrt():
    checksums = pytest.importorskip("awscrt.checksums")
    data = os.urandom(50_001)
    a, b = data[:20_000], data[20_000:]
    assert crc_combine("crc64nvme", checksums.crc64nvme(a), checksums.crc64nvme(b), len(b)) == checksums.crc64nvme(data)


def test_combine_many_pieces_in_base64_and_a_wrong_piece_changes_it():
    pieces = [os.urandom(n) for n in (10, 0, 3000, 1)]
    whole = b"".join(pieces)
    given = [(_b64(google_crc32c.value(p)), len(p)) for p in pieces]
    assert combine_b64("crc32c", given) == _b64(google_crc32c.value(whole))
    given[2] = (_b64(google_crc32c.value(pieces[2][:-1] + bytes([pieces[2][-1] ^ 1]))), len(pieces[2]))
    assert combine_b64("crc32c", given) != _b64(google_crc32c.value(whole))


def test_ranges_without_parts_cover_the_object():
    ranges = slice_ranges(10 * MIB + 5, 3 * MIB)
    assert [(r.start, r.end) for r in ranges] == [(0, 3 * MIB), (3 * MIB, 6 * MIB), (6 * MIB, 9 * MIB),
                                                  (9 * MIB, 10 * MIB + 5)]
    assert all(r.parts == () for r in ranges)


def test_ranges_follow_the_parts_grouping_whole_parts_only():
    parts = [5, 5, 5, 12, 5, 1]
    ranges = slice_ranges(sum(parts), 10, parts)
    assert [(r.start, r.end, r.parts, r.first_part) for r in ranges] == [
        (0, 10, (5, 5), 1), (10, 15, (5,), 3), (15, 27, (12,), 4), (27, 33, (5, 1), 5)]
    with pytest.raises(ValueError, match="add up"):
        slice_ranges(34, 10, parts)


def test_the_decision_to_slice():
    plain = Settings(destinations=())
    queued = Settings(destinations=(), slice_queue_url="https://sqs.eu-west-1.amazonaws.com/1/q", slice_threshold_mb=100)
    assert not needs_slicing(10 * MIB, None, 50e6, plain)  # no deadline (command line): never
    assert not needs_slicing(1000 * MIB, 60, 50e6, plain)  # 21 s of 60
    assert needs_slicing(3000 * MIB, 60, 50e6, plain)  # 63 s of 60
    assert needs_slicing(100 * MIB, 900, 50e6, queued)  # the threshold forces it
    assert not needs_slicing(100 * MIB, 900, 50e6, Settings(destinations=(), slice_threshold_mb=100))  # not without a queue
    with pytest.raises(TooLarge, match="5 TiB"):
        needs_slicing(GCS_MAX_OBJECT + 1, None, 50e6, queued)


def _task(**changes) -> SliceTask:
    fields = dict(plan="p1", bucket="b", key="a b+c", version_id=None, etag="e-2", size=20, index=1, count=2,
                  start=10, end=20, parts=(10,), first_part=2, destination="gs://d/", name="a b+c", generation=0)
    fields.update(changes)
    return SliceTask(**fields)


def test_a_slice_task_goes_through_sqs_and_back():
    task = _task()
    record = {"messageId": "m1", "body": task.body(), "eventSource": "aws:sqs",
              "attributes": {"ApproximateReceiveCount": "3"}}
    (message,) = events.parse({"Records": [record]}).messages
    assert message.slice == task and message.receive_count == 3 and not message.refs and not message.problems


@pytest.mark.parametrize("change, words", [({"size": "20"}, "'size'"), ({"end": 25}, "out of range"),
                                           ({"parts": [3]}, "add up")])
def test_a_malformed_slice_task_is_a_failed_message_naming_the_field(change, words):
    body = json.loads(_task().body())
    body["gcs-sync-slice"].update(change)
    (message,) = events.parse({"Records": [{"messageId": "m1", "body": json.dumps(body),
                                            "eventSource": "aws:sqs"}]}).messages
    assert message.slice is None and words in message.problems[0] and "m1" in message.problems[0]


def test_slice_settings_are_validated_with_their_fix():
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ({"GCS_DESTINATIONS": "gs://bucket-a", "SLICE_QUEUE_URL": "arn:aws:sqs:eu-west-1:1:q",
                               "SLICE_MB": "9000"})
    text = str(caught.value)
    assert "SLICE_QUEUE_URL" in text and "queue URL" in text and "SLICE_MB" in text and "5120" in text
    settings = Settings.from_environ({"GCS_DESTINATIONS": "gs://bucket-a",
                                      "SLICE_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/work",
                                      "SLICE_MB": "64", "SLICE_THRESHOLD_MB": "1024"})
    assert (settings.slice_mb, settings.slice_threshold_mb) == (64, 1024)
    assert Settings.from_environ({"GCS_DESTINATIONS": "gs://bucket-a"}).slice_queue_url is None

"""``budget``: whether an object is copied whole or sliced, from the time left and the throughput."""

from __future__ import annotations

import pytest

from gcs_sync.budget import ASSUMED_THROUGHPUT, MEASURE_MIN_BYTES, Budget, TooLarge
from gcs_sync.config import Settings
from gcs_sync.deadline import Deadline

MB = 1000 * 1000


class Obj:
    def __init__(self, size: int):
        self.size, self.url = size, "s3://b/k"


def budget(queue: str | None, seconds_left: int) -> Budget:
    deadline = Deadline()
    deadline.start(seconds_left * 1000)
    return Budget(Settings(destinations=(), slice_queue_url=queue), deadline)


def test_the_measured_throughput_replaces_the_assumed_one_in_the_decision():
    fast = budget("https://sqs.us-east-1.amazonaws.com/1/q", 900)
    assert not fast.must_slice(Obj(1000 * MB))  # 20 s at 50 MB/s of ~870 s left
    fast.measure(100 * MB, 100.0)  # this container copies 1 MB/s
    assert fast.measured and fast.throughput == pytest.approx(1 * MB)
    assert fast.must_slice(Obj(1000 * MB))  # 1000 s: sliced
    fast.measure(100 * MB, 1.0)  # then 100 MB/s: the figure moves halfway
    assert fast.throughput == pytest.approx(50.5 * MB)


def test_small_or_instant_copies_are_not_measured():
    b = budget(None, 900)
    b.measure(MEASURE_MIN_BYTES - 1, 1.0)
    b.measure(MEASURE_MIN_BYTES, 0.0)
    assert not b.measured and b.throughput == ASSUMED_THROUGHPUT


def test_without_a_queue_an_object_too_large_for_the_time_left_is_refused_naming_the_figure():
    b = budget(None, 60)
    with pytest.raises(TooLarge, match=r"assumed 50 MB/s.*SLICE_QUEUE_URL"):
        b.must_slice(Obj(3000 * MB))
    b.measure(100 * MB, 10.0)
    with pytest.raises(TooLarge, match=r"measured 10 MB/s"):
        b.must_slice(Obj(3000 * MB))

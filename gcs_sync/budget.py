"""How much one invocation can copy: whether an object must go through slices (``slices``).

Every object's size is judged here, against the time the invocation has left and the throughput
this container has measured on its own large copies (ASSUMED_THROUGHPUT until it has one); the
slicing itself is imported only when an object is sliced or a slice task arrives.
"""

from __future__ import annotations

import threading
from typing import Any

from .config import MIB, Settings
from .deadline import Deadline
from .errors import GcsSyncError

GCS_MAX_OBJECT = 5 * 1024 ** 4  # Cloud Storage's largest object: 5 TiB
ASSUMED_THROUGHPUT = 50 * 1000 * 1000  # bytes/s of one invocation, until this container has measured one
TIME_SHARE = 0.7  # an object is copied in one invocation only if it needs at most this share of the time left
MEASURE_MIN_BYTES = 64 * MIB  # copies from this size update the measured throughput


class TooLarge(GcsSyncError):
    """The object cannot be copied by one invocation (and slicing is off), or by any means."""

    retryable = False


def needs_slicing(size: int, remaining: float | None, throughput: float, settings: Settings) -> bool:
    """Whether an object of ``size`` bytes must be sliced: always from SLICE_THRESHOLD_MB (with a
    queue), else when it would take more than TIME_SHARE of the time left at ``throughput``.
    Raises ``TooLarge`` (permanent) above Cloud Storage's 5 TiB."""
    if size > GCS_MAX_OBJECT:
        raise TooLarge(f"{size} bytes is over Cloud Storage's limit of 5 TiB per object ({GCS_MAX_OBJECT} "
                       "bytes); it cannot be copied")
    if settings.slice_queue_url and settings.slice_threshold_mb and size >= settings.slice_threshold_mb * MIB:
        return True
    if remaining is None:
        return False
    return size / max(throughput, 1.0) > remaining * TIME_SHARE


class Budget:
    """What one invocation of this container can copy: the measured throughput and the deadline."""

    def __init__(self, settings: Settings, deadline: Deadline):
        self.settings = settings
        self.deadline = deadline
        self._lock = threading.Lock()
        self.throughput = float(ASSUMED_THROUGHPUT)
        self.measured = False

    def measure(self, nbytes: int, seconds: float) -> None:
        """A copy of ``nbytes`` read and written by this container took ``seconds``: the figure later
        decisions use (copies under MEASURE_MIN_BYTES say more about round trips than throughput)."""
        if nbytes >= MEASURE_MIN_BYTES and seconds > 0:
            with self._lock:
                rate = nbytes / seconds
                self.throughput = rate if not self.measured else 0.5 * self.throughput + 0.5 * rate
                self.measured = True

    def must_slice(self, obj: Any) -> bool:
        """True when ``obj`` (a ``SourceObject``) goes through slices; ``TooLarge`` when it cannot be
        copied here at all."""
        remaining = self.deadline.remaining()
        if not needs_slicing(obj.size, remaining, self.throughput, self.settings):
            return False
        if self.settings.slice_queue_url:
            return True
        figure = "measured" if self.measured else "assumed"
        raise TooLarge(
            f"{obj.url}: {obj.size} bytes cannot be copied in the {remaining:.0f} s this invocation has left "
            f"(at the {figure} {self.throughput / 1e6:.0f} MB/s it needs about {obj.size / self.throughput:.0f} s), "
            "and every retry would fail the same way. Enable slicing: set SLICE_QUEUE_URL to the function's own "
            "SQS queue (deploy/template.yaml creates it and the permission), so that "
            "parallel invocations copy it in slices; see the README, 'Objects larger than one invocation'")

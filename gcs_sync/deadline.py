"""The invocation's deadline, shared by every network call of one container.

Lambda runs one invocation at a time per container, so one ``Deadline`` object is restarted at
the start of each invocation from ``context.get_remaining_time_in_millis()``. Calls derive their
timeouts from it, and work that cannot finish before it is not started: the invocation then
fails clearly (and Lambda retries) instead of being cut off in the middle.
"""

from __future__ import annotations

import time

RESERVE_SECONDS = 3.0  # kept back to report and return before Lambda's own timeout
MIN_CALL_SECONDS = 1.0


class Deadline:
    def __init__(self) -> None:
        self._end: float | None = None
        self.began: float | None = None  # Unix time the invocation started

    def start(self, remaining_ms: int | None) -> None:
        self.began = time.time()
        if remaining_ms is None:
            self._end = None
            return
        reserve = min(RESERVE_SECONDS, remaining_ms / 1000 * 0.1)
        self._end = time.monotonic() + remaining_ms / 1000 - reserve

    def remaining(self) -> float | None:
        """Seconds left before the deadline (negative when past), or None without one."""
        return None if self._end is None else self._end - time.monotonic()

    def expired(self) -> bool:
        left = self.remaining()
        return left is not None and left <= 0

    def timeout(self, cap: float) -> float:
        """A per-call timeout: ``cap``, shortened to what is left (never below one second)."""
        left = self.remaining()
        return cap if left is None else max(MIN_CALL_SECONDS, min(cap, left))

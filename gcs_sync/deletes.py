"""Mirrored deletes (MIRROR_DELETES=true): remove each destination's copy of a removed source
object, only when the copy came from that object and is not newer than the delete
(``plan.delete_verdict``), only while it is the generation looked at."""

from __future__ import annotations

import time
from concurrent.futures import Executor
from typing import Any

from .config import Destination, Settings
from .errors import GcsSyncError, PreconditionFailed, SourceGone
from .events import ObjectRef
from .plan import DELETE, delete_verdict
from .results import DELETED, FAILED, DestinationResult, result

WRITE_ATTEMPTS = 5


class Deletions:
    def __init__(self, settings: Settings, source: Any, writer: Any, pool: Executor):
        self.settings, self.source, self.writer, self.pool = settings, source, writer, pool

    def delete(self, ref: ObjectRef, targets: list[tuple[Destination, str]]) -> list[DestinationResult]:
        source_back: list[bool] = []  # asked of S3 at most once, only when order is unknown

        def source_exists() -> bool:
            if not source_back:
                try:
                    self.source.head(ref.bucket, ref.key)
                    source_back.append(True)
                except SourceGone:
                    source_back.append(False)
            return source_back[0]

        def one(target: tuple[Destination, str]) -> DestinationResult:
            return self._delete_one(ref, target, source_exists)

        if len(targets) <= 1:
            return [one(t) for t in targets]
        return list(self.pool.map(one, targets))

    def _delete_one(self, ref: ObjectRef, target: tuple[Destination, str], source_exists: Any) -> DestinationResult:
        destination, name = target
        started = time.monotonic()
        try:
            for _ in range(WRITE_ATTEMPTS):
                held = self.writer.held(destination, name)
                verdict, detail = delete_verdict(ref.bucket, ref.key, ref.sequencer, held, source_exists)
                if verdict != DELETE:
                    return result(destination, name, verdict, started=started, detail=detail)
                try:
                    self.writer.delete(destination, name, held.generation)
                    return result(destination, name, DELETED, started=started)
                except PreconditionFailed:
                    continue
        except GcsSyncError as exc:
            return result(destination, name, FAILED, error=str(exc), retryable=exc.retryable, started=started)
        return result(destination, name, FAILED, retryable=True, started=started,
                      error="the object kept changing while deleting; the retry settles it")

"""One object -> every destination: look, stage once, fan out, verify, report.

The copy of one object never stops at the first failing destination: every destination gets
its own outcome. Objects of one invocation run concurrently and are reported in input order.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Sequence

from .config import Destination, Settings
from .deadline import Deadline
from .destination import HeldObject, Writer
from .errors import ChecksumMismatch, GcsSyncError, PreconditionFailed, SourceChanged, SourceGone, StagingError
from .proof import CRC32C, check_copy
from .events import ObjectRef, printable
from .metadata import Digests, SourceState, object_name_problem
from .ordering import Decision, compare_sequencers, decide, same_state
from .source import Source, SourceObject

log = logging.getLogger(__name__)

STAGING_PREFIX = "gcs-sync-"
SOURCE_ATTEMPTS = 3  # re-reads when the source changes under us
WRITE_ATTEMPTS = 5  # looks-and-decides-again after a 412 at one destination
# Objects up to this size are written as new (ifGenerationMatch=0) without looking first, unless
# this container has seen the name at that destination: a 412 then means "look and decide", so
# the rule holds; a new name saves the look, an existing one costs a refused small upload.
WRITE_AS_NEW_MAX = 1024 * 1024
KNOWN_NAMES_MAX = 20_000
STREAM_MEMORY_SHARE = 0.4  # of the function's memory, for the pieces of objects streaming at once

COPIED = "copied"
REPAIRED = "repaired"  # rewritten: the copy claimed the current state, its size or checksums disagreed
DELETED = "deleted"
CURRENT = "already_current"
SUPERSEDED = "superseded"
KEPT = "kept"  # a delete that did not apply: the copy is newer, foreign, or the source is back
ABSENT = "already_absent"
SKIPPED = "skipped"
FAILED = "failed"
OUTCOME_ORDER = (COPIED, REPAIRED, DELETED, SUPERSEDED, CURRENT, KEPT, ABSENT)


@dataclass
class DestinationResult:
    destination: str
    object: str
    outcome: str
    bytes: int = 0
    seconds: float = 0.0
    error: str | None = None
    retryable: bool = False
    detail: str | None = None
    proof: str | None = None  # the S3 record the copy was proven against (proof.PROOFS)

    def as_dict(self) -> dict:
        data = {"destination": self.destination, "object": self.object, "outcome": self.outcome}
        if self.proof:
            data["proof"] = self.proof
        if self.bytes:
            data["bytes"] = self.bytes
        if self.error:
            data["error"] = self.error
        if self.detail:
            data["detail"] = self.detail
        return data


@dataclass
class ObjectReport:
    source: str
    results: list[DestinationResult] = field(default_factory=list)
    skipped: str | None = None  # why nothing was attempted (e.g. the source is gone)
    refused: str | None = None  # why the object may not be copied at all (a failure)

    @property
    def outcome(self) -> str:
        outcomes = {r.outcome for r in self.results}
        if FAILED in outcomes or self.refused:
            return FAILED
        if self.skipped is not None:
            return SKIPPED
        for outcome in OUTCOME_ORDER:
            if outcome in outcomes:
                return outcome
        return SKIPPED

    @property
    def failures(self) -> list[DestinationResult]:
        return [r for r in self.results if r.outcome == FAILED]

    @property
    def retryable(self) -> bool:
        return not self.refused and all(r.retryable for r in self.failures)

    def failure_lines(self) -> list[str]:
        """One line per failure, naming the object and the destination."""
        lines = [f"{self.source}: {self.refused}"] if self.refused else []
        return lines + [f"{self.source} -> {r.object}: {r.error}" for r in self.failures]

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.results if r.outcome in (COPIED, REPAIRED))

    def as_dict(self) -> dict:
        data = {"source": self.source, "outcome": self.outcome}
        if self.skipped or self.refused:
            data["reason"] = self.refused or self.skipped
        if self.results:
            data["destinations"] = [r.as_dict() for r in self.results]
        return data


class Staging:
    """A private directory under the temp dir for one invocation, removed afterwards.

    Staged file names are random, never derived from keys. Space is reserved before each
    download so concurrent objects cannot overfill the disk together.
    """

    def __init__(self, root: str):
        self.root = root
        self.dir = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root)  # mode 0700
        self._reserved = 0
        self._lock = threading.Lock()

    @staticmethod
    def sweep(root: str) -> None:
        """Remove directories left by earlier invocations of this container that were cut off."""
        try:
            entries = os.listdir(root)
        except OSError:
            return
        for entry in entries:
            if entry.startswith(STAGING_PREFIX):
                shutil.rmtree(os.path.join(root, entry), ignore_errors=True)

    def fits(self, size: int) -> bool:
        with self._lock:
            return size <= shutil.disk_usage(self.dir).free - self._reserved

    @contextmanager
    def file(self, size: int, what: str) -> Iterator[str]:
        with self._lock:
            free = shutil.disk_usage(self.dir).free - self._reserved
            if size > free:
                raise StagingError(
                    f"{what}: {size} bytes do not fit in the {free} bytes free under {self.root}; "
                    "raise the function's ephemeral storage (up to 10,240 MB)"
                )
            self._reserved += size
        fd, path = tempfile.mkstemp(dir=self.dir, prefix="obj-")
        os.close(fd)
        try:
            yield path
        finally:
            with self._lock:
                self._reserved -= size
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _KnownNames:
    """(destination, name) pairs this container has written or found held: looked up first."""

    def __init__(self, limit: int = KNOWN_NAMES_MAX):
        self._names: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def __contains__(self, target: tuple[Destination, str]) -> bool:
        with self._lock:
            return (target[0].url, target[1]) in self._names

    def add(self, target: tuple[Destination, str]) -> None:
        with self._lock:
            self._names[(target[0].url, target[1])] = None
            self._names.move_to_end((target[0].url, target[1]))
            while len(self._names) > self._limit:
                self._names.popitem(last=False)


class _Restart(Exception):
    """The source moved on while deciding: read its latest state and start this object again."""


class Copier:
    def __init__(self, settings: Settings, source: Source, writer: Writer, deadline: Deadline | None = None):
        self.settings = settings
        self.source = source
        self.writer = writer
        self.deadline = deadline or Deadline()
        workers = settings.object_concurrency
        self._objects = ThreadPoolExecutor(workers, thread_name_prefix="gcs-sync-object")
        self._destinations = ThreadPoolExecutor(
            max(1, workers * len(settings.destinations)), thread_name_prefix="gcs-sync-destination"
        )
        self._known = _KnownNames()
        self._streams = threading.BoundedSemaphore(streams_in_flight(settings))

    def remember(self, destination: Destination, name: str) -> None:
        """``name`` is known to exist at ``destination``: copies to it look before writing."""
        self._known.add((destination, name))

    def copy_all(self, refs: Sequence[ObjectRef], staging: Staging) -> list[ObjectReport]:
        """Copy (or, for removed refs, mirror the delete of) every ref; one report each, in order."""

        def one(ref: ObjectRef) -> ObjectReport:
            return self.delete(ref) if ref.removed else self.copy(ref, staging)

        if len(refs) == 1:
            return [one(refs[0])]
        return list(self._objects.map(one, refs))

    def copy(self, ref: ObjectRef, staging: Staging) -> ObjectReport:
        report, targets = self._targets(ref)
        if targets and self.deadline.expired():
            report.results.extend(self._result(d, n, FAILED, retryable=True, error=(
                f"{ref.url}: not started, the invocation's time ran out; Lambda's retry copies it "
                "(raise the function's timeout if this repeats)")) for d, n in targets)
        elif targets:
            try:
                report.results.extend(self._copy_to(ref, targets, staging))
            except SourceGone as exc:
                report.skipped = f"source gone: {exc}"
        return _logged(report)

    def delete(self, ref: ObjectRef) -> ObjectReport:
        """Mirror a delete: remove each copy that came from this source object and is not newer."""
        report, targets = self._targets(ref)
        source_back: list[bool] = []  # asked of S3 at most once, only when order is unknown

        def source_exists() -> bool:
            if not source_back:
                try:
                    self.source.head(ref.bucket, ref.key)
                    source_back.append(True)
                except SourceGone:
                    source_back.append(False)
            return source_back[0]

        def delete_one(target: tuple[Destination, str]) -> DestinationResult:
            destination, name = target
            started = time.monotonic()
            try:
                for _ in range(WRITE_ATTEMPTS):
                    held = self.writer.held(destination, name)
                    if held is None:
                        return self._result(destination, name, ABSENT, started=started)
                    if held.source is None or (held.source.bucket, held.source.key) != (ref.bucket, ref.key):
                        return self._result(destination, name, KEPT, started=started,
                                            detail="not a copy of this source object; left in place")
                    order = compare_sequencers(ref.sequencer, held.source.sequencer)
                    if order < 0 or (order == 0 and source_exists()):
                        return self._result(destination, name, KEPT, started=started,
                                            detail="the copy is newer than the delete; left in place")
                    try:
                        self.writer.delete(destination, name, held.generation)
                        return self._result(destination, name, DELETED, started=started)
                    except PreconditionFailed:
                        continue
            except GcsSyncError as exc:
                return self._result(destination, name, FAILED, error=str(exc), retryable=exc.retryable,
                                    started=started)
            return self._result(destination, name, FAILED, retryable=True, started=started,
                                error="the object kept changing while deleting; the retry settles it")

        report.results.extend(self._fan_out(delete_one, targets) if targets else [])
        return _logged(report)

    def _targets(self, ref: ObjectRef) -> tuple[ObjectReport, list[tuple[Destination, str]]]:
        """The report to fill, and each destination taking this key with its object name."""
        report = ObjectReport(source=ref.url)
        targets: list[tuple[Destination, str]] = []
        for destination in self.settings.destinations:
            if not destination.maps(ref.key):
                continue
            name = destination.object_name(ref.key)
            problem = object_name_problem(name)
            if problem:
                report.results.append(self._result(
                    destination, name, FAILED, error=(
                        f"{ref.url} cannot be copied to {destination.url}: {problem}. Rename the "
                        "source object (or change the destination prefix); other objects are unaffected."
                    ),
                ))
            else:
                targets.append((destination, name))
        if not targets and not report.results:
            report.skipped = "no destination takes this key (see the SRC_PREFIX= form of GCS_DESTINATIONS)"
        return report, targets

    def _copy_to(self, ref: ObjectRef, targets: list, staging: Staging) -> list[DestinationResult]:
        done: dict[int, DestinationResult] = {}
        pending = list(range(len(targets)))
        for attempt in range(SOURCE_ATTEMPTS):
            started = time.monotonic()
            # What each destination holds is looked up while S3 answers the GET: its headers give
            # the state to decide on, its body is read only when some destination needs it.
            as_new = attempt == 0 and ref.size is not None and ref.size <= WRITE_AS_NEW_MAX
            lookups = {i: None if as_new and targets[i] not in self._known
                       else self._destinations.submit(self._held, targets[i]) for i in pending}
            try:
                obj, body = self.source.open(ref.bucket, ref.key, ref.version_id)
            except GcsSyncError as exc:
                for future in lookups.values():
                    if future is not None:
                        future.result()
                if isinstance(exc, SourceGone):
                    raise
                for i in pending:
                    done[i] = self._result(*targets[i], FAILED, error=str(exc), retryable=exc.retryable)
                break
            try:
                restart = self._decide_and_write(ref, obj, body, targets, pending, lookups, done, staging, started)
            finally:
                body.close()  # unread when no destination needed it
            if not restart:
                break
            pending = restart
        else:
            for i in pending:
                d, n = targets[i]
                done[i] = self._result(d, n, FAILED, retryable=True, error=(
                    f"{ref.url}: the source kept changing during the copy ({SOURCE_ATTEMPTS} attempts); "
                    "the next event or retry copies its latest state"))
        for i, result in done.items():
            if result.outcome in (COPIED, REPAIRED, CURRENT, SUPERSEDED):
                self.remember(*targets[i])
        return [done[i] for i in range(len(targets)) if i in done]

    def _decide_and_write(self, ref: ObjectRef, obj: SourceObject, body: Any, targets: list, pending: list,
                          lookups: dict, done: dict, staging: Staging, started: float) -> list[int]:
        """Fill ``done`` with what this state settles; return the targets to start again with
        (the source changed under the read, or a look after a 412 found it moved on)."""
        for field_name in obj.unmapped:
            log.info("source field not mapped", extra={"fields": {"source": obj.url, "field": field_name}})
        state = obj.state(sequencer=ref.sequencer if _event_matches(ref, obj) else None)

        def held(i: int) -> HeldObject | None | GcsSyncError:
            if lookups[i] is not None:
                return lookups[i].result()
            # Not looked up: sent as new (None), unless the object grew past the size the event gave.
            return self._held(targets[i]) if obj.size > WRITE_AS_NEW_MAX else None

        plans = {i: self._plan(targets[i], state, held(i), started) for i in pending}
        to_write = []
        for i, plan in plans.items():
            if isinstance(plan, DestinationResult):
                done[i] = plan
            elif plan is not _RESTART:
                to_write.append((i, plan))
        restart = [i for i, plan in plans.items() if plan is _RESTART]
        if to_write:
            try:
                written = self._stage_and_write(obj, body, state, targets, to_write, staging, started)
            except SourceChanged:
                return restart + [i for i, _ in to_write]
            except GcsSyncError as exc:
                if isinstance(exc, SourceGone):
                    raise
                for i, _ in to_write:
                    d, n = targets[i]
                    done[i] = self._result(d, n, FAILED, error=str(exc), retryable=exc.retryable)
                written = {}
            for i, result in written.items():
                if result is _RESTART:
                    restart.append(i)
                else:
                    done[i] = result
        return restart

    def _held(self, target: tuple[Destination, str]) -> HeldObject | None | GcsSyncError:
        try:
            return self.writer.held(*target)
        except GcsSyncError as exc:
            return exc

    def _plan(self, target: tuple[Destination, str], state: SourceState,
              held: HeldObject | None | GcsSyncError, started: float):
        """From what a destination holds: a final result, _RESTART, or the held object to replace."""
        destination, name = target
        try:
            if isinstance(held, GcsSyncError):
                raise held
            decision = self._decide(state, held)
        except _Restart:
            return _RESTART
        except SourceGone:
            raise  # deleted while we looked: the object is skipped, not failed
        except GcsSyncError as exc:
            return self._result(destination, name, FAILED, error=str(exc), retryable=exc.retryable, started=started)
        if decision is Decision.WRITE:
            return _Write(held)
        if decision is Decision.CURRENT:
            problem = held.disagreement() if held else None
            if problem:
                log.warning("copy disagrees with its provenance", extra={"fields": {
                    "source": f"s3://{state.bucket}/{state.key}", "object": f"gs://{destination.bucket}/{name}", "problem": problem}})
                return _Write(held, repair=True)
            return self._result(destination, name, CURRENT, started=started,
                                proof=held.source.proof if held and held.source else None)
        return self._result(destination, name, decision.value, started=started)

    def _decide(self, state: SourceState, held: HeldObject | None) -> Decision:
        decision = decide(state, held.source if held else None)
        if decision is not Decision.UNDECIDED:
            return decision
        # Same second, no comparable sequencer: S3 knows which state is current.
        current = self.source.head(state.bucket, state.key).state()
        if same_state(current, state):
            return Decision.WRITE
        if held and held.source and same_state(current, held.source):
            return Decision.SUPERSEDED
        if state.version_id:
            return Decision.SUPERSEDED  # the event named an older version; a newer one is current
        raise _Restart()

    def _stage_and_write(self, obj: SourceObject, body: Any, state: SourceState, targets: list, to_write: list,
                         staging: Staging, started: float) -> dict:
        """``body``: the unread body of the GET ``obj`` came from; consumed or closed here."""
        if obj.size < self.settings.stream_threshold and staging.fits(obj.size):
            try:
                return self._staged_write(obj, body, state, targets, to_write, staging, started)
            except StagingError as exc:  # no room next to the objects in flight: stream instead
                log.info("streaming instead of staging", extra={"fields": {"source": obj.url, "reason": str(exc)}})
                body = None  # partly read into the staged file: read again, pinned
        return self._stream_and_write(obj, body, state, targets, to_write, started)

    def _staged_write(self, obj: SourceObject, body: Any, state: SourceState, targets: list, to_write: list,
                      staging: Staging, started: float) -> dict:
        with staging.file(obj.size, obj.url) as path:
            with open(path, "wb") as sink:
                digests = self.source.read_into(obj, sink, body)
            state = replace(state, crc32c=digests.crc32c_b64, proof=digests.plan.proof)
            results = self._fan_out(
                lambda item: self._write(targets[item[0]], item[1], path, obj, state, digests, started),
                to_write,
            )
        return {i: result for (i, _), result in zip(to_write, results)}

    def _stream_and_write(self, obj: SourceObject, body: Any, state: SourceState, targets: list, to_write: list,
                          started: float) -> dict:
        """Read once, feeding resumable uploads at every destination as the bytes arrive; at most
        ``streams_in_flight`` objects at a time (the others wait for a slot)."""
        with self._streams:
            return self._stream_to(obj, body, state, targets, to_write, started)

    def _stream_to(self, obj: SourceObject, body: Any, state: SourceState, targets: list, to_write: list,
                   started: float) -> dict:
        from .streaming import ChunkSink, DestinationStream, Feeder, SessionLost

        plan = obj.plan
        state = replace(state, proof=plan.proof,
                        crc32c=plan.expected if plan.proof == CRC32C and not plan.per_part else None)
        feeders = {}
        for i, plan in to_write:
            destination, name = targets[i]
            feeders[i] = Feeder(DestinationStream(
                self.writer.session, self.writer.endpoint, destination, name, obj, state,
                plan.held.generation if plan.held else 0, self.settings.stream_chunk, self.deadline))
        running = [self._destinations.submit(f.run) for f in feeders.values()]

        def emit(offset: int, piece: bytes) -> None:
            for feeder in feeders.values():
                feeder.put(offset, piece)

        sink = ChunkSink(self.settings.stream_chunk, emit)
        try:
            digests = self.source.read_into(obj, sink, body)
        except BaseException:
            for feeder in feeders.values():
                feeder.close()  # without the last chunk: nothing is finalized
            for future in running:
                future.result()
            for feeder in feeders.values():
                feeder.stream.cancel()
            raise
        for feeder in feeders.values():
            feeder.put(*sink.last())
            feeder.close()
        for future in running:
            future.result()

        results = {}
        plans = dict(to_write)
        for i, feeder in feeders.items():
            destination, name = targets[i]
            if feeder.error is None:
                written = feeder.stream.result or {}
                results[i] = self._proven(destination, name, plans[i], digests, started,
                                          generation=int(written.get("generation", 0)),
                                          size=int(written.get("size", -1)),
                                          crc32c=written.get("crc32c"), md5=written.get("md5Hash"))
            elif isinstance(feeder.error, SessionLost):
                log.info("upload session lost", extra={"fields": {"object": feeder.stream.where,
                                                                   "error": str(feeder.error)}})
                results[i] = _RESTART  # a new upload needs the bytes again: read the source again
            elif isinstance(feeder.error, PreconditionFailed):
                results[i] = self._after_conflict(destination, name, state, started)
            else:
                results[i] = self._result(destination, name, FAILED, error=str(feeder.error),
                                          retryable=feeder.error.retryable, started=started)
        return results

    def _after_conflict(self, destination: Destination, name: str, state: SourceState, started: float):
        """Another writer got there first (412): look again; a write that is still due restarts."""
        final, _ = self._look_again(destination, name, state, started)
        return _RESTART if final is None else final

    def _look_again(self, destination: Destination, name: str, state: SourceState, started: float):
        """After a 412: ``(None, plan)`` when our write is still due, else ``(outcome, None)``
        where the outcome is a final result or _RESTART. Decided as before the write (``_plan``)."""
        plan = self._plan((destination, name), state, self._held((destination, name)), started)
        return (None, plan) if isinstance(plan, _Write) else (plan, None)

    def _write(self, target, plan: "_Write", path: str, obj: SourceObject,
               state: SourceState, digests: Digests, started: float):
        destination, name = target
        held = plan.held
        for _ in range(WRITE_ATTEMPTS):
            try:
                written = self.writer.upload(destination, name, path, obj, state, digests,
                                             if_generation_match=held.generation if held else 0)
                return self._proven(destination, name, plan, digests, started, generation=written.generation,
                                    size=written.size, crc32c=written.crc32c, md5=written.md5)
            except PreconditionFailed:
                final, plan = self._look_again(destination, name, state, started)
                if final is not None:
                    return final
                held = plan.held
            except GcsSyncError as exc:
                return self._result(destination, name, FAILED, error=str(exc), retryable=exc.retryable, started=started)
        return self._result(destination, name, FAILED, retryable=True, started=started, error=(
            f"gs://{destination.bucket}/{name}: other writers kept replacing the object "
            f"({WRITE_ATTEMPTS} attempts); the next event or retry settles it"))

    def _proven(self, destination: Destination, name: str, plan: "_Write", digests: Digests, started: float,
                *, generation: int, size: int, crc32c: str | None, md5: str | None) -> DestinationResult:
        """The one check of a finished copy, whatever wrote it; a copy that fails it is removed."""
        where = f"gs://{destination.bucket}/{name}"
        try:
            check_copy(where, size=size, crc32c=crc32c, md5=md5, reading=digests)
        except ChecksumMismatch as exc:
            return self._result(destination, name, FAILED, retryable=True, started=started,
                                error=f"{exc}; {self._discard(destination, name, generation)}")
        return self._result(destination, name, plan.outcome, nbytes=digests.size, started=started,
                            proof=digests.plan.proof)

    def _discard(self, destination: Destination, name: str, generation: int) -> str:
        """Remove a copy that failed its check; say what became of it."""
        if generation and self.writer.discard(destination, name, generation):
            return "the copy was removed and will be written again"
        return ("the destination still holds this bad copy (it could not be removed); the next event "
                "or sync rewrites it")

    def _fan_out(self, fn, items: list) -> list:
        if len(items) == 1:
            return [fn(items[0])]
        return list(self._destinations.map(fn, items))

    @staticmethod
    def _result(destination: Destination, name: str, outcome: str, *, error: str | None = None,
                retryable: bool = False, nbytes: int = 0, started: float | None = None,
                detail: str | None = None, proof: str | None = None) -> DestinationResult:
        return DestinationResult(
            destination=destination.url,
            object=printable(f"gs://{destination.bucket}/{name}"),
            outcome=outcome,
            bytes=nbytes,
            seconds=round(time.monotonic() - started, 3) if started is not None else 0.0,
            error=error,
            retryable=retryable,
            detail=detail,
            proof=proof,
        )

    def close(self) -> None:
        self._objects.shutdown(wait=False)
        self._destinations.shutdown(wait=False)


def streams_in_flight(settings: Settings) -> int:
    """How many objects may stream at once: each holds up to 1 + (QUEUE_DEPTH + 1) x destinations
    pieces of STREAM_CHUNK_MB, and together they stay within STREAM_MEMORY_SHARE of the memory."""
    from .streaming import QUEUE_DEPTH

    per_object = settings.stream_chunk * (1 + (QUEUE_DEPTH + 1) * max(1, len(settings.destinations)))
    budget = settings.memory_mb * 1024 * 1024 * STREAM_MEMORY_SHARE
    return max(1, min(settings.object_concurrency, int(budget // per_object)))


@dataclass(frozen=True)
class _Write:
    held: HeldObject | None
    repair: bool = False  # the held copy claims this state but disagrees with it

    @property
    def outcome(self) -> str:
        return REPAIRED if self.repair else COPIED


_RESTART = object()


def _event_matches(ref: ObjectRef, obj: SourceObject) -> bool:
    """Whether the state read is the one the event announced (so its sequencer applies)."""
    if ref.version_id:
        return ref.version_id == obj.version_id
    return ref.etag is not None and ref.etag == obj.etag


def _logged(report: ObjectReport) -> ObjectReport:
    for result in report.results:
        _log_result(report.source, result)
    if report.skipped:
        log.info("object skipped", extra={"fields": {
            "source": report.source, "outcome": SKIPPED, "reason": report.skipped}})
    return report


def _log_result(source: str, result: DestinationResult) -> None:
    level = logging.ERROR if result.outcome == FAILED else logging.INFO
    fields = {"source": source, **result.as_dict(), "seconds": result.seconds}
    log.log(level, "object %s", result.outcome, extra={"fields": fields})

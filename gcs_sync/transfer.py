"""One object -> every destination: the copy engine.

``Copier`` reads the source once per attempt (one read loop), asks ``plan`` what each destination
needs, and writes through one ``apply`` whatever the way (``ways``): a finished copy is proven
and, when it fails, discarded; a 412 or a 429 means look again and decide again; a lost session
means write again. ``Fanout`` chooses the ways for one read: upload to the primary and copy
inside Cloud Storage to the others (FANOUT=copy), or upload to each (FANOUT=upload, and any
object under ``plan.upload_each_max``: one round trip instead of two); slicing for objects too
large for one invocation. Small objects are written without a look first (``known``). Objects of
one invocation run concurrently, reported in input order.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Sequence

from .config import Destination, Settings
from .budget import Budget
from .deadline import Deadline
from .deletes import Deletions
from .destination import Writer
from .errors import ChecksumMismatch, GcsSyncError, PreconditionFailed, SourceChanged, SourceGone, StagingError
from .events import ObjectRef
from .gcs_errors import ObjectHeld, RateLimited, RewriteRefused, SessionLost
from .held import HeldObject
from .known import WRITE_AS_NEW_MAX, KnownNames, first_looks, held_for, settled
from .metadata import SourceState, object_name_problem
from . import plan as planning
from .plan import AGAIN, ASK_SOURCE, Final, Write, fan_out, plan_for, resolve, upload_each_max
from .proof import CRC32C, NONE, Fingerprint, Plan, check_copy
from .results import (ABSENT, COPIED, CURRENT, DELETED, FAILED, HELD, REPAIRED, SKIPPED, SLICED, SUPERSEDED,
                      DestinationResult, ObjectReport, logged, result)
from .source import Source, SourceObject
from .staging import Staging
from .ways import Compose, ServerCopy, Slot, StagedUpload, StreamedUpload, Way

log = logging.getLogger(__name__)

SOURCE_ATTEMPTS = 3  # re-reads when the source changes under us
WRITE_ATTEMPTS = 5  # looks-and-decides-again after a 412 at one destination
STREAM_MEMORY_SHARE = 0.4  # of the function's memory, for the pieces of objects streaming at once
THROTTLED_READS = 8  # reads again of one object whose name Cloud Storage throttled (429), within the deadline
NAME_WRITE_INTERVAL = 1.0  # seconds: Cloud Storage takes about one write per second to one object name
RATE_BACKOFF = (1.0, 3.0)  # seconds: a 429 waits at least the 1 s a name needs between writes; cap (jittered, doubling)


class Copier:
    """One object -> every destination: read, plan (``plan.plan_for``), write (``Fanout`` chooses the
    ways, ``apply`` writes them), prove every copy, report."""

    def __init__(self, settings: Settings, source: Source, writer: Writer, deadline: Deadline | None = None):
        self.settings, self.source, self.writer = settings, source, writer
        self.deadline = deadline or Deadline()
        workers = settings.object_concurrency
        self._objects = ThreadPoolExecutor(workers, thread_name_prefix="gcs-sync-object")
        self.pool = ThreadPoolExecutor(max(1, workers * len(settings.destinations)),
                                       thread_name_prefix="gcs-sync-destination")
        self._known = KnownNames()
        self.budget = Budget(settings, self.deadline)  # what one invocation copies; slices beyond it
        self.fanout = Fanout(self)
        self._deletions = Deletions(settings, source, writer, self.pool)

    def remember(self, destination: Destination, name: str, held: HeldObject | None = None) -> None:
        """``name`` is known to exist at ``destination`` (holding ``held``, when known: see ``known``)."""
        self._known.add((destination, name), held)

    @property
    def refused_server_copies(self) -> list[str]:
        """Destinations this container writes by upload because they refused a server-side copy."""
        return self.fanout.refused()

    def copy_all(self, refs: Sequence[ObjectRef], staging: Staging) -> list[ObjectReport]:
        """Copy (or, for removed refs, mirror the delete of) every ref; one report each, in order."""

        def one(ref: ObjectRef) -> ObjectReport:
            return self.delete(ref) if ref.removed else self.copy(ref, staging)

        if len(refs) == 1:
            return [one(refs[0])]
        return list(self._objects.map(one, refs))

    def copy(self, ref: ObjectRef, staging: Staging) -> ObjectReport:
        report, targets = targets_of(self.settings, ref)
        slots = [Slot(d, n) for d, n in targets]
        if slots and self.deadline.expired():
            for slot in slots:
                slot.fail(f"{ref.url}: not started, the invocation's time ran out; Lambda's retry copies it "
                          "(raise the function's timeout if this repeats)", retryable=True)
        elif slots:
            try:
                self._read_loop(ref, slots, staging)
            except SourceGone as exc:
                report.skipped = f"source gone: {exc}"
                slots = []
        for slot in slots:
            outcome = slot.result.outcome
            if outcome in (COPIED, REPAIRED, CURRENT, SUPERSEDED, HELD):
                self.remember(slot.destination, slot.name, slot.written if outcome in (COPIED, REPAIRED)
                              else slot.held if outcome == CURRENT else None)
        report.results.extend(slot.result for slot in slots)
        return logged(report)

    def delete(self, ref: ObjectRef) -> ObjectReport:
        """Mirror a delete: remove each copy that came from this source object and is not newer."""
        report, targets = targets_of(self.settings, ref)
        results = self._deletions.delete(ref, targets)
        for target, done in zip(targets, results):
            if done.outcome in (DELETED, ABSENT):  # gone: the next copy is written create-only
                self._known.forget(target)
        report.results.extend(results)
        return logged(report)

    def copy_within(self, origin: tuple[Destination, str, int], fingerprint: Any, obj: SourceObject,
                    state: SourceState, targets: list[tuple[Destination, str]]) -> list[DestinationResult]:
        """Server-side copies from a verified copy (``origin``: destination, name, generation) to
        ``targets``, planned, written and proven as any other copy. A target that would need the
        bytes again (the origin replaced, a refused server-side copy) fails, retryable."""
        slots = [Slot(d, n) for d, n in targets]
        try:
            for slot in slots:
                self.replan(slot, state, self._held(slot))
            writes = [s for s in slots if isinstance(s.plan, Write) and s.result is None]
            self.fanout.server_copies(Slot(origin[0], origin[1]), origin[2], fingerprint, writes, obj, state)
        except SourceGone as exc:
            for slot in slots:
                if slot.result is None:
                    slot.finish(SKIPPED, detail=str(exc))
        for slot in slots:
            if slot.result is None:
                slot.fail(f"{slot.where}: not copied from gs://{origin[0].bucket}/{origin[1]} "
                          f"({slot.error or 'it changed meanwhile'}); the retry copies it", retryable=True)
        return [slot.result for slot in slots]

    # ------------------------------------------------------------------ the one read loop

    def _read_loop(self, ref: ObjectRef, slots: list[Slot], staging: Staging) -> None:
        """Give every slot a result. The source is read again (up to SOURCE_ATTEMPTS times) for the
        slots whose write needs it: the source moved on, or a write that cannot be repeated was refused."""
        pending, attempt, throttled = slots, 0, 0
        while attempt < SOURCE_ATTEMPTS and throttled < THROTTLED_READS:
            # What each destination holds is looked up while S3 answers the GET: its headers give
            # the state to decide on, its body is read only when some destination needs it.
            small = attempt == 0 and ref.size is not None and ref.size <= WRITE_AS_NEW_MAX
            lookups = first_looks(self._known, pending, small, lambda slot: self.pool.submit(self._held, slot))
            # An event for one version of a versioned bucket reads the current state (one GET either
            # way): when S3 already holds a newer version, that version's own event copies it.
            latest = ref.version_id is not None and ref.event_time is not None  # a notification's version
            opened = self._open(ref, None if latest else ref.version_id, pending, lookups)
            if opened and latest and planning.version_replaced(ref.version_id, opened[0].version_id):
                opened[1].close()
                settled(lookups)
                for slot in pending:
                    slot.finish(SUPERSEDED, detail=f"S3's current version is {opened[0].version_id}, not the one the "
                                                   "event named: nothing to write (the current one's own event copies it)")
                return
            if opened is None:
                return
            try:
                pending = self._settle(ref, *opened, pending, lookups, staging)
            finally:
                opened[1].close()  # unread when no destination needed it
            if not pending:
                return
            if all(isinstance(slot.error, RateLimited) for slot in pending):
                throttled += 1  # read again only because Cloud Storage throttled the name (429)
            else:
                attempt += 1
        for slot in pending:
            slot.fail(f"{ref.url}: the source kept changing during the copy ({SOURCE_ATTEMPTS} attempts); "
                      "the next event or retry copies its latest state", retryable=True)

    def _open(self, ref: ObjectRef, version_id: str | None, pending: list[Slot], lookups: dict) -> Any:
        """(object, unread body) of the GET, or None when it failed (every slot then has its result)."""
        try:
            return self.source.open(ref.bucket, ref.key, version_id)
        except GcsSyncError as exc:
            settled(lookups)
            if isinstance(exc, SourceGone):
                raise
            for slot in pending:
                slot.fail(str(exc), exc.retryable)
            return None

    def _settle(self, ref: ObjectRef, obj: SourceObject, body: Any, slots: list[Slot], lookups: dict,
                staging: Staging) -> list[Slot]:
        """Plan each slot for the state read and write those that need it; return the slots to
        start again with a new read."""
        for field_name in obj.unmapped:
            log.info("source field not mapped", extra={"fields": {"source": obj.url, "field": field_name}})
        state = obj.state(sequencer=ref.sequencer if _event_matches(ref, obj) else None)
        again: list[Slot] = []
        for slot in slots:
            self.replan(slot, state, held_for(lookups[slot], state, obj.size, lambda slot=slot: self._held(slot)))
            if slot.plan is AGAIN:
                again.append(slot)
        writes = [slot for slot in slots if isinstance(slot.plan, Write) and slot.result is None]
        if writes:
            try:
                again += self.fanout.write(obj, body, state, slots, writes, staging)
            except SourceChanged:
                return again + writes
            except GcsSyncError as exc:
                if isinstance(exc, SourceGone):
                    raise
                for slot in writes:
                    if slot.result is None:
                        slot.fail(str(exc), exc.retryable)
        return again

    def _held(self, slot: Slot) -> HeldObject | None | GcsSyncError:
        try:
            return self.writer.held(slot.destination, slot.name)
        except GcsSyncError as exc:
            return exc

    def replan(self, slot: Slot, state: SourceState, held: HeldObject | None | GcsSyncError) -> None:
        """The slot's plan from what it holds (S3 asked when the metadata cannot tell); a plan that
        writes nothing also gives the slot its result."""
        slot.result = None
        if isinstance(held, GcsSyncError):
            if isinstance(held, SourceGone):
                raise held
            slot.plan = None
            slot.fail(str(held), held.retryable)
            return
        slot.held = held
        try:
            plan = plan_for(state, held)
            if plan is ASK_SOURCE:  # same second, no comparable sequencer: S3 knows which is current
                plan = resolve(state, held, self.source.head(state.bucket, state.key).state())
        except SourceGone:
            raise  # deleted while we looked: the object is skipped, not failed
        except GcsSyncError as exc:
            slot.plan = None
            slot.fail(str(exc), exc.retryable)
            return
        slot.plan = plan
        if isinstance(plan, Write) and plan.repair:
            log.warning("copy disagrees with its provenance", extra={"fields": {
                "source": f"s3://{state.bucket}/{state.key}", "object": slot.where, "problem": held.disagreement()}})
        if isinstance(plan, Final):
            slot.finish(plan.outcome, proof=plan.proof)

    # ------------------------------------------------------------------ the one way of applying a write

    def apply(self, way: Way, slots: list[Slot], state: SourceState) -> list[Slot]:
        """Write ``slots`` one way, under the one policy for every way: a finished copy is proven
        (and removed if it fails); a 412 or 429 means look again and decide again (after a 429, a
        jittered backoff within the deadline); a held copy is reported ``held``; a lost session or a
        write still due is written again (or read again, when the way cannot repeat). Returns the
        slots to start again with a new read; a refused server-side copy is left to the caller
        (``slot.error``, no result)."""
        again: list[Slot] = []
        todo, throttled = slots, 0
        for _ in range(WRITE_ATTEMPTS):
            if not todo:
                return again
            way.write(todo)
            retry: list[Slot] = []
            for slot in todo:
                error = slot.error
                if error is None:
                    slot.result = prove(self.writer, slot, way.fingerprint)
                elif isinstance(error, (PreconditionFailed, RateLimited)):
                    self.replan(slot, state, self._held(slot))
                    # Throttled and still due: read again after the backoff (by then S3 may hold a
                    # newer version, which supersedes this write); a compose's sources stay put.
                    reread = isinstance(error, RateLimited) and not isinstance(way, Compose)
                    if isinstance(slot.plan, Write):
                        (retry if way.repeatable and not reread else again).append(slot)
                    elif slot.plan is AGAIN:
                        again.append(slot)
                elif isinstance(error, SessionLost):
                    log.info("upload session lost", extra={"fields": {"object": slot.where, "error": str(error)}})
                    (retry if way.repeatable else again).append(slot)
                elif isinstance(error, ObjectHeld):
                    slot.finish(HELD, detail=str(error), until=error.until)
                elif not isinstance(error, RewriteRefused):
                    slot.fail(str(error), error.retryable)
            limited = [s for s in retry + again if isinstance(s.error, RateLimited)]
            if limited:
                throttled += 1
                if not back_off(self.deadline, throttled, [s.held.updated for s in limited if s.held]):
                    break
            todo = retry
        for slot in todo:
            slot.fail(f"{slot.where}: other writers kept replacing the object ({WRITE_ATTEMPTS} attempts); "
                      "the next event or retry settles it", retryable=True)
        return again

    def close(self) -> None:
        self._objects.shutdown(wait=False)
        self.pool.shutdown(wait=False)


class Fanout:
    """Which way writes which destination for one read of the source: staged or streamed upload to
    the primary (or to each, FANOUT=upload), server-side copies from it to the others, slices for
    an object too large for one invocation. Every write goes through ``Copier.apply``."""

    def __init__(self, copier: Copier):
        self.copier = copier
        self.settings = copier.settings
        self._streams = threading.BoundedSemaphore(streams_in_flight(copier.settings))
        self._no_server_copy: set[str] = set()  # destinations that refused a server-side copy (403)
        self._lock = threading.Lock()
        self._slicer: Any = None

    @property
    def slicer(self) -> Any:
        """The ``slices.Slicer``, imported and built when an object is first sliced or a slice task
        arrives: the final compose is written through ``Copier.apply``, the other destinations
        copied by ``Copier.copy_within``."""
        with self._lock:
            if self._slicer is None:
                from .slices import Slicer

                c = self.copier
                self._slicer = Slicer(self.settings, c.source, c.writer, c.deadline, engine=c)
            return self._slicer

    def refused(self) -> list[str]:
        with self._lock:
            return sorted(self._no_server_copy)

    def write(self, obj: SourceObject, body: Any, state: SourceState, slots: list[Slot], writes: list[Slot],
              staging: Staging) -> list[Slot]:
        """Write ``writes`` (each planned Write). Returns the slots to start again with a new read."""
        with self._lock:
            refused = set(self._no_server_copy)
        origin, uploads, copies = fan_out(self.settings.fanout, self.settings.primary_destination, slots, writes,
                                          refused, upload_each=obj.size < upload_each_max(self.settings.memory_mb))
        again: list[Slot] = []
        if origin is not None:  # a destination already holds exactly this state, verified: no bytes read
            again = self.server_copies(origin, origin.held.generation, fingerprint_of(origin.held), copies, obj,
                                       replace(state, crc32c=origin.held.source.crc32c or origin.held.crc32c,
                                               proof=origin.held.source.proof))
            if not uploads:
                return again
            copies = []  # the rest (destinations that refuse server-side copies) are uploaded below
        if self.copier.budget.must_slice(obj):  # raises TooLarge (permanent) when it cannot be copied here
            return self._sliced(obj, state, uploads + copies) + again
        if obj.size < self.settings.stream_threshold and staging.fits(obj.size):
            try:
                with staging.staged(obj.size, obj.url) as staged:  # in memory, or a file (``staging``)
                    with staged.sink() as sink:
                        reading = self.copier.source.read_into(obj, sink, body)
                    state = replace(state, crc32c=reading.crc32c_b64, proof=reading.plan.proof)
                    upload = StagedUpload(self.copier.writer, self.copier.pool, staged.content, obj, state, reading)
                    again += self.copier.apply(upload, uploads, state)
                    return again + self._after_upload(uploads, copies, obj, state, reading, fallback=upload)
            except StagingError as exc:  # no room next to the objects in flight: stream instead
                log.info("streaming instead of staging", extra={"fields": {"source": obj.url, "reason": str(exc)}})
                body = None  # partly read into the staged file: read again, pinned
        plan = obj.plan
        state = replace(state, proof=plan.proof,
                        crc32c=plan.expected if plan.proof == CRC32C and not plan.per_part else None)
        with self._streams:  # at most streams_in_flight objects stream at once
            started = time.monotonic()
            stream = StreamedUpload(self.copier.writer, self.copier.source, self.copier.pool, obj, body, state,
                                    self.settings.stream_chunk, self.copier.deadline)
            again += self.copier.apply(stream, uploads, state)
            if uploads and all(s.result is not None and s.result.outcome in (COPIED, REPAIRED) for s in uploads):
                self.copier.budget.measure(obj.size, time.monotonic() - started)  # read once, written to each
        return again + self._after_upload(uploads, copies, obj, state, stream.fingerprint, fallback=None)

    def _sliced(self, obj: SourceObject, state: SourceState, writes: list[Slot]) -> list[Slot]:
        """Queue the object's slices (``slices``): composed into the primary destination, then copied
        server-side to the others, by the invocations that receive them."""
        primary = next((s for s in writes if s.destination.url == self.settings.primary_destination), writes[0])
        plan, count = self.slicer.plan(obj, state, primary.destination, primary.name, primary.plan.generation)
        for slot in writes:
            slot.finish(SLICED, detail=f"{count} slices queued (plan {plan}); the invocation that composes them "
                                       "reports the copy")
        return []

    def _after_upload(self, uploads: list[Slot], copies: list[Slot], obj: SourceObject, state: SourceState,
                      fingerprint: Any, fallback: Way | None) -> list[Slot]:
        """The server-side copies from the primary's upload, once it is written and proven."""
        if not copies:
            return []
        primary = uploads[0]
        outcome = primary.result.outcome if primary.result else None
        if outcome in (COPIED, REPAIRED):
            return self.server_copies(primary, primary.written.generation, fingerprint, copies, obj, state, fallback)
        if outcome == CURRENT and primary.held is not None:  # another writer put exactly this state there
            return self.server_copies(primary, primary.held.generation, fingerprint_of(primary.held), copies,
                                      obj, state, fallback)
        if outcome in (FAILED, HELD) and fallback is not None:
            # The primary failed on its own (refused, throttled, held): the next destination becomes
            # the primary, uploaded from the same staged bytes, and the rest are copied from it.
            log.info("primary destination failed; uploading to the next", extra={"fields": {
                "object": primary.where, "error": primary.result.error or primary.result.detail}})
            again = self.copier.apply(fallback, copies[:1], state)
            return again + self._after_upload(copies[:1], copies[1:], obj, state, fingerprint, fallback)
        # The primary failed (the stream is spent), holds a newer state, or must be read again:
        # the others are planned again with a new read, and one of them is uploaded.
        return copies

    def server_copies(self, origin: Slot, generation: int, fingerprint: Any, copies: list[Slot],
                      obj: SourceObject, state: SourceState, fallback: Way | None = None) -> list[Slot]:
        way = ServerCopy(self.copier.writer, self.copier.pool, (origin.destination, origin.name, generation), obj,
                         state, fingerprint)
        again = self.copier.apply(way, copies, state)
        refused = [slot for slot in copies if isinstance(slot.error, RewriteRefused) and slot.result is None]
        for slot in refused:
            with self._lock:
                first = slot.destination.url not in self._no_server_copy
                self._no_server_copy.add(slot.destination.url)
            if first:
                log.warning("server-side copy refused; uploading to this destination instead", extra={"fields": {
                    "destination": slot.destination.url, "error": str(slot.error)}})
        if refused and fallback is not None:
            again += self.copier.apply(fallback, refused, state)
        elif refused:
            again += refused  # uploaded after a new read (this destination now takes uploads)
        return again


def prove(writer: Writer, slot: Slot, fingerprint: Any) -> DestinationResult:
    """The one check of a finished copy, whatever wrote it; a copy that fails it is removed."""
    written = slot.written
    try:
        check_copy(slot.where, size=written.size, crc32c=written.crc32c, md5=written.md5, reading=fingerprint)
    except ChecksumMismatch as exc:
        gone = written.generation and writer.discard(slot.destination, slot.name, written.generation)
        fate = ("the copy was removed and will be written again" if gone else "the destination still holds "
                "this bad copy (it could not be removed); the next event or sync rewrites it")
        return result(slot.destination, slot.name, FAILED, retryable=True, error=f"{exc}; {fate}",
                      started=slot.started)
    return result(slot.destination, slot.name, slot.plan.outcome, nbytes=fingerprint.size, started=slot.started,
                  proof=fingerprint.plan.proof)


def back_off(deadline: Deadline, attempt: int, written_at: list) -> bool:
    """Sleep before writing a name Cloud Storage throttled (429): until a second after its last write
    when Cloud Storage said when that was (``written_at``), else a jittered doubling backoff; False
    when the deadline leaves no room."""
    known = [t for t in written_at if t]
    if known:
        delay = max(0.0, max(known) + NAME_WRITE_INTERVAL - time.time()) + random.uniform(0.1, 0.4)
    else:
        delay = random.uniform(RATE_BACKOFF[0], min(RATE_BACKOFF[1], RATE_BACKOFF[0] * 2 ** attempt))
    left = deadline.remaining()
    if left is not None and left < delay + 2.0:
        return False
    time.sleep(delay)
    return True


def targets_of(settings: Settings, ref: ObjectRef) -> tuple[ObjectReport, list[tuple[Destination, str]]]:
    """The report to fill, and each destination taking this key with its object name."""
    report = ObjectReport(source=ref.url)
    targets: list[tuple[Destination, str]] = []
    for destination in settings.destinations:
        if not destination.maps(ref.key):
            continue
        name = destination.object_name(ref.key)
        problem = object_name_problem(name)
        if problem:
            report.results.append(result(destination, name, FAILED, error=(
                f"{ref.url} cannot be copied to {destination.url}: {problem}. Rename the "
                "source object (or change the destination prefix); other objects are unaffected.")))
        else:
            targets.append((destination, name))
    if not targets and not report.results:
        report.skipped = "no destination takes this key (see the SRC_PREFIX= form of GCS_DESTINATIONS)"
    return report, targets


def streams_in_flight(settings: Settings) -> int:
    """How many objects may stream at once: each holds up to 1 + (QUEUE_DEPTH + 1) x destinations
    streamed to pieces of STREAM_CHUNK_MB, and together they stay within STREAM_MEMORY_SHARE of the memory."""
    from .streaming import QUEUE_DEPTH

    # FANOUT=copy streams to the primary only (the others are copied server-side afterwards).
    streamed_to = 1 if settings.fanout == "copy" else max(1, len(settings.destinations))
    per_object = settings.stream_chunk * (1 + (QUEUE_DEPTH + 1) * streamed_to)
    budget = settings.memory_mb * 1024 * 1024 * STREAM_MEMORY_SHARE
    return max(1, min(settings.object_concurrency, int(budget // per_object)))


def fingerprint_of(held: HeldObject) -> Fingerprint:
    """What a verified copy in Cloud Storage holds: what copies made from it must hold."""
    proof = held.source.proof if held.source else None
    return Fingerprint(held.size, held.crc32c, held.md5, Plan(proof or NONE))


def _event_matches(ref: ObjectRef, obj: SourceObject) -> bool:
    """Whether the state read is the one the event announced (so its sequencer applies)."""
    if ref.version_id:
        return ref.version_id == obj.version_id
    return ref.etag is not None and ref.etag == obj.etag

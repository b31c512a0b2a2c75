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
from .destination import HeldObject, RewriteRefused, Writer
from .errors import ChecksumMismatch, GcsSyncError, PreconditionFailed, SourceChanged, SourceGone, StagingError
from .events import ObjectRef, printable
from .metadata import SourceState, object_name_problem
from .ordering import compare_sequencers
from .plan import AGAIN, ASK_SOURCE, CURRENT, SUPERSEDED, Final, Write, plan_for, resolve
from .plan import Plan as SlotPlan
from .proof import CRC32C, NONE, Fingerprint, Plan, check_copy
from .slices import SLICED, Slicer
from .source import Source, SourceObject
from .streaming import SessionLost
from .ways import ServerCopy, StagedUpload, StreamedUpload, Way

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
KEPT = "kept"  # a delete that did not apply: the copy is newer, foreign, or the source is back
ABSENT = "already_absent"
SKIPPED = "skipped"
FAILED = "failed"
OUTCOME_ORDER = (COPIED, REPAIRED, SLICED, DELETED, SUPERSEDED, CURRENT, KEPT, ABSENT)


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
    finished: float = 0.0  # time.time() when the result was made (a copy: when it was proven)

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


@dataclass(eq=False)
class Slot:
    """One destination of one object: where it goes, what is there, the plan, what came of it."""

    destination: Destination
    name: str
    held: HeldObject | None = None
    plan: SlotPlan | None = None
    written: HeldObject | None = None  # set by a way of writing
    error: GcsSyncError | None = None  # set by a way of writing
    result: DestinationResult | None = None
    started: float = field(default_factory=time.monotonic)  # for the result's seconds

    @property
    def where(self) -> str:
        return f"gs://{self.destination.bucket}/{self.name}"


class Copier:
    """One object -> every destination: look, decide (``plan.plan_for``), write one of three ways
    (``ways``), prove every copy, report.

    With ``FANOUT=copy`` and several destinations the bytes leave AWS once: they are uploaded to
    one destination (the primary) and copied server-side from that verified copy to the others.
    """

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
        self._no_server_copy: set[str] = set()  # destinations that refused a server-side copy (403)
        self._lock = threading.Lock()
        # Objects too large for one invocation; their other destinations are copied by copy_within.
        self.slicer = Slicer(settings, source, writer, self.deadline, copy_within=self.copy_within)

    def remember(self, destination: Destination, name: str) -> None:
        """``name`` is known to exist at ``destination``: copies to it look before writing."""
        self._known.add((destination, name))

    @property
    def refused_server_copies(self) -> list[str]:
        """Destinations this container writes by upload because they refused a server-side copy."""
        with self._lock:
            return sorted(self._no_server_copy)

    def copy_all(self, refs: Sequence[ObjectRef], staging: Staging) -> list[ObjectReport]:
        """Copy (or, for removed refs, mirror the delete of) every ref; one report each, in order."""

        def one(ref: ObjectRef) -> ObjectReport:
            return self.delete(ref) if ref.removed else self.copy(ref, staging)

        if len(refs) == 1:
            return [one(refs[0])]
        return list(self._objects.map(one, refs))

    def copy(self, ref: ObjectRef, staging: Staging) -> ObjectReport:
        report, targets = self._targets(ref)
        slots = [Slot(d, n) for d, n in targets]
        if slots and self.deadline.expired():
            for slot in slots:
                slot.result = self._failed(slot, retryable=True, error=(
                    f"{ref.url}: not started, the invocation's time ran out; Lambda's retry copies it "
                    "(raise the function's timeout if this repeats)"))
        elif slots:
            try:
                self._copy_slots(ref, slots, staging)
            except SourceGone as exc:
                report.skipped = f"source gone: {exc}"
                slots = []
        for slot in slots:
            if slot.result.outcome in (COPIED, REPAIRED, CURRENT, SUPERSEDED):
                self.remember(slot.destination, slot.name)
        report.results.extend(slot.result for slot in slots)
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

    def copy_within(self, origin: tuple[Destination, str, int], fingerprint: Any, obj: SourceObject,
                    state: SourceState, targets: list[tuple[Destination, str]]) -> list[DestinationResult]:
        """Server-side copies from a verified copy (``origin``: destination, name, generation) to
        ``targets``, planned, written and proven as any other copy. A target that would need the
        bytes again (the origin replaced, a refused server-side copy) fails, retryable."""
        slots = [Slot(d, n) for d, n in targets]
        try:
            for slot in slots:
                self._replan(slot, state, self._held(slot))
            writes = [s for s in slots if isinstance(s.plan, Write) and s.result is None]
            self._server_copies(Slot(origin[0], origin[1]), origin[2], fingerprint, writes, obj, state, fallback=None)
        except SourceGone as exc:
            for slot in slots:
                slot.result = slot.result or self._result(slot.destination, slot.name, SKIPPED, detail=str(exc))
        for slot in slots:
            if slot.result is None:
                slot.result = self._failed(slot, retryable=True, error=(
                    f"{slot.where}: not copied from gs://{origin[0].bucket}/{origin[1]} "
                    f"({slot.error or 'it changed meanwhile'}); the retry copies it"))
        return [slot.result for slot in slots]

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

    # ------------------------------------------------------------------ one object

    def _copy_slots(self, ref: ObjectRef, slots: list[Slot], staging: Staging) -> None:
        """Give every slot a result. The source is read again (up to SOURCE_ATTEMPTS times) for the
        slots whose write needs it: the source moved on, or a write that cannot be repeated was refused."""
        pending = slots
        for attempt in range(SOURCE_ATTEMPTS):
            # What each destination holds is looked up while S3 answers the GET: its headers give
            # the state to decide on, its body is read only when some destination needs it.
            as_new = attempt == 0 and ref.size is not None and ref.size <= WRITE_AS_NEW_MAX
            lookups = {slot: None if as_new and (slot.destination, slot.name) not in self._known
                       else self._destinations.submit(self._held, slot) for slot in pending}
            try:
                obj, body = self.source.open(ref.bucket, ref.key, ref.version_id)
            except GcsSyncError as exc:
                for future in lookups.values():
                    if future is not None:
                        future.result()
                if isinstance(exc, SourceGone):
                    raise
                for slot in pending:
                    slot.result = self._failed(slot, error=str(exc), retryable=exc.retryable)
                return
            try:
                pending = self._settle(ref, obj, body, pending, lookups, staging)
            finally:
                body.close()  # unread when no destination needed it
            if not pending:
                return
        for slot in pending:
            slot.result = self._failed(slot, retryable=True, error=(
                f"{ref.url}: the source kept changing during the copy ({SOURCE_ATTEMPTS} attempts); "
                "the next event or retry copies its latest state"))

    def _settle(self, ref: ObjectRef, obj: SourceObject, body: Any, slots: list[Slot], lookups: dict,
                staging: Staging) -> list[Slot]:
        """Plan each slot for the state read and write those that need it; return the slots to
        start again with a new read."""
        for field_name in obj.unmapped:
            log.info("source field not mapped", extra={"fields": {"source": obj.url, "field": field_name}})
        state = obj.state(sequencer=ref.sequencer if _event_matches(ref, obj) else None)
        again: list[Slot] = []
        for slot in slots:
            if lookups[slot] is not None:
                held = lookups[slot].result()
            else:  # not looked up: written as new, unless the object grew past the size the event gave
                held = self._held(slot) if obj.size > WRITE_AS_NEW_MAX else None
            self._replan(slot, state, held)
            if slot.plan is AGAIN:
                again.append(slot)
        writes = [slot for slot in slots if isinstance(slot.plan, Write) and slot.result is None]
        if writes:
            try:
                again += self._write(obj, body, state, slots, writes, staging)
            except SourceChanged:
                return again + writes
            except GcsSyncError as exc:
                if isinstance(exc, SourceGone):
                    raise
                for slot in writes:
                    if slot.result is None:
                        slot.result = self._failed(slot, error=str(exc), retryable=exc.retryable)
        return again

    def _held(self, slot: Slot) -> HeldObject | None | GcsSyncError:
        try:
            return self.writer.held(slot.destination, slot.name)
        except GcsSyncError as exc:
            return exc

    def _replan(self, slot: Slot, state: SourceState, held: HeldObject | None | GcsSyncError) -> None:
        """The slot's plan from what it holds (S3 asked when the metadata cannot tell); a plan that
        writes nothing also gives the slot its result."""
        slot.result = None
        if isinstance(held, GcsSyncError):
            if isinstance(held, SourceGone):
                raise held
            slot.plan, slot.result = None, self._failed(slot, error=str(held), retryable=held.retryable)
            return
        slot.held = held
        try:
            plan = plan_for(state, held)
            if plan is ASK_SOURCE:  # same second, no comparable sequencer: S3 knows which is current
                plan = resolve(state, held, self.source.head(state.bucket, state.key).state())
        except SourceGone:
            raise  # deleted while we looked: the object is skipped, not failed
        except GcsSyncError as exc:
            slot.plan, slot.result = None, self._failed(slot, error=str(exc), retryable=exc.retryable)
            return
        slot.plan = plan
        if isinstance(plan, Write) and plan.repair:
            log.warning("copy disagrees with its provenance", extra={"fields": {
                "source": obj_url(state), "object": slot.where, "problem": held.disagreement()}})
        if isinstance(plan, Final):
            slot.result = self._result(slot.destination, slot.name, plan.outcome, started=slot.started,
                                       proof=plan.proof)

    # ------------------------------------------------------------------ writing

    def _write(self, obj: SourceObject, body: Any, state: SourceState, slots: list[Slot], writes: list[Slot],
               staging: Staging) -> list[Slot]:
        """Write ``writes`` (each planned Write): upload to the primary, copy server-side to the
        others (FANOUT=copy), or upload to every one. Returns the slots to start again."""
        origin, uploads, copies = self._fan_out_plan(slots, writes)
        again: list[Slot] = []
        if origin is not None:  # a destination already holds exactly this state, verified: no bytes read
            again = self._server_copies(origin, origin.held.generation, _fingerprint_of(origin.held), copies, obj,
                                        replace(state, crc32c=origin.held.source.crc32c or origin.held.crc32c,
                                                proof=origin.held.source.proof), fallback=None)
            if not uploads:
                return again
            copies = []  # the rest (destinations that refuse server-side copies) are uploaded below
        if self.slicer.must_slice(obj):  # raises TooLarge (permanent) when it cannot be copied here
            return self._sliced(obj, state, uploads + copies) + again
        if obj.size < self.settings.stream_threshold and staging.fits(obj.size):
            try:
                with staging.file(obj.size, obj.url) as path:
                    with open(path, "wb") as sink:
                        reading = self.source.read_into(obj, sink, body)
                    state = replace(state, crc32c=reading.crc32c_b64, proof=reading.plan.proof)
                    upload = StagedUpload(self.writer, self._destinations, path, obj, state, reading)
                    again += self._apply(upload, uploads, state)
                    return again + self._after_upload(uploads, copies, obj, state, reading, fallback=upload)
            except StagingError as exc:  # no room next to the objects in flight: stream instead
                log.info("streaming instead of staging", extra={"fields": {"source": obj.url, "reason": str(exc)}})
                body = None  # partly read into the staged file: read again, pinned
        plan = obj.plan
        state = replace(state, proof=plan.proof,
                        crc32c=plan.expected if plan.proof == CRC32C and not plan.per_part else None)
        with self._streams:  # at most streams_in_flight objects stream at once
            stream = StreamedUpload(self.writer, self.source, self._destinations, obj, body, state,
                                    self.settings.stream_chunk)
            again += self._apply(stream, uploads, state)
        return again + self._after_upload(uploads, copies, obj, state, stream.fingerprint, fallback=None)

    def _sliced(self, obj: SourceObject, state: SourceState, writes: list[Slot]) -> list[Slot]:
        """Queue the object's slices (``slices``): composed into the primary destination, then copied
        server-side to the others, by the invocations that receive them."""
        primary = next((s for s in writes if s.destination.url == self.settings.primary_destination), writes[0])
        plan, count = self.slicer.plan(obj, state, primary.destination, primary.name, primary.plan.generation)
        for slot in writes:
            slot.result = self._result(slot.destination, slot.name, SLICED, started=slot.started, detail=(
                f"{count} slices queued (plan {plan}); the invocation that composes them reports the copy"))
        return []

    def _fan_out_plan(self, slots: list[Slot], writes: list[Slot]) -> tuple[Slot | None, list[Slot], list[Slot]]:
        """(origin, uploads, copies). ``origin``: a slot already holding exactly this state, verified,
        to copy from without reading the source; else the primary is uploaded and the others copied."""
        if self.settings.fanout != "copy" or len(slots) < 2:
            return None, writes, []
        with self._lock:
            direct = [s for s in writes if s.destination.url in self._no_server_copy]
        copyable = [s for s in writes if s not in direct]
        if not copyable:
            return None, writes, []
        primary = self.settings.primary_destination
        current = [s for s in slots if isinstance(s.plan, Final) and s.plan.outcome == CURRENT and s.held]
        current.sort(key=lambda s: s.destination.url != primary)
        if current and (primary is None or current[0].destination.url == primary
                        or primary not in {s.destination.url for s in writes}):
            return current[0], direct, copyable
        first = next((s for s in copyable if s.destination.url == primary), copyable[0])
        return None, [first] + direct, [s for s in copyable if s is not first]

    def _after_upload(self, uploads: list[Slot], copies: list[Slot], obj: SourceObject, state: SourceState,
                      fingerprint: Any, fallback: Way | None) -> list[Slot]:
        """The server-side copies from the primary's upload, once it is written and proven."""
        if not copies:
            return []
        primary = uploads[0]
        outcome = primary.result.outcome if primary.result else None
        if outcome in (COPIED, REPAIRED):
            return self._server_copies(primary, primary.written.generation, fingerprint, copies, obj, state, fallback)
        if outcome == CURRENT and primary.held is not None:  # another writer put exactly this state there
            return self._server_copies(primary, primary.held.generation, _fingerprint_of(primary.held), copies,
                                       obj, state, fallback)
        if outcome == FAILED and fallback is not None:
            # The primary failed on its own (refused, throttled): the next destination becomes the
            # primary, uploaded from the same staged file, and the rest are copied from it.
            log.info("primary destination failed; uploading to the next", extra={"fields": {
                "object": primary.where, "error": primary.result.error}})
            again = self._apply(fallback, copies[:1], state)
            return again + self._after_upload(copies[:1], copies[1:], obj, state, fingerprint, fallback)
        # The primary failed (the stream is spent), holds a newer state, or must be read again:
        # the others are planned again with a new read, and one of them is uploaded.
        return copies

    def _server_copies(self, origin: Slot, generation: int, fingerprint: Any, copies: list[Slot],
                       obj: SourceObject, state: SourceState, fallback: Way | None) -> list[Slot]:
        way = ServerCopy(self.writer, self._destinations, (origin.destination, origin.name, generation), obj,
                         state, fingerprint)
        again = self._apply(way, copies, state)
        refused = [slot for slot in copies if isinstance(slot.error, RewriteRefused) and slot.result is None]
        for slot in refused:
            self._refuse_server_copies(slot)
        if refused and fallback is not None:
            again += self._apply(fallback, refused, state)
        elif refused:
            again += refused  # uploaded after a new read (this destination now takes uploads)
        return again

    def _refuse_server_copies(self, slot: Slot) -> None:
        with self._lock:
            first = slot.destination.url not in self._no_server_copy
            self._no_server_copy.add(slot.destination.url)
        if first:
            log.warning("server-side copy refused; uploading to this destination instead", extra={"fields": {
                "destination": slot.destination.url, "error": str(slot.error)}})

    def _apply(self, way: Way, slots: list[Slot], state: SourceState) -> list[Slot]:
        """Write ``slots`` one way, under the one policy for every way: a finished copy is proven
        (and removed if it fails); a 412 means look again and decide again; a lost session or a
        write still due after a 412 is written again (or read again, when the way cannot repeat).
        Returns the slots to start again with a new read; a refused server-side copy is left to the
        caller (``slot.error``, no result)."""
        again: list[Slot] = []
        todo = slots
        for _ in range(WRITE_ATTEMPTS):
            if not todo:
                return again
            way.write(todo)
            retry: list[Slot] = []
            for slot in todo:
                error = slot.error
                if error is None:
                    slot.result = self._proven(slot, way.fingerprint)
                elif isinstance(error, PreconditionFailed):
                    self._replan(slot, state, self._held(slot))
                    if isinstance(slot.plan, Write):
                        (retry if way.repeatable else again).append(slot)
                    elif slot.plan is AGAIN:
                        again.append(slot)
                elif isinstance(error, SessionLost):
                    log.info("upload session lost", extra={"fields": {"object": slot.where, "error": str(error)}})
                    (retry if way.repeatable else again).append(slot)
                elif not isinstance(error, RewriteRefused):
                    slot.result = self._failed(slot, error=str(error), retryable=error.retryable)
            todo = retry
        for slot in todo:
            slot.result = self._failed(slot, retryable=True, error=(
                f"{slot.where}: other writers kept replacing the object ({WRITE_ATTEMPTS} attempts); "
                "the next event or retry settles it"))
        return again

    def _proven(self, slot: Slot, fingerprint: Any) -> DestinationResult:
        """The one check of a finished copy, whatever wrote it; a copy that fails it is removed."""
        written = slot.written
        try:
            check_copy(slot.where, size=written.size, crc32c=written.crc32c, md5=written.md5, reading=fingerprint)
        except ChecksumMismatch as exc:
            return self._failed(slot, retryable=True, error=f"{exc}; {self._discard(slot, written.generation)}")
        return self._result(slot.destination, slot.name, slot.plan.outcome, nbytes=fingerprint.size,
                            started=slot.started, proof=fingerprint.plan.proof)

    def _discard(self, slot: Slot, generation: int) -> str:
        """Remove a copy that failed its check; say what became of it."""
        if generation and self.writer.discard(slot.destination, slot.name, generation):
            return "the copy was removed and will be written again"
        return ("the destination still holds this bad copy (it could not be removed); the next event "
                "or sync rewrites it")

    def _failed(self, slot: Slot, *, error: str, retryable: bool) -> DestinationResult:
        return self._result(slot.destination, slot.name, FAILED, error=error, retryable=retryable,
                            started=slot.started)

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
            finished=time.time(),
        )

    def close(self) -> None:
        self._objects.shutdown(wait=False)
        self._destinations.shutdown(wait=False)


def streams_in_flight(settings: Settings) -> int:
    """How many objects may stream at once: each holds up to 1 + (QUEUE_DEPTH + 1) x destinations
    streamed to pieces of STREAM_CHUNK_MB, and together they stay within STREAM_MEMORY_SHARE of the memory."""
    from .streaming import QUEUE_DEPTH

    # FANOUT=copy streams to the primary only (the others are copied server-side afterwards).
    streamed_to = 1 if settings.fanout == "copy" else max(1, len(settings.destinations))
    per_object = settings.stream_chunk * (1 + (QUEUE_DEPTH + 1) * streamed_to)
    budget = settings.memory_mb * 1024 * 1024 * STREAM_MEMORY_SHARE
    return max(1, min(settings.object_concurrency, int(budget // per_object)))


def obj_url(state: SourceState) -> str:
    return f"s3://{state.bucket}/{state.key}"


def _fingerprint_of(held: HeldObject) -> Fingerprint:
    """What a verified copy in Cloud Storage holds: what copies made from it must hold."""
    proof = held.source.proof if held.source else None
    return Fingerprint(held.size, held.crc32c, held.md5, Plan(proof or NONE))


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

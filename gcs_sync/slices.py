"""Objects too large for one invocation: slices copied by parallel invocations, composed in
Cloud Storage and proven, with no coordinator.

The invocation that sees the event plans the object (``Slicer.plan``): byte ranges aligned with the
S3 object's parts when it was uploaded in parts (each slice then carries its parts' digests), else
``SLICE_MB`` ranges. Each slice is one message on the function's own queue (``SLICE_QUEUE_URL``),
pinned to the source state the plan saw. The function receives those messages like any other SQS
message (``Slicer.run``):

1. ranged GET of the slice, pinned to the version / ETag (a changed source abandons the plan: its
   temporary objects are removed, the newer state's own event copies it);
2. upload to ``RESERVED_PREFIX<plan>/s<index>`` in the primary destination's bucket, only if
   absent (a duplicate delivery writes nothing new), its CRC32C checked by Cloud Storage;
3. list the plan's prefix: whoever sees every slice present composes them (32 per call, in
   levels), into the final name under the ordering rule's preconditions, with the full metadata
   and provenance. Concurrent finishers settle by precondition: a 412 whose final object already
   holds this state, proven, is success;
4. the final object is proven (size, the CRC32C combined from the slices', S3's whole-object
   record when it can be rebuilt from the slices), the temporary objects are deleted and the
   other destinations get a server-side copy of it.

State lives only in the messages and in Cloud Storage.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from .config import MIB, Destination, Settings
from .deadline import Deadline
from .destination import GcsWriter, SliceStore, TempObject
from .errors import ChecksumMismatch, DestinationError, GcsSyncError, PreconditionFailed, SourceChanged, SourceGone
from .events import SliceTask
from .metadata import SourceState, format_time, parse_time, user_metadata
from .ordering import same_state
from .plan import Write
from .proof import (CRC32, CRC32C, CRC64NVME, MULTIPART_ETAG, NONE, Fingerprint, Plan, Reading, S3Record,
                    combine_b64, hasher)
from .results import COPIED, CURRENT, FAILED, HELD, REPAIRED, SLICED, DestinationResult, ObjectReport, log_result
from .source import SourceObject
from .staging import Staging
from .ways import Compose, Slot

log = logging.getLogger(__name__)

RESERVED_PREFIX = ".gcs-sync-slices/"  # in the primary destination's bucket; a lifecycle rule removes leftovers
COMPOSE_MAX = 32  # sources per compose call
ROUNDS = 2  # a plan whose slices fail the whole-object proof is queued once more, then fails
SEND_BATCH = 10  # SendMessageBatch's limit
WRITE_ATTEMPTS = 5

SLICE_PLAN = "gcs-sync-slice-plan"
SLICE_RANGE = "gcs-sync-slice-range"
SLICE_PARTS = "gcs-sync-slice-parts"  # the S3 parts' digests (MD5 hex or checksum base64), comma-separated
SLICE_WHOLE = "gcs-sync-slice-crc"  # the slice's CRC32 / CRC64NVME (base64), when that is S3's full-object record
_SLICE_NAME = re.compile(r"^s(\d{5})$")



# ------------------------------------------------------------------ planning (pure)

@dataclass(frozen=True)
class Range:
    """One slice's byte range [start, end) of the object, and the S3 parts it holds."""

    start: int
    end: int
    parts: tuple[int, ...] = ()  # S3 part sizes within the range (aligned slices)
    first_part: int = 0


def slice_ranges(size: int, slice_bytes: int, part_sizes: list[int] | None = None) -> list[Range]:
    """Byte ranges covering ``size``: whole S3 parts grouped up to ``slice_bytes`` (a part larger
    than that is one slice of its own: parts are at most 5 GiB), else ``slice_bytes`` each."""
    if slice_bytes <= 0:
        raise ValueError("slice size must be positive")
    if part_sizes:
        if sum(part_sizes) != size:
            raise ValueError(f"the parts add up to {sum(part_sizes)} bytes, not {size}")
        ranges: list[Range] = []
        start, group, first = 0, [], 1
        for number, part in enumerate(part_sizes, 1):
            if sum(group) and part and sum(group) + part > slice_bytes:  # an empty part never is a slice of its own
                ranges.append(Range(start, start + sum(group), tuple(group), first))
                start, group, first = start + sum(group), [], number
            group.append(part)
        ranges.append(Range(start, start + sum(group), tuple(group), first))
        return ranges
    if size == 0:
        return [Range(0, 0)]
    return [Range(s, min(s + slice_bytes, size)) for s in range(0, size, slice_bytes)]


def plan_id(obj: SourceObject, destination: str = "", name: str = "") -> str:
    """The same source state planned again (a duplicate event, a retry) gets the same id; the id
    covers everything the final object takes from a task (state, destination, name), so a task
    whose fields were changed no longer matches its id."""
    text = "\n".join((obj.bucket, obj.key, obj.version_id or "", obj.etag, str(obj.size), destination, name))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def slice_name(plan: str, index: int) -> str:
    return f"{RESERVED_PREFIX}{plan}/s{index:05d}"


# ------------------------------------------------------------------ one slice's digests

class SliceReading(Reading):
    """The CRC32C of the slice, its parts' digests (when S3's record is per part), and its CRC32 /
    CRC64NVME when that is S3's full-object record (combined from the slices' at the end)."""

    def __init__(self, object_plan: Plan, parts: tuple[int, ...]):
        per_part = object_plan.per_part and bool(parts)
        super().__init__(Plan(object_plan.proof, None, len(parts)) if per_part else Plan(NONE), list(parts))
        self.whole = hasher(object_plan.proof) if ((not object_plan.per_part or object_plan.undecided) and
                                                   object_plan.proof in (CRC32, CRC64NVME)) else None

    def update(self, chunk: bytes) -> None:
        super().update(chunk)
        if self.whole is not None:
            self.whole.update(chunk)

    def part_digests(self) -> list[str]:
        if self.plan.proof == MULTIPART_ETAG:
            return [d.hex() for d in self._part_digests]
        return [base64.b64encode(d).decode("ascii") for d in self._part_digests]

    def whole_b64(self) -> str | None:
        return base64.b64encode(self.whole.digest()).decode("ascii") if self.whole is not None else None


@dataclass
class SliceOutcome:
    """What one slice message came to: ``slice`` (this slice stored), ``composed`` (this one
    composed the object), ``done`` (nothing left to do), ``abandoned`` (the source changed)."""

    kind: str
    task: SliceTask
    report: Any = None  # transfer.ObjectReport of a composed object (or of a fan-out finished later)


def _object_of(task: SliceTask) -> SourceObject:
    record = task.record or {}
    return SourceObject(
        bucket=task.bucket, key=task.key, version_id=task.version_id, etag=task.etag, size=task.size,
        last_modified=parse_time(task.last_modified), headers=dict(task.headers),
        user_metadata=dict(task.user_metadata),
        record=S3Record(etag=str(record.get("etag") or task.etag.lower()),
                        checksums=tuple((str(a), str(v)) for a, v in record.get("checksums") or ()),
                        checksum_type=record.get("type"), etag_is_digest=bool(record.get("digest", True))),
    )


def whole_proof(plan: Plan) -> str:
    """The S3 record a sliced copy is proven against: what can be rebuilt from the slices."""
    if plan.per_part or plan.proof in (CRC32C, CRC32, CRC64NVME):
        return plan.proof
    return NONE  # an MD5 / SHA-1 / SHA-256 of the whole cannot be combined from slices


class SliceQueue:
    """The function's own work queue (``SLICE_QUEUE_URL``): slice tasks are sent in batches."""

    def __init__(self, settings: Settings, sqs: Any = None):
        self.settings = settings
        self._sqs = sqs
        self._lock = threading.Lock()

    def send(self, tasks: list[SliceTask]) -> None:
        sqs = self._client()
        for first in range(0, len(tasks), SEND_BATCH):
            batch = {str(t.index): t for t in tasks[first:first + SEND_BATCH]}
            for attempt in range(3):
                try:
                    answer = sqs.send_message_batch(QueueUrl=self.settings.slice_queue_url, Entries=[
                        {"Id": i, "MessageBody": t.body()} for i, t in batch.items()])
                except Exception as exc:  # noqa: BLE001 - botocore's, translated here
                    raise DestinationError(
                        f"SLICE_QUEUE_URL {self.settings.slice_queue_url}: could not queue slices "
                        f"({type(exc).__name__}: {str(exc)[:200]}). The function's role needs sqs:SendMessage on "
                        "its own queue (the template grants it); will retry", retryable=True) from exc
                batch = {f["Id"]: batch[f["Id"]] for f in answer.get("Failed", []) if f.get("Id") in batch}
                if not batch:
                    break
            if batch:
                raise DestinationError(f"SLICE_QUEUE_URL: SQS refused {len(batch)} slice message(s); will retry",
                                       retryable=True)

    def _client(self) -> Any:
        with self._lock:
            if self._sqs is None:
                from botocore.config import Config

                from . import aws

                region = _queue_region(self.settings.slice_queue_url or "") or None
                self._sqs = aws.client(
                    "sqs", region=region,
                    config=Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=3,
                                  read_timeout=20))
            return self._sqs


class Slicer:
    """Plans sliced copies (the invocation that sees the event) and runs slice tasks (the
    invocations that receive them)."""

    def __init__(self, settings: Settings, source: Any, writer: GcsWriter, deadline: Deadline | None = None,
                 sqs: Any = None, engine: Any = None):
        """``engine``: the copier (``transfer.Copier``): the final compose is written through its
        ``apply``, the other destinations copied by its ``copy_within``."""
        self.settings = settings
        self.engine = engine
        self.source = source
        self.writer = writer
        self.store = SliceStore(writer)
        self.deadline = deadline or Deadline()
        self.queue = SliceQueue(settings, sqs)
        self._lock = threading.Lock()

    # ------------------------------------------------------------ planning

    def plan(self, obj: SourceObject, state: SourceState, destination: Destination, name: str,
             generation: int) -> tuple[str, int]:
        """Queue one task per slice; (plan id, number of slices)."""
        ranges = self._ranges(obj)
        pid = plan_id(obj, destination.url, name)
        record = obj.record or S3Record(etag=obj.etag)
        common = dict(
            plan=pid, bucket=obj.bucket, key=obj.key, version_id=obj.version_id, etag=obj.etag, size=obj.size,
            count=len(ranges), destination=destination.url, name=name, generation=generation,
            record={"etag": record.etag, "checksums": [list(c) for c in record.checksums],
                    "type": record.checksum_type, "digest": record.etag_is_digest},
            headers=dict(obj.headers), user_metadata=dict(obj.user_metadata),
            last_modified=format_time(obj.last_modified) if obj.last_modified else None,
            sequencer=state.sequencer, planned_at=round(time.time(), 3))
        tasks = [SliceTask(index=i, start=r.start, end=r.end, parts=r.parts, first_part=r.first_part, **common)
                 for i, r in enumerate(ranges)]
        self.queue.send(tasks)
        log.info("object sliced", extra={"fields": {
            "source": obj.url, "plan": pid, "slices": len(ranges), "bytes": obj.size,
            "alignedWithParts": any(r.parts for r in ranges), "destination": f"gs://{destination.bucket}/{name}"}})
        return pid, len(ranges)

    def _ranges(self, obj: SourceObject) -> list[Range]:
        plan = obj.plan
        parts = plan.parts if plan.per_part else _parts_in_etag(obj.etag)
        sizes = self.source.part_sizes(obj, parts) if parts > 1 or plan.per_part else None
        return slice_ranges(obj.size, self.settings.slice_mb * MIB, sizes)

    # ------------------------------------------------------------ one slice task

    def run(self, task: SliceTask) -> SliceOutcome:
        """Store this slice, then compose if every slice is there. Raises ``GcsSyncError`` when the
        slice failed (SQS delivers it again). A task this function would not have planned is
        refused: nothing is written."""
        problem = refusal(self.settings, task)
        if problem is not None:
            log.error("slice task refused", extra={"fields": {
                "source": task.url, "plan": task.plan, "destination": task.destination, "object": task.name,
                "reason": problem, "next": "nothing was written; the message is dropped (metric SliceTasksRefused)"}})
            return SliceOutcome("refused", task)
        destination = next(d for d in self.settings.destinations if d.url == task.destination)
        obj = _object_of(task)
        state = replace(obj.state(sequencer=task.sequencer), crc32c=None)
        prefix = f"{RESERVED_PREFIX}{task.plan}/"
        try:
            held = self.writer.held(destination, task.name)
            if _holds(held, state):  # composed already (this message is late or a duplicate)
                return SliceOutcome("done", task, self._after_compose(task, self._pinned(task, obj), state,
                                                                      destination, held, prefix, composed=False))
            self._store_slice(task, obj, destination)
            return self._finish(task, obj, state, destination, prefix)
        except (SourceChanged, SourceGone) as exc:
            removed = self.clean(destination, prefix)
            log.warning("sliced copy abandoned: the source changed", extra={"fields": {
                "source": task.url, "plan": task.plan, "slice": task.index, "reason": str(exc),
                "temporaryObjectsRemoved": removed,
                "next": "the newer state's own event (or a sync) copies it"}})
            return SliceOutcome("abandoned", task)

    def _store_slice(self, task: SliceTask, obj: SourceObject, destination: Destination) -> None:
        name = slice_name(task.plan, task.index)
        existing = self.store.get(destination, name)
        if existing is not None and _valid_slice(existing, task):
            log.info("slice already stored", extra={"fields": {"source": task.url, "slice": task.index,
                                                                "of": task.count}})
            return
        if existing is not None:  # left by an earlier round that failed its proof
            self.store.remove(destination, existing)
        started = time.monotonic()
        reading = SliceReading(obj.plan, task.parts)
        with Staging(self.settings.staging_dir) as staging:
            with staging.file(task.end - task.start, f"{task.url} slice {task.index + 1}/{task.count}") as path:
                with open(path, "wb") as sink:
                    if task.end > task.start:
                        self.source.read_range(obj, sink, reading, task.start, task.end)
                stored = upload_slice(self.store, task, destination, name, path, reading, obj)
        if stored is None:
            return
        if stored.size != reading.size or stored.crc32c != reading.crc32c_b64:
            self.store.remove(destination, stored)
            raise ChecksumMismatch(f"gs://{destination.bucket}/{name}: Cloud Storage holds {stored.size} bytes, crc32c "
                                   f"{stored.crc32c}; the slice read has {reading.size}, {reading.crc32c_b64}; "
                                   "removed, will retry")
        log.info("slice copied", extra={"fields": {
            "source": task.url, "plan": task.plan, "slice": task.index + 1, "of": task.count,
            "bytes": reading.size, "seconds": round(time.monotonic() - started, 3)}})

    # ------------------------------------------------------------ completion

    def _finish(self, task: SliceTask, obj: SourceObject, state: SourceState, destination: Destination,
                prefix: str) -> SliceOutcome:
        present = {}
        for item in self.store.listing(destination, prefix):
            match = _SLICE_NAME.match(item.name[len(prefix):])
            if match and int(match.group(1)) < task.count:
                present[int(match.group(1))] = item
        if len(present) < task.count:
            log.info("slices present", extra={"fields": {"source": task.url, "plan": task.plan,
                                                          "present": len(present), "of": task.count}})
            return SliceOutcome("slice", task)
        slices = [present[i] for i in range(task.count)]
        obj = self._pinned(task, obj)
        crc32c, proof, problems = prove_slices(task, obj.plan, slices)
        if problems:
            self._failed_proof(task, obj, destination, prefix, problems)
        state = replace(state, crc32c=crc32c, proof=proof)
        held, composed = self._compose_final(task, obj, state, destination, slices, prefix)
        if isinstance(held, DestinationResult):  # the final name is held: reported and counted, not failed
            return SliceOutcome("done", task, ObjectReport(source=task.url, results=[held]))
        if held is None:
            return SliceOutcome("done", task)  # superseded: a newer state is there
        return SliceOutcome("composed" if composed else "done", task,
                            self._after_compose(task, obj, state, destination, held, prefix, composed=composed))

    def _failed_proof(self, task: SliceTask, obj: SourceObject, destination: Destination, prefix: str,
                      problems: list[str]) -> None:
        """The slices do not hold S3's record: removed, and queued once more (ROUNDS), else given up."""
        self.clean(destination, prefix)
        if task.round < ROUNDS:
            log.error("sliced copy failed its proof; queued again", extra={"fields": {
                "source": task.url, "plan": task.plan, "problems": problems, "round": task.round + 1}})
            self.queue.send([replace(task, index=i, round=task.round + 1, **_range_of(task, r))
                             for i, r in enumerate(self._ranges(obj))])
            raise ChecksumMismatch(f"{task.url}: the slices do not hold S3's record ({'; '.join(problems)}); "
                                   "their temporary objects were removed and every slice was queued again")
        raise ChecksumMismatch(f"{task.url}: the slices failed S3's record again ({'; '.join(problems)}); the plan is "
                               "given up and its temporary objects removed: the next event or a sync copies it")

    def _pinned(self, task: SliceTask, obj: SourceObject) -> SourceObject:
        """``obj`` with the content headers and user metadata S3 holds for this state (one HEAD), not
        the task's: what the final object and its copies carry is never the message's to decide."""
        pinned = self.source.head(task.bucket, task.key, task.version_id)
        if pinned.etag != task.etag:
            raise SourceChanged(f"{task.url}: the source is no longer the state the slices were read from")
        return replace(obj, headers=dict(pinned.headers), user_metadata=dict(pinned.user_metadata),
                       storage_class=pinned.storage_class, lock=pinned.lock)

    def _compose_final(self, task: SliceTask, obj: SourceObject, state: SourceState, destination: Destination,
                       slices: list[TempObject], prefix: str) -> Any:
        """Compose into the final name through the engine's ``apply`` (the ordering rule's plan, the
        412 policy, the proof, the discard of a bad copy); (what it then holds, composed) — (None,
        False) when a newer state is there; (the ``held`` result, False) when Cloud Storage keeps the
        current copy under a hold or retention."""
        sources = compose_levels(self.store, destination, slices, prefix)
        metadata = {**user_metadata(obj.user_metadata), **state.to_metadata()}
        slot = Slot(destination, task.name)
        self.engine.replan(slot, state, self.writer.held(destination, task.name))
        if isinstance(slot.plan, Write):
            fingerprint = Fingerprint(task.size, state.crc32c, None, Plan(state.proof or NONE))
            self.engine.apply(Compose(self.store, sources, dict(obj.headers), metadata, fingerprint,
                                      source=obj), [slot], state)
        outcome = slot.result.outcome if slot.result else None
        if outcome in (COPIED, REPAIRED):
            return slot.written, True
        if outcome == CURRENT and slot.held is not None:
            return slot.held, False  # another finisher composed it
        if outcome == FAILED:
            raise DestinationError(slot.result.error or f"{task.url}: the compose failed", retryable=slot.result.retryable)
        log.info("sliced copy not composed", extra={"fields": {
            "source": task.url, "object": slot.where, "outcome": outcome or "source moved on",
            "detail": slot.result.detail if slot.result else None}})
        self.clean(destination, prefix)
        return (slot.result if outcome == HELD else None), False

    def _after_compose(self, task: SliceTask, obj: SourceObject, state: SourceState, destination: Destination,
                       held: Any, prefix: str, *, composed: bool) -> Any:
        """Remove the temporary objects, copy to the other destinations, report."""
        removed = self.clean(destination, prefix)
        state = replace(state, crc32c=held.crc32c, proof=(held.source.proof if held.source else None) or NONE)
        fingerprint = Fingerprint(held.size, held.crc32c, None, Plan(state.proof))
        seconds = round(max(0.0, time.time() - task.planned_at), 3) if task.planned_at else 0.0
        report = ObjectReport(source=task.url)
        report.results.append(DestinationResult(
            destination.url, f"gs://{destination.bucket}/{task.name}", COPIED if composed else CURRENT,
            bytes=held.size if composed else 0, seconds=seconds, proof=state.proof,
            detail=f"composed from {task.count} slices" if composed else None))
        others = [(other, other.object_name(task.key)) for other in self.settings.destinations
                  if other != destination and other.maps(task.key)]
        if others:
            report.results.extend(self.engine.copy_within((destination, task.name, held.generation), fingerprint,
                                                          obj, state, others))
        log.info("sliced copy finished", extra={"fields": {
            "source": task.url, "plan": task.plan, "slices": task.count, "seconds": seconds, "proof": state.proof,
            "temporaryObjectsRemoved": removed}})
        for result in report.results:
            if result.outcome in (FAILED, HELD) or result.detail:
                log_result(report.source, result)
        return report

    def clean(self, destination: Destination, prefix: str) -> int:
        """Remove every temporary object of the plan; how many were removed."""
        try:
            items = self.store.listing(destination, prefix)
            for item in items:
                self.store.remove(destination, item)
            return len(items)
        except GcsSyncError as exc:
            log.warning("temporary objects not removed (the lifecycle rule removes them)", extra={"fields": {
                "prefix": f"gs://{destination.bucket}/{prefix}", "error": str(exc)}})
            return 0


def upload_slice(store: SliceStore, task: SliceTask, destination: Destination, name: str, path: str,
                  reading: "SliceReading", obj: SourceObject) -> TempObject | None:
    """The slice stored only if absent; None when a duplicate delivery stored it meanwhile."""
    if reading.size != task.end - task.start:
        raise ChecksumMismatch(f"{task.url}: read {reading.size} bytes of slice {task.index} "
                               f"({task.start}-{task.end}); will retry")
    metadata = {SLICE_PLAN: task.plan, SLICE_RANGE: f"{task.start}-{task.end}"}
    if task.parts and obj.plan.per_part:
        metadata[SLICE_PARTS] = ",".join(reading.part_digests())
    if reading.whole_b64():
        metadata[SLICE_WHOLE] = reading.whole_b64()
    try:
        return store.upload(destination, name, path, reading.crc32c_b64, metadata)
    except PreconditionFailed:  # a duplicate delivery stored it meanwhile
        stored = store.get(destination, name)
        if stored is None or not _valid_slice(stored, task):
            raise DestinationError(f"gs://{destination.bucket}/{name}: another delivery of this slice "
                                   "is writing it; will retry", retryable=True)
        return None


def refusal(settings: Settings, task: SliceTask) -> str | None:
        """Why ``task`` is not one this function would have planned (None: it is). A task names only
        what the function itself plans: an allowed source bucket, a configured destination, that
        destination's own name for the key, and the plan id of that state, destination and name."""
        allowed = settings.source_buckets
        if allowed is not None and task.bucket not in allowed:
            return f"source bucket {task.bucket!r} is not in SOURCE_BUCKETS"
        destination = next((d for d in settings.destinations if d.url == task.destination), None)
        if destination is None:
            return f"destination {task.destination} is not in GCS_DESTINATIONS"
        if not destination.maps(task.key) or destination.object_name(task.key) != task.name:
            return (f"object name {task.name!r} is not the name {destination.url} gives the key "
                    f"{task.key!r}")
        if plan_id(_object_of(task), task.destination, task.name) != task.plan:
            return f"plan id {task.plan!r} is not the id of the state, destination and name the task names"
        if not (0 <= task.index < task.count and 0 <= task.start <= task.end <= task.size):
            return f"slice {task.index} of {task.count} (bytes {task.start}-{task.end} of {task.size}) is out of range"
        return None


def prove_slices(task: SliceTask, plan: Plan, slices: list[TempObject]) -> tuple[str, str, list[str]]:
    """(combined CRC32C, proof, problems): whether the slices cover the object exactly and together
    hold S3's record of it."""
    problems = []
    end = 0
    for item in slices:
        if item.metadata.get(SLICE_PLAN) != task.plan or item.metadata.get(SLICE_RANGE) != f"{end}-{end + item.size}":
            problems.append(f"{item.name} is not bytes {end}-{end + item.size} of this plan")
        end += item.size
    if end != task.size:
        problems.append(f"the slices hold {end} bytes, the object {task.size}")
    crc32c = combine_b64(CRC32C, [(s.crc32c or "", s.size) for s in slices]) if not problems else ""
    proof = whole_proof(plan)
    if problems or proof == NONE or _whole_decides(plan, crc32c, slices):
        return crc32c, proof, problems
    if plan.per_part:
        digests = [d for s in slices for d in (s.metadata.get(SLICE_PARTS) or "").split(",") if d]
        if len(digests) != plan.parts:
            return crc32c, proof, [f"{len(digests)} part digests for the {plan.parts} parts S3 recorded"]
        combined = hasher(_part_algorithm(plan.proof))
        combined.update(b"".join(bytes.fromhex(d) if plan.proof == MULTIPART_ETAG else base64.b64decode(d)
                                 for d in digests))
        value = combined.digest()
        computed = value.hex() if plan.proof == MULTIPART_ETAG else base64.b64encode(value).decode()
    elif plan.proof == CRC32C:
        computed = crc32c
    else:
        computed = combine_b64(plan.proof, [(s.metadata.get(SLICE_WHOLE) or "", s.size) for s in slices])
    if computed != plan.expected:
        label = f"parts' {plan.proof}" if plan.per_part else f"combined {plan.proof}"
        problems.append(f"the {label} is {computed}, S3 recorded {plan.expected}")
    return crc32c, proof, problems


def compose_levels(store: SliceStore, destination: Destination, sources: list[TempObject],
                   prefix: str) -> list[TempObject]:
    """Intermediate composites under the prefix until at most COMPOSE_MAX sources are left."""
    level = 0
    while len(sources) > COMPOSE_MAX:
        level += 1
        composed = []
        for number, first in enumerate(range(0, len(sources), COMPOSE_MAX)):
            group = sources[first:first + COMPOSE_MAX]
            name = f"{prefix}c{level}-{number:05d}"
            expected = combine_b64(CRC32C, [(s.crc32c or "", s.size) for s in group])
            size = sum(s.size for s in group)
            try:
                item = store.compose(destination, group, name, 0)
            except PreconditionFailed:  # another finisher made it (or the sources are gone)
                item = store.get(destination, name)
                if item is None:
                    raise
            if item.size != size or item.crc32c != expected:
                store.remove(destination, item)
                raise DestinationError(f"gs://{destination.bucket}/{name}: composite holds {item.size} bytes, "
                                       f"crc32c {item.crc32c}; expected {size}, {expected}; removed, will retry",
                                       retryable=True)
            composed.append(item)
        sources = composed
    return sources


def _whole_decides(plan: Plan, crc32c: str, slices: list[TempObject]) -> bool:
    """An undecided plan (``proof.Plan.undecided``) whose value is the slices' combined full-object CRC."""
    if not plan.undecided:
        return False
    whole = crc32c if plan.proof == CRC32C else combine_b64(plan.proof, [(s.metadata.get(SLICE_WHOLE) or "", s.size)
                                                                        for s in slices])
    return whole == plan.expected


def _part_algorithm(proof: str) -> str:
    """The algorithm the parts' digests are combined with: MD5 for a multipart ETag."""
    return "md5" if proof == MULTIPART_ETAG else proof


def _range_of(task: SliceTask, r: Range) -> dict:
    return {"start": r.start, "end": r.end, "parts": r.parts, "first_part": r.first_part}


def _holds(held: Any, state: SourceState) -> bool:
    """Whether ``held`` is a proven copy of exactly this source state."""
    return bool(held is not None and held.source is not None and same_state(held.source, state)
                and not held.disagreement())


def _valid_slice(item: TempObject, task: SliceTask) -> bool:
    return (item.metadata.get(SLICE_PLAN) == task.plan and item.size == task.end - task.start
            and item.metadata.get(SLICE_RANGE) == f"{task.start}-{task.end}" and bool(item.crc32c))


def _parts_in_etag(etag: str) -> int:
    match = re.match(r"^[0-9a-fA-F]{32}-(\d+)$", etag or "")
    return int(match.group(1)) if match else 0


def _queue_region(url: str) -> str | None:
    match = re.match(r"^https?://sqs[.-]([a-z0-9-]+)\.amazonaws\.com", url)
    return match.group(1) if match else None


def parallel(tasks: list, run: Any, workers: int) -> list:
    """``run`` over ``tasks``, ``workers`` at a time, results in order (exceptions returned)."""
    def one(task: Any) -> Any:
        try:
            return run(task)
        except GcsSyncError as exc:
            return exc

    if len(tasks) <= 1:
        return [one(t) for t in tasks]
    with ThreadPoolExecutor(min(workers, len(tasks)), thread_name_prefix="gcs-sync-slice") as pool:
        return list(pool.map(one, tasks))



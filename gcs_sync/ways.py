"""The ways of writing one object's bytes to destinations, behind one interface.

Each way writes a list of slots (one destination of one object each) and records, per slot, what
Cloud Storage then holds (``slot.written``) or why not (``slot.error``); it never decides or
retries a refusal: ``transfer.Copier`` applies one policy to every way (prove the copy, look again
after a 412, fall back after a refused server-side copy).

- ``StagedUpload``: from the staged bytes, in memory or in a file under the temp dir (objects below
  the streaming threshold, ``staging``).
- ``StreamedUpload``: one read of the source feeding resumable uploads as the bytes arrive.
- ``ServerCopy``: ``objects.rewrite`` from a verified copy in Cloud Storage: no bytes leave AWS.
- ``Compose``: a sliced copy's final object, composed from its slices in Cloud Storage.

``repeatable``: whether the way can write a slot again (after a 412 or a lost session) without
reading the source again.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from .config import Destination
from .deadline import Deadline
from .errors import GcsSyncError
from .held import HeldObject
from .metadata import POLICY, SourceState, policy_resource
from .results import FAILED, DestinationResult, result
from .source import Source, SourceObject
from .streaming import ChunkSink, Feeder

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Slot:
    """One destination of one object: where it goes, what is there, the plan, what came of it."""

    destination: Destination
    name: str
    held: HeldObject | None = None
    plan: Any = None  # plan.Plan
    written: HeldObject | None = None  # set by a way of writing
    error: GcsSyncError | None = None  # set by a way of writing
    result: DestinationResult | None = None
    started: float = field(default_factory=time.monotonic)  # for the result's seconds

    @property
    def where(self) -> str:
        return f"gs://{self.destination.bucket}/{self.name}"

    def finish(self, outcome: str, **details: Any) -> None:
        self.result = result(self.destination, self.name, outcome, started=self.started, **details)

    def fail(self, error: str, retryable: bool) -> None:
        self.finish(FAILED, error=error, retryable=retryable)


class Way(Protocol):
    repeatable: bool
    fingerprint: Any  # what every copy must hold: the source's Reading, or the origin copy's Fingerprint

    def write(self, slots: list) -> None: ...


def _each(pool: Executor, slots: list, write_one: Callable[[Any], Any]) -> None:
    def run(slot: Any) -> None:
        slot.written, slot.error = None, None
        try:
            slot.written = write_one(slot)
        except GcsSyncError as exc:
            slot.error = exc

    if len(slots) == 1:
        run(slots[0])
    else:
        list(pool.map(run, slots))


class StagedUpload:
    """An upload per slot of the staged object: ``content`` is its bytes (staged in memory) or the
    path of its staged file (``staging``)."""

    repeatable = True

    def __init__(self, writer: Any, pool: Executor, content: bytes | str, obj: SourceObject, state: SourceState,
                 reading: Any):
        self._writer, self._pool, self._content = writer, pool, content
        self._obj, self._state, self.fingerprint = obj, state, reading

    def write(self, slots: list) -> None:
        _each(self._pool, slots, lambda slot: self._writer.upload(
            slot.destination, slot.name, self._content, self._obj, self._state, self.fingerprint,
            if_generation_match=slot.plan.generation))


class ServerCopy:
    # Not repeated after a 412: the refusal may be the origin's (overwritten since it was verified,
    # ifSourceGenerationMatch); a write still due then starts again from a new read.
    repeatable = False

    def __init__(self, writer: Any, pool: Executor, origin: tuple, obj: SourceObject, state: SourceState,
                 fingerprint: Any):
        """``origin``: (destination, name, generation) of the verified copy copied from."""
        self._writer, self._pool, self.origin = writer, pool, origin
        self._obj, self._state, self.fingerprint = obj, state, fingerprint

    def write(self, slots: list) -> None:
        _each(self._pool, slots, lambda slot: self._writer.rewrite(
            self.origin, slot.destination, slot.name, self._obj, self._state,
            if_generation_match=slot.plan.generation))


class StreamedUpload:
    """Reads the source once (``body``: the unread body of the GET ``obj`` came from), feeding a
    resumable upload per slot; the last chunk is sent only after the read is proven, so a bad read
    finalizes nothing. Raises what the read raises (every slot then shares that failure)."""

    repeatable = False

    def __init__(self, writer: Any, source: Source, pool: Executor, obj: SourceObject, body: Any,
                 state: SourceState, chunk_size: int, deadline: Deadline | None = None):
        self._writer, self._source, self._pool = writer, source, pool
        self._obj, self._body, self._state, self._chunk = obj, body, state, chunk_size
        self._deadline = deadline or Deadline()
        self.fingerprint: Any = None

    def write(self, slots: list) -> None:
        feeders = [(slot, Feeder(self._writer.open_stream(slot.destination, slot.name, self._obj, self._state,
                                                           slot.plan.generation, self._chunk)))
                   for slot in slots]
        running = [self._pool.submit(feeder.run) for _, feeder in feeders]

        def emit(offset: int, piece: bytes) -> None:
            for _, feeder in feeders:
                feeder.put(offset, piece)

        sink = ChunkSink(self._chunk, emit)
        try:
            self.fingerprint = self._source.read_into(self._obj, sink, self._body)
        except BaseException:
            for _, feeder in feeders:
                feeder.close()  # without the last chunk: nothing is finalized
            for future in running:
                future.result()
            for slot, feeder in feeders:
                self._cancel(slot, feeder)
            raise
        for _, feeder in feeders:
            feeder.stream.finish_with(self.fingerprint.crc32c_b64, self.fingerprint.md5_b64)
            feeder.put(*sink.last())
            feeder.close()
        for future in running:
            future.result()
        for slot, feeder in feeders:
            slot.written, slot.error = (None, feeder.error) if feeder.error else (feeder.stream.written(), None)
            if feeder.error is not None:
                self._cancel(slot, feeder)

    def _cancel(self, slot: Any, feeder: Any) -> None:
        """Cancel an unfinished session; also once the deadline has stopped it (the session would
        otherwise stay open until Cloud Storage expires it)."""
        late = self._deadline.expired()
        feeder.stream.cancel(force=late)
        if late:
            log.info("upload session cancelled: the invocation's time ran out", extra={"fields": {
                "object": slot.where}})


class Compose:
    """A sliced copy's final object: ``sources`` (at most 32 slices or composites, each pinned to its
    generation) composed into the slot's name under its plan's precondition, with the object's
    content headers and metadata, and what the slot's destination options ask of the copy (class,
    custom time, hold, retention in the resource of the compose's destination; the KMS key as
    ``kmsKeyName``), taken from ``source`` (the source object as S3 answered for this state).
    Repeatable: the sources stay until the copy is proven."""

    repeatable = True

    def __init__(self, store: Any, sources: list, headers: dict, metadata: dict, fingerprint: Any,
                 source: SourceObject | None = None):
        self._store, self._sources, self._headers, self._metadata = store, sources, headers, metadata
        self._source = source
        self.fingerprint = fingerprint

    def write(self, slots: list) -> None:
        for slot in slots:
            slot.written, slot.error = None, None
            destination = slot.destination
            metadata = dict(self._metadata)
            if destination.policy:
                metadata[POLICY] = destination.policy
            source = self._source
            policy = policy_resource(destination, storage_class=source.storage_class if source else None,
                                     last_modified=source.last_modified if source else None,
                                     lock=source.lock if source else None)
            try:
                made = self._store.compose(destination, self._sources, slot.name, slot.plan.generation,
                                           self._headers, metadata, policy=policy, kms_key=destination.kms_key)
                slot.written = HeldObject(generation=made.generation, source=SourceState.from_metadata(made.metadata),
                                          size=made.size, crc32c=made.crc32c)
            except GcsSyncError as exc:
                slot.error = exc

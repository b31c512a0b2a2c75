"""What each destination needs, and which way writes it: pure functions, no I/O.

- ``plan_for`` / ``resolve``: the verdict per destination for one source state.
- ``fan_out``: which destinations are uploaded to and which are copied inside Cloud Storage;
  ``upload_each_max``: the size below which every destination is uploaded to at once.
- ``remembered_is_older``: whether a copy this container wrote can be replaced without a look.
- ``delete_verdict``: whether a mirrored delete removes a destination's copy.
- ``classify``: the audit's (and the sync's) comparison of a source object with a copy.


The plan is ``Write`` (absent, foreign, older, or a copy that disagrees with its provenance),
``Final`` (already current, or superseded by a newer copy: nothing to write), or ``ASK_SOURCE``
(the metadata cannot tell which state is newer: S3 knows which one is current). ``resolve`` turns
S3's answer into ``Write`` / ``Final``, or ``AGAIN`` when the source moved on (read it again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from .metadata import SourceState
from .ordering import Decision, compare_sequencers, decide, same_state
from .results import ABSENT, CURRENT, KEPT, SUPERSEDED

OK, MISSING, STALE, MISMATCHED, FOREIGN = "ok", "missing", "stale", "mismatched", "foreign"


@dataclass(frozen=True)
class Write:
    """The verdict for one destination: write this state over what it holds."""

    held: Any  # HeldObject | None: what the write replaces (its generation is the precondition)
    repair: bool = False  # the held copy claims this state but its size or checksums disagree

    @property
    def outcome(self) -> str:
        return "repaired" if self.repair else "copied"

    @property
    def generation(self) -> int:
        return self.held.generation if self.held else 0  # 0: only if absent


@dataclass(frozen=True)
class Final:
    """The verdict for one destination: nothing to write (already current, or superseded)."""

    outcome: str  # CURRENT or SUPERSEDED
    proof: str | None = None  # recorded on the copy that is already current


class _Marker:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


ASK_SOURCE = _Marker("ASK_SOURCE")  # undecided from metadata: ask S3 which state is current
AGAIN = _Marker("AGAIN")  # the source moved on (or the write needs the bytes again): read it again

Plan = Union[Write, Final, _Marker]


def plan_for(state: SourceState, held: Any) -> Plan:
    """``held``: the destination's ``HeldObject``, or None when nothing is there."""
    claimed = held.source if held else None
    decision = decide(state, claimed)
    if decision is Decision.WRITE:
        return Write(held)
    if decision is Decision.CURRENT:
        if held.disagreement():
            return Write(held, repair=True)
        return Final(CURRENT, claimed.proof)
    if decision is Decision.SUPERSEDED:
        return Final(SUPERSEDED)
    return ASK_SOURCE


def remembered_is_older(state: SourceState, remembered: Any) -> bool:
    """Whether ``remembered`` (what this container wrote or saw at a destination: generation and
    provenance) is, by the ordering rule, an older state than ``state``: the write can then go with
    ``ifGenerationMatch`` = its generation, without looking (a 412 says it changed since). Anything
    else (the same state, a newer one, undecided, a copy that disagrees) is looked up first."""
    plan = plan_for(state, remembered)
    return isinstance(plan, Write) and not plan.repair and plan.held is remembered


def resolve(state: SourceState, held: Any, current: SourceState) -> Plan:
    """After ``ASK_SOURCE``: ``current`` is the state S3 holds now."""
    if same_state(current, state):
        return Write(held)
    if held and held.source and same_state(current, held.source):
        return Final(SUPERSEDED)
    if state.version_id:
        return Final(SUPERSEDED)  # the event named an older version; a newer one is current
    return AGAIN


def version_replaced(event_version: str | None, read_version: str | None) -> bool:
    """Whether S3's current version (``read_version``: the current state was read) is not the one the
    event named. S3's current version is its newest, so the named version, when it still exists, is
    older: the event is superseded without a write and the current version's own event copies it;
    when the named version was deleted there is nothing of it to copy either."""
    return event_version is not None and read_version != event_version


# Below ``upload_each_max`` bytes every destination is uploaded to at once (one round trip), rather
# than uploaded to the primary and then copied server-side (two in a row): the AWS egress a
# server-side copy saves is then worth less than the function's time for the round trip it costs.
EGRESS_USD_PER_GB = 0.09  # AWS data transfer out to the internet (first 10 TB a month)
LAMBDA_USD_PER_GB_SECOND = 0.0000166667  # x86 duration
ROUND_TRIP_SAVED = 0.06  # seconds a server-side copy adds after the upload (see bench/README.md)


def upload_each_max(memory_mb: int) -> int:
    """Bytes below which one more upload costs less egress than the duration it saves at
    ``memory_mb`` of function memory: ~11 KB at 1024 MB, ~1.4 KB at 128, ~32 KB at 3008."""
    saved = ROUND_TRIP_SAVED * memory_mb / 1024 * LAMBDA_USD_PER_GB_SECOND
    return int(saved / EGRESS_USD_PER_GB * 1e9)


def fan_out(fanout: str, primary: str | None, slots: list, writes: list,
            refuse_copies: set[str], upload_each: bool = False) -> tuple[Any, list, list]:
    """(origin, uploads, copies) for the slots planned ``Write``. ``origin``: a slot already holding
    exactly this state, verified, copied from without reading the source; else the primary is
    uploaded and the others are copied from it. ``refuse_copies``: destination URLs that refused
    a server-side copy (uploaded to). ``upload_each``: a small object (``upload_each_max``), uploaded
    to every destination at once. Slots have ``destination.url``, ``plan`` and ``held``."""
    if fanout != "copy" or len(slots) < 2 or upload_each:
        return None, writes, []
    direct = [s for s in writes if s.destination.url in refuse_copies]
    copyable = [s for s in writes if s not in direct]
    if not copyable:
        return None, writes, []
    current = [s for s in slots if isinstance(s.plan, Final) and s.plan.outcome == CURRENT and s.held]
    current.sort(key=lambda s: s.destination.url != primary)
    if current and (primary is None or current[0].destination.url == primary
                    or primary not in {s.destination.url for s in writes}):
        return current[0], direct, copyable
    first = next((s for s in copyable if s.destination.url == primary), copyable[0])
    return None, [first] + direct, [s for s in copyable if s is not first]


DELETE = "delete"


def delete_verdict(bucket: str, key: str, sequencer: str | None, held: Any,
                   source_exists: Any) -> tuple[str, str | None]:
    """(DELETE or the outcome, detail) for a mirrored delete of ``s3://bucket/key`` at a destination
    holding ``held``. ``source_exists()`` is asked only when the order cannot be told."""
    if held is None:
        return ABSENT, None
    if held.source is None or (held.source.bucket, held.source.key) != (bucket, key):
        return KEPT, "not a copy of this source object; left in place"
    order = compare_sequencers(sequencer, held.source.sequencer)
    if order < 0 or (order == 0 and source_exists()):
        return KEPT, "the copy is newer than the delete; left in place"
    return DELETE, None


def classify(source: SourceState, held: Any) -> str:
    """What the destination holds for ``source``: ok, missing, stale, mismatched or foreign."""
    if held is None:
        return MISSING
    if held.source is None or (held.source.bucket, held.source.key) != (source.bucket, source.key):
        return FOREIGN
    decision = decide(source, held.source)
    if decision is Decision.CURRENT:
        return MISMATCHED if held.disagreement() else OK
    if decision is Decision.SUPERSEDED:
        return OK  # the copy is of a newer state than the listing saw: the listing is behind
    return STALE  # older, or the same second with another ETag: not the state the source holds

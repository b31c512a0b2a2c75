"""What one destination needs for one source state: a pure function of the two.

The plan is ``Write`` (absent, foreign, older, or a copy that disagrees with its provenance),
``Final`` (already current, or superseded by a newer copy: nothing to write), or ``ASK_SOURCE``
(the metadata cannot tell which state is newer: S3 knows which one is current). ``resolve`` turns
S3's answer into ``Write`` / ``Final``, or ``AGAIN`` when the source moved on (read it again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from .metadata import SourceState
from .ordering import Decision, decide, same_state

CURRENT = "already_current"
SUPERSEDED = "superseded"


@dataclass(frozen=True)
class Write:
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


def resolve(state: SourceState, held: Any, current: SourceState) -> Plan:
    """After ``ASK_SOURCE``: ``current`` is the state S3 holds now."""
    if same_state(current, state):
        return Write(held)
    if held and held.source and same_state(current, held.source):
        return Final(SUPERSEDED)
    if state.version_id:
        return Final(SUPERSEDED)  # the event named an older version; a newer one is current
    return AGAIN

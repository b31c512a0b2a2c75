"""The ordering rule: may this source state replace what a destination holds? Pure.

A copy records the source state it holds (bucket, key, version, ETag, Last-Modified, sequencer).
A candidate replaces a held copy only when it is a different state of the same source object and
it is known to be newer: by the event sequencer when both copies have one of equal length, else
by S3's Last-Modified. When neither tells (same second, no comparable sequencer) the caller asks
S3 which state is current.
"""

from __future__ import annotations

import enum
import re

from .metadata import SourceState

_HEX = re.compile(r"^[0-9A-Fa-f]+$")


class Decision(enum.Enum):
    WRITE = "write"  # absent, foreign, or older: write the candidate
    CURRENT = "already_current"  # the destination holds this very state
    SUPERSEDED = "superseded"  # the destination holds a newer state: leave it
    UNDECIDED = "undecided"  # order unknown from metadata alone: ask the source


def decide(candidate: SourceState, held: SourceState | None) -> Decision:
    if held is None or (held.bucket, held.key) != (candidate.bucket, candidate.key):
        return Decision.WRITE
    if same_state(candidate, held):
        return Decision.CURRENT
    order = compare(candidate, held)
    if order > 0:
        return Decision.WRITE
    if order < 0:
        return Decision.SUPERSEDED
    return Decision.UNDECIDED


def same_state(a: SourceState, b: SourceState) -> bool:
    if a.version_id and b.version_id:
        return a.version_id == b.version_id
    return a.etag == b.etag and a.last_modified == b.last_modified


def compare(a: SourceState, b: SourceState) -> int:
    """>0 when ``a`` is the later state, <0 when ``b`` is, 0 when the metadata cannot tell."""
    order = compare_sequencers(a.sequencer, b.sequencer)
    if order:
        return order
    if a.last_modified and b.last_modified and a.last_modified != b.last_modified:
        return 1 if a.last_modified > b.last_modified else -1
    return 0


def compare_sequencers(a: str | None, b: str | None) -> int:
    """S3 sequencers order events for one key; only equal-length values compare safely."""
    if not a or not b or len(a) != len(b) or not (_HEX.match(a) and _HEX.match(b)):
        return 0
    x, y = int(a, 16), int(b, 16)
    return (x > y) - (x < y)

"""ordering.decide: may a candidate source state replace what a destination holds?"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from gcs_sync.metadata import SourceState
from gcs_sync.ordering import Decision, compare, compare_sequencers, decide, same_state

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
T1 = T0 + timedelta(seconds=1)


def state(*, bucket="src", key="k", version=None, etag="e1", lm=T0, seq=None, size=1) -> SourceState:
    return SourceState(bucket=bucket, key=key, version_id=version, etag=etag, last_modified=lm,
                       size=size, sequencer=seq)


CASES = [
    # (id, candidate, held, expected)
    ("absent", state(), None, Decision.WRITE),
    ("other-bucket", state(seq="02"), state(bucket="other", seq="09"), Decision.WRITE),
    ("other-key", state(seq="02"), state(key="k2", seq="09"), Decision.WRITE),
    ("same-version", state(version="v1", etag="a", lm=T1), state(version="v1", etag="b", lm=T0),
     Decision.CURRENT),
    ("same-etag-and-time", state(etag="a"), state(etag="a"), Decision.CURRENT),
    ("same-etag-time-one-version", state(etag="a", version="v1"), state(etag="a"), Decision.CURRENT),
    ("different-versions-same-etag-time-no-seq", state(version="v2", etag="a"),
     state(version="v1", etag="a"), Decision.UNDECIDED),
    ("newer-sequencer", state(etag="b", seq="0055AED6DCD90281E6"), state(etag="a", seq="0055AED6DCD90281E5"),
     Decision.WRITE),
    ("older-sequencer", state(etag="b", seq="0055AED6DCD90281E4"), state(etag="a", seq="0055AED6DCD90281E5"),
     Decision.SUPERSEDED),
    ("sequencer-beats-last-modified", state(etag="b", lm=T0, seq="0B"), state(etag="a", lm=T1, seq="0A"),
     Decision.WRITE),
    ("older-sequencer-beats-last-modified", state(etag="b", lm=T1, seq="0A"), state(etag="a", lm=T0, seq="0B"),
     Decision.SUPERSEDED),
    ("sequencer-lowercase-vs-uppercase", state(etag="b", seq="0b"), state(etag="a", seq="0A"), Decision.WRITE),
    ("unequal-length-ignored-newer-lm", state(etag="b", lm=T1, seq="01"), state(etag="a", lm=T0, seq="0100"),
     Decision.WRITE),
    ("unequal-length-ignored-older-lm", state(etag="b", lm=T0, seq="0100"), state(etag="a", lm=T1, seq="01"),
     Decision.SUPERSEDED),
    ("one-sequencer-missing-newer-lm", state(etag="b", lm=T1, seq="05"), state(etag="a", lm=T0),
     Decision.WRITE),
    ("no-sequencers-older-lm", state(etag="b", lm=T0), state(etag="a", lm=T1), Decision.SUPERSEDED),
    ("same-second-no-sequencers", state(etag="b"), state(etag="a"), Decision.UNDECIDED),
    ("same-second-unequal-length", state(etag="b", seq="0A1"), state(etag="a", seq="0A"), Decision.UNDECIDED),
    ("same-second-equal-sequencers", state(etag="b", seq="0A"), state(etag="a", seq="0A"), Decision.UNDECIDED),
    ("same-second-non-hex-sequencers", state(etag="b", seq="zz"), state(etag="a", seq="0A"),
     Decision.UNDECIDED),
    ("no-last-modified", state(etag="b", lm=None), state(etag="a", lm=T1), Decision.UNDECIDED),
    ("versions-newer-lm", state(version="v2", etag="b", lm=T1), state(version="v1", etag="a", lm=T0),
     Decision.WRITE),
]


@pytest.mark.parametrize("candidate, held, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide(candidate, held, expected):
    assert decide(candidate, held) is expected


SAME_OBJECT = [c for c in CASES if c[2] is not None and (c[1].bucket, c[1].key) == (c[2].bucket, c[2].key)]


@pytest.mark.parametrize("candidate, held, expected", [c[1:] for c in SAME_OBJECT],
                         ids=[c[0] for c in SAME_OBJECT])
def test_decide_is_antisymmetric(candidate, held, expected):
    """Swapping candidate and held swaps WRITE and SUPERSEDED (for the same object)."""
    mirror = {Decision.WRITE: Decision.SUPERSEDED, Decision.SUPERSEDED: Decision.WRITE}
    assert decide(held, candidate) is mirror.get(expected, expected)


def test_same_state_and_compare():
    assert same_state(state(version="v"), state(version="v", etag="other", lm=T1))
    assert not same_state(state(version="v1"), state(version="v2"))
    assert not same_state(state(etag="a"), state(etag="a", lm=T1))
    assert compare(state(lm=T1), state(lm=T0)) == 1
    assert compare(state(lm=T0), state(lm=T1)) == -1
    assert compare(state(lm=T0), state(lm=T0)) == 0


@pytest.mark.parametrize(
    "a, b, expected",
    [
        (None, None, 0),
        (None, "0A", 0),
        ("0A", None, 0),
        ("", "0A", 0),
        ("0A", "0A", 0),
        ("0a", "0A", 0),
        ("0B", "0A", 1),
        ("0A", "0B", -1),
        ("0055AED6DCD90281E5", "0055AED6DCD90281E6", -1),
        ("FF", "0100", 0),  # unequal lengths never compare
        ("1", "00", 0),
        ("zz", "0A", 0),
        ("0A", "g0", 0),
        ("xyz", "xyz", 0),
    ],
)
def test_compare_sequencers(a, b, expected):
    assert compare_sequencers(a, b) == expected


@pytest.mark.parametrize("a, b", [("-1", "01"), ("0x10", "0011"), ("1_0", "100"), ("+1", "00")])
def test_compare_sequencers_non_hex_with_int_syntax(a, b):
    assert compare_sequencers(a, b) == 0

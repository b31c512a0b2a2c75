"""The names a container looks up before writing (instead of writing a small object as new)."""

from __future__ import annotations

from gcs_sync.config import parse_destination
from gcs_sync.transfer import _KnownNames


def test_names_are_per_destination_and_the_oldest_are_forgotten_first():
    a, b = parse_destination("gs://bucket-a/pre/"), parse_destination("gs://bucket-b")
    known = _KnownNames(limit=3)
    known.add((a, "pre/x"))
    assert (a, "pre/x") in known and (b, "pre/x") not in known
    for name in ("pre/y", "pre/z"):
        known.add((a, name))
    known.add((a, "pre/x"))  # seen again: now the newest
    known.add((a, "pre/w"))  # over the limit: the oldest (pre/y) goes
    assert [(a, n) in known for n in ("pre/x", "pre/y", "pre/z", "pre/w")] == [True, False, True, True]

"""Slices aligned with a multipart object's parts, where parts are empty or there is only one."""

from __future__ import annotations

from gcs_sync.slices import slice_ranges

MIB = 1024 * 1024


def test_an_empty_part_is_never_a_slice_of_its_own():
    last = slice_ranges(3 * MIB, MIB, [3 * MIB, 0])
    assert [(r.start, r.end, r.parts, r.first_part) for r in last] == [(0, 3 * MIB, (3 * MIB, 0), 1)]
    first = slice_ranges(3 * MIB, MIB, [0, 3 * MIB])
    assert [(r.start, r.end, r.parts, r.first_part) for r in first] == [(0, 3 * MIB, (0, 3 * MIB), 1)]
    middle = slice_ranges(2 * MIB, MIB, [MIB, 0, MIB])
    assert [(r.start, r.end, r.parts, r.first_part) for r in middle] == [(0, MIB, (MIB, 0), 1), (MIB, 2 * MIB, (MIB,), 3)]


def test_one_part_larger_than_a_slice_is_one_slice_carrying_its_size():
    (only,) = slice_ranges(3 * MIB + 5, MIB, [3 * MIB + 5])
    assert (only.start, only.end, only.parts, only.first_part) == (0, 3 * MIB + 5, (3 * MIB + 5,), 1)

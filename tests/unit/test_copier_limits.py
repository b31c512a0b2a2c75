"""Per-container limits of the copy: the names looked up before writing, the objects streaming at once."""

from __future__ import annotations

from gcs_sync.config import parse_destination
from gcs_sync.transfer import KnownNames


def test_names_are_per_destination_and_the_oldest_are_forgotten_first():
    a, b = parse_destination("gs://bucket-a/pre/"), parse_destination("gs://bucket-b")
    known = KnownNames(limit=3)
    known.add((a, "pre/x"))
    assert (a, "pre/x") in known and (b, "pre/x") not in known
    for name in ("pre/y", "pre/z"):
        known.add((a, name))
    known.add((a, "pre/x"))  # seen again: now the newest
    known.add((a, "pre/w"))  # over the limit: the oldest (pre/y) goes
    assert [(a, n) in known for n in ("pre/x", "pre/y", "pre/z", "pre/w")] == [True, False, True, True]


def test_objects_streaming_at_once_fit_the_memory_setting():
    from gcs_sync.config import Settings
    from gcs_sync.transfer import streams_in_flight

    def slots(memory_mb: int, destinations: int, chunk_mb: int = 8, concurrency: int = 4, fanout="upload") -> int:
        dests = tuple(parse_destination(f"gs://bucket-{i}") for i in range(destinations))
        return streams_in_flight(Settings(destinations=dests, memory_mb=memory_mb, object_concurrency=concurrency,
                                          stream_chunk=chunk_mb * 1024 * 1024, fanout=fanout))

    assert slots(1024, 2) == 4  # 8 MiB x 7 = 56 MiB each: the object concurrency decides
    assert slots(1024, 4) == 3  # 104 MiB each within 40 % of 1024 MB
    assert slots(128, 4) == 1  # never fewer than one
    assert slots(128, 1, chunk_mb=1) == 4 and slots(3008, 8, concurrency=16) == 6
    # FANOUT=copy streams to one destination whatever their number: the others are copied server-side.
    assert slots(1024, 4, fanout="copy") == slots(1024, 1, fanout="upload") == 4
    assert slots(3008, 8, concurrency=16, fanout="copy") == 16

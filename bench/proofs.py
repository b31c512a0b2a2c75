"""CPU-seconds per GiB for each proof of a copy (``gcs_sync.proof.Reading``), one core.

Each row feeds the same bytes, in the chunks the reader gets from S3, through the ``Reading`` a
copy uses: the CRC32C every copy computes for Cloud Storage, plus the proof S3's record calls for.

    .venv/bin/python bench/proofs.py [--mib 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gcs_sync.proof import Plan, Reading  # noqa: E402

CHUNK = 1024 * 1024  # what the reader hands on per read (source.READ_CHUNK)
PART = 8 * 1024 * 1024  # a part of a multipart upload


def plans(size: int) -> dict[str, tuple[Plan, list[int] | None]]:
    parts = [PART] * (size // PART) + ([size % PART] if size % PART else [])
    return {
        "none (CRC32C only)": (Plan("none"), None),
        "crc32c, full object": (Plan("crc32c", "x"), None),
        "crc64nvme, full object": (Plan("crc64nvme", "x"), None),
        "crc32, full object": (Plan("crc32", "x"), None),
        "sha1, full object": (Plan("sha1", "x"), None),
        "sha256, full object": (Plan("sha256", "x"), None),
        "crc32, composite (8 MiB parts)": (Plan("crc32", "x", len(parts)), parts),
        "sha256, composite (8 MiB parts)": (Plan("sha256", "x", len(parts)), parts),
        "md5 (single-part ETag)": (Plan("md5", "x"), None),
        "multipart-etag (8 MiB parts)": (Plan("multipart-etag", "x", len(parts)), parts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.mib * 1024 * 1024
    data = os.urandom(size)
    chunks = [data[i:i + CHUNK] for i in range(0, size, CHUNK)]
    print(f"| proof | CPU-s per GiB (best of {args.rounds}, {args.mib} MiB) |\n|---|---|")
    for name, (plan, parts) in plans(size).items():
        best = float("inf")
        for _ in range(args.rounds):
            reading = Reading(plan, parts)
            started = time.process_time()
            for chunk in chunks:
                reading.update(chunk)
            _ = reading.computed
            best = min(best, time.process_time() - started)
        print(f"| {name} | {best * 1024 / args.mib:.2f} |")


if __name__ == "__main__":
    main()

"""What a destination holds under one name, as the copy engine sees it."""

from __future__ import annotations

from dataclasses import dataclass

from .metadata import SourceState
from .proof import copy_disagrees


@dataclass(frozen=True)
class HeldObject:
    """What a destination holds under one name."""

    generation: int
    source: SourceState | None  # None: not written by gcs-sync
    size: int
    crc32c: str | None
    md5: str | None = None
    updated: float | None = None  # Unix time of the generation's write: a name takes one write a second

    def disagreement(self) -> str | None:
        """Why this copy is not what its provenance claims (size, checksums), or None."""
        return copy_disagrees(self.source, size=self.size, crc32c=self.crc32c, md5=self.md5)

"""What came of each object and each destination: the outcomes, the result values and the one
log line per result. The copy engine, the slices, the sync, the metrics and the handler all speak
these."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from .events import printable

log = logging.getLogger("gcs_sync.transfer")  # the name operators' log filters already use

CURRENT = "already_current"
SUPERSEDED = "superseded"
SLICED = "sliced"  # the planning invocation's outcome: the slices were queued
HELD = "held"  # the destination's copy is under a hold or retention: it cannot be replaced yet
COPIED = "copied"
REPAIRED = "repaired"  # rewritten: the copy claimed the current state, its size or checksums disagreed
DELETED = "deleted"
KEPT = "kept"  # a delete that did not apply: the copy is newer, foreign, or the source is back
ABSENT = "already_absent"
SKIPPED = "skipped"
FAILED = "failed"
OUTCOME_ORDER = (COPIED, REPAIRED, SLICED, DELETED, HELD, SUPERSEDED, CURRENT, KEPT, ABSENT)


@dataclass
class DestinationResult:
    """What happened to one object at one destination."""

    destination: str
    object: str
    outcome: str
    bytes: int = 0
    seconds: float = 0.0
    error: str | None = None
    retryable: bool = False
    detail: str | None = None
    proof: str | None = None  # the S3 record the copy was proven against (proof.PROOFS)
    until: str | None = None  # HELD: when the held copy can be replaced, when Cloud Storage said
    finished: float = 0.0  # time.time() when the result was made (a copy: when it was proven)

    def as_dict(self) -> dict:
        data = {"destination": self.destination, "object": self.object, "outcome": self.outcome}
        if self.proof:
            data["proof"] = self.proof
        if self.bytes:
            data["bytes"] = self.bytes
        if self.error:
            data["error"] = self.error
        if self.detail:
            data["detail"] = self.detail
        if self.until:
            data["until"] = self.until
        return data


@dataclass
class ObjectReport:
    """One source object and its result at every destination."""

    source: str
    results: list[DestinationResult] = field(default_factory=list)
    skipped: str | None = None  # why nothing was attempted (e.g. the source is gone)
    refused: str | None = None  # why the object may not be copied at all (a failure)

    @property
    def outcome(self) -> str:
        outcomes = {r.outcome for r in self.results}
        if FAILED in outcomes or self.refused:
            return FAILED
        if self.skipped is not None:
            return SKIPPED
        for outcome in OUTCOME_ORDER:
            if outcome in outcomes:
                return outcome
        return SKIPPED

    @property
    def failures(self) -> list[DestinationResult]:
        return [r for r in self.results if r.outcome == FAILED]

    @property
    def retryable(self) -> bool:
        return not self.refused and all(r.retryable for r in self.failures)

    def failure_lines(self) -> list[str]:
        """One line per failure, naming the object and the destination."""
        lines = [f"{self.source}: {self.refused}"] if self.refused else []
        return lines + [f"{self.source} -> {r.object}: {r.error}" for r in self.failures]

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.results if r.outcome in (COPIED, REPAIRED))

    def as_dict(self) -> dict:
        data = {"source": self.source, "outcome": self.outcome}
        if self.skipped or self.refused:
            data["reason"] = self.refused or self.skipped
        if self.results:
            data["destinations"] = [r.as_dict() for r in self.results]
        return data



def result(destination, name: str, outcome: str, *, error: str | None = None, retryable: bool = False,
           nbytes: int = 0, started: float | None = None, detail: str | None = None,
           proof: str | None = None, until: str | None = None) -> DestinationResult:
    """The result for ``name`` at ``destination`` (a ``config.Destination``)."""
    return DestinationResult(
        destination=destination.url,
        object=printable(f"gs://{destination.bucket}/{name}"),
        outcome=outcome,
        bytes=nbytes,
        seconds=round(time.monotonic() - started, 3) if started is not None else 0.0,
        error=error,
        retryable=retryable,
        detail=detail,
        proof=proof,
        until=until,
        finished=time.time(),
    )


def logged(report: ObjectReport) -> ObjectReport:
    for result in report.results:
        log_result(report.source, result)
    if report.skipped:
        log.info("object skipped", extra={"fields": {
            "source": report.source, "outcome": SKIPPED, "reason": report.skipped}})
    return report


def log_result(source: str, result: DestinationResult) -> None:
    level = logging.ERROR if result.outcome == FAILED else logging.INFO
    fields = {"source": source, **result.as_dict(), "seconds": result.seconds}
    log.log(level, "object %s", result.outcome, extra={"fields": fields})

"""CloudWatch Embedded Metric Format: one document per invocation and one per destination.

Written straight to standard output, one JSON line each, never through ``logging``: metrics are
there whatever LOG_LEVEL says (an alarm on ``ObjectsFailed`` must not go quiet when the logs are
turned down). CloudWatch turns the lines into metrics with no agent and no PutMetricData
permission. Namespace ``GcsSync``. A metric with no value in a document (e.g. ``Latency`` of a
destination where nothing was copied) is left out of it, not written as an empty list.

``ReplicationLatency`` (S3 Replication's name for the same measure), for every copy written
(outcome ``copied`` or ``repaired``): milliseconds from the event to the proven copy, under the
dimension sets [FunctionName] and [FunctionName, Destination]. "The event" is the S3
notification's ``eventTime`` (EventBridge: ``time``), also when it comes back in a failure record
(a redrive): the measure is how long the mirror was behind for that object, the time spent
failing and waiting in the failure queue included. Events that carry no time (S3 Batch
Operations, a manual sync, the command line) count from the invocation's start (``started``);
slices of a large object from its planning.

Under Lambda's JSON log format with an application log level above INFO, Lambda drops JSON lines
whose ``level`` is below it (a line without one counts as INFO); the documents then carry that
level so they pass.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import datetime, timezone
from typing import IO, Iterable, Sequence

from . import logs
from .events import ObjectRef
from .results import COPIED, FAILED, HELD, REPAIRED, DestinationResult, ObjectReport

NAMESPACE = "GcsSync"
MAX_VALUES = 100  # EMF accepts at most 100 values per metric in one document

_STDOUT = object()  # sys.stdout as it is when a document is written
_output: object = _STDOUT
_lock = threading.Lock()


def set_output(stream: IO[str] | None) -> None:
    """Where documents go: a text stream, or None for nowhere (a terminal has no CloudWatch).
    Standard output by default."""
    global _output
    _output = stream


def emit(reports: Iterable[ObjectReport], *, function_name: str, shape: str,
         refs: Sequence[ObjectRef] | None = None, started: float | None = None) -> None:
    """The invocation's documents. ``refs``: the events' objects, one per report in the same
    order, for ``ReplicationLatency``; ``started``: the invocation's start (Unix time), from which
    a copy whose event carries no time counts (without it, from the copy's own start)."""
    reports = list(reports)
    if not reports:
        return
    now = time.time()
    timestamp = int(now * 1000)
    outcomes = [r.outcome for r in reports]
    latencies = [max(d.seconds for d in r.results) * 1000 for r in reports if r.results]
    written = [d for r in reports for d in r.results if d.outcome in (COPIED, REPAIRED)]
    documents: list[dict] = []  # written together, in this order
    documents.append(_document(
        timestamp, [["FunctionName"], ["FunctionName", "Invocation"]],
        {"FunctionName": function_name, "Invocation": shape},
        {
            "ObjectsCopied": (outcomes.count(COPIED), "Count"),
            "ObjectsRepaired": (outcomes.count(REPAIRED), "Count"),
            "ObjectsSliced": (outcomes.count("sliced"), "Count"),  # queued as slices (SLICE_QUEUE_URL)
            "ObjectsUnchanged": (sum(o in ("already_current", "superseded", "skipped", "kept", "already_absent")
                                     for o in outcomes), "Count"),
            "ObjectsDeleted": (outcomes.count("deleted"), "Count"),
            "ObjectsFailed": (outcomes.count(FAILED), "Count"),
            "BytesCopied": (sum(r.bytes for r in reports), "Bytes"),
            "CopyLatency": (latencies[:MAX_VALUES], "Milliseconds"),
            # Copies S3 held no record for (SSE-KMS / SSE-C without an additional checksum):
            # checked against the bytes read only. Alarm on it to hear of such objects.
            "CopiesWithoutS3Proof": (sum(d.proof == "none" for d in written), "Count"),
        },
    ))
    proofs: dict[str, int] = {}
    for result in written:
        if result.proof:
            proofs[result.proof] = proofs.get(result.proof, 0) + 1
    for proof, count in sorted(proofs.items()):  # copies per proof method (the S3 record checked)
        documents.append(_document(timestamp, [["FunctionName", "Proof"]],
                                   {"FunctionName": function_name, "Proof": proof}, {"CopiesProven": (count, "Count")}))
    by_destination: dict[str, list] = {}
    for report in reports:
        for result in report.results:
            by_destination.setdefault(result.destination, []).append(result)
    for destination, results in by_destination.items():
        documents.append(_document(
            timestamp, [["FunctionName", "Destination"]],
            {"FunctionName": function_name, "Destination": destination},
            {
                "Copied": (sum(r.outcome in (COPIED, REPAIRED) for r in results), "Count"),
                "Failed": (sum(r.outcome == FAILED for r in results), "Count"),
                # Copies a hold or retention period keeps from being replaced (outcome held).
                "CopiesHeld": (sum(r.outcome == HELD for r in results), "Count"),
                "Bytes": (sum(r.bytes for r in results), "Bytes"),
                "Latency": ([r.seconds * 1000 for r in results if r.outcome in (COPIED, REPAIRED)][:MAX_VALUES],
                            "Milliseconds"),
            },
        ))
    for destination, values in replication_latencies(reports, refs, now, started).items():
        for start in range(0, len(values), MAX_VALUES):
            documents.append(_document(
                timestamp, [["FunctionName"], ["FunctionName", "Destination"]],
                {"FunctionName": function_name, "Destination": destination},
                {"ReplicationLatency": (values[start:start + MAX_VALUES], "Milliseconds")},
            ))
    _write(*documents)


def replication_latencies(reports: list[ObjectReport], refs: Sequence[ObjectRef] | None,
                          now: float, started: float | None = None) -> dict[str, list[float]]:
    """Destination URL -> the milliseconds from each copied object's event to its proven copy.

    An object announced twice (its reports shared) counts once, from its earliest event time.
    """
    if refs is None or len(refs) != len(reports):
        refs = [None] * len(reports)
    events: dict[int, float | None] = {}
    unique: dict[int, ObjectReport] = {}
    for report, ref in zip(reports, refs):
        when = event_seconds(ref.event_time) if ref is not None else None
        unique.setdefault(id(report), report)
        earlier = events.get(id(report))
        events[id(report)] = when if earlier is None else (earlier if when is None else min(earlier, when))
    latencies: dict[str, list[float]] = {}
    for key, report in unique.items():
        for result in report.results:
            if result.outcome in (COPIED, REPAIRED):
                latencies.setdefault(result.destination, []).append(
                    _latency_ms(result, events[key] if events[key] is not None else started, now))
    return latencies


def _latency_ms(result: DestinationResult, event: float | None, now: float) -> float:
    finished = result.finished or now  # a result made without a time: proven by now
    start = event if event is not None else finished - result.seconds
    return round(max(0.0, finished - start) * 1000, 3)  # a clock ahead of ours is no negative lag


def event_seconds(text: str | None) -> float | None:
    """An event's time (ISO 8601, e.g. S3's ``2026-11-21T12:00:00.000Z``) as Unix seconds, or None
    when absent or unreadable (the copy then counts from its start)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def emit_slices(kinds: list[str], *, function_name: str) -> None:
    """Slice tasks of one invocation: stored, failed (SQS delivers them again), objects composed,
    plans abandoned because the source changed."""
    if not kinds:
        return
    _write(_document(
        int(time.time() * 1000), [["FunctionName"]], {"FunctionName": function_name},
        {
            "SlicesCopied": (sum(k in ("slice", "composed") for k in kinds), "Count"),
            "SlicesFailed": (kinds.count("failed"), "Count"),
            "ObjectsComposed": (kinds.count("composed"), "Count"),
            "SlicePlansAbandoned": (kinds.count("abandoned"), "Count"),
            "SliceTasksRefused": (kinds.count("refused"), "Count"),  # crafted or foreign tasks: nothing written
        },
    ))


def _document(timestamp: int, dimensions: list, values: dict, metrics: dict) -> dict:
    """One EMF document; metrics without a value (an empty list) are left out."""
    metrics = {name: (value, unit) for name, (value, unit) in metrics.items() if value != []}
    document = {
        "_aws": {
            "Timestamp": timestamp,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": dimensions,
                "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in metrics.items()],
            }],
        },
        **values,
    }
    document.update({name: value for name, (value, _) in metrics.items()})
    level = logs.lambda_filter_level()
    if level:
        document["level"] = level
    current = logs.request_id()
    if current:
        document["requestId"] = current
    return document


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _write(*documents: dict) -> None:
    """One line per document, written and flushed at once."""
    stream = sys.stdout if _output is _STDOUT else _output
    if stream is None or not documents:
        return
    # Numbers, the function's name and destination URLs: no field needs redacting, but each line
    # is still passed through the redactor as every other output is.
    text = "".join(logs.redact(_ENCODER.encode(document)) + "\n" for document in documents)
    with _lock:
        stream.write(text)  # type: ignore[union-attr]
        stream.flush()  # type: ignore[union-attr]

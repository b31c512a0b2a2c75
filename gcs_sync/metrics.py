"""CloudWatch Embedded Metric Format: one document per invocation and one per destination.

Logged as JSON lines through ``logging``; CloudWatch turns them into metrics with no agent and
no PutMetricData permission. Namespace ``GcsSync``.
"""

from __future__ import annotations

import logging
import time
from typing import Iterable

from .transfer import COPIED, FAILED, ObjectReport

log = logging.getLogger(__name__)

NAMESPACE = "GcsSync"
MAX_VALUES = 100  # EMF accepts at most 100 values per metric in one document


def emit(reports: Iterable[ObjectReport], *, function_name: str, shape: str) -> None:
    reports = list(reports)
    if not reports:
        return
    timestamp = int(time.time() * 1000)
    outcomes = [r.outcome for r in reports]
    latencies = [max(d.seconds for d in r.results) * 1000 for r in reports if r.results]
    log.info("metrics", extra={"plain_fields": True, "fields": _document(
        timestamp, [["FunctionName"], ["FunctionName", "Invocation"]],
        {"FunctionName": function_name, "Invocation": shape},
        {
            "ObjectsCopied": (outcomes.count(COPIED), "Count"),
            "ObjectsUnchanged": (sum(o in ("already_current", "superseded", "skipped", "kept", "already_absent")
                                     for o in outcomes), "Count"),
            "ObjectsDeleted": (outcomes.count("deleted"), "Count"),
            "ObjectsFailed": (outcomes.count(FAILED), "Count"),
            "BytesCopied": (sum(r.bytes for r in reports), "Bytes"),
            "CopyLatency": (latencies[:MAX_VALUES], "Milliseconds"),
        },
    )})
    by_destination: dict[str, list] = {}
    for report in reports:
        for result in report.results:
            by_destination.setdefault(result.destination, []).append(result)
    for destination, results in by_destination.items():
        log.info("metrics", extra={"plain_fields": True, "fields": _document(
            timestamp, [["FunctionName", "Destination"]],
            {"FunctionName": function_name, "Destination": destination},
            {
                "Copied": (sum(r.outcome == COPIED for r in results), "Count"),
                "Failed": (sum(r.outcome == FAILED for r in results), "Count"),
                "Bytes": (sum(r.bytes for r in results), "Bytes"),
                "Latency": ([r.seconds * 1000 for r in results if r.outcome == COPIED][:MAX_VALUES], "Milliseconds"),
            },
        )})


def _document(timestamp: int, dimensions: list, values: dict, metrics: dict) -> dict:
    """One EMF document: numbers, the function's name and destination URLs, so the log formatter
    skips redacting each field (``plain_fields``; the whole line is still redacted)."""
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
    return document

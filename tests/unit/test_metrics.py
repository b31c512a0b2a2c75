"""EMF metrics: one JSON line each on standard output, whatever the log level."""

from __future__ import annotations

import io
import json
import logging
import time
from datetime import datetime, timezone

import pytest

from gcs_sync import logs, metrics
from gcs_sync.config import LogSettings
from gcs_sync.events import ObjectRef
from gcs_sync.results import DestinationResult, ObjectReport


def copied(dest="gs://a/", name="k", seconds=0.25, size=10) -> DestinationResult:
    return DestinationResult(destination=dest, object=name, outcome="copied", bytes=size, seconds=seconds)


def failed(dest="gs://b/", name="k") -> DestinationResult:
    return DestinationResult(destination=dest, object=name, outcome="failed", error="HTTP 403", seconds=0.1)


def documents(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(autouse=True)
def reset():
    yield
    metrics.set_output(metrics._STDOUT)
    logs.configure_from(LogSettings())
    logs.set_request_id(None)


def emit(*reports: ObjectReport) -> None:
    metrics.emit(list(reports), function_name="fn", shape="notification")


def test_documents_go_to_stdout_one_line_each(capsys):
    emit(ObjectReport(source="s3://src/k", results=[copied(), failed()]))
    out = capsys.readouterr()
    docs = documents(out.out)
    assert len(docs) == 4  # the invocation, then gs://a/ and gs://b/, then gs://a/'s ReplicationLatency
    assert all(d["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "GcsSync" for d in docs)
    assert docs[0]["ObjectsFailed"] == 1 and docs[0]["Invocation"] == "notification"
    assert out.err == ""


@pytest.mark.parametrize("level", ["WARNING", "ERROR"])
def test_metrics_written_whatever_the_log_level(capsys, level):
    logs.configure(level)
    emit(ObjectReport(source="s3://src/k", results=[failed()]))
    (invocation, destination) = documents(capsys.readouterr().out)
    assert invocation["ObjectsFailed"] == 1
    assert destination["Destination"] == "gs://b/" and destination["Failed"] == 1


def test_metrics_do_not_pass_through_logging(capsys, caplog):
    caplog.set_level(logging.DEBUG)
    emit(ObjectReport(source="s3://src/k", results=[copied()]))
    assert not [r for r in caplog.records if r.name.startswith("gcs_sync")]
    assert documents(capsys.readouterr().out)


def test_failed_destination_has_no_empty_latency(capsys):
    emit(ObjectReport(source="s3://src/k", results=[copied(dest="gs://a/"), failed(dest="gs://b/")]))
    docs = {d.get("Destination"): d for d in documents(capsys.readouterr().out) if "ReplicationLatency" not in d}
    bad = docs["gs://b/"]
    assert "Latency" not in bad
    assert "Latency" not in [m["Name"] for m in bad["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    good = docs["gs://a/"]
    assert good["Latency"] == [250.0]
    assert "Latency" in [m["Name"] for m in good["_aws"]["CloudWatchMetrics"][0]["Metrics"]]


def test_refused_object_without_results_has_no_empty_copy_latency(capsys):
    emit(ObjectReport(source="s3://other/k", refused="not in SOURCE_BUCKETS"))
    (invocation,) = documents(capsys.readouterr().out)
    assert invocation["ObjectsFailed"] == 1
    assert "CopyLatency" not in invocation
    names = [m["Name"] for m in invocation["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert "CopyLatency" not in names and "ObjectsFailed" in names


def test_every_declared_metric_has_a_value(capsys):
    emit(ObjectReport(source="s3://src/k", results=[copied(), failed()]),
         ObjectReport(source="s3://src/j", skipped="source gone"))
    for doc in documents(capsys.readouterr().out):
        for metric in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            value = doc[metric["Name"]]
            assert value != [] and value is not None


def test_documents_carry_the_request_id(capsys):
    logs.set_request_id("req-9")
    emit(ObjectReport(source="s3://src/k", results=[copied()]))
    assert {d["requestId"] for d in documents(capsys.readouterr().out)} == {"req-9"}


@pytest.mark.parametrize("env, level", [
    ({"AWS_LAMBDA_LOG_FORMAT": "JSON", "AWS_LAMBDA_LOG_LEVEL": "WARN"}, "WARN"),
    ({"AWS_LAMBDA_LOG_FORMAT": "JSON", "AWS_LAMBDA_LOG_LEVEL": "ERROR"}, "ERROR"),
    ({"AWS_LAMBDA_LOG_FORMAT": "JSON", "AWS_LAMBDA_LOG_LEVEL": "INFO"}, None),
    ({}, None),
])
def test_documents_pass_lambdas_own_level_filter(capsys, env, level):
    logs.configure_from(LogSettings.from_environ(env))
    emit(ObjectReport(source="s3://src/k", results=[failed()]))
    for doc in documents(capsys.readouterr().out):
        assert doc.get("level") == level


def test_output_can_be_redirected_or_turned_off(capsys):
    stream = io.StringIO()
    metrics.set_output(stream)
    emit(ObjectReport(source="s3://src/k", results=[copied()]))
    assert len(documents(stream.getvalue())) == 3
    metrics.set_output(None)
    emit(ObjectReport(source="s3://src/k", results=[copied()]))
    assert capsys.readouterr().out == "" and len(documents(stream.getvalue())) == 3


def test_no_reports_no_documents(capsys):
    emit()
    assert capsys.readouterr().out == ""


def test_copies_are_counted_per_proof_and_unproven_ones_apart(capsys):
    def proven(proof, dest="gs://a/", outcome="copied"):
        return DestinationResult(destination=dest, object="k", outcome=outcome, bytes=1, seconds=0.1, proof=proof)

    emit(ObjectReport(source="s3://src/a", results=[proven("crc64nvme"), proven("crc64nvme", "gs://b/")]),
         ObjectReport(source="s3://src/b", results=[proven("none")]),
         ObjectReport(source="s3://src/d", results=[proven("md5", "gs://b/", "repaired")]),
         ObjectReport(source="s3://src/c", results=[proven("crc32c", outcome="already_current")]))
    docs = documents(capsys.readouterr().out)
    assert docs[0]["CopiesWithoutS3Proof"] == 1 and docs[0]["ObjectsRepaired"] == 1
    per_proof = {d["Proof"]: d["CopiesProven"] for d in docs if "Proof" in d}
    assert per_proof == {"crc64nvme": 2, "md5": 1, "none": 1}  # nothing was written for the current one


# -- ReplicationLatency: from the event to the proven copy --------------------------------------

def iso(seconds: float) -> str:
    """A Unix time as S3 writes eventTime: 2026-11-21T12:00:00.000Z."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def written(dest="gs://a/", outcome="copied", seconds=0.5, finished=None) -> DestinationResult:
    return DestinationResult(destination=dest, object="k", outcome=outcome, bytes=3, seconds=seconds,
                             finished=time.time() if finished is None else finished)


def replication(docs: list[dict]) -> list[dict]:
    return [d for d in docs if "ReplicationLatency" in d]


def test_a_late_event_shows_its_age_in_replication_latency(capsys):
    now = time.time()
    report = ObjectReport(source="s3://src/late", results=[written("gs://a/", finished=now),
                                                          written("gs://b/p/", "repaired", finished=now + 2)])
    metrics.emit([report], function_name="fn", shape="notification",
                 refs=[ObjectRef("src", "late", event_time=iso(now - 3600))])
    docs = replication(documents(capsys.readouterr().out))
    by_destination = {d["Destination"]: d for d in docs}
    assert set(by_destination) == {"gs://a/", "gs://b/p/"}
    (a,), (b,) = by_destination["gs://a/"]["ReplicationLatency"], by_destination["gs://b/p/"]["ReplicationLatency"]
    assert 3600_000 - 5 <= a <= 3600_000 + 5  # an hour late, in milliseconds (eventTime has ms precision)
    assert 3602_000 - 5 <= b <= 3602_000 + 5
    for doc in docs:
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "GcsSync"
        assert directive["Dimensions"] == [["FunctionName"], ["FunctionName", "Destination"]]
        assert directive["Metrics"] == [{"Name": "ReplicationLatency", "Unit": "Milliseconds"}]
        assert doc["FunctionName"] == "fn"


def test_eventbridge_time_without_milliseconds_is_read():
    assert metrics.event_seconds("2026-11-21T12:00:00Z") == datetime(2026, 11, 21, 12, tzinfo=timezone.utc).timestamp()
    assert metrics.event_seconds("2026-11-21T12:00:00.250Z") == datetime(
        2026, 11, 21, 12, 0, 0, 250000, tzinfo=timezone.utc).timestamp()
    assert metrics.event_seconds("yesterday") is None and metrics.event_seconds(None) is None


@pytest.mark.parametrize("ref", [None, ObjectRef("src", "k"), ObjectRef("src", "k", event_time="not a time")],
                         ids=["no-refs", "no-event-time", "unreadable-event-time"])
def test_without_an_event_time_a_copy_counts_from_its_start(capsys, ref):
    """S3 Batch Operations, a manual sync, the command line: the copy's own duration."""
    report = ObjectReport(source="s3://src/k", results=[written(seconds=1.25)])
    metrics.emit([report], function_name="fn", shape="sync", refs=None if ref is None else [ref])
    (doc,) = replication(documents(capsys.readouterr().out))
    assert doc["ReplicationLatency"] == [1250.0]


def test_only_copies_written_count_and_duplicates_once_from_the_earliest_event(capsys):
    now = time.time()
    shared = ObjectReport(source="s3://src/dup", results=[written(finished=now)])
    unchanged = ObjectReport(source="s3://src/same", results=[written(outcome="already_current", finished=now)])
    broken = ObjectReport(source="s3://src/bad", results=[failed(dest="gs://a/")])
    metrics.emit([shared, shared, unchanged, broken], function_name="fn", shape="sqs", refs=[
        ObjectRef("src", "dup", event_time=iso(now - 10)), ObjectRef("src", "dup", event_time=iso(now - 60)),
        ObjectRef("src", "same", event_time=iso(now - 600)), ObjectRef("src", "bad", event_time=iso(now - 900))])
    (doc,) = replication(documents(capsys.readouterr().out))
    (value,) = doc["ReplicationLatency"]
    assert 60_000 - 5 <= value <= 60_000 + 5


def test_an_event_time_ahead_of_the_clock_is_no_negative_latency(capsys):
    now = time.time()
    metrics.emit([ObjectReport(source="s3://src/k", results=[written(finished=now)])], function_name="fn",
                 shape="notification", refs=[ObjectRef("src", "k", event_time=iso(now + 30))])
    assert replication(documents(capsys.readouterr().out))[0]["ReplicationLatency"] == [0.0]


def test_more_than_a_documents_worth_of_copies_are_all_reported(capsys):
    reports = [ObjectReport(source=f"s3://src/{i}", results=[written(seconds=0.001 * i)]) for i in range(250)]
    metrics.emit(reports, function_name="fn", shape="sync")
    docs = replication(documents(capsys.readouterr().out))
    assert [len(d["ReplicationLatency"]) for d in docs] == [100, 100, 50]
    assert sorted(v for d in docs for v in d["ReplicationLatency"]) == [round(i * 1.0, 3) for i in range(250)]


def test_a_copy_whose_event_carries_no_time_counts_from_the_invocations_start(capsys):
    now = time.time()
    report = ObjectReport(source="s3://src/synced", results=[written(finished=now)])
    metrics.emit([report], function_name="fn", shape="sync", refs=[ObjectRef("src", "synced")], started=now - 5)
    (doc,) = replication(documents(capsys.readouterr().out))
    assert doc["ReplicationLatency"] == [pytest.approx(5000, abs=1)]

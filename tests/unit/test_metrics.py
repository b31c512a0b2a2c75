"""EMF metrics: one JSON line each on standard output, whatever the log level."""

from __future__ import annotations

import io
import json
import logging

import pytest

from gcs_sync import logs, metrics
from gcs_sync.config import LogSettings
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
    assert len(docs) == 3  # the invocation, then gs://a/ and gs://b/
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
    docs = {d.get("Destination"): d for d in documents(capsys.readouterr().out)}
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
    assert len(documents(stream.getvalue())) == 2
    metrics.set_output(None)
    emit(ObjectReport(source="s3://src/k", results=[copied()]))
    assert capsys.readouterr().out == "" and len(documents(stream.getvalue())) == 2


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

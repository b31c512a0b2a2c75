"""Redrive: Lambda's failure records processed again, from the console, from an SQS trigger and
by ``python -m gcs_sync redrive`` against a real (moto) queue; and the late event's age in
``ReplicationLatency``."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest

from gcs_sync.errors import CopyFailed

from .test_cli import run_cli
from .test_invocations import aws_client, new_queue, sqs_event, sqs_record


def failure_record(original: dict, request_id: str = "3f1c9a52-0d7e-4a51-9c61-1b2f0e4d5a6b") -> dict:
    """The record Lambda writes to the on-failure destination once the event's retries are spent."""
    return {
        "version": "1.0", "timestamp": "2026-11-21T12:03:04.567Z",
        "requestContext": {"requestId": request_id,
                           "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:gcs-sync:$LATEST",
                           "condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "requestPayload": original,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorMessage": "1 copy failure(s):\n  - ...", "errorType": "CopyFailed"},
    }


def hour_ago() -> str:
    return datetime.fromtimestamp(time.time() - 3600, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def emf(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"_aws"')]


def test_a_failure_record_pasted_in_the_console_copies_again_and_shows_its_age(world, capsys):
    dest = world.bucket()
    world.configure(f"gs://{dest}/m/")
    record = world.put("reports/late one.csv", b"a,b\n1,2\n")
    record["eventTime"] = hour_ago()
    capsys.readouterr()
    summary = world.invoke(failure_record({"Records": [record]}))
    assert summary["copied"] == 1 and summary["failed"] == 0, summary
    assert world.gcs_bytes(dest, "m/reports/late one.csv") == b"a,b\n1,2\n"
    (latency,) = [d for d in emf(capsys.readouterr().out) if "ReplicationLatency" in d]
    assert latency["Destination"] == f"gs://{dest}/m/"
    assert latency["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["FunctionName"], ["FunctionName", "Destination"]]
    assert latency["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [{"Name": "ReplicationLatency", "Unit": "Milliseconds"}]
    (value,) = latency["ReplicationLatency"]
    assert 3600_000 <= value < 3600_000 + 120_000  # an hour, and the copy's own seconds


def test_a_failure_record_whose_copy_fails_again_raises_naming_the_object(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}", SOURCE_BUCKETS=world.source)
    record = world.record("k.txt", bucket="not-allowed-bucket")
    with pytest.raises(CopyFailed) as caught:
        world.invoke(failure_record({"Records": [record]}))
    assert "s3://not-allowed-bucket/k.txt" in str(caught.value) and "SOURCE_BUCKETS" in str(caught.value)


def test_failure_records_in_sqs_messages_fail_only_the_message_whose_copy_failed(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}", SOURCE_BUCKETS=world.source)
    good = world.put("good.txt", b"good")
    bad = world.record("bad.txt", bucket="not-allowed-bucket")
    event = sqs_event(sqs_record("m-good", json.dumps(failure_record({"Records": [good]}))),
                      sqs_record("m-bad", json.dumps(failure_record({"Records": [bad]}))))
    assert world.invoke(event) == {"batchItemFailures": [{"itemIdentifier": "m-bad"}]}
    assert world.gcs_bytes(dest, "good.txt") == b"good"


# -- python -m gcs_sync redrive FAILURE_QUEUE_URL ---------------------------------------------------

def queue_ids(sqs, url: str) -> list[str]:
    """The ids of every message in the queue, read and made visible again at once."""
    ids, handles = [], []
    while True:
        answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=30)
        messages = answer.get("Messages") or []
        if not messages:
            break
        ids += [m["MessageId"] for m in messages]
        handles += [m["ReceiptHandle"] for m in messages]
    for handle in handles:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
    return sorted(ids)


@pytest.fixture
def failure_queue(world, monkeypatch):
    """A moto queue holding three messages: a failure record that copies, one whose copy fails
    (its bucket is not in SOURCE_BUCKETS) and a message that is no failure record."""
    dest = world.bucket()
    world.configure(f"gs://{dest}", SOURCE_BUCKETS=world.source)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", world.rig.s3.url)
    sqs, url, _ = new_queue(world)
    good = world.put("redriven/ok.txt", b"fixed now")
    bad = world.record("still/broken.txt", bucket="not-allowed-bucket")
    ids = {
        "good": sqs.send_message(QueueUrl=url, MessageBody=json.dumps(failure_record({"Records": [good]})))["MessageId"],
        "bad": sqs.send_message(QueueUrl=url, MessageBody=json.dumps(failure_record({"Records": [bad]})))["MessageId"],
        "junk": sqs.send_message(QueueUrl=url, MessageBody="hello, not a failure record")["MessageId"],
    }
    return dest, sqs, url, ids


def test_redrive_dry_run_lists_and_changes_nothing(world, failure_queue):
    dest, sqs, url, ids = failure_queue
    done = run_cli(world, "redrive", url, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "queue": url, "dry_run": True, "read": 3, "would_redrive": 2, "failed": 0, "not_failure_records": 1}
    assert f"would redrive {ids['good']} (request 3f1c9a52" in done.stdout
    assert f"s3://{world.source}/redriven/ok.txt" in done.stdout
    assert f"would redrive {ids['bad']}" in done.stdout and "s3://not-allowed-bucket/still/broken.txt" in done.stdout
    assert f"kept {ids['junk']}: not a failure record" in done.stdout
    assert world.gcs_object(dest, "redriven/ok.txt") is None
    assert queue_ids(sqs, url) == sorted(ids.values())  # all still there, visible again


def test_redrive_copies_and_deletes_only_what_succeeded(world, failure_queue):
    dest, sqs, url, ids = failure_queue
    done = run_cli(world, "redrive", url)
    assert done.returncode == 1, done.stdout + done.stderr  # one record failed again
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "queue": url, "dry_run": False, "read": 3, "redriven": 1, "failed": 1, "not_failure_records": 1}
    assert f"redriven {ids['good']} (request 3f1c9a52" in done.stdout and "1 copied; deleted from the queue" in done.stdout
    assert f"failed {ids['bad']}" in done.stdout and "kept in the queue" in done.stdout
    assert "s3://not-allowed-bucket/still/broken.txt" in done.stdout and "SOURCE_BUCKETS" in done.stdout
    assert world.gcs_bytes(dest, "redriven/ok.txt") == b"fixed now"
    assert queue_ids(sqs, url) == sorted([ids["bad"], ids["junk"]])

    again = run_cli(world, "redrive", url, "--limit", "1")  # what is left: one message read
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["read"] == 1 and summary["redriven"] == 0
    assert queue_ids(sqs, url) == sorted([ids["bad"], ids["junk"]])


def test_redrive_refuses_a_queue_arn_with_the_fix(world):
    done = run_cli(world, "redrive", "arn:aws:sqs:us-east-1:123456789012:gcs-sync-failures")
    assert done.returncode == 2
    assert "aws sqs get-queue-url --queue-name gcs-sync-failures" in done.stderr


def test_redrive_of_an_empty_queue_reads_nothing(world, monkeypatch):
    world.configure(f"gs://{world.bucket()}")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", world.rig.s3.url)
    _, url, _ = new_queue(world)
    done = run_cli(world, "redrive", url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["read"] == 0
    assert aws_client(world, "sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"] == "0"

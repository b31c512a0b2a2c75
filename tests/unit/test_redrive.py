"""redrive.run against an in-memory queue: what is deleted, what is kept and made visible again."""

from __future__ import annotations

import json

import pytest

from gcs_sync import redrive
from gcs_sync.errors import CopyFailed, CredentialsError


def record(key: str) -> dict:
    return {"version": "1.0", "requestContext": {"requestId": f"r-{key}", "condition": "RetriesExhausted"},
            "requestPayload": {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                                            "s3": {"bucket": {"name": "src"}, "object": {"key": key}}}]}}


class Queue:
    """The calls redrive makes, on a list of messages; ``again`` delivers each message twice."""

    def __init__(self, bodies: list[str], again: bool = False):
        self.messages = [{"MessageId": f"m{i}", "Body": body} for i, body in enumerate(bodies)]
        self.hidden: set[str] = set()
        self.deleted: list[str] = []
        self.released: list[str] = []
        self.again = again
        self.receives = 0

    def receive_message(self, *, QueueUrl, MaxNumberOfMessages, WaitTimeSeconds, VisibilityTimeout):
        assert VisibilityTimeout >= 300 and WaitTimeSeconds >= 1 and 1 <= MaxNumberOfMessages <= 10
        self.receives += 1
        visible = [m for m in self.messages if m["MessageId"] not in self.hidden][:MaxNumberOfMessages]
        if not self.again:
            self.hidden.update(m["MessageId"] for m in visible)
        self.again = False
        return {"Messages": [{**m, "ReceiptHandle": "h-" + m["MessageId"]} for m in visible]}

    def delete_message(self, *, QueueUrl, ReceiptHandle):
        message_id = ReceiptHandle[2:]
        self.deleted.append(message_id)
        self.messages = [m for m in self.messages if m["MessageId"] != message_id]

    def change_message_visibility(self, *, QueueUrl, ReceiptHandle, VisibilityTimeout):
        assert VisibilityTimeout == 0
        self.released.append(ReceiptHandle[2:])


def process_failing(keys: set[str]):
    handled = []

    def process(rec: dict):
        key = rec["requestPayload"]["Records"][0]["s3"]["object"]["key"]
        handled.append(key)
        if key in keys:
            raise CopyFailed([f"s3://src/{key} -> gs://d/{key}: HTTP 403"], {})
        return {"copied": 1}
    return process, handled


def test_done_records_are_deleted_and_the_rest_kept_and_released():
    queue = Queue([json.dumps(record("a")), json.dumps(record("b")), "plain text", json.dumps(record("c"))])
    process, handled = process_failing({"b"})
    lines: list[str] = []
    summary = redrive.run("q", queue, process, say=lines.append)
    assert summary.as_dict() == {"queue": "q", "dry_run": False, "read": 4, "redriven": 2, "failed": 1,
                                 "not_failure_records": 1}
    assert handled == ["a", "b", "c"] and queue.deleted == ["m0", "m3"]
    assert sorted(queue.released) == ["m1", "m2"]
    assert any(line.startswith("failed m1 (request r-b, RetriesExhausted), kept in the queue:") and
               "gs://d/b: HTTP 403" in line for line in lines)


def test_dry_run_processes_nothing_and_releases_everything():
    queue = Queue([json.dumps(record("a")), "{}"])
    process, handled = process_failing(set())
    summary = redrive.run("q", queue, process, dry_run=True, say=lambda _: None)
    assert summary.as_dict() == {"queue": "q", "dry_run": True, "read": 2, "would_redrive": 1, "failed": 0,
                                 "not_failure_records": 1}
    assert handled == [] and queue.deleted == [] and sorted(queue.released) == ["m0", "m1"]


def test_limit_reads_no_more_messages_than_asked():
    queue = Queue([json.dumps(record(k)) for k in "abcdefghijklmn"])
    process, handled = process_failing(set())
    summary = redrive.run("q", queue, process, limit=12, say=lambda _: None)
    assert summary.read == 12 and handled == list("abcdefghijkl") and len(queue.messages) == 2


def test_a_message_delivered_twice_is_redriven_once():
    queue = Queue([json.dumps(record("a"))], again=True)
    process, handled = process_failing({"a"})
    summary = redrive.run("q", queue, process, say=lambda _: None)
    assert summary.read == 1 and handled == ["a"]


@pytest.mark.parametrize("answer, what", [
    ({"batchItemFailures": [{"itemIdentifier": "x"}]}, "message(s) of the original SQS event failed"),
    ({"results": [{"taskId": "t", "resultCode": "TemporaryFailure"}]}, "Batch Operations task(s) did not succeed"),
])
def test_answers_that_report_a_failure_keep_the_message(answer, what):
    queue = Queue([json.dumps(record("a"))])
    lines: list[str] = []
    summary = redrive.run("q", queue, lambda rec: answer, say=lines.append)
    assert summary.failed == 1 and queue.deleted == [] and queue.released == ["m0"]
    assert what in lines[0]


def test_an_error_of_the_setup_keeps_the_message_and_names_it():
    queue = Queue([json.dumps(record("a"))])
    lines: list[str] = []

    def broken(rec):
        raise CredentialsError("the token exchange failed", fix="run python -m gcs_sync doctor")

    summary = redrive.run("q", queue, broken, say=lines.append)
    assert summary.failed == 1 and queue.deleted == [] and "token exchange failed" in lines[0]


def test_messages_are_released_even_when_the_run_stops():
    queue = Queue([json.dumps(record("a")), "junk"])

    def interrupted(rec):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        redrive.run("q", queue, interrupted, say=lambda _: None)
    assert queue.deleted == [] and sorted(queue.released) == ["m0", "m1"]  # neither waits out the timeout


@pytest.mark.parametrize("url, region", [
    ("https://sqs.eu-west-3.amazonaws.com/123456789012/failures", "eu-west-3"),
    ("https://eu-west-1.queue.amazonaws.com/123456789012/failures", "eu-west-1"),
    ("http://127.0.0.1:4566/123456789012/failures", None),
])
def test_queue_region_comes_from_the_url(url, region):
    assert redrive.queue_region(url) == region

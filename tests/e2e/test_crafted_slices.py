"""Slice tasks are the function's own messages: one is acted on only when what it names is what the
function itself would plan. Real slice messages of a real plan, each altered the way an attacker
who may invoke the function or send to its queue would alter them, are delivered to the real
handler: every one is refused, logged with its reason and counted, nothing is written anywhere,
and the unaltered messages still copy the object."""

from __future__ import annotations

import copy
import json
import logging

import pytest

from gcs_sync.slices import plan_id
from gcs_sync.source import SourceObject

from .test_invocations import sqs_event
from .test_slices import MIB, Sliced, _plan, _put


def _task(record: dict) -> dict:
    return json.loads(record["body"])["gcs-sync-slice"]


def _with(record: dict, recompute_id: bool = False, arn: str | None = None, **changes) -> dict:
    """The record with its task's fields changed (and its plan id recomputed, as a careful forger would)."""
    crafted = copy.deepcopy(record)
    task = _task(crafted)
    task.update(changes)
    if recompute_id:
        obj = SourceObject(bucket=task["bucket"], key=task["key"], version_id=task["version_id"], etag=task["etag"],
                           size=task["size"], last_modified=None, headers={}, user_metadata={})
        task["plan"] = plan_id(obj, task["destination"], task["name"])
    crafted["body"] = json.dumps({"gcs-sync-slice": task})
    if arn is not None:
        crafted["eventSourceARN"] = arn
    return crafted


def _everything(world, sliced: Sliced) -> dict[str, list[str]]:
    return {d: sorted(o["name"] for o in world.rig.gcs.list_objects(d, "")) for d in sliced.dests}


@pytest.fixture
def planned(world):
    sliced = Sliced(world)
    world.configure(" ".join(f"gs://{d}/mirror/" for d in sliced.dests), SOURCE_BUCKETS=world.source, **sliced.env)
    data = bytes(range(256)) * (3 * MIB // 256)
    messages = _plan(sliced, _put(world, "reports/big.bin", data), slices=3)
    return sliced, messages, data


def crafted_cases(sliced: Sliced, other_bucket: str) -> dict:
    dest = f"gs://{sliced.dests[0]}/mirror/"
    return {
        "name outside the prefix": dict(name="index.html"),
        "name outside the prefix, id recomputed": dict(name="index.html", recompute_id=True),
        "another key's name": dict(name="mirror/other.bin", recompute_id=True),
        "source bucket not allowed": dict(bucket=other_bucket, recompute_id=True),
        "destination not configured": dict(destination="gs://elsewhere/", recompute_id=True),
        "plan id of another state": dict(etag="0" * 32),
        "not from the work queue": dict(arn="arn:aws:sqs:us-east-1:123456789012:someone-elses-queue"),
        "headers changed": dict(headers={"content_type": "text/html"}, destination=dest, recompute_id=True),
    }


def test_every_crafted_task_is_refused_and_writes_nothing(world, planned, caplog):
    sliced, messages, data = planned
    before = _everything(world, sliced)
    cases = crafted_cases(sliced, "not-allowed-bucket")
    refused = {}
    for label, change in cases.items():
        if label == "headers changed":
            continue  # headers are not the task's to decide: checked below on the composed copy
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            failed = sliced.deliver([_with(m, **change) for m in messages])
        assert failed == [], f"{label}: a refused task is dropped, not redelivered"
        lines = [r for r in caplog.records if r.getMessage() == "slice task refused"]
        assert len(lines) == len(messages), label
        refused[label] = lines[0].__dict__["fields"]["reason"]
        assert _everything(world, sliced) == before, f"{label}: something was written"
    assert "not the name" in refused["name outside the prefix"]
    assert "plan id" in refused["plan id of another state"]
    assert "SOURCE_BUCKETS" in refused["source bucket not allowed"]
    assert "SLICE_QUEUE_URL" in refused["not from the work queue"]
    # the real messages still copy the object, untouched by the refused ones
    assert sliced.deliver(messages) == []
    for dest in sliced.dests:
        assert world.gcs_bytes(dest, "mirror/reports/big.bin") == data


def test_a_malformed_task_goes_to_the_dead_letter_queue_and_writes_nothing(world, planned):
    """A task that does not even parse (a slice beyond its plan) is a failed message: SQS delivers it
    again, then moves it to the dead-letter queue, where the template's alarm reports it."""
    sliced, messages, _ = planned
    before = _everything(world, sliced)
    crafted = [_with(m, index=7, recompute_id=True) for m in messages]
    assert sorted(sliced.deliver(crafted)) == sorted(m["messageId"] for m in messages)
    assert _everything(world, sliced) == before


def test_headers_in_a_task_do_not_reach_the_copy(world, planned):
    sliced, messages, data = planned
    forged = [_with(m, headers={"content_type": "text/html"}, user_metadata={"owner": "mallory"}) for m in messages]
    assert sliced.deliver(forged) == []
    for dest in sliced.dests:
        meta = world.gcs_object(dest, "mirror/reports/big.bin")
        assert meta["contentType"] == "application/x-test"
        assert meta["metadata"].get("origin") == "lab" and "owner" not in meta["metadata"]


def test_refused_tasks_are_counted(world, planned, capsys):
    sliced, messages, _ = planned
    capsys.readouterr()
    sliced.deliver([_with(messages[0], name="index.html")])
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    counts = [d["SliceTasksRefused"] for d in documents if "SliceTasksRefused" in d]
    assert counts == [1]


def test_a_slice_event_outside_sqs_is_refused(world, planned):
    sliced, messages, _ = planned
    event = sqs_event(*[dict(m, eventSourceARN=None) for m in messages])
    assert sliced.deliver(event["Records"]) == []
    assert all(not world.rig.gcs.list_objects(d, "mirror/") for d in sliced.dests)

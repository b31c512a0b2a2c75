"""Hostile events through the whole handler: whatever arrives, the invocation either returns a
JSON-serializable result or raises one of gcs-sync's own errors (``GcsSyncError`` subclasses),
never anything else.

Property-based (hypothesis, derandomized: the same examples every run) over any JSON value,
mutated S3 notifications in every wrapping (direct, SNS, SQS, SNS in SQS, EventBridge), S3
Batch Operations and manual-sync events; plus hand-written extremes (100 KB keys, control
characters, thousands of garbage records, deep nesting). The function is configured with one
real destination and a source bucket holding a few objects, so valid-looking events really copy.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any
from urllib.parse import quote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lambda_function
from gcs_sync.errors import CopyFailed, EventError, GcsSyncError

from .conftest import FakeContext

SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)
OBJECTS = {"a.txt": b"alpha", "dir/b c+d.bin": b"\x00\x01binary", "folder/": b""}
HUGE = "k" * 100_000
MAGIC_KEYS = [
    "Records", "eventSource", "EventSource", "eventName", "eventTime", "s3", "object", "bucket", "name",
    "key", "size", "eTag", "versionId", "sequencer", "Sns", "Message", "body", "messageId", "Type",
    "source", "detail-type", "detail", "version-id", "etag", "invocationSchemaVersion", "invocationId",
    "tasks", "taskId", "s3Key", "s3BucketArn", "s3Bucket", "s3VersionId", "job", "userArguments",
    "sync", "prefix", "continuation", "dry_run", "Event", "doctor",
]
MAGIC_STRINGS = [
    "aws:s3", "aws:sqs", "aws:sns", "aws.s3", "ObjectCreated:Put", "s3:ObjectCreated:Copy",
    "ObjectRemoved:Delete", "ObjectRestore:Completed", "Object Created", "Object Deleted",
    "Notification", "s3:TestEvent", "1.0", "2.0", "3.0", "arn:aws:s3:::", "", " ", "%", "%zz",
    "+", "%2B", "a.txt", "dir/b+c%2Bd.bin", "folder/", ".", "..", "a\r\nb", "\x00", "-1", "1e400",
    "null", "{", '{"Records": []}', "\u202e\ufeff", "ðŸ¦„",
]

# -- strategies ---------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(MAGIC_STRINGS),
)
keys = st.one_of(st.sampled_from(MAGIC_KEYS), st.text(max_size=12))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(keys, inner, max_size=6)),
    max_leaves=30,
)
control_text = st.text(alphabet=st.characters(codec="utf-8", categories=["Cc", "Zs", "Ll", "Nd", "Po", "So"]),
                       min_size=1, max_size=40)


@st.composite
def object_keys(draw) -> str:
    """An event's (URL-encoded) key: real ones, garbage, control characters, 100 KB."""
    raw = draw(st.one_of(
        st.sampled_from(list(OBJECTS)).map(lambda k: quote_plus(k, safe="/")),
        st.sampled_from(["no/such/key.txt", "%", "%zz%", "+", "..", ".well-known/acme-challenge/x"]),
        control_text,
        control_text.map(lambda t: quote_plus(t, safe="/")),
        st.just(HUGE),
        st.just("%0D%0A" * 3),
    ))
    return raw


def buckets(world) -> st.SearchStrategy:
    return st.one_of(st.just(world.source), st.sampled_from(["no-such-bucket-hostile", "Bad_Bucket!", ""]),
                     st.text(max_size=20), st.just("b" * 5000))


def mutate(draw, value: Any, depth: int = 0) -> Any:
    """Drop fields, swap in values of the wrong type, at any depth (truncated / wrong-typed)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            action = draw(st.sampled_from(["keep"] * 6 + ["drop", "garbage", "recurse"]))
            if action == "drop":
                continue
            out[k] = draw(json_values) if action == "garbage" else mutate(draw, v, depth + 1)
        return out
    if isinstance(value, list):
        return [mutate(draw, v, depth + 1) for v in value]
    return value


@st.composite
def s3_records(draw, world) -> dict:
    record = {
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-21T12:00:00.000Z",
        "eventName": draw(st.sampled_from(["ObjectCreated:Put", "ObjectCreated:CompleteMultipartUpload",
                                           "ObjectRemoved:Delete", "s3:ObjectCreated:Copy", "ObjectTagging:Put"])),
        "s3": {"s3SchemaVersion": "1.0",
               "bucket": {"name": draw(buckets(world)), "arn": "arn:aws:s3:::x"},
               "object": {"key": draw(object_keys()), "size": draw(st.one_of(st.integers(-5, 10**12), scalars)),
                          "eTag": draw(st.one_of(st.none(), st.text(max_size=34))),
                          "versionId": draw(st.one_of(st.none(), st.text(max_size=10))),
                          "sequencer": draw(st.one_of(st.none(), st.text("0123456789ABCDEF", max_size=20)))}},
    }
    return mutate(draw, record) if draw(st.booleans()) else record


@st.composite
def notifications(draw, world) -> Any:
    """A notification, maybe wrapped (SNS / SQS / SNS in SQS / EventBridge), maybe mutated."""
    records = draw(st.lists(st.one_of(s3_records(world), json_values), min_size=0, max_size=5))
    garbage = draw(st.lists(json_values, max_size=3))
    if garbage and draw(st.booleans()):
        records += garbage * draw(st.sampled_from([1, 700, 2500]))  # thousands of garbage entries
    notification = {"Records": records}
    shape = draw(st.sampled_from(["direct", "sns", "sqs", "sns-in-sqs", "eventbridge"]))
    text = json.dumps(notification)
    if draw(st.integers(0, 4)) == 0:  # a truncated JSON document in a body / Message
        text = text[: draw(st.integers(0, max(0, len(text) - 1)))]
    if shape == "direct":
        return notification
    if shape == "sns":
        return {"Records": [{"EventSource": "aws:sns", "Sns": {"Type": "Notification", "Message": text}}]}
    if shape == "sqs":
        return {"Records": [{"eventSource": "aws:sqs", "messageId": draw(st.one_of(st.text(max_size=8), scalars)),
                             "body": draw(st.one_of(st.just(text), scalars))}]}
    if shape == "sns-in-sqs":
        envelope = json.dumps({"Type": "Notification", "Message": text})
        return {"Records": [{"eventSource": "aws:sqs", "messageId": "m-1", "body": envelope}]}
    detail = {"bucket": {"name": draw(buckets(world))},
              "object": {"key": draw(object_keys()), "size": draw(scalars), "etag": draw(scalars)}}
    event = {"version": "0", "source": "aws.s3", "detail-type": draw(st.sampled_from(
        ["Object Created", "Object Deleted", "Object Restore Completed", "nonsense"])), "detail": detail}
    return mutate(draw, event) if draw(st.booleans()) else event


@st.composite
def batch_and_sync(draw, world) -> Any:
    if draw(st.booleans()):
        tasks = [{"taskId": draw(st.one_of(st.text(max_size=6), scalars)),
                  "s3Key": draw(st.one_of(object_keys(), scalars)),
                  "s3VersionId": draw(st.one_of(st.none(), st.text(max_size=6), scalars)),
                  draw(st.sampled_from(["s3BucketArn", "s3Bucket"])): draw(st.one_of(
                      buckets(world).map(lambda b: "arn:aws:s3:::" + b), buckets(world), scalars))}
                 for _ in range(draw(st.integers(0, 4)))]
        event = {"invocationSchemaVersion": draw(st.sampled_from(["1.0", "2.0", "9.9", 1.0])),
                 "invocationId": draw(st.one_of(st.text(max_size=10), scalars)),
                 "job": draw(st.one_of(st.just({"id": "j", "userArguments": {"k": "v"}}), json_values)),
                 "tasks": tasks}
    else:
        body = {"bucket": draw(st.one_of(st.just(world.source), buckets(world), scalars)),
                "prefix": draw(st.one_of(st.sampled_from(["", "dir/", "zzz/"]), control_text, scalars)),
                "continuation": draw(st.one_of(st.none(), st.text(max_size=40), scalars)),
                "dry_run": draw(st.one_of(st.booleans(), scalars))}
        event = {"sync": body}
    return mutate(draw, event) if draw(st.booleans()) else event


# -- the property -------------------------------------------------------------------------


@pytest.fixture
def hostile_world(world):
    world.configure(f"gs://{world.bucket()}", SOURCE_BUCKETS="", MIRROR_DELETES="true")
    for key, body in OBJECTS.items():
        world.put(key, body)
    return world


def handle_cleanly(event: Any) -> str:
    """Invoke the real handler; return how it ended, or fail naming the foreign exception."""
    try:
        result = lambda_function.lambda_handler(event, FakeContext())
    except GcsSyncError as exc:
        assert str(exc), "an error without a message"
        return type(exc).__name__
    except Exception as exc:  # noqa: BLE001
        shown = json.dumps(event, default=repr)[:300]
        raise AssertionError(f"{type(exc).__name__} escaped the handler ({exc!s:.200}) for event {shown}") from exc
    json.dumps(result)  # Lambda must be able to serialize what the handler returns
    return "returned"


def test_any_json_value(hostile_world):
    outcomes: dict[str, int] = {}

    @settings(SETTINGS, max_examples=300)
    @given(event=json_values)
    def run(event):
        outcome = handle_cleanly(event)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    run()
    print(f"\n[hostile] any JSON value: {outcomes}")
    assert outcomes.get("EventError", 0) > 100  # most of it is refused as an unknown shape
    assert hostile_world.staging_leftovers() == []


def test_mutated_notifications_in_every_wrapping(hostile_world):
    outcomes: dict[str, int] = {}

    @settings(SETTINGS, max_examples=250)
    @given(event=notifications(hostile_world))
    def run(event):
        outcome = handle_cleanly(event)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    run()
    print(f"\n[hostile] notifications: {outcomes}")
    assert outcomes.get("returned", 0) > 20 and outcomes.get("CopyFailed", 0) > 20
    assert hostile_world.staging_leftovers() == []
    assert hostile_world.gcs_object(_dest(hostile_world), "a.txt") is not None  # some examples really copied


def test_mutated_batch_operations_and_sync_events(hostile_world):
    outcomes: dict[str, int] = {}

    @settings(SETTINGS, max_examples=200)
    @given(event=batch_and_sync(hostile_world))
    def run(event):
        outcome = handle_cleanly(event)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    run()
    print(f"\n[hostile] batch operations and sync: {outcomes}")
    assert outcomes.get("returned", 0) > 10 and outcomes.get("EventError", 0) > 10
    assert hostile_world.staging_leftovers() == []


def _dest(world) -> str:
    return os.environ["GCS_DESTINATIONS"].removeprefix("gs://").rstrip("/")


# -- hand-written extremes ------------------------------------------------------------------


def _record(world, key: str, **obj: Any) -> dict:
    return {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": world.source}, "object": {"key": key, **obj}}}


def test_huge_keys_and_control_characters_fail_only_their_object(hostile_world):
    world = hostile_world
    hostile = [HUGE, quote_plus("line\r\nbreak"), quote_plus("tab\tnul\x00bell\x07esc\x1b"), "%00%01%1F%7F",
               quote_plus("\u202eevil\ufeff"), "..", "."]
    records = [_record(world, key) for key in hostile] + [_record(world, "a.txt")]
    with pytest.raises(GcsSyncError) as caught:
        lambda_function.lambda_handler({"Records": records}, FakeContext())
    assert isinstance(caught.value, CopyFailed)
    assert world.gcs_bytes(_dest(world), "a.txt") == OBJECTS["a.txt"]
    assert world.staging_leftovers() == []


def test_thousands_of_garbage_records_are_reported_not_crashed_on(hostile_world):
    world = hostile_world
    garbage = [None, 1, "x", [], {"eventSource": "aws:s3"}, {"eventSource": "aws:s3", "eventName": 7},
               {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": []},
               {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {"object": {"key": 5}}}]
    records = garbage * 600 + [_record(world, "a.txt")]
    with pytest.raises(CopyFailed) as caught:
        lambda_function.lambda_handler({"Records": records}, FakeContext())
    assert len(caught.value.failures) == len(records) - 1  # every malformed one is named
    assert world.gcs_bytes(_dest(world), "a.txt") == OBJECTS["a.txt"]


@pytest.mark.parametrize("truncated", [{}, {"s3": {"object": {"key": "a.txt"}}}, {"eventSource": None}])
def test_a_truncated_record_does_not_hide_the_valid_ones(hostile_world, truncated):
    world = hostile_world
    with pytest.raises(GcsSyncError) as caught:
        lambda_function.lambda_handler({"Records": [_record(world, "a.txt"), truncated]}, FakeContext())
    assert isinstance(caught.value, CopyFailed), caught.value
    assert any("Records[1]" in line for line in caught.value.failures), caught.value.failures
    assert world.gcs_bytes(_dest(world), "a.txt") == OBJECTS["a.txt"]


@pytest.mark.parametrize("depth", [100, 900])
def test_deeply_nested_events_are_refused(hostile_world, depth):
    nested: Any = {"Records": []}
    for _ in range(depth):
        nested = {"Records": [nested]}
    assert handle_cleanly(nested) in ("EventError", "CopyFailed", "returned")
    deep_list: Any = []
    for _ in range(depth):
        deep_list = [deep_list]
    assert handle_cleanly({"Records": deep_list}) == "EventError"
    assert handle_cleanly({"sync": deep_list}) == "EventError"


@pytest.mark.parametrize("wrapping", ["sqs", "sns"])
def test_deeply_nested_json_in_a_message_body_fails_only_that_message(hostile_world, wrapping):
    world = hostile_world
    deep = "[" * 100_000 + "]" * 100_000  # 200 KB: fits an SQS / SNS message
    good = json.dumps({"Records": [_record(world, "a.txt")]})
    if wrapping == "sqs":
        event = {"Records": [{"eventSource": "aws:sqs", "messageId": "deep", "body": deep},
                             {"eventSource": "aws:sqs", "messageId": "good", "body": good}]}
        result = lambda_function.lambda_handler(event, FakeContext())
        assert result == {"batchItemFailures": [{"itemIdentifier": "deep"}]}
    else:
        event = {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": deep}},
                             {"EventSource": "aws:sns", "Sns": {"Message": good}}]}
        with pytest.raises(GcsSyncError):
            lambda_function.lambda_handler(event, FakeContext())
    assert world.gcs_bytes(_dest(world), "a.txt") == OBJECTS["a.txt"]


@pytest.mark.parametrize("where", ["sync prefix", "notification versionId"])
def test_lone_surrogates_are_refused_cleanly(hostile_world, where):
    world = hostile_world
    event = json.loads('"\\ud800"')
    if where == "sync prefix":
        event = {"sync": {"bucket": world.source, "prefix": event}}
    else:
        event = {"Records": [_record(world, "a.txt", versionId=event)]}
    assert handle_cleanly(event) in ("EventError", "CopyFailed")


def test_event_that_is_not_even_a_dict_is_refused(hostile_world):
    for event in (None, 0, -1.5, "Records", [], [{"Records": []}], True, sys.maxsize):
        assert handle_cleanly(event) == "EventError"
    with pytest.raises(EventError):
        lambda_function.lambda_handler({"Records": "not a list"}, FakeContext())

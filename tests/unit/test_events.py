"""events.parse: every accepted shape, every refused one, and never a crash."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import typing

from gcs_sync import events
from gcs_sync.errors import EventError
from gcs_sync.events import Notifications, ObjectRef, SqsBatch, SqsMessage

EVENTS_DIR = Path(__file__).resolve().parent.parent / "events"


def sample(name: str):
    return json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))


def s3_record(key="k", *, event_name="ObjectCreated:Put", bucket="src-bucket", **obj_fields):
    obj = {"key": key, **obj_fields}
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2024-01-02T03:04:05.678Z",
        "eventName": event_name,
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": obj},
    }


def s3_notification(*records):
    return {"Records": list(records)}


def sqs_record(body, message_id="m-1"):
    return {"messageId": message_id, "receiptHandle": "rh", "body": body, "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q", "awsRegion": "us-east-1"}


def sns_envelope(message: str) -> dict:
    return {"Type": "Notification", "MessageId": "sns-1", "TopicArn": "arn:aws:sns:us-east-1:1:t",
            "Message": message, "Timestamp": "2024-01-02T03:04:05.000Z"}


def eventbridge(detail_type="Object Created", **obj):
    return {
        "version": "0", "id": "e-1", "detail-type": detail_type, "source": "aws.s3",
        "account": "123456789012", "time": "2024-01-02T03:04:05Z", "region": "us-east-1",
        "resources": ["arn:aws:s3:::src-bucket"],
        "detail": {"version": "0", "bucket": {"name": "src-bucket"}, "object": obj},
    }


# --------------------------------------------------------------------------- the samples


def test_sample_console_s3_put():
    parsed = events.parse(sample("console-s3-put.json"))
    assert parsed == Notifications(refs=(ObjectRef(
        bucket="example-bucket", key="test/key", version_id=None,
        etag="0123456789abcdef0123456789abcdef", size=1024, sequencer="0A1B2C3D4E5F678901",
        event_time="1970-01-01T00:00:00.000Z", removed=False),))


@pytest.mark.parametrize("name", ["s3Event.json", "s3EventGlacier.json"])
def test_sample_s3_put(name):
    parsed = events.parse(sample(name))
    assert parsed == Notifications(refs=(ObjectRef(
        bucket="lambda-artifacts-deafc19498e3f2df", key="b21b84d653bb07b05b1e6b33684dc11b",
        version_id=None, etag="b21b84d653bb07b05b1e6b33684dc11b", size=1305107,
        sequencer="0C0F6F405D6ED209E1", event_time="2019-09-03T19:37:27.192Z", removed=False),))


def test_sample_s3_delete():
    parsed = events.parse(sample("s3EventDeleteObject.json"))
    assert parsed == Notifications(refs=(ObjectRef(
        bucket="lambda-artifacts-deafc19498e3f2df", key="b21b84d653bb07b05b1e6b33684dc11b",
        version_id=None, etag=None, size=None, sequencer="0C0F6F405D6ED209E1",
        event_time="2019-09-03T19:37:27.192Z", removed=True),))


def test_sample_eventbridge_object_created():
    parsed = events.parse(sample("s3EventBridgeNotificationObjectCreatedEvent.json"))
    assert parsed == Notifications(refs=(ObjectRef(
        bucket="example-bucket", key="IMG_m7fzo3.jpg", version_id=None,
        etag="4e68adba0abe2dc8653dc3354e14c01d", size=184662, sequencer="006408CAD69598B05E",
        event_time="2023-03-08T17:50:14Z", removed=False),))


def test_sample_eventbridge_object_deleted():
    parsed = events.parse(sample("s3EventBridgeNotificationObjectDeletedEvent.json"))
    assert parsed == Notifications(refs=(ObjectRef(
        bucket="example-bucket", key="IMG_m7fzo3.jpg", version_id=None, etag=None, size=None,
        sequencer="006408CAD69598B05E", event_time="2021-11-12T00:00:00Z", removed=True),))


def test_sample_s3_in_sqs():
    parsed = events.parse(sample("s3SqsEvent.json"))
    assert parsed == SqsBatch(messages=(SqsMessage(
        message_id="ca3e7a89-c358-40e5-8aa0-5da01403c267",
        refs=(ObjectRef(bucket="xxx", key="test.pdf", version_id="yd3d4HaWOT2zguDLvIQLU6ptDTwKBnQV",
                        etag="2e3ad1e983318bbd8e73b080e2997980", size=104681,
                        sequencer="00643717F9F8B85354", event_time="2023-04-12T20:43:38.021Z"),)),))


def test_sample_sqs_without_s3_notification_fails_each_message_only():
    parsed = events.parse(sample("sqsEvent.json"))
    assert isinstance(parsed, SqsBatch)
    assert [m.message_id for m in parsed.messages] == [
        "059f36b4-87a3-44ab-83d2-661975830a7d", "2e1424d4-f796-459a-8184-9c92662be6da"]
    for message in parsed.messages:
        assert message.refs == () and message.ignored == ()
        assert len(message.problems) == 1
        assert message.message_id in message.problems[0]
        assert "holds no S3 event notification" in message.problems[0]


def test_sample_sns_in_sqs_without_s3_notification_is_a_problem():
    parsed = events.parse(sample("snsSqsEvent.json"))
    assert isinstance(parsed, SqsBatch)
    (message,) = parsed.messages
    assert message.message_id == "79406a00-bf15-46ca-978c-22c3613fcb30"
    assert message.refs == () and message.ignored == ()
    assert len(message.problems) == 1
    assert "holds no S3 event notification" in message.problems[0]


def test_sample_sns_without_s3_notification_is_a_problem():
    parsed = events.parse(sample("snsEvent.json"))
    assert isinstance(parsed, Notifications)
    assert parsed.refs == () and parsed.ignored == ()
    assert len(parsed.problems) == 1
    assert parsed.problems[0].startswith("Records[0].Sns.Message")
    assert "holds no S3 event notification" in parsed.problems[0]


def test_sample_eventbridge_from_another_service_is_refused():
    with pytest.raises(EventError):
        events.parse(sample("eventBridgeEvent.json"))


@pytest.mark.parametrize("name, bucket, version", [
    ("s3BatchOperationEventSchemaV1.json", "powertools-dataset", "1"),
    ("s3BatchOperationEventSchemaV2.json", "powertools-dataset", None),
])
def test_sample_batch_operations(name, bucket, version):
    parsed = events.parse(sample(name))
    assert isinstance(parsed, events.BatchOperations)
    assert parsed.schema_version == ("1.0" if "V1" in name else "2.0")
    assert parsed.invocation_id == "YXNkbGZqYWRmaiBhc2RmdW9hZHNmZGpmaGFzbGtkaGZza2RmaAo"
    assert parsed.tasks == (events.BatchTask("dGFza2lkZ29lc2hlcmUK", ObjectRef(
        bucket=bucket, key="prefix/dataset/dataset.20231222.json.gz", version_id=version)),)


def test_batch_operations_keys_are_decoded_and_bad_tasks_kept_apart():
    parsed = events.parse({
        "invocationSchemaVersion": "2.0", "invocationId": "inv",
        "job": {"id": "j", "userArguments": {"a": "b"}},
        "tasks": [
            {"taskId": "t1", "s3Bucket": "b", "s3Key": "my+file%2B1.txt", "s3VersionId": None},
            {"taskId": "t2", "s3Key": "x"},
            "garbage",
        ],
    })
    assert parsed.user_arguments == {"a": "b"}
    assert parsed.tasks[0].ref.key == "my file+1.txt"
    assert parsed.tasks[1].ref is None and "s3BucketArn" in parsed.tasks[1].problem
    assert parsed.tasks[2].task_id == "tasks[2]" and parsed.tasks[2].problem


@pytest.mark.parametrize("event", [
    {"invocationSchemaVersion": "3.0", "invocationId": "i", "tasks": []},
    {"invocationSchemaVersion": "1.0", "invocationId": 5, "tasks": []},
    {"sync": []}, {"sync": {"bucket": 3}}, {"sync": {"prefix": 1}}, {"sync": {"dry_run": "yes"}},
    {"sync": {"continuation": 7}}, {"sync": {"bucket": "b", "nope": 1}}, {"doctor": 1},
    {"doctor": {"write_probe": "x"}}, {"doctor": {"write_probe": True}},
])
def test_malformed_batch_sync_doctor_are_refused(event):
    with pytest.raises(EventError):
        events.parse(event)


def test_sync_and_doctor_shapes():
    assert events.parse({"sync": {}}) == events.SyncRequest(bucket=None)
    assert events.parse({"sync": {"bucket": "b", "prefix": "p/", "continuation": "t", "dry_run": True}}) == \
        events.SyncRequest(bucket="b", prefix="p/", continuation="t", dry_run=True)
    assert events.parse({"doctor": {}}) == events.DoctorRequest()
    assert events.parse({"doctor": None}) == events.DoctorRequest()


def test_every_sample_has_an_expectation():
    """A new sample in tests/events must get its own test here."""
    covered = {
        "console-s3-put.json", "s3Event.json", "s3EventGlacier.json", "s3EventDeleteObject.json",
        "s3EventBridgeNotificationObjectCreatedEvent.json",
        "s3EventBridgeNotificationObjectDeletedEvent.json", "s3SqsEvent.json", "sqsEvent.json",
        "snsSqsEvent.json", "snsEvent.json", "eventBridgeEvent.json",
        "s3BatchOperationEventSchemaV1.json", "s3BatchOperationEventSchemaV2.json",
        "lambdaDestinationFailure.json",
    }
    assert {p.name for p in EVENTS_DIR.glob("*.json")} == covered


# --------------------------------------------------------------------------- failure records (redrive)


def failure_record(payload, request_id="req-1", **context):
    """What Lambda writes to the on-failure destination once an asynchronous event's retries are spent."""
    return {"version": "1.0", "timestamp": "2024-01-02T03:10:00.000Z",
            "requestContext": {"requestId": request_id, "functionArn": "arn:aws:lambda:us-east-1:1:function:f:$LATEST",
                               "condition": "RetriesExhausted", "approximateInvokeCount": 3, **context},
            "requestPayload": payload,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": {"errorMessage": "1 copy failure(s)", "errorType": "CopyFailed"}}


def test_sample_failure_record_redrives_its_original_event():
    assert events.parse(sample("lambdaDestinationFailure.json")) == events.parse(sample("s3Event.json"))


@pytest.mark.parametrize("original", [
    s3_notification(s3_record("a+b.txt"), s3_record("c")),
    {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": json.dumps(s3_notification(s3_record("a+b.txt"),
                                                                                          s3_record("c")))}}]},
    failure_record(s3_notification(s3_record("a+b.txt"), s3_record("c"))),
], ids=["s3", "sns", "failure-record-of-a-redrive"])
def test_failure_record_in_the_console_is_its_original_event(original):
    parsed = events.parse(failure_record(original))
    assert isinstance(parsed, Notifications) and not parsed.problems
    assert [(r.key, r.event_time) for r in parsed.refs] == [("a b.txt", "2024-01-02T03:04:05.678Z"),
                                                            ("c", "2024-01-02T03:04:05.678Z")]


def test_failure_record_of_other_shapes_is_that_shape():
    assert events.parse(failure_record(eventbridge(key="k"))).refs[0].event_time == "2024-01-02T03:04:05Z"
    assert events.parse(failure_record({"sync": {"bucket": "b", "prefix": "p/"}})) == events.SyncRequest("b", "p/")
    parsed = events.parse(failure_record(json.dumps(s3_notification(s3_record("k")))))  # payload kept as text
    assert [r.key for r in parsed.refs] == ["k"]


def test_failure_record_of_an_unknown_event_is_refused_naming_the_request():
    with pytest.raises(EventError) as info:
        events.parse(failure_record({"foo": 1}, request_id="abc-123"))
    message = str(info.value)
    assert "failure record (request abc-123, RetriesExhausted, 3 attempt(s)" in message
    assert "requestPayload" in message and "keys: foo" in message


def test_failure_records_are_followed_only_so_deep():
    event = s3_notification(s3_record("k"))
    for _ in range(events.MAX_REDRIVE_DEPTH):
        event = failure_record(event)
    assert [r.key for r in events.parse(event).refs] == ["k"]
    with pytest.raises(EventError, match="nested more than"):
        events.parse(failure_record(event))
    deep: dict = {}
    for _ in range(5000):  # far deeper than anything real: refused, never a RecursionError
        deep = failure_record(deep)
    with pytest.raises(EventError, match="nested more than"):
        events.parse(deep)


def test_failure_record_in_sqs_messages_fails_only_its_own_message():
    original = s3_notification(s3_record("a"))
    batch = events.parse({"Records": [
        sqs_record(json.dumps(failure_record(original)), "m-1"),
        sqs_record(json.dumps(sns_envelope(json.dumps(failure_record(eventbridge(key="b"))))), "m-2"),
        sqs_record(json.dumps(failure_record({"sync": {"bucket": "b"}})), "m-3"),
        sqs_record(json.dumps(failure_record({"foo": 1})), "m-4"),
        sqs_record(json.dumps(failure_record(s3_notification({"eventSource": "aws:s3"}))), "m-5"),
    ]})
    first, second, sync, unknown, malformed = batch.messages
    assert [r.key for r in first.refs] == ["a"] and not first.problems
    assert first.refs[0].event_time == "2024-01-02T03:04:05.678Z"
    assert [r.key for r in second.refs] == ["b"] and not second.problems
    (problem,) = sync.problems
    assert "of a manual sync" in problem and "python -m gcs_sync redrive FAILURE_QUEUE_URL" in problem
    assert not sync.refs
    assert unknown.problems and "requestPayload" in unknown.problems[0] and not unknown.refs
    assert malformed.problems and "(redriven)" in malformed.problems[0]


def test_failure_record_helper_reads_sqs_bodies():
    record = failure_record(s3_notification(s3_record("k")))
    assert events.failure_record(json.dumps(record)) == record
    assert events.failure_record(json.dumps(sns_envelope(json.dumps(record)))) == record
    assert events.failure_record(json.dumps(s3_notification(s3_record("k")))) is None
    assert events.failure_record("not json") is None and events.failure_record(None) is None


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    "raw, key",
    [
        ("plain.txt", "plain.txt"),
        ("my+file.txt", "my file.txt"),
        ("a%2Bb", "a+b"),
        ("100%25", "100%"),
        ("test%2Fkey", "test/key"),
        ("dir/sub/file", "dir/sub/file"),
        ("caf%C3%A9", "café"),
        ("%E6%97%A5%E6%9C%AC%E8%AA%9E.txt", "日本語.txt"),
        ("%F0%9F%98%80", "😀"),
        ("a+%2B+b", "a + b"),
        ("%2525", "%25"),  # decoded once, not twice
        ("folder/", "folder/"),
        ("q%3Fx%23y", "q?x#y"),
    ],
)
def test_key_decoding(raw, key):
    assert events.decode_key(raw) == key
    parsed = events.parse(s3_notification(s3_record(raw)))
    assert [r.key for r in parsed.refs] == [key]


@pytest.mark.parametrize("raw", [None, "", 5, ["a"]])
def test_decode_key_rejects_missing_key(raw):
    with pytest.raises(ValueError):
        events.decode_key(raw)


# --------------------------------------------------------------------------- S3 records


@pytest.mark.parametrize(
    "event_name, removed",
    [
        ("ObjectCreated:Put", False),
        ("ObjectCreated:Post", False),
        ("ObjectCreated:Copy", False),
        ("ObjectCreated:CompleteMultipartUpload", False),
        ("s3:ObjectCreated:Put", False),
        ("ObjectRemoved:Delete", True),
        ("ObjectRemoved:DeleteMarkerCreated", True),
    ],
)
def test_created_and_removed_records(event_name, removed):
    parsed = events.parse(s3_notification(s3_record("k", event_name=event_name, eTag='"abc"',
                                                    versionId="v1")))
    (ref,) = parsed.refs
    assert ref.removed is removed
    assert ref.etag == "abc"
    assert ref.version_id == "v1"
    assert parsed.ignored == () and parsed.problems == ()


@pytest.mark.parametrize(
    "event_name",
    ["ObjectRestore:Completed", "ObjectRestore:Post", "ObjectTagging:Put", "ObjectTagging:Delete",
     "ObjectAcl:Put", "Replication:OperationFailedReplication", "IntelligentTiering"],
)
def test_other_event_names_are_ignored(event_name):
    parsed = events.parse(s3_notification(s3_record("k", event_name=event_name)))
    assert parsed.refs == ()
    assert parsed.problems == ()
    assert len(parsed.ignored) == 1
    assert event_name in parsed.ignored[0]


def test_record_fields():
    record = s3_record("a+b", eTag='"d41d8cd98f00b204e9800998ecf8427e-3"', size="42",
                       versionId="3HL4kqtJlcpXroDTDmJ", sequencer="0055AED6DCD90281E5")
    (ref,) = events.parse(s3_notification(record)).refs
    assert ref == ObjectRef(bucket="src-bucket", key="a b", version_id="3HL4kqtJlcpXroDTDmJ",
                            etag="d41d8cd98f00b204e9800998ecf8427e-3", size=42,
                            sequencer="0055AED6DCD90281E5", event_time="2024-01-02T03:04:05.678Z")
    assert ref.url == "s3://src-bucket/a b (version 3HL4kqtJlcpXroDTDmJ)"


def test_empty_optional_fields_become_none():
    (ref,) = events.parse(s3_notification(s3_record("k", eTag="", versionId="", sequencer=""))).refs
    assert (ref.etag, ref.version_id, ref.sequencer, ref.size) == (None, None, None, None)


@pytest.mark.parametrize(
    "bad_record, fragment",
    [
        ("not a dict", "not an object"),
        ({"eventSource": "aws:s3"}, "eventName missing"),
        ({"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}, "missing field 's3'"),
        (s3_record(None), "key missing"),
        (s3_record(""), "key missing"),
        (s3_record("k", size=-1), "negative"),
        (s3_record("k", size="big"), "malformed"),
        (s3_record("k", size=1.5), "size is not a number"),
        (s3_record("k", size=True), "size is not a number"),
        (s3_record("k", versionId=7), "expected a string"),
        (s3_record("k", bucket=""), "bucket name missing"),
        ({**s3_record("k"), "s3": {"object": {"key": "k"}}}, "missing field 'bucket'"),
        ({**s3_record("k"), "s3": "nope"}, "malformed"),
        ({**s3_record("k"), "eventSource": "aws:sns", "Sns": {"Message": "hi"}}, "holds no S3"),
    ],
)
def test_malformed_record_among_good_ones(bad_record, fragment):
    event = s3_notification(s3_record("first"), bad_record, s3_record("third", event_name="ObjectRemoved:Delete"))
    parsed = events.parse(event)
    assert isinstance(parsed, Notifications)
    assert [(r.key, r.removed) for r in parsed.refs] == [("first", False), ("third", True)]
    assert len(parsed.problems) == 1
    assert isinstance(parsed.problems[0], str)
    assert parsed.problems[0].startswith("Records[1]")
    assert fragment in parsed.problems[0]


def test_s3_test_event_top_level_is_ignored():
    event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2024-01-02T03:04:05.000Z",
             "Bucket": "src-bucket", "RequestId": "r", "HostId": "h"}
    parsed = events.parse(event)
    assert parsed == Notifications(refs=(), ignored=("s3:TestEvent",))


# --------------------------------------------------------------------------- SNS and SQS


def test_sns_carrying_s3_notification():
    body = json.dumps(s3_notification(s3_record("x%2By", versionId="v9")))
    event = {"Records": [{"EventSource": "aws:sns", "EventVersion": "1.0",
                          "Sns": {"Type": "Notification", "Message": body}}]}
    parsed = events.parse(event)
    assert isinstance(parsed, Notifications)
    assert [(r.bucket, r.key, r.version_id) for r in parsed.refs] == [("src-bucket", "x+y", "v9")]
    assert parsed.problems == ()


def test_sqs_messages_are_kept_apart():
    test_event = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "src-bucket"})
    good = json.dumps(s3_notification(s3_record("one"), s3_record("two+2")))
    mixed = json.dumps(s3_notification(s3_record("three"), s3_record("t", event_name="ObjectTagging:Put"),
                                       {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}))
    event = {"Records": [
        sqs_record(good, "m-good"),
        sqs_record(test_event, "m-test"),
        sqs_record("not json at all", "m-bad"),
        sqs_record(mixed, "m-mixed"),
    ]}
    parsed = events.parse(event)
    assert isinstance(parsed, SqsBatch)
    by_id = {m.message_id: m for m in parsed.messages}
    assert list(by_id) == ["m-good", "m-test", "m-bad", "m-mixed"]

    assert [r.key for r in by_id["m-good"].refs] == ["one", "two 2"]
    assert by_id["m-good"].ignored == () and by_id["m-good"].problems == ()

    assert by_id["m-test"].refs == () and by_id["m-test"].problems == ()
    assert len(by_id["m-test"].ignored) == 1 and "s3:TestEvent" in by_id["m-test"].ignored[0]

    assert by_id["m-bad"].refs == () and by_id["m-bad"].ignored == ()
    assert len(by_id["m-bad"].problems) == 1 and "m-bad" in by_id["m-bad"].problems[0]

    assert [r.key for r in by_id["m-mixed"].refs] == ["three"]
    assert len(by_id["m-mixed"].ignored) == 1 and "ObjectTagging:Put" in by_id["m-mixed"].ignored[0]
    (problem,) = by_id["m-mixed"].problems
    assert problem.startswith("SQS message m-mixed.Records[2]")
    assert "missing field 's3'" in problem


def test_sns_in_sqs_carrying_s3_notification():
    notification = s3_notification(s3_record("dir/a+b%2Bc.txt", eTag="0123456789abcdef0123456789abcdef",
                                             size=5, sequencer="0055AED6DCD90281E5"))
    body = json.dumps(sns_envelope(json.dumps(notification)), indent=2)
    parsed = events.parse({"Records": [sqs_record(body, "m-sns")]})
    (message,) = parsed.messages
    assert message.problems == () and message.ignored == ()
    assert message.refs == (ObjectRef(bucket="src-bucket", key="dir/a b+c.txt", version_id=None,
                                      etag="0123456789abcdef0123456789abcdef", size=5,
                                      sequencer="0055AED6DCD90281E5",
                                      event_time="2024-01-02T03:04:05.678Z"),)


def test_sns_in_sqs_carrying_s3_test_event_is_ignored():
    body = json.dumps(sns_envelope(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})))
    (message,) = events.parse({"Records": [sqs_record(body)]}).messages
    assert message.refs == () and message.problems == ()
    assert len(message.ignored) == 1 and "s3:TestEvent" in message.ignored[0]


def test_eventbridge_in_sqs():
    body = json.dumps(eventbridge(key="a+b", size=3, etag="e"))
    (message,) = events.parse({"Records": [sqs_record(body)]}).messages
    assert [(r.key, r.size, r.etag) for r in message.refs] == [("a b", 3, "e")]


@pytest.mark.parametrize("body", [None, 5, "", "[]", '{"Records": []}', '{"Records": "x"}', "null"])
def test_sqs_body_without_notification_is_a_problem_on_that_message(body):
    good = sqs_record(json.dumps(s3_notification(s3_record("ok"))), "m-ok")
    parsed = events.parse({"Records": [good, sqs_record(body, "m-x")]})
    ok, bad = parsed.messages
    assert [r.key for r in ok.refs] == ["ok"] and ok.problems == ()
    assert bad.refs == () and len(bad.problems) == 1 and "holds no S3 event notification" in bad.problems[0]


def test_sqs_message_without_id_gets_its_position():
    record = sqs_record("x")
    del record["messageId"]
    (message,) = events.parse({"Records": [record]}).messages
    assert message.message_id == "Records[0]"


# --------------------------------------------------------------------------- EventBridge


def test_eventbridge_version_id_and_quoted_etag():
    parsed = events.parse(eventbridge(key="photos/a%20b+c.jpg", size=10, etag='"abc-2"',
                                      **{"version-id": "vvv", "sequencer": "0A"}))
    assert parsed.refs == (ObjectRef(bucket="src-bucket", key="photos/a b c.jpg", version_id="vvv",
                                     etag="abc-2", size=10, sequencer="0A",
                                     event_time="2024-01-02T03:04:05Z", removed=False),)


def test_eventbridge_object_deleted_with_version():
    parsed = events.parse(eventbridge("Object Deleted", key="k", **{"version-id": "v2"}))
    (ref,) = parsed.refs
    assert ref.removed is True and ref.version_id == "v2"


@pytest.mark.parametrize(
    "detail_type",
    ["Object Restore Completed", "Object Tags Added", "Object ACL Updated", "Object Storage Class Changed"],
)
def test_eventbridge_other_detail_types_ignored(detail_type):
    parsed = events.parse(eventbridge(detail_type, key="k"))
    assert parsed.refs == () and parsed.problems == ()
    assert len(parsed.ignored) == 1 and detail_type in parsed.ignored[0]


def test_eventbridge_malformed_is_a_problem():
    event = eventbridge(key="k")
    del event["detail"]["bucket"]
    parsed = events.parse(event)
    assert parsed.refs == ()
    assert len(parsed.problems) == 1 and "malformed" in parsed.problems[0]


# --------------------------------------------------------------------------- refused shapes


@pytest.mark.parametrize(
    "event",
    [None, [], "x", 1, 1.5, True, {}, {"foo": 1}, {"Records": []}, {"Records": "x"},
     {"Records": [1, 2]}, {"Records": [{"eventSource": "aws:dynamodb"}]},
     {"Records": [{"eventSource": "aws:kinesis"}, {"eventSource": "aws:s3"}]},
     {"Records": [{"eventSource": "aws:sqs"}, {"eventSource": "aws:s3"}]},
     {"source": "aws.ec2", "detail-type": "Object Created"}, {"source": "aws.s3"}],
    ids=repr,
)
def test_unrecognised_events_are_refused(event):
    with pytest.raises(EventError) as info:
        events.parse(event)
    message = str(info.value)
    assert "unrecognised event" in message
    for shape in ("S3 event notification", "SQS", "SNS", "EventBridge", "Batch Operations",
                  "{'sync'", "{'doctor'"):
        assert shape in message


def test_refusal_describes_what_was_received():
    with pytest.raises(EventError, match="keys: bar, foo"):
        events.parse({"foo": 1, "bar": 2})
    with pytest.raises(EventError, match="Received a list"):
        events.parse([])


@pytest.mark.parametrize("event", [
    {"Records": [{"eventSource": ["aws:s3"]}]},
    {"Records": [{"eventSource": {"x": 1}}]},
    {"Records": [{"EventSource": ["aws:sns"]}]},
    {"Records": [s3_record("k"), {"eventSource": ["aws:s3"]}]},
], ids=["list", "dict", "sns-list", "after-good-record"])
def test_unhashable_event_source_is_not_a_crash(event):
    try:
        events.parse(event)
    except EventError:
        pass


# --------------------------------------------------------------------------- property: no crash

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    | st.sampled_from(["aws:s3", "aws:sqs", "aws:sns", "aws.s3", "Records", "ObjectCreated:Put",
                       "Object Created", "s3:TestEvent", "Notification", "{}", '{"Records": [{}]}',
                       "1.0", "2.0", "arn:aws:s3:::b"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.sampled_from(["Records", "eventSource", "EventSource", "eventName", "s3", "object", "bucket",
                         "name", "key", "size", "eTag", "versionId", "sequencer", "body", "Sns",
                         "Message", "Type", "Event", "source", "detail-type", "detail", "messageId",
                         "version-id", "etag", "invocationSchemaVersion", "invocationId", "tasks",
                         "taskId", "s3Key", "s3Bucket", "s3BucketArn", "s3VersionId", "sync",
                         "doctor", "prefix", "continuation", "dry_run", "requestPayload",
                         "requestContext"]) | st.text(max_size=8),
        children, max_size=5),
    max_leaves=25,
)

SAMPLES = [sample(p.name) for p in sorted(EVENTS_DIR.glob("*.json"))]


def _check_parse(value):
    try:
        result = events.parse(value)
    except EventError:
        return
    assert isinstance(result, typing.get_args(events.Invocation))
    if isinstance(result, events.BatchOperations):
        for task in result.tasks:
            assert isinstance(task.task_id, str)
            assert (task.ref is None) != (task.problem is None)
            assert task.ref is None or (isinstance(task.ref.key, str) and isinstance(task.ref.bucket, str))
        return
    if isinstance(result, (events.SyncRequest, events.CheckRequest, events.DoctorRequest)):
        return
    for part in ([result] if isinstance(result, Notifications) else list(result.messages)):
        assert all(isinstance(r, ObjectRef) for r in part.refs)
        assert all(isinstance(p, str) for p in part.problems)
        assert all(isinstance(i, str) for i in part.ignored)


PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


record_keys = st.sampled_from(["eventSource", "EventSource", "eventName", "s3", "Sns", "body", "messageId"])
envelopes = st.one_of(
    json_values,
    st.fixed_dictionaries({"Records": st.lists(st.dictionaries(record_keys, json_values, max_size=4),
                                               min_size=1, max_size=3)}),
    st.fixed_dictionaries({"source": st.just("aws.s3"), "detail-type": json_values, "detail": json_values}),
)


@PROPERTY
@given(envelopes)
@example({"Records": [{"eventSource": "aws:sqs", "body": '{"Type": "Notification", "Message": 5}'}]})
@example({"source": "aws.s3", "detail-type": "Object Created", "detail": []})
@example({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": "x"}]})
def test_parse_arbitrary_values_never_crashes(value):
    _check_parse(value)


def _paths(node, prefix=()):
    """Every location in a sample, descending into JSON strings (SQS bodies, SNS messages)."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))
    elif isinstance(node, str) and node[:1] in "{[" and node:
        try:
            inner = json.loads(node)
        except ValueError:
            return
        yield from _paths(inner, prefix + (json,))


def _mutate(node, path, replace, value):
    if not path:
        return value
    head, rest = path[0], path[1:]
    if head is json:
        return json.dumps(_mutate(json.loads(node), rest, replace, value))
    node = copy.copy(node)
    if not rest and not replace:
        del node[head]
    else:
        node[head] = _mutate(node[head], rest, replace, value)
    return node


@st.composite
def mutated_samples(draw):
    event = draw(st.sampled_from(SAMPLES))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(event) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        delete = draw(st.booleans())
        value = None if delete else draw(st.one_of(
            st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5),
            st.sampled_from(["%ZZ+%", "", "aws:s3", "aws:sqs", "ObjectCreated:Put", -1, 1e30]),
            st.lists(st.integers() | st.text(max_size=3), max_size=3),
            st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        ))
        event = _mutate(event, path, not delete, value)
    return event


@PROPERTY
@given(mutated_samples())
def test_parse_mutated_samples_never_crashes(event):
    _check_parse(event)


def test_mutation_helper_reaches_embedded_json():
    event = sample("s3SqsEvent.json")
    path = ("Records", 0, "body", json, "Records", 0, "s3", "object", "key")
    assert path in set(_paths(event))
    mutated = _mutate(event, path, True, "changed")
    (message,) = events.parse(mutated).messages
    assert [r.key for r in message.refs] == ["changed"]
    assert events.parse(event).messages[0].refs[0].key == "test.pdf"  # original untouched

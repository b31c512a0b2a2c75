"""Every invocation shape through the real ``lambda_function.lambda_handler``.

SQS, SNS, SNS inside SQS, EventBridge, S3 Batch Operations (schema 1.0 and 2.0), delete
mirroring, INCLUDE / EXCLUDE and SRC_PREFIX= remapping, refusals, and the ready-to-paste
console events in ``events/``. Where moto can produce the notification itself (S3 -> SQS,
S3 -> SNS -> SQS), the test uses moto's own messages rather than hand-built ones.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote_plus

import boto3
import pytest

import lambda_function
from gcs_sync import events
from gcs_sync.errors import EventError

from .conftest import CountdownContext
from .conftest import writes as written

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "events"
CONSOLE_EVENTS = ROOT / "events"
MIB = 1024 * 1024


# -- helpers ----------------------------------------------------------------------------------

def aws_client(world, service: str):
    """A boto3 client for moto's server (it serves SQS and SNS at the S3 URL), rig credentials."""
    env = world.rig.s3.aws_env()
    return boto3.client(
        service, endpoint_url=world.rig.s3.url, region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=env["AWS_SESSION_TOKEN"],
    )


def notified_queue(world) -> tuple[object, str, str]:
    """A new queue that the source bucket notifies of every ObjectCreated (S3 first sends s3:TestEvent)."""
    sqs, url, arn = new_queue(world)
    world.rig.s3_client.put_bucket_notification_configuration(
        Bucket=world.source,
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]},
    )
    return sqs, url, arn


def put_in_parts(world, key: str, parts: list[bytes], **params) -> None:
    """A multipart upload of ``parts`` to the source bucket (its ETag is not an MD5)."""
    s3 = world.rig.s3_client
    upload_id = s3.create_multipart_upload(Bucket=world.source, Key=key, **params)["UploadId"]
    done = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=world.source, Key=key, UploadId=upload_id,
                                                    PartNumber=n, Body=data)["ETag"]}
            for n, data in enumerate(parts, 1)]
    s3.complete_multipart_upload(Bucket=world.source, Key=key, UploadId=upload_id,
                                 MultipartUpload={"Parts": done})


def new_queue(world) -> tuple[object, str, str]:
    sqs = aws_client(world, "sqs")
    url = sqs.create_queue(QueueName=f"gcs-sync-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return sqs, url, arn


def receive(sqs, url: str, count: int, timeout: float = 15.0) -> list[dict]:
    """Exactly ``count`` messages from the queue (waiting for them), deleted once received."""
    messages: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(messages) < count and time.monotonic() < deadline:
        answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                     AttributeNames=["All"], MessageAttributeNames=["All"])
        for message in answer.get("Messages", []):
            messages.append(message)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert len(messages) == count, f"expected {count} messages, got {len(messages)}: {messages}"
    # nothing more is waiting
    assert not sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages")
    return messages


def lambda_sqs_record(message: dict, arn: str) -> dict:
    """An SQS message as the Lambda event source mapping hands it to the function."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": arn.split(":")[3],
    }


def sqs_event(*records: dict) -> dict:
    return {"Records": list(records)}


def sqs_record(message_id: str, body: str) -> dict:
    return {
        "messageId": message_id, "receiptHandle": f"rh-{message_id}", "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1795000000000",
                       "SenderId": "AIDAEXAMPLE", "ApproximateFirstReceiveTimestamp": "1795000000001"},
        "messageAttributes": {}, "md5OfBody": "0" * 32, "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:gcs-sync", "awsRegion": "us-east-1",
    }


def sns_envelope(message: str) -> dict:
    """The JSON SNS delivers (to SQS without raw delivery, and inside Lambda's SNS record)."""
    return {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:gcs-sync",
        "Subject": "Amazon S3 Notification",
        "Message": message,
        "Timestamp": "2026-11-21T12:00:00.000Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLE",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }


def sns_event(message: str) -> dict:
    envelope = sns_envelope(message)
    sns = {k: v for k, v in envelope.items() if k not in ("SigningCertURL", "UnsubscribeURL")}
    sns.update(SigningCertUrl=envelope["SigningCertURL"], UnsubscribeUrl=envelope["UnsubscribeURL"],
               MessageAttributes={})
    return {"Records": [{
        "EventVersion": "1.0", "EventSource": "aws:sns",
        "EventSubscriptionArn": "arn:aws:sns:us-east-1:123456789012:gcs-sync:" + str(uuid.uuid4()),
        "Sns": sns,
    }]}


def eventbridge_event(detail_type: str, bucket: str, key: str, *, size: int = 0, etag: str = "",
                      reason: str = "PutObject") -> dict:
    """Shaped like tests/events/s3EventBridgeNotificationObjectCreatedEvent.json."""
    event = json.loads((SAMPLES / "s3EventBridgeNotificationObjectCreatedEvent.json").read_text())
    event["detail-type"] = detail_type
    event["resources"] = [f"arn:aws:s3:::{bucket}"]
    event["detail"]["bucket"]["name"] = bucket
    event["detail"]["object"] = {"key": quote_plus(key, safe="/"), "size": size, "etag": etag,
                                 "sequencer": "00" + uuid.uuid4().hex[:16].upper()}
    event["detail"]["reason"] = reason
    if detail_type == "Object Deleted":
        event["detail"]["object"] = {"key": quote_plus(key, safe="/"), "sequencer": "00FFFFFFFFFFFFFFFF"}
        event["detail"]["deletion-type"] = "Permanently Deleted"
    return event


def writes(world) -> list[tuple[str, str]]:
    return [r for r in world.rig.front.requests if r[0] in ("POST", "PUT", "PATCH", "DELETE")]


def upload_foreign(world, bucket: str, name: str, body: bytes) -> None:
    """An object written straight to the backend, not by gcs-sync (no provenance metadata)."""
    query = urllib.parse.urlencode({"uploadType": "media", "name": name})
    request = urllib.request.Request(f"{world.rig.gcs.url}/upload/storage/v1/b/{bucket}/o?{query}",
                                     data=body, method="POST", headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
    assert world.gcs_bytes(bucket, name) == body


@contextmanager
def outcomes():
    """Per-destination outcomes the function logs ("object copied", "object already_current"...)."""
    seen: list[dict] = []

    class Collect(logging.Handler):
        def emit(self, record):
            fields = getattr(record, "fields", None)
            if isinstance(fields, dict) and "outcome" in fields:
                seen.append(fields)

    handler = Collect(level=logging.INFO)
    logger = logging.getLogger("gcs_sync")
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)


def by_source(summary: dict) -> dict[str, dict]:
    return {r["source"].split("/", 3)[3]: r for r in summary["results"]}


# -- 1. SQS fed by moto's own S3 notifications ------------------------------------------------

def test_sqs_with_notifications_moto_produced(world):
    plain, prefixed = world.bucket(), world.bucket()
    world.configure(f"gs://{plain} gs://{prefixed}/from-s3/")
    sqs, url, arn = notified_queue(world)
    (test_message,) = receive(sqs, url, 1)
    assert "s3:TestEvent" in test_message["Body"]

    # the test event alone: a success that does no work at all
    assert world.invoke(sqs_event(lambda_sqs_record(test_message, arn))) == {"batchItemFailures": []}
    assert world.rig.front.requests == []

    files = {
        "reports/2026/11/daily summary.csv": b"day,total\n1,2\n",
        "with space+plus.txt": b"space and plus",
        "données/日本語 ファイル.txt": "こんにちは".encode(),
        "dir/": b"",
        "top.bin": bytes(range(256)) * 40,
    }
    for key, body in files.items():
        world.rig.s3_client.put_object(Bucket=world.source, Key=key, Body=body)
    messages = receive(sqs, url, len(files))
    bodies = [json.loads(m["Body"]) for m in messages]
    assert {b["Records"][0]["eventName"] for b in bodies} == {"ObjectCreated:Put"}
    # moto encodes keys like S3 does ('+' for a space, %2B for '+'), and '/' as well
    assert any(b["Records"][0]["s3"]["object"]["key"] == "with+space%2Bplus.txt" for b in bodies)

    batch = sqs_event(lambda_sqs_record(test_message, arn), *(lambda_sqs_record(m, arn) for m in messages))
    assert world.invoke(batch) == {"batchItemFailures": []}
    for key, body in files.items():
        assert world.gcs_bytes(plain, key) == body, key
        assert world.gcs_bytes(prefixed, "from-s3/" + key) == body, key
    assert written(world) == 2 * len(files)


def test_sqs_multipart_upload_is_copied_once_though_announced_twice(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    sqs, url, arn = notified_queue(world)
    receive(sqs, url, 1)  # s3:TestEvent

    key = "big/multipart file.bin"
    parts = [bytes([65 + i]) * (5 * MIB) for i in range(2)] + [b"tail" * 1000]
    put_in_parts(world, key, parts, ContentType="application/x-test")
    body = b"".join(parts)

    messages = receive(sqs, url, 2)  # moto announces both Put and CompleteMultipartUpload
    names = sorted(json.loads(m["Body"])["Records"][0]["eventName"] for m in messages)
    assert names == ["ObjectCreated:CompleteMultipartUpload", "ObjectCreated:Put"]
    assert json.loads(messages[0]["Body"])["Records"][0]["s3"]["object"]["eTag"].endswith("-3")

    with outcomes() as seen:
        assert world.invoke(sqs_event(lambda_sqs_record(messages[0], arn))) == {"batchItemFailures": []}
        meta = world.gcs_object(dest, key)
        assert world.gcs_bytes(dest, key) == body
        assert int(meta["size"]) == len(body) and meta["contentType"] == "application/x-test"
        assert written(world) == 1
        assert world.invoke(sqs_event(lambda_sqs_record(messages[1], arn))) == {"batchItemFailures": []}
    assert written(world) == 1, "the second notification must not upload the object again"
    assert world.gcs_object(dest, key)["generation"] == meta["generation"]
    assert [f["outcome"] for f in seen] == ["copied", "already_current"]


def test_sqs_multipart_upload_announced_twice_in_one_batch_is_uploaded_once(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    sqs, url, arn = notified_queue(world)
    receive(sqs, url, 1)  # s3:TestEvent

    key = "big/batched.bin"
    parts = [bytes([97 + i]) * (5 * MIB) for i in range(2)] + [b"end"]
    put_in_parts(world, key, parts)
    messages = receive(sqs, url, 2)

    with outcomes() as seen:
        result = world.invoke(sqs_event(*(lambda_sqs_record(m, arn) for m in messages)))
    assert result == {"batchItemFailures": []}
    assert world.gcs_bytes(dest, key) == b"".join(parts)
    # coalesced: one read, one upload, one logged outcome shared by both messages
    assert [f["outcome"] for f in seen] == ["copied"]
    assert written(world) == 1


# -- 2. SQS partial failure -------------------------------------------------------------------

@pytest.mark.parametrize("failure", ["denied destination", "name Cloud Storage cannot hold"])
def test_sqs_reports_exactly_the_failed_messages(world, failure):
    good = world.bucket()
    if failure == "denied destination":
        denied = world.bucket()
        world.configure(f"gs://{good} denied/=gs://{denied}/")
        world.rig.front.deny[denied] = 403
        failing = world.put("denied/report.csv", b"never lands in the denied bucket")
    else:
        world.configure(f"gs://{good}")
        failing = world.record("line\nbreak.txt", size=3)
    ok = world.put("ok/fine.txt", b"fine")
    event = sqs_event(
        sqs_record("msg-good", json.dumps({"Records": [ok]})),
        sqs_record("msg-no-notification", json.dumps({"hello": 1})),
        sqs_record("msg-copy-fails", json.dumps({"Records": [failing]})),
    )
    result = world.invoke(event)
    assert result == {"batchItemFailures": [{"itemIdentifier": "msg-no-notification"},
                                            {"itemIdentifier": "msg-copy-fails"}]}
    assert world.gcs_bytes(good, "ok/fine.txt") == b"fine"
    if failure == "denied destination":
        # the other destination of the failing message still got its copy
        assert world.gcs_bytes(good, "denied/report.csv") == b"never lands in the denied bucket"
    else:
        assert written(world) == 1


def test_sqs_message_that_is_not_json_fails_alone(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    ok = world.put("a.txt", b"a")
    result = world.invoke(sqs_event(sqs_record("bad", "Test message."),
                                    sqs_record("good", json.dumps({"Records": [ok]}))))
    assert result == {"batchItemFailures": [{"itemIdentifier": "bad"}]}
    assert world.gcs_bytes(dest, "a.txt") == b"a"


# -- 3. SNS and SNS inside SQS ----------------------------------------------------------------

def test_sns_notification_is_copied(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    record = world.put("sns/via topic.txt", b"through SNS")
    summary = world.invoke(sns_event(json.dumps({"Records": [record]})))
    assert summary["copied"] == 1 and summary["failed"] == 0
    assert world.gcs_bytes(dest, "sns/via topic.txt") == b"through SNS"


def test_sns_inside_sqs_is_copied(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    first = world.put("sns-sqs/one.txt", b"1")
    second = world.put("sns-sqs/two.txt", b"2")
    body = json.dumps(sns_envelope(json.dumps({"Records": [first, second]})), indent=2)
    result = world.invoke(sqs_event(sqs_record("m-1", body)))
    assert result == {"batchItemFailures": []}
    assert world.gcs_bytes(dest, "sns-sqs/one.txt") == b"1"
    assert world.gcs_bytes(dest, "sns-sqs/two.txt") == b"2"


def test_sns_inside_sqs_moto_produced(world):
    """S3 -> SNS topic -> SQS subscription, every hop done by moto."""
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    sns = aws_client(world, "sns")
    topic = sns.create_topic(Name=f"gcs-sync-{uuid.uuid4().hex[:12]}")["TopicArn"]
    sqs, url, arn = new_queue(world)
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    world.rig.s3_client.put_bucket_notification_configuration(
        Bucket=world.source,
        NotificationConfiguration={"TopicConfigurations": [{"TopicArn": topic, "Events": ["s3:ObjectCreated:*"]}]},
    )
    world.rig.s3_client.put_object(Bucket=world.source, Key="topic/a b+c.txt", Body=b"fan-out")
    messages = receive(sqs, url, 2)  # the test event, then the notification
    envelopes = [json.loads(m["Body"]) for m in messages]
    assert {e["Type"] for e in envelopes} == {"Notification"}
    result = world.invoke(sqs_event(*(lambda_sqs_record(m, arn) for m in messages)))
    assert result == {"batchItemFailures": []}
    assert world.gcs_bytes(dest, "topic/a b+c.txt") == b"fan-out"
    assert written(world) == 1


# -- 4. EventBridge ---------------------------------------------------------------------------

def test_eventbridge_object_created_is_copied_and_object_deleted_ignored(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    response = world.rig.s3_client.put_object(Bucket=world.source, Key="eb/created.json", Body=b'{"ok": true}')
    created = eventbridge_event("Object Created", world.source, "eb/created.json", size=12,
                                etag=response["ETag"].strip('"'))
    summary = world.invoke(created)
    assert summary["copied"] == 1 and summary["failed"] == 0
    assert world.gcs_bytes(dest, "eb/created.json") == b'{"ok": true}'

    world.rig.s3_client.delete_object(Bucket=world.source, Key="eb/created.json")
    before = len(writes(world))
    summary = world.invoke(eventbridge_event("Object Deleted", world.source, "eb/created.json",
                                             reason="DeleteObject"))
    assert summary["skipped"] == 1 and summary["deleted"] == 0 and summary["failed"] == 0
    assert "MIRROR_DELETES" in summary["results"][0]["reason"]
    assert world.gcs_bytes(dest, "eb/created.json") == b'{"ok": true}'
    assert len(writes(world)) == before


def test_eventbridge_other_s3_detail_types_change_nothing(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    world.rig.s3_client.put_object(Bucket=world.source, Key="tags.txt", Body=b"t")
    summary = world.invoke(eventbridge_event("Object Tags Added", world.source, "tags.txt"))
    assert summary["objects"] == 0 and summary["failed"] == 0 and summary["ignored"]
    assert world.rig.front.requests == []


# -- 5. S3 Batch Operations -------------------------------------------------------------------

@pytest.mark.parametrize("schema", ["1.0", "2.0"])
def test_batch_operations_one_result_per_task(world, schema):
    main, denied, flaky = world.bucket(), world.bucket(), world.bucket()
    world.configure(f"gs://{main} denied/=gs://{denied}/ flaky/=gs://{flaky}/")
    world.rig.front.deny[denied] = 403
    world.rig.front.deny[flaky] = 503
    s3 = world.rig.s3_client
    contents = {"batch/a.csv": b"a,b\n", "my file+1.txt": b"plus", "denied/d.txt": b"d", "flaky/f.txt": b"f"}
    for key, body in contents.items():
        s3.put_object(Bucket=world.source, Key=key, Body=body)
    s3.put_object(Bucket=world.source, Key="batch/gone.csv", Body=b"soon gone")
    s3.delete_object(Bucket=world.source, Key="batch/gone.csv")
    missing_bucket = f"no-such-bucket-{uuid.uuid4().hex[:8]}"

    def task(task_id, key, bucket=world.source):
        entry = {"taskId": task_id, "s3VersionId": None}
        if key is not None:
            entry["s3Key"] = key
        if schema == "1.0":
            entry["s3BucketArn"] = f"arn:aws:s3:::{bucket}"
        else:
            entry["s3Bucket"] = bucket
        return entry

    tasks = [
        task("t-existing", "batch/a.csv"),
        task("t-encoded", "my+file%2B1.txt"),
        task("t-gone", "batch/gone.csv"),
        task("t-no-bucket", "x.txt", missing_bucket),
        task("t-denied", "denied/d.txt"),
        task("t-flaky", "flaky/f.txt"),
        task("t-malformed", None),
    ]
    event = {"invocationSchemaVersion": schema, "invocationId": f"inv-{uuid.uuid4().hex}",
             "job": {"id": str(uuid.uuid4())}, "tasks": tasks}
    if schema == "2.0":
        event["job"]["userArguments"] = {"purpose": "backfill"}

    # The flaky destination answers 503 to every request. The client retries it until the
    # invocation's deadline (remaining time minus a reserve), then the task is reported.
    started = time.monotonic()
    answer = lambda_function.lambda_handler(json.loads(json.dumps(event)), CountdownContext(6))
    assert time.monotonic() - started < 6, "the retries must end before Lambda's timeout"
    assert sum(1 for _, p in world.rig.front.requests if p.startswith(f"/storage/v1/b/{flaky}/")) > 1

    assert answer["invocationSchemaVersion"] == schema
    assert answer["invocationId"] == event["invocationId"]
    assert answer["treatMissingKeysAs"] in ("Succeeded", "TemporaryFailure", "PermanentFailure")
    results = answer["results"]
    assert [r["taskId"] for r in results] == [t["taskId"] for t in tasks]
    codes = {r["taskId"]: r["resultCode"] for r in results}
    text = {r["taskId"]: r["resultString"] for r in results}
    assert codes == {
        "t-existing": "Succeeded",
        "t-encoded": "Succeeded",
        "t-gone": "Succeeded",
        "t-no-bucket": "PermanentFailure",
        "t-denied": "PermanentFailure",
        "t-flaky": "TemporaryFailure",
        "t-malformed": "PermanentFailure",
    }
    # a vanished object is nothing to copy: Succeeded, and the string says it was skipped
    assert "skipped" in text["t-gone"] and "source gone" in text["t-gone"]
    assert missing_bucket in text["t-no-bucket"] and "does not exist" in text["t-no-bucket"]
    assert f"gs://{denied}/d.txt" in text["t-denied"] and "roles/storage.objectUser" in text["t-denied"]
    assert f"gs://{flaky}/f.txt" in text["t-flaky"]
    assert "malformed" in text["t-malformed"] and "key" in text["t-malformed"]
    assert all(len(r["resultString"]) <= 1000 for r in results)

    assert world.gcs_bytes(main, "batch/a.csv") == b"a,b\n"
    assert world.gcs_bytes(main, "my file+1.txt") == b"plus"  # decoded once: '+' is a space, %2B a '+'
    assert world.gcs_object(main, "my+file%2B1.txt") is None and world.gcs_object(main, "my file 1.txt") is None
    assert world.gcs_object(main, "batch/gone.csv") is None
    # a failing destination does not stop the object's other destinations
    assert world.gcs_bytes(main, "denied/d.txt") == b"d"
    assert world.gcs_bytes(main, "flaky/f.txt") == b"f"


# -- 6. deletes ---------------------------------------------------------------------------------

def test_mirrored_deletes(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}", MIRROR_DELETES="true")
    s3 = world.rig.s3_client
    summary = world.notify(world.put("del/gone.txt", b"gone"), world.put("del/back.txt", b"v1"))
    assert summary["copied"] == 2

    s3.delete_object(Bucket=world.source, Key="del/gone.txt")
    s3.delete_object(Bucket=world.source, Key="del/back.txt")
    s3.put_object(Bucket=world.source, Key="del/back.txt", Body=b"v2")  # re-created after the delete
    upload_foreign(world, dest, "del/foreign.txt", b"someone else's")

    summary = world.notify(
        world.record("del/gone.txt", event="ObjectRemoved:Delete"),
        world.record("del/back.txt", event="ObjectRemoved:Delete"),
        world.record("del/foreign.txt", event="ObjectRemoved:DeleteMarkerCreated"),
        world.record("del/never-copied.txt", event="ObjectRemoved:Delete"),
    )
    assert summary["failed"] == 0
    assert summary["deleted"] == 1 and summary["kept"] == 2 and summary["already_absent"] == 1
    results = by_source(summary)
    assert results["del/gone.txt"]["outcome"] == "deleted"
    assert results["del/back.txt"]["outcome"] == "kept"
    assert results["del/foreign.txt"]["outcome"] == "kept"
    assert results["del/never-copied.txt"]["outcome"] == "already_absent"

    assert world.gcs_object(dest, "del/gone.txt") is None
    assert world.gcs_bytes(dest, "del/back.txt") == b"v1"  # kept; its own Put event brings v2
    assert world.gcs_bytes(dest, "del/foreign.txt") == b"someone else's"
    assert world.gcs_object(dest, "del/never-copied.txt") is None


def test_removed_records_delete_nothing_when_mirroring_is_off(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    world.notify(world.put("keep/a.txt", b"a"), world.put("keep/b.txt", b"b"))
    world.rig.s3_client.delete_objects(Bucket=world.source, Delete={"Objects": [{"Key": "keep/a.txt"},
                                                                                {"Key": "keep/b.txt"}]})
    before = len(writes(world))
    summary = world.notify(world.record("keep/a.txt", event="ObjectRemoved:Delete"),
                           world.record("keep/b.txt", event="ObjectRemoved:DeleteMarkerCreated"))
    assert summary["skipped"] == 2 and summary["deleted"] == 0 and summary["failed"] == 0
    assert world.gcs_bytes(dest, "keep/a.txt") == b"a" and world.gcs_bytes(dest, "keep/b.txt") == b"b"
    assert len(writes(world)) == before


# -- 7. filters and remapping -------------------------------------------------------------------

def test_include_and_exclude_filters(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}", INCLUDE="incoming/", EXCLUDE="*.tmp")
    records = [
        world.put("incoming/a.csv", b"a"),
        world.put("incoming/sub/partial.tmp", b"tmp"),
        world.put("incoming/b.tmp.gz", b"not a .tmp"),
        world.put("outgoing/c.csv", b"c"),
    ]
    summary = world.notify(*records)
    assert summary["copied"] == 2 and summary["skipped"] == 2 and summary["failed"] == 0
    results = by_source(summary)
    for key in ("incoming/sub/partial.tmp", "outgoing/c.csv"):
        assert results[key]["outcome"] == "skipped" and "INCLUDE / EXCLUDE" in results[key]["reason"]
    assert {i["name"] for i in world.rig.gcs.list_objects(dest)} == {"incoming/a.csv", "incoming/b.tmp.gz"}


def test_source_prefix_remapping(world):
    everything, bdp = world.bucket(), world.bucket()
    world.configure(f"gs://{everything} incoming/=gs://{bdp}/bdp/")
    summary = world.notify(world.put("incoming/x/y.csv", b"y"), world.put("other/z", b"z"))
    assert summary["copied"] == 2 and summary["failed"] == 0
    assert world.gcs_bytes(everything, "incoming/x/y.csv") == b"y"
    assert world.gcs_bytes(bdp, "bdp/x/y.csv") == b"y"
    assert world.gcs_bytes(everything, "other/z") == b"z"
    assert {i["name"] for i in world.rig.gcs.list_objects(bdp)} == {"bdp/x/y.csv"}
    assert {i["name"] for i in world.rig.gcs.list_objects(everything)} == {"incoming/x/y.csv", "other/z"}


# -- 8. refusals ------------------------------------------------------------------------------

@pytest.mark.parametrize("event", [
    {"foo": 1},
    json.loads((SAMPLES / "eventBridgeEvent.json").read_text()),
    {"Records": []},
    [{"eventSource": "aws:s3"}],
    "copy everything",
], ids=["foo", "ec2-eventbridge", "no-records", "list", "string"])
def test_unrecognised_events_are_refused_with_the_accepted_shapes(world, event):
    world.configure(f"gs://{world.bucket()}")
    world.put("must-not-be-copied.txt", b"x")
    with pytest.raises(EventError) as caught:
        world.invoke(event)
    message = str(caught.value)
    for shape in ("S3 event notification", "SQS", "SNS", "EventBridge", "Batch Operations", "sync", "doctor"):
        assert shape in message, shape
    assert world.rig.front.requests == []


# -- console test events in events/ -----------------------------------------------------------

EXPECTED_TYPES = {
    "s3-put.json": events.Notifications,
    "sqs-s3-notification.json": events.SqsBatch,
    "sns-s3-notification.json": events.Notifications,
    "eventbridge-object-created.json": events.Notifications,
    "batch-operations-v2.json": events.BatchOperations,
    "sync.json": events.SyncRequest,
    "sync-dry-run.json": events.SyncRequest,
    "doctor.json": events.DoctorRequest,
}


def console_event(name: str):
    return json.loads((CONSOLE_EVENTS / name).read_text(encoding="utf-8"))


def test_every_console_event_parses_into_its_shape():
    assert sorted(p.name for p in CONSOLE_EVENTS.iterdir()) == sorted(EXPECTED_TYPES)
    for name, kind in EXPECTED_TYPES.items():
        parsed = events.parse(console_event(name))
        assert type(parsed) is kind, name
        if isinstance(parsed, events.Notifications):
            assert not parsed.problems and not parsed.ignored, name
            assert [(r.bucket, r.removed) for r in parsed.refs] == [("my-source-bucket", False)], name
        if isinstance(parsed, events.SqsBatch):
            (message,) = parsed.messages
            assert not message.problems and [r.bucket for r in message.refs] == ["my-source-bucket"]
        if isinstance(parsed, events.BatchOperations):
            assert parsed.schema_version == "2.0" and parsed.tasks
            assert all(t.ref is not None and t.ref.bucket == "my-source-bucket" for t in parsed.tasks)

    put = events.parse(console_event("s3-put.json"))
    assert put.refs[0].key == "incoming/report 2026.csv"  # '+' in the event is a space
    assert events.parse(console_event("sync.json")) == events.SyncRequest(bucket="my-source-bucket",
                                                                         prefix="incoming/")
    dry = events.parse(console_event("sync-dry-run.json"))
    assert dry.dry_run is True and dry.bucket == "my-source-bucket" and dry.prefix == "incoming/"
    assert events.parse(console_event("doctor.json")) == events.DoctorRequest()


def test_console_events_work_as_pasted(world):
    """The files copy the object they name from my-source-bucket, as a user would see it."""
    bucket, key = "my-source-bucket", "incoming/report 2026.csv"
    dest = world.bucket()
    world.configure(f"gs://{dest}/console/")
    s3 = world.rig.s3_client
    s3.create_bucket(Bucket=bucket)
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=b"year,total\n2026,1\n")
        s3.put_object(Bucket=bucket, Key="incoming/report-2026.csv", Body=b"eventbridge\n")
        name = "console/" + key

        dry = world.invoke(console_event("sync-dry-run.json"))
        assert dry["dry_run"] is True and sorted(dry["would_copy"]) == ["incoming/report 2026.csv",
                                                                       "incoming/report-2026.csv"]
        assert written(world) == 0

        assert world.invoke(console_event("s3-put.json"))["copied"] == 1
        assert world.gcs_bytes(dest, name) == b"year,total\n2026,1\n"
        assert world.invoke(console_event("sqs-s3-notification.json")) == {"batchItemFailures": []}
        assert world.invoke(console_event("sns-s3-notification.json"))["already_current"] == 1
        eventbridge = world.invoke(console_event("eventbridge-object-created.json"))
        assert eventbridge["copied"] == 1 and eventbridge["failed"] == 0
        batch = world.invoke(console_event("batch-operations-v2.json"))
        assert {r["resultCode"] for r in batch["results"]} == {"Succeeded"}
        sync = world.invoke(console_event("sync.json"))
        assert sync["complete"] is True and sync["failed"] == 0 and sync["to_copy"] == 0
        assert written(world) == 2
        assert world.gcs_bytes(dest, "console/incoming/report-2026.csv") == b"eventbridge\n"
    finally:
        for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=bucket)

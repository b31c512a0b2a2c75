"""Objects too large for one invocation: sliced, each slice a message on the function's own queue
(moto's SQS), delivered to the real handler in order, shuffled, duplicated, with a slice failing
twice, and to two containers finishing at once; a source overwritten mid-way abandons the plan.
Tiny slices (SLICE_MB=1) keep it fast; every test checks the final bytes, metadata and proof at
every destination and that no temporary object is left.
"""

from __future__ import annotations

import base64
import json
import os
import random
import threading

import google_crc32c
import pytest

import lambda_function
from gcs_sync.handler import Container
from gcs_sync.errors import CopyFailed
from gcs_sync.slices import RESERVED_PREFIX

from .conftest import CountdownContext, FakeContext
from .test_invocations import aws_client, lambda_sqs_record, sqs_event

MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def small_parts(monkeypatch):
    import moto.s3.models

    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", 64 * 1024)


def crc32c_b64(data: bytes) -> str:
    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


class Sliced:
    """A world whose function slices every object from 1 MiB into 1 MiB slices through a queue."""

    def __init__(self, world, destinations: int = 2):
        self.world = world
        self.sqs = aws_client(world, "sqs")
        self.url = self.sqs.create_queue(QueueName=f"slices-{os.urandom(6).hex()}")["QueueUrl"]
        self.arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.dests = [world.bucket() for _ in range(destinations)]
        self.env = dict(SLICE_QUEUE_URL=self.url, AWS_ENDPOINT_URL_SQS=world.rig.s3.url, SLICE_MB="1",
                        SLICE_THRESHOLD_MB="1")
        world.configure(" ".join(f"gs://{d}/" for d in self.dests), **self.env)

    def messages(self) -> list[dict]:
        """Every message waiting on the queue, as Lambda's SQS event source hands them over."""
        found: list[dict] = []
        while True:
            answer = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                              AttributeNames=["All"])
            batch = answer.get("Messages", [])
            if not batch:
                return found
            for message in batch:
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
                found.append(lambda_sqs_record(message, self.arn))

    def deliver(self, records: list[dict], size: int = 10, container=None) -> list[str]:
        """Deliver in batches of ``size``; the ids of the failed messages."""
        failed = []
        for first in range(0, len(records), size):
            event = json.loads(json.dumps(sqs_event(*records[first:first + size])))
            handle = container.handle if container else lambda_function.lambda_handler
            answer = handle(event, FakeContext())
            failed += [f["itemIdentifier"] for f in answer["batchItemFailures"]]
        return failed

    def temporary(self) -> list[str]:
        return [o["name"] for d in self.dests for o in self.world.rig.gcs.list_objects(d, RESERVED_PREFIX)]

    def assert_copied(self, key: str, data: bytes, proof: str, **expected_meta: str) -> None:
        for dest in self.dests:
            meta = self.world.gcs_object(dest, key)
            assert meta is not None, f"gs://{dest}/{key} missing"
            assert self.world.gcs_bytes(dest, key) == data, dest
            assert int(meta["size"]) == len(data) and meta["crc32c"] == crc32c_b64(data)
            custom = meta.get("metadata", {})
            assert custom["gcs-sync-source-key"] == key and custom["gcs-sync-proof"] == proof, custom
            assert custom["gcs-sync-source-crc32c"] == crc32c_b64(data)
            assert custom["gcs-sync-source-size"] == str(len(data))
            for name, value in expected_meta.items():
                assert custom.get(name) == value, (dest, name, custom)
            assert meta.get("contentType") == "application/x-test"
        assert self.temporary() == [], "temporary objects left behind"


def _put(world, key: str, data: bytes, **params) -> dict:
    return world.put(key, data, ContentType="application/x-test", Metadata={"origin": "lab"}, **params)


def _put_parts(world, key: str, parts: list[bytes]) -> dict:
    s3 = world.rig.s3_client
    upload = s3.create_multipart_upload(Bucket=world.source, Key=key, ContentType="application/x-test",
                                        Metadata={"origin": "lab"})
    done = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=world.source, Key=key, UploadId=upload["UploadId"],
                                                    PartNumber=n, Body=data)["ETag"]}
            for n, data in enumerate(parts, 1)]
    answer = s3.complete_multipart_upload(Bucket=world.source, Key=key, UploadId=upload["UploadId"],
                                          MultipartUpload={"Parts": done})
    return world.record(key, size=sum(map(len, parts)), etag=answer["ETag"].strip('"'),
                        event="ObjectCreated:CompleteMultipartUpload")


def _plan(sliced: Sliced, record: dict, slices: int) -> list[dict]:
    summary = sliced.world.notify(record)
    (result,) = summary["results"]
    assert result["outcome"] == "sliced" and summary["sliced"] == 1, summary
    assert all(f"{slices} slices queued" in d["detail"] for d in result["destinations"]), result
    messages = sliced.messages()
    assert len(messages) == slices
    return messages


def test_more_than_32_slices_in_order_compose_in_levels_and_prove_the_full_object_crc32c(world):
    sliced = Sliced(world)
    data = os.urandom(34 * MIB + 123)  # 35 slices: two compose levels
    messages = _plan(sliced, _put(world, "big/in order.bin", data, ChecksumAlgorithm="CRC32C"), 35)
    since = len(world.rig.front.requests)
    assert sliced.deliver(messages, size=1) == []  # one at a time: exactly one invocation sees the set complete
    sliced.assert_copied("big/in order.bin", data, "crc32c", origin="lab")
    composes = [p for m, p in world.rig.front.requests[since:] if m == "POST" and p.endswith("/compose")]
    assert len(composes) == 3, composes  # 32 + 3 -> 2 intermediates, then the final


def test_shuffled_and_duplicated_multipart_slices_prove_the_multipart_etag(world):
    sliced = Sliced(world)
    parts = [os.urandom(MIB) for _ in range(5)] + [os.urandom(1000)]
    data = b"".join(parts)
    messages = _plan(sliced, _put_parts(world, "mp.bin", parts), 6)  # one slice per part: 1 MiB + 1000 > SLICE_MB
    doubled = messages + messages[:3]
    random.Random(14).shuffle(doubled)
    assert sliced.deliver(doubled, size=4) == []
    assert sliced.deliver(messages[:2]) == []  # late duplicates after the compose write nothing
    sliced.assert_copied("mp.bin", data, "multipart-etag")
    generations = {world.gcs_object(d, "mp.bin")["generation"] for d in sliced.dests}
    assert sliced.deliver(messages) == []
    assert {world.gcs_object(d, "mp.bin")["generation"] for d in sliced.dests} == generations
    assert sliced.temporary() == []


def test_a_slice_that_fails_twice_is_delivered_again_and_the_copy_completes(world, monkeypatch):
    sliced = Sliced(world)
    data = os.urandom(4 * MIB)
    messages = _plan(sliced, _put(world, "retry.bin", data), 4)
    assert sliced.deliver(messages[1:]) == []
    # S3 unreachable for this container: the slice fails and is left to SQS (batchItemFailures), twice.
    world.configure(" ".join(f"gs://{d}/" for d in sliced.dests), AWS_ENDPOINT_URL_S3="http://127.0.0.1:9",
                    **sliced.env)
    for _ in range(2):
        assert sliced.deliver(messages[:1]) == [messages[0]["messageId"]]
        assert world.gcs_object(sliced.dests[0], "retry.bin") is None
    world.configure(" ".join(f"gs://{d}/" for d in sliced.dests), AWS_ENDPOINT_URL_S3=world.rig.s3.url, **sliced.env)
    assert sliced.deliver(messages[:1]) == []
    sliced.assert_copied("retry.bin", data, "crc32")  # boto3 sends a CRC32 by default: combined from the slices


def test_two_containers_finishing_at_once_settle_by_precondition(world):
    sliced = Sliced(world)
    data = os.urandom(6 * MIB)
    messages = _plan(sliced, _put(world, "race.bin", data, ChecksumAlgorithm="CRC64NVME"), 6)
    assert sliced.deliver(messages[:-2]) == []
    containers = [Container(code_dir=None) for _ in range(3)]
    last = [messages[-1:], messages[-1:], messages[-2:-1]]  # the last slice to two containers, the other to a third
    barrier, failures = threading.Barrier(len(containers)), []

    def run(container, records):
        barrier.wait()
        failures.extend(sliced.deliver(records, container=container))

    threads = [threading.Thread(target=run, args=pair) for pair in zip(containers, last)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    sliced.assert_copied("race.bin", data, "crc64nvme")
    for container in containers:
        container.reset()


def test_a_source_overwritten_midway_abandons_the_plan_and_the_new_state_is_copied(world):
    sliced = Sliced(world)
    old = os.urandom(5 * MIB)
    messages = _plan(sliced, _put(world, "moving.bin", old), 5)
    assert sliced.deliver(messages[:2]) == []
    assert len(sliced.temporary()) == 2
    new = b"the newer state"
    record = _put(world, "moving.bin", new)
    assert sliced.deliver(messages[2:]) == []  # abandoned: not failed, nothing composed
    assert sliced.temporary() == []
    assert all(world.gcs_object(d, "moving.bin") is None for d in sliced.dests)
    summary = world.notify(record)  # the newer state's own event
    assert summary["copied"] == 1, summary
    for dest in sliced.dests:
        assert world.gcs_bytes(dest, "moving.bin") == new


def test_without_a_queue_an_object_too_large_for_the_time_left_fails_at_once_saying_how_to_slice(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}/")
    record = _put(world, "huge.bin", os.urandom(72 * MIB))
    with pytest.raises(CopyFailed) as caught:
        lambda_function.lambda_handler(json.loads(json.dumps({"Records": [record]})), CountdownContext(2.0))
    assert caught.value.retryable is False
    assert "SLICE_QUEUE_URL" in str(caught.value) and "huge.bin" in str(caught.value)
    assert world.gcs_object(dest, "huge.bin") is None


def test_slices_read_wrong_are_never_composed_they_are_queued_again_then_given_up(world):
    from .conftest import flip_stored_byte

    sliced = Sliced(world, destinations=1)
    data = os.urandom(3 * MIB)
    messages = _plan(sliced, _put(world, "flipped.bin", data, ChecksumAlgorithm="CRC32C"), 3)
    flip_stored_byte(world, "flipped.bin", 2 * MIB + 7)  # what S3 serves no longer matches its record
    failed = sliced.deliver(messages, size=1)
    assert failed == [messages[-1]["messageId"]]  # the finisher saw the proof fail
    again = sliced.messages()
    assert len(again) == 3 and all('"round":2' in m["body"] for m in again)  # queued once more
    assert sliced.temporary() == []
    assert sliced.deliver(again, size=1) == [again[-1]["messageId"]]  # fails again: given up
    assert sliced.messages() == [] and sliced.temporary() == []
    assert world.gcs_object(sliced.dests[0], "flipped.bin") is None


def test_the_doctor_checks_the_slice_queue_and_its_visibility_timeout(world):
    sliced = Sliced(world, destinations=1)

    def queue_check() -> dict:
        (check,) = [c for c in world.invoke({"doctor": {}})["checks"] if c["check"] == "slice queue"]
        return check

    short = queue_check()  # moto's default: 30 s
    assert short["ok"] is False and "VisibilityTimeout is 30 s" in short["detail"] and "5400" in short["fix"]
    sliced.sqs.set_queue_attributes(QueueUrl=sliced.url, Attributes={"VisibilityTimeout": "5400"})
    assert queue_check()["ok"] is True
    world.configure(f"gs://{sliced.dests[0]}/", **{**sliced.env, "SLICE_QUEUE_URL": sliced.url + "-missing"})
    missing = queue_check()
    assert missing["ok"] is False and "-missing" in missing["detail"], missing


def test_the_template_gives_the_function_its_own_queue_for_slices():
    from tests.deploy.test_deploy import _role_statements
    from tests.deploy.conftest import TEMPLATE, _CfnLoader
    import yaml

    template = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)
    variables = template["Resources"]["Function"]["Properties"]["Environment"]["Variables"]
    assert variables["SLICE_QUEUE_URL"] == {"Fn::If": ["UseQueue", {"Ref": "WorkQueue"}, ""]}
    assert template["Resources"]["WorkQueue"]["Properties"]["VisibilityTimeout"] >= 900
    assert any(s["Action"] == "sqs:SendMessage" and s["Resource"] == {"Fn::GetAtt": ["WorkQueue", "Arn"]}
               for s in _role_statements(template))

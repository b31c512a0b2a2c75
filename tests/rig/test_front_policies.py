"""GcsFront as a distant, rate-limited Cloud Storage that keeps holds and retention.

Each refusal is shown twice: with the front's knob on (Cloud Storage's answer) and off (what
fake-gcs-server alone does), so a test that relies on it cannot pass against the backend alone.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import re
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import google.auth.aws
import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import storage

from .gcs import FakeGcsServer, GcsFront
from .policies import kept_refusal, parse_time
from .test_rig import (  # noqa: F401 - fixtures, shared with the rig's other tests
    BIG,
    aws_env,
    bucket_name,
    clean_servers,
    client,
    credentials,
    front,
    gcs_backend,
    refresh,
    token_server,
)

KMS_KEY = "projects/p/locations/us/keyRings/ring/cryptoKeys/key"
RATE_MESSAGE = ("The object {} exceeded the rate limit for object mutation operations (create, update, and "
                "delete). Please reduce your request rate. See https://cloud.google.com/storage/docs/gcs429.")
HOLD_MESSAGE = ("Object '{}' is under active {} hold and cannot be deleted, overwritten or archived until "
                "hold is removed.")


def request(front: GcsFront, token: str | None, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], http.client.HTTPResponse]:
    """One request to the front; (status, JSON answer or {}, response)."""
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(front.url).netloc, timeout=30)
    try:
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request(method, path, body=body, headers={**auth, **(headers or {})})
        response = conn.getresponse()
        raw = response.read()
        try:
            answer = json.loads(raw) if raw.strip() else {}
        except ValueError:
            answer = {}
        return response.status, answer if isinstance(answer, dict) else {}, response
    finally:
        conn.close()


def multipart(front: GcsFront, token: str, bucket: str, resource: dict[str, Any], data: bytes,
              query: str = "") -> tuple[int, dict[str, Any]]:
    """A JSON API multipart upload with any resource (python-storage sends no holds)."""
    body = (b"--B\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n" + json.dumps(resource).encode()
            + b"\r\n--B\r\nContent-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--B--\r\n")
    status, answer, _ = request(front, token, "POST", f"/upload/storage/v1/b/{bucket}/o?uploadType=multipart{query}",
                                body, {"Content-Type": "multipart/related; boundary=B"})
    return status, answer


def resumable(front: GcsFront, token: str, bucket: str, resource: dict[str, Any], data: bytes,
              query: str = "") -> tuple[int, int, dict[str, Any]]:
    """A resumable upload in one final request: (initiation status, final status, final answer)."""
    status, _, response = request(front, token, "POST", f"/upload/storage/v1/b/{bucket}/o?uploadType=resumable{query}",
                                  json.dumps(resource).encode(), {"Content-Type": "application/json"})
    if status != 200:
        return status, 0, {}
    session = urllib.parse.urlsplit(response.getheader("Location") or "")
    final, answer, _ = request(front, token, "PUT", f"{session.path}?{session.query}", data,
                               {"Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"})
    return status, final, answer


def reason_of(error: api_exceptions.GoogleAPICallError) -> str:
    """The reason of a Cloud Storage error, from the parsed errors or (uploads) the body quoted in the message."""
    if error.errors:
        return str(error.errors[0]["reason"])
    found = re.search(r'"reason": "(\w+)"', error.message)
    return found.group(1) if found else ""


def object_path(bucket: str, name: str) -> str:
    return f"/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}"


@pytest.fixture
def token(credentials: google.auth.aws.Credentials) -> str:
    refresh(credentials)
    return str(credentials.token)


# -- latency ---------------------------------------------------------------------------------------


def timed(front: GcsFront, token: str | None, path: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        request(front, token, "GET", path)
        times.append(time.perf_counter() - started)
    return times


def test_latency_delays_every_request_and_changes_at_run_time(
    front: GcsFront, token: str, bucket_name: str, gcs_backend: FakeGcsServer, token_server: Any
) -> None:
    path = f"/storage/v1/b/{bucket_name}/o"
    assert min(timed(front, token, path, 5)) < 0.2  # the rig alone answers well under the delay below

    front.latency_ms = 200
    assert all(t >= 0.2 for t in timed(front, token, path, 3))  # every request, not the first only
    assert all(t >= 0.2 for t in timed(front, None, path, 2))  # refusals (401) too: they cross the network

    front.latency_ms = 0
    assert min(timed(front, token, path, 5)) < 0.2

    # Set when the rig starts; reset() comes back to it.
    with GcsFront(gcs_backend.url, token_server, latency_ms=150) as slow:
        assert all(t >= 0.15 for t in timed(slow, token, path, 2))
        slow.latency_ms = 0
        slow.reset()
        assert slow.latency_ms == 150
    front.latency_ms = 300
    front.reset()
    assert front.latency_ms == 0


def test_latency_applies_to_each_request_of_an_upload(front: GcsFront, client: storage.Client,
                                                      bucket_name: str) -> None:
    bucket = client.bucket(bucket_name)
    bucket.blob("warm").upload_from_string(b"warm")  # token and connection ready
    front.latency_ms = 150
    front.request_kinds.clear()
    started = time.perf_counter()
    bucket.blob("resumable").upload_from_string(os.urandom(BIG))  # initiation, then one PUT
    elapsed = time.perf_counter() - started
    assert (front.request_kinds["upload: resumable"], front.request_kinds["upload: resumable chunk"]) == (1, 1)
    assert elapsed >= 2 * 0.15  # one after the other: each paid the latency


# -- the write rate per object name ------------------------------------------------------------------


def test_without_the_limit_writes_of_one_name_are_only_counted(front: GcsFront, client: storage.Client,
                                                               bucket_name: str) -> None:
    blob = client.bucket(bucket_name).blob("hot")
    for i in range(3):
        blob.upload_from_string(b"v%d" % i, retry=None)
    blob.delete(retry=None)
    assert front.object_writes[(bucket_name, "hot")] == 4
    assert front.object_writes_refused == {}


def test_a_second_write_within_the_interval_gets_cloud_storages_429(
    front: GcsFront, token: str, gcs_backend: FakeGcsServer, client: storage.Client, bucket_name: str
) -> None:
    front.limit_object_writes = True
    front.object_write_interval = 30.0  # the refusals below cannot depend on the machine's speed
    bucket = client.bucket(bucket_name)
    bucket.blob("src").upload_from_string(b"source")
    name = "hot"
    bucket.blob(name).upload_from_string(b"first", retry=None)

    status, answer = multipart(front, token, bucket_name, {"name": name}, b"second")
    assert status == 429
    message = RATE_MESSAGE.format(f"{bucket_name}/{name}")
    assert answer == {"error": {"code": 429, "message": message, "errors": [
        {"message": message, "domain": "usageLimits", "reason": "rateLimitExceeded"}]}}

    # Every kind of mutation of the name: create (media, multipart, resumable at its last request),
    # rewrite and compose into it, metadata update, delete.
    blob = bucket.blob(name)
    attempts = [
        lambda: request(front, token, "POST", f"/upload/storage/v1/b/{bucket_name}/o?uploadType=media&name={name}",
                        b"x", {"Content-Type": "text/plain"})[0],
        lambda: resumable(front, token, bucket_name, {"name": name}, b"resumable")[1],
        lambda: request(front, token, "POST", f"{object_path(bucket_name, 'src')}/rewriteTo/b/{bucket_name}/o/{name}",
                        b"{}", {"Content-Type": "application/json"})[0],
        lambda: request(front, token, "POST", f"{object_path(bucket_name, name)}/compose",
                        json.dumps({"sourceObjects": [{"name": "src"}]}).encode(), {"Content-Type": "application/json"})[0],
        lambda: request(front, token, "PATCH", object_path(bucket_name, name), json.dumps({"metadata": {"k": "v"}}).encode(),
                        {"Content-Type": "application/json"})[0],
        lambda: request(front, token, "DELETE", object_path(bucket_name, name))[0],
    ]
    assert [attempt() for attempt in attempts] == [429] * len(attempts)
    with pytest.raises(api_exceptions.TooManyRequests):
        blob.upload_from_string(os.urandom(BIG), retry=None)  # python-storage's resumable upload
    assert gcs_backend.read_object(bucket_name, name) == b"first"
    assert front.object_writes_refused[(bucket_name, name)] == 2 + len(attempts)
    assert front.object_writes[(bucket_name, name)] == 1
    assert (bucket_name, "other") not in front.object_writes_refused

    # Other names are not limited; the refusals took no slot: once the interval has passed, the
    # next write goes through.
    bucket.blob("other").upload_from_string(b"other", retry=None)
    front.object_write_interval = 0.3
    time.sleep(0.35)
    blob.upload_from_string(b"third", retry=None)
    assert gcs_backend.read_object(bucket_name, name) == b"third"
    assert front.object_writes[(bucket_name, name)] == 2

    # The backend alone takes every write.
    front.limit_object_writes = False
    blob.upload_from_string(b"fourth", retry=None)
    blob.upload_from_string(b"fifth", retry=None)
    assert front.object_writes[(bucket_name, name)] == 4


def test_concurrent_writes_of_one_name_get_one_slot(front: GcsFront, token: str, gcs_backend: FakeGcsServer,
                                                    bucket_name: str) -> None:
    front.limit_object_writes = True
    front.object_write_interval = 30.0
    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda i: multipart(front, token, bucket_name, {"name": "hot"}, b"%d" % i)[0],
                                 range(6)))
    assert sorted(statuses) == [200] + [429] * 5
    assert (front.object_writes[(bucket_name, "hot")], front.object_writes_refused[(bucket_name, "hot")]) == (1, 5)
    assert gcs_backend.read_object(bucket_name, "hot") == b"%d" % statuses.index(200)


def test_a_refused_write_gives_its_slot_back(front: GcsFront, client: storage.Client, bucket_name: str) -> None:
    front.limit_object_writes = True
    front.object_write_interval = 0.5
    blob = client.bucket(bucket_name).blob("hot")
    blob.upload_from_string(b"first", retry=None)
    time.sleep(0.6)
    with pytest.raises(api_exceptions.PreconditionFailed):  # not a mutation: no slot taken
        blob.upload_from_string(b"refused", if_generation_match=0, retry=None)
    blob.upload_from_string(b"second", retry=None)  # the 412 right before did not count
    assert front.object_writes[(bucket_name, "hot")] == 2 and not front.object_writes_refused


def test_python_storage_backs_off_through_the_limit(front: GcsFront, client: storage.Client, bucket_name: str) -> None:
    front.limit_object_writes = True
    blob = client.bucket(bucket_name).blob("hot")
    blob.upload_from_string(b"first")
    blob.upload_from_string(b"second")  # default retry: 429, back off ~1 s, then accepted
    assert front.object_writes_refused[(bucket_name, "hot")] >= 1
    assert front.object_writes[(bucket_name, "hot")] == 2
    assert blob.download_as_bytes() == b"second"


# -- what a write asks to keep ------------------------------------------------------------------------


def test_fields_fake_gcs_server_drops_are_kept_and_shown(
    front: GcsFront, token: str, gcs_backend: FakeGcsServer, client: storage.Client, bucket_name: str
) -> None:
    bucket = client.bucket(bucket_name)
    custom = "2020-01-02T03:04:05Z"
    # Resumable upload: fake-gcs-server drops storageClass.
    status, final, answer = resumable(front, token, bucket_name,
                                      {"name": "resumable", "storageClass": "ARCHIVE", "customTime": custom},
                                      b"resumable bytes", f"&kmsKeyName={urllib.parse.quote(KMS_KEY)}")
    assert (status, final) == (200, 200)
    assert gcs_backend.object_metadata(bucket_name, "resumable")["storageClass"] == "STANDARD"  # type: ignore[index]
    assert answer["storageClass"] == "ARCHIVE" and answer["kmsKeyName"] == KMS_KEY + "/cryptoKeyVersions/1"
    got = bucket.get_blob("resumable")
    assert got is not None and (got.storage_class, got.kms_key_name) == ("ARCHIVE", KMS_KEY + "/cryptoKeyVersions/1")
    assert got.custom_time == parse_time(custom)

    # Rewrite and compose: fake-gcs-server drops storageClass and customTime of the body.
    source = bucket.blob("resumable")
    copy = bucket.blob("rewritten")
    copy.storage_class = "COLDLINE"
    copy.custom_time = dt.datetime(2021, 5, 6, tzinfo=dt.timezone.utc)
    copy.rewrite(source)
    backend = gcs_backend.object_metadata(bucket_name, "rewritten")
    assert backend is not None and backend["storageClass"] == "STANDARD" and "customTime" not in backend
    copy = bucket.get_blob("rewritten")
    assert copy is not None and copy.storage_class == "COLDLINE"
    assert copy.custom_time == dt.datetime(2021, 5, 6, tzinfo=dt.timezone.utc)
    composed = bucket.blob("composed")
    composed.storage_class = "NEARLINE"
    composed.compose([source])
    assert bucket.get_blob("composed").storage_class == "NEARLINE"  # type: ignore[union-attr]
    patched = bucket.get_blob("rewritten")
    assert patched is not None
    patched.storage_class = "ARCHIVE"
    patched.metadata = {"k": "v"}
    patched.patch()  # a metadata update cannot change the class (a rewrite does)
    patched = bucket.get_blob("rewritten")
    assert patched is not None and (patched.storage_class, patched.metadata) == ("COLDLINE", {"k": "v"})
    listed = {b.name: b.storage_class for b in client.list_blobs(bucket_name)}
    assert listed == {"resumable": "ARCHIVE", "rewritten": "COLDLINE", "composed": "NEARLINE"}

    # The KMS key of a rewrite is a query parameter.
    keyed = bucket.blob("keyed", kms_key_name=KMS_KEY)
    keyed.rewrite(source)
    assert bucket.get_blob("keyed").kms_key_name == KMS_KEY + "/cryptoKeyVersions/1"  # type: ignore[union-attr]
    asked = {(r["op"], r["name"]): r["asked"] for r in front.policy_requests}
    assert asked[("upload", "resumable")] == {"storageClass": "ARCHIVE", "customTime": custom, "kmsKeyName": KMS_KEY}
    assert asked[("rewrite", "keyed")] == {"kmsKeyName": KMS_KEY}
    assert asked[("compose", "composed")] == {"storageClass": "NEARLINE"}

    # A new generation that asks for nothing keeps nothing of the old one.
    bucket.blob("resumable").upload_from_string(b"plain")
    assert bucket.get_blob("resumable").storage_class == "STANDARD"  # type: ignore[union-attr]
    assert front.kept_fields(bucket_name, "resumable") == {}


def test_a_held_object_cannot_be_replaced_or_deleted_until_released(
    front: GcsFront, token: str, gcs_backend: FakeGcsServer, client: storage.Client, bucket_name: str
) -> None:
    bucket = client.bucket(bucket_name)
    bucket.blob("src").upload_from_string(b"source")
    status, _ = multipart(front, token, bucket_name, {"name": "temp", "temporaryHold": True}, b"held")
    assert status == 200
    _, final, _ = resumable(front, token, bucket_name, {"name": "event", "eventBasedHold": True}, b"held too")
    assert final == 200
    bucket.blob("patched").upload_from_string(b"held later")
    patched = bucket.blob("patched")
    patched.temporary_hold = True
    patched.patch()  # python-storage sets a hold only this way

    for name, kind in (("temp", "Temporary"), ("event", "Event-Based"), ("patched", "Temporary")):
        assert "temporaryHold" not in (gcs_backend.object_metadata(bucket_name, name) or {})  # dropped by the backend
        shown = bucket.get_blob(name)
        assert shown is not None and (shown.temporary_hold or shown.event_based_hold)
        message = HOLD_MESSAGE.format(f"{bucket_name}/{name}", kind)
        blob = bucket.blob(name)
        refused = [
            lambda: blob.upload_from_string(b"small", retry=None),
            lambda: blob.upload_from_string(os.urandom(BIG), retry=None),  # refused at its last request
            lambda: blob.rewrite(bucket.blob("src"), retry=None),
            lambda: blob.compose([bucket.blob("src")], retry=None),
            lambda: blob.delete(retry=None),
        ]
        for attempt in refused:
            with pytest.raises(api_exceptions.Forbidden) as raised:
                attempt()
            assert message in raised.value.message
            assert reason_of(raised.value) == "forbidden"
        assert gcs_backend.object_metadata(bucket_name, name) is not None

    # A precondition is checked first: 412, not 403.
    with pytest.raises(api_exceptions.PreconditionFailed):
        bucket.blob("temp").upload_from_string(b"x", if_generation_match=1, retry=None)

    # Released by a metadata update: then replaced, and the new generation holds nothing.
    released = bucket.get_blob("temp")
    assert released is not None
    released.temporary_hold = False
    released.patch()
    assert bucket.get_blob("temp").temporary_hold is False  # type: ignore[union-attr]
    bucket.blob("temp").upload_from_string(b"replaced")
    assert gcs_backend.read_object(bucket_name, "temp") == b"replaced"
    assert front.kept_fields(bucket_name, "temp") == {}

    # The backend alone replaces a held object.
    front.enforce_holds = False
    bucket.blob("event").upload_from_string(b"overwritten")
    assert gcs_backend.read_object(bucket_name, "event") == b"overwritten"


def test_object_retention_keeps_an_object_until_its_time(
    front: GcsFront, token: str, gcs_backend: FakeGcsServer, client: storage.Client, bucket_name: str
) -> None:
    bucket = client.bucket(bucket_name)
    until = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).replace(microsecond=123456)
    retention = {"mode": "Unlocked", "retainUntilTime": until.isoformat().replace("+00:00", "Z")}
    assert multipart(front, token, bucket_name, {"name": "kept", "retention": retention}, b"kept")[0] == 200
    past = {"mode": "Locked", "retainUntilTime": "2001-01-01T00:00:00Z"}
    assert multipart(front, token, bucket_name, {"name": "expired", "retention": past}, b"expired")[0] == 200

    with pytest.raises(api_exceptions.Forbidden) as raised:
        bucket.blob("kept").delete(retry=None)
    assert reason_of(raised.value) == "retentionPolicyNotMet"
    stated = raised.value.message.rsplit(" until ", 1)[1]
    assert raised.value.message.endswith(
        f"Object '{bucket_name}/kept' is subject to bucket's retention policy or object retention and cannot be "
        f"deleted or overwritten until {stated}")
    assert dt.datetime.fromisoformat(stated) == until and stated.endswith(("-07:00", "-08:00"))  # Pacific, as measured
    with pytest.raises(api_exceptions.Forbidden):
        bucket.blob("kept").upload_from_string(b"new", retry=None)
    shown = bucket.get_blob("kept")
    assert shown is not None and shown.retention.retain_until_time == until
    bucket.blob("expired").upload_from_string(b"replaced")  # a retention in the past keeps nothing

    front.enforce_holds = False
    bucket.blob("kept").delete()


def test_a_bucket_retention_policy_keeps_every_object_for_its_period(
    front: GcsFront, gcs_backend: FakeGcsServer, client: storage.Client, bucket_name: str
) -> None:
    bucket = client.bucket(bucket_name)
    bucket.blob("old").upload_from_string(b"old")
    bucket.retention_period = 3600
    bucket.patch()
    assert client.get_bucket(bucket_name).retention_period == 3600  # fake-gcs-server ignores it: kept by the front
    assert "retentionPolicy" not in json.loads(
        __import__("urllib.request").request.urlopen(f"{gcs_backend.url}/storage/v1/b/{bucket_name}").read())

    blob = bucket.get_blob("old")
    assert blob is not None and blob.retention_expiration_time is not None  # milliseconds, as Cloud Storage writes it
    assert abs(blob.retention_expiration_time - blob.time_created - dt.timedelta(hours=1)) < dt.timedelta(milliseconds=1)
    with pytest.raises(api_exceptions.Forbidden) as raised:
        blob.delete(retry=None)
    assert reason_of(raised.value) == "retentionPolicyNotMet"
    assert f"Object '{bucket_name}/old' is subject to bucket's retention policy" in raised.value.message
    bucket.blob("new").upload_from_string(b"first: nothing to replace")
    with pytest.raises(api_exceptions.Forbidden):
        bucket.blob("new").upload_from_string(b"second", retry=None)

    front.bucket_policies[bucket_name]["retentionPolicy"] = {"retentionPeriod": "1"}
    time.sleep(1.1)
    bucket.blob("new").upload_from_string(b"after the period")
    assert gcs_backend.read_object(bucket_name, "new") == b"after the period"


def test_kept_refusal_order_and_expiry() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    obj = {"timeCreated": "2025-12-31T23:30:00.000Z"}
    both = {"temporaryHold": True, "eventBasedHold": True}
    assert kept_refusal("b", "o", obj, both, None, now) == (
        "forbidden", HOLD_MESSAGE.format("b/o", "Event-Based"))
    assert kept_refusal("b", "o", obj, {"temporaryHold": False, "eventBasedHold": False}, None, now) is None
    # The later of a bucket policy and an object retention is the time given.
    reason, message = kept_refusal("b", "o", obj, {"retention": {"retainUntilTime": "2026-01-01T00:10:00Z"}},
                                   {"retentionPeriod": "3600"}, now)  # type: ignore[misc]
    assert reason == "retentionPolicyNotMet" and message.endswith("until 2025-12-31T16:30:00.000000-08:00")
    # An event-based hold defers a bucket policy (and is refused for itself).
    assert kept_refusal("b", "o", obj, {}, {"retentionPeriod": "60"}, now) is None
    assert parse_time("2026-09-30T15:58:01.185839-07:00") == dt.datetime(2026, 9, 30, 22, 58, 1, 185839,
                                                                         tzinfo=dt.timezone.utc)


def test_a_buckets_defaults_apply_to_new_objects(front: GcsFront, client: storage.Client, bucket_name: str) -> None:
    bucket = client.get_bucket(bucket_name)
    assert (bucket.retention_period, bucket.default_kms_key_name, bucket.default_event_based_hold) == (None, None, False)
    bucket.blob("before").upload_from_string(b"before")
    bucket.storage_class = "COLDLINE"
    bucket.default_kms_key_name = KMS_KEY
    bucket.patch()
    bucket = client.get_bucket(bucket_name)
    assert (bucket.storage_class, bucket.default_kms_key_name) == ("COLDLINE", KMS_KEY)

    bucket.blob("after").upload_from_string(b"after")
    asked = bucket.blob("asked")
    asked.storage_class = "ARCHIVE"
    asked.upload_from_string(b"asked")
    shown = {b.name: (b.storage_class, b.kms_key_name) for b in client.list_blobs(bucket_name)}
    assert shown == {"before": ("STANDARD", None), "after": ("COLDLINE", KMS_KEY + "/cryptoKeyVersions/1"),
                     "asked": ("ARCHIVE", KMS_KEY + "/cryptoKeyVersions/1")}

    front.reset()  # new tests start from fake-gcs-server's buckets
    assert client.get_bucket(bucket_name).default_kms_key_name is None

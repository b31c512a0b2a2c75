"""Destination options (storage class, KMS key, custom time, holds and retention) on every way of
writing — staged and streamed uploads, server-side copies, composed objects — read back from what
the Cloud Storage front recorded per write; and a copy Cloud Storage keeps under a hold or a
retention period reported ``held`` (with its time, a log line and a metric), never failed, and
``stale`` in the audit.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid

import google.auth.aws
import pytest
from google.cloud import storage

from gcs_sync.slices import RESERVED_PREFIX

from .test_slices import MIB, Sliced, _plan, small_parts  # noqa: F401 - fixture

KEY = "projects/p/locations/us/keyRings/ring/cryptoKeys/backup"
ALL = f"storage_class=source&kms_key={KEY}&custom_time=source&holds=source"
POLICY = ALL  # what a copy records: the options in their stable order, as written here


def locked_source(world) -> None:
    """The world's source becomes a bucket with S3 Object Lock enabled (versioned)."""
    world.source = f"lock-{uuid.uuid4().hex[:12]}"
    world.rig.s3_client.create_bucket(Bucket=world.source, ObjectLockEnabledForBucket=True)


def put_locked(world, key: str, data: bytes, *, hold: bool = False, mode: str | None = None,
               until: dt.datetime | None = None, **params) -> dict:
    if hold:
        params["ObjectLockLegalHoldStatus"] = "ON"
    if mode:
        params.update(ObjectLockMode=mode, ObjectLockRetainUntilDate=until)
    return world.put(key, data, **params)


def kept(world, bucket: str, name: str) -> dict:
    """What the live generation's write asked Cloud Storage to keep (class, time, hold, retention, key)."""
    return world.rig.front.kept_fields(bucket, name)


def asked(world, bucket: str, name: str) -> list[tuple[str, dict]]:
    """(operation, fields asked) of every recorded write of ``name`` in ``bucket``."""
    return [(r["op"], r["asked"]) for r in world.rig.front.policy_requests if (r["bucket"], r["name"]) == (bucket, name)]


def last_modified(world, key: str) -> dt.datetime:
    return world.rig.s3_client.head_object(Bucket=world.source, Key=key)["LastModified"]


def when(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def gcs_client(world) -> storage.Client:
    """A client of the same Cloud Storage, as another tool or person would use it."""
    credentials = google.auth.aws.Credentials.from_info(world.rig.tokens.credential_config())
    return storage.Client(project="p", credentials=credentials.with_scopes(
        ["https://www.googleapis.com/auth/devstorage.read_write"]), client_options={"api_endpoint": world.rig.front.url})


def outcome_of(summary: dict, destination: str) -> dict:
    (result,) = summary["results"]
    return next(d for d in result["destinations"] if d["destination"] == destination)


# ---------------------------------------------------------------- every option on every way of writing


@pytest.mark.parametrize("way", ["staged", "streamed"])
def test_an_upload_carries_every_option_in_one_write(world, way):
    locked_source(world)
    dest = world.bucket()
    extra = {"STREAM_THRESHOLD_MB": "0", "STREAM_CHUNK_MB": "1"} if way == "streamed" else {}
    world.configure(f"gs://{dest}/?{ALL}", **extra)
    until = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)).replace(microsecond=0)
    data = os.urandom(MIB + 5 if way == "streamed" else 3000)
    record = put_locked(world, "doc.bin", data, hold=True, mode="COMPLIANCE", until=until, StorageClass="STANDARD_IA")
    summary = world.notify(record)
    assert summary["copied"] == 1, summary
    assert world.gcs_bytes(dest, "doc.bin") == data
    fields = kept(world, dest, "doc.bin")
    assert fields["storageClass"] == "NEARLINE"  # S3's STANDARD_IA, mapped
    assert fields["kmsKeyName"] == KEY
    assert when(fields["customTime"]) == last_modified(world, "doc.bin")
    assert fields["temporaryHold"] is True  # S3 legal hold ON
    assert fields["retention"]["mode"] == "Locked" and when(fields["retention"]["retainUntilTime"]) == until
    assert world.gcs_object(dest, "doc.bin")["metadata"]["gcs-sync-policy"] == POLICY
    # Everything in the upload's own resource: one write of the name, no metadata update after it
    # (a second write within a second is over Cloud Storage's rate for one name, and leaves the
    # copy unheld meanwhile).
    assert [op for op, _ in asked(world, dest, "doc.bin")] == ["upload"]
    assert world.rig.front.object_writes[(dest, "doc.bin")] == 1
    assert not [p for m, p in world.rig.front.requests if m == "PATCH"]
    if way == "streamed":
        assert any(m == "PUT" and p.startswith(f"/upload/storage/v1/b/{dest}/o") for m, p in world.rig.front.requests)


def test_options_unset_keep_the_buckets_defaults_and_record_no_policy(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    world.notify(world.put("plain.txt", b"plain"))
    assert kept(world, dest, "plain.txt") == {}
    assert asked(world, dest, "plain.txt") == [("upload", {})]
    assert "gcs-sync-policy" not in world.gcs_object(dest, "plain.txt")["metadata"]


@pytest.mark.parametrize("s3_class, gcs_class", [(None, "STANDARD"), ("STANDARD_IA", "NEARLINE"),
                                                  ("ONEZONE_IA", "NEARLINE"), ("GLACIER_IR", "COLDLINE"),
                                                  ("INTELLIGENT_TIERING", "STANDARD")])
def test_storage_class_source_maps_s3s_class(world, s3_class, gcs_class):
    dest = world.bucket()
    world.configure(f"gs://{dest}/?storage_class=source")
    params = {"StorageClass": s3_class} if s3_class else {}
    world.notify(world.put("c.txt", b"classy", **params))
    assert kept(world, dest, "c.txt") == {"storageClass": gcs_class}


@pytest.mark.parametrize("way", ["staged", "streamed"])
def test_a_server_side_copy_carries_its_own_destinations_options(world, way):
    locked_source(world)
    primary, backup = world.bucket(), world.bucket()
    extra = {"STREAM_THRESHOLD_MB": "0", "STREAM_CHUNK_MB": "1"} if way == "streamed" else {}
    world.configure(f"gs://{primary}/?storage_class=COLDLINE gs://{backup}/?storage_class=ARCHIVE&kms_key={KEY}"
                    "&custom_time=source&holds=source", **extra)
    until = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).replace(microsecond=0)
    data = os.urandom(2 * MIB + 1 if way == "streamed" else 64 * 1024)  # above the small path: copied inside Cloud Storage
    summary = world.notify(put_locked(world, "k.bin", data, hold=True, mode="GOVERNANCE", until=until))
    assert summary["copied"] == 1 and all(d["outcome"] == "copied" for d in summary["results"][0]["destinations"])
    assert world.gcs_bytes(backup, "k.bin") == data
    assert kept(world, primary, "k.bin") == {"storageClass": "COLDLINE"}
    assert asked(world, primary, "k.bin")[0][0] == "upload"
    fields = kept(world, backup, "k.bin")
    assert [op for op, _ in asked(world, backup, "k.bin")] == ["rewrite"]  # copied inside Cloud Storage
    assert fields["storageClass"] == "ARCHIVE" and fields["kmsKeyName"] == KEY
    assert fields["temporaryHold"] is True
    assert fields["retention"] == {"mode": "Unlocked", "retainUntilTime": until.strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert when(fields["customTime"]) == last_modified(world, "k.bin")
    assert world.gcs_object(primary, "k.bin")["metadata"]["gcs-sync-policy"] == "storage_class=COLDLINE"
    assert world.gcs_object(backup, "k.bin")["metadata"]["gcs-sync-policy"] == (
        f"storage_class=ARCHIVE&kms_key={KEY}&custom_time=source&holds=source")
    rewrites = [p for m, p in world.rig.front.requests if m == "POST" and f"/rewriteTo/b/{backup}/" in p]
    assert len(rewrites) == 1 and not any(p.startswith(f"/upload/storage/v1/b/{backup}/") for _, p in
                                          world.rig.front.requests)


def test_a_composed_object_carries_the_options_and_its_slices_stay_plain(world):
    locked_source(world)
    sliced = Sliced(world)
    first, second = sliced.dests
    world.configure(f"gs://{first}/?{ALL} gs://{second}/?storage_class=NEARLINE&custom_time=source", **sliced.env)
    until = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3)).replace(microsecond=0)
    data = os.urandom(3 * MIB + 10)
    record = put_locked(world, "big.bin", data, hold=True, mode="COMPLIANCE", until=until,
                        StorageClass="GLACIER_IR", ContentType="application/x-test", Metadata={"origin": "lab"})
    messages = _plan(sliced, record, 4)
    assert sliced.deliver(messages, size=1) == []  # one at a time: exactly one invocation composes
    assert world.gcs_bytes(first, "big.bin") == data and world.gcs_bytes(second, "big.bin") == data
    fields = kept(world, first, "big.bin")
    assert [op for op, _ in asked(world, first, "big.bin")] == ["compose"]
    assert fields["storageClass"] == "COLDLINE" and fields["kmsKeyName"] == KEY  # GLACIER_IR, mapped
    assert fields["temporaryHold"] is True and fields["retention"]["mode"] == "Locked"
    assert when(fields["customTime"]) == last_modified(world, "big.bin")
    assert world.gcs_object(first, "big.bin")["metadata"]["gcs-sync-policy"] == POLICY
    # The other destination: copied server-side from the composed object, with its own options.
    assert [op for op, _ in asked(world, second, "big.bin")] == ["rewrite"]
    assert kept(world, second, "big.bin") == {"storageClass": "NEARLINE",
                                              "customTime": fields["customTime"]}
    # The slices were written plain (STANDARD, unheld, no key): nothing keeps them from removal,
    # and they are gone.
    temporaries = [a for r in world.rig.front.policy_requests if r["name"].startswith(RESERVED_PREFIX)
                   for a in [r["asked"]]]
    assert len(temporaries) == 4 and all(a == {} for a in temporaries), temporaries
    assert sliced.temporary() == []


# ---------------------------------------------------------------- held copies: reported, not failed


def metric_documents(output: str) -> list[dict]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [d for d in lines if "_aws" in d]


@pytest.mark.parametrize("way", ["staged", "streamed"])
def test_a_copy_under_object_retention_is_held_with_its_time_logged_counted_and_stale(world, capsys, caplog, way):
    locked_source(world)
    dest = world.bucket()
    extra = {"STREAM_THRESHOLD_MB": "0", "STREAM_CHUNK_MB": "1"} if way == "streamed" else {}
    world.configure(f"gs://{dest}/?holds=source", **extra)
    until = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=6)).replace(microsecond=0)
    v1, v2 = os.urandom(MIB + 7), os.urandom(MIB + 9)
    assert world.notify(put_locked(world, "kept.txt", v1, mode="GOVERNANCE", until=until))["copied"] == 1
    assert kept(world, dest, "kept.txt")["retention"]["mode"] == "Unlocked"
    capsys.readouterr()

    with caplog.at_level("INFO", logger="gcs_sync.transfer"):
        summary = world.notify(world.put("kept.txt", v2))  # returns: a held copy does not fail the invocation
    result = outcome_of(summary, f"gs://{dest}/")
    assert result["outcome"] == "held" and summary["failed"] == 0, summary
    assert when(result["until"]) == until and result["until"].endswith("Z")  # Cloud Storage's time, in UTC
    assert world.gcs_bytes(dest, "kept.txt") == v1
    metrics = metric_documents(capsys.readouterr().out)
    lines = [r.fields for r in caplog.records if getattr(r, "fields", {}).get("outcome") == "held"]
    assert [(f["object"], f["until"]) for f in lines] == [(f"gs://{dest}/kept.txt", result["until"])]
    assert "retention" in lines[0]["detail"] and "POST" not in lines[0]["detail"]  # Cloud Storage's own words
    (held,) = [m for m in metrics if m.get("Destination") == f"gs://{dest}/" and "CopiesHeld" in m]
    assert held["CopiesHeld"] == 1 and held["Failed"] == 0
    assert {"Name": "CopiesHeld", "Unit": "Count"} in held["_aws"]["CloudWatchMetrics"][0]["Metrics"]

    audit = world.invoke({"check": {"bucket": world.source}})
    assert audit["destinations"][0]["counts"]["stale"] == 1
    assert audit["destinations"][0]["examples"]["stale"] == ["kept.txt"]


def test_a_copy_under_a_bucket_retention_policy_is_held_at_a_server_side_copy_target(world):
    primary, backup = world.bucket(), world.bucket()
    world.configure(f"gs://{primary} gs://{backup}")
    assert world.notify(world.put("r.txt", b"first"))["copied"] == 1
    client = gcs_client(world)
    bucket = client.bucket(backup)
    bucket.retention_period = 3600
    bucket.patch()
    created = client.bucket(backup).get_blob("r.txt").time_created

    summary = world.notify(world.put("r.txt", b"second"))
    assert outcome_of(summary, f"gs://{primary}/")["outcome"] == "copied"
    result = outcome_of(summary, f"gs://{backup}/")
    assert result["outcome"] == "held" and "retention" in result["detail"], result
    assert abs(when(result["until"]) - (created + dt.timedelta(hours=1))) < dt.timedelta(seconds=1)
    assert world.gcs_bytes(primary, "r.txt") == b"second" and world.gcs_bytes(backup, "r.txt") == b"first"
    counts = {d["destination"]: d["counts"] for d in world.invoke({"check": {"bucket": world.source}})["destinations"]}
    assert counts[f"gs://{primary}/"]["ok"] == 1 and counts[f"gs://{backup}/"]["stale"] == 1


@pytest.mark.parametrize("how", ["plain destination", "copy written before holds=source"])
def test_a_hold_gcs_sync_did_not_set_is_never_released(world, how):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    world.notify(world.put("h.txt", b"v1"))
    blob = gcs_client(world).bucket(dest).get_blob("h.txt")
    blob.temporary_hold = True
    blob.patch()
    if how != "plain destination":
        world.configure(f"gs://{dest}/?holds=source")
    summary = world.notify(world.put("h.txt", b"v2"))
    result = outcome_of(summary, f"gs://{dest}/")
    assert result["outcome"] == "held" and "until" not in result and "Temporary hold" in result["detail"]
    assert kept(world, dest, "h.txt").get("temporaryHold") is True and world.gcs_bytes(dest, "h.txt") == b"v1"


@pytest.mark.parametrize("way", ["staged", "streamed", "server-side copy"])
def test_a_newer_version_releases_the_hold_carried_from_s3_and_brings_its_own(world, way):
    locked_source(world)
    dest, other = world.bucket(), world.bucket()
    extra = {"STREAM_THRESHOLD_MB": "0", "STREAM_CHUNK_MB": "1"} if way == "streamed" else {}
    target = f"gs://{dest}/?holds=source"
    world.configure(f"gs://{other} {target}" if way == "server-side copy" else target, **extra)
    size = MIB + 3 if way == "streamed" else 2000
    v1, v2, v3 = (os.urandom(size) for _ in range(3))
    assert world.notify(put_locked(world, "lh.bin", v1, hold=True))["copied"] == 1
    assert kept(world, dest, "lh.bin")["temporaryHold"] is True

    summary = world.notify(world.put("lh.bin", v2))  # legal hold OFF: the copy of v1 is released and replaced
    assert outcome_of(summary, f"gs://{dest}/")["outcome"] == "copied", summary
    assert world.gcs_bytes(dest, "lh.bin") == v2 and "temporaryHold" not in kept(world, dest, "lh.bin")
    patches = [r for r in world.rig.front.policy_requests if r["op"] == "patch" and r["name"] == "lh.bin"]
    assert [p["asked"] for p in patches] == [{"temporaryHold": False}]

    summary = world.notify(put_locked(world, "lh.bin", v3, hold=True))  # ON again: held again
    assert outcome_of(summary, f"gs://{dest}/")["outcome"] == "copied", summary
    assert world.gcs_bytes(dest, "lh.bin") == v3 and kept(world, dest, "lh.bin")["temporaryHold"] is True


def test_a_held_copy_in_an_sqs_batch_is_not_a_failed_message(world):
    from .test_invocations import sqs_event, sqs_record

    dest = world.bucket()
    world.configure(f"gs://{dest}")
    world.notify(world.put("q.txt", b"v1"))
    blob = gcs_client(world).bucket(dest).get_blob("q.txt")
    blob.temporary_hold = True
    blob.patch()
    record = world.put("q.txt", b"v2")
    answer = world.invoke(sqs_event(sqs_record("m-1", json.dumps({"Records": [record]}))))
    assert answer == {"batchItemFailures": []}
    assert world.gcs_bytes(dest, "q.txt") == b"v1"


def test_a_held_final_object_of_a_sliced_copy_is_not_a_failed_slice(world, caplog, capsys):
    sliced = Sliced(world, destinations=1)
    (dest,) = sliced.dests
    assert sliced.deliver(_plan(sliced, world.put("s.bin", os.urandom(2 * MIB + 1)), 3), size=1) == []
    bucket = gcs_client(world).bucket(dest)
    bucket.retention_period = 3600
    bucket.patch()
    data = os.urandom(2 * MIB + 2)
    messages = _plan(sliced, world.put("s.bin", data), 3)
    with caplog.at_level("INFO"):
        assert sliced.deliver(messages, size=1) == []  # delivered once: not retried by SQS for the hold
    held = [r.fields for r in caplog.records if getattr(r, "fields", {}).get("outcome") == "held"]
    assert held and all(f["object"] == f"gs://{dest}/s.bin" for f in held), held
    assert world.gcs_bytes(dest, "s.bin") != data
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert sum(d.get("CopiesHeld", 0) for d in documents) == 1  # the composing invocation counted it
    # The bucket's retention policy keeps the slices' temporaries too: they cannot be removed before
    # its period ends (the lifecycle rule for slice leftovers removes them then).


def test_a_held_primary_passes_the_upload_to_the_next_destination(world):
    primary, backup = world.bucket(), world.bucket()
    world.configure(f"gs://{primary} gs://{backup}/?storage_class=NEARLINE")
    assert world.notify(world.put("p.txt", b"first"))["copied"] == 1
    blob = gcs_client(world).bucket(primary).get_blob("p.txt")
    blob.temporary_hold = True
    blob.patch()
    since = len(world.rig.front.requests)
    summary = world.notify(world.put("p.txt", b"second"))
    assert outcome_of(summary, f"gs://{primary}/")["outcome"] == "held"
    assert outcome_of(summary, f"gs://{backup}/")["outcome"] == "copied"
    assert world.gcs_bytes(backup, "p.txt") == b"second" and kept(world, backup, "p.txt") == {"storageClass": "NEARLINE"}
    assert any(m == "POST" and p.startswith(f"/upload/storage/v1/b/{backup}/o") for m, p in
               world.rig.front.requests[since:])  # uploaded from the staged file, not copied from the held primary

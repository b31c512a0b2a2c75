"""The core path end to end: S3 notification -> every destination, verified, keyless."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import google_crc32c
import pytest

from gcs_sync.errors import ConfigError, CopyFailed, CredentialsError, EventError

from .conftest import md5_b64

EVENTS = Path(__file__).resolve().parents[1] / "events"


def crc32c_b64(data: bytes) -> str:
    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode()


def test_many_objects_land_in_every_destination_with_bytes_and_metadata(world):
    plain, prefixed = world.bucket(), world.bucket()
    world.configure(f"gs://{plain}, gs://{prefixed}/mirror/")
    files = {
        "a.txt": b"alpha\n",
        "nested/deeper/b.bin": os.urandom(70_000),
        "日本語 ファイル.txt": "こんにちは".encode(),
        "folder/": b"",
    }
    records = [
        world.put(
            key, body,
            ContentType="text/plain; charset=utf-8",
            ContentEncoding="identity",
            ContentDisposition='attachment; filename="x.txt"',
            ContentLanguage="ja",
            CacheControl="max-age=60",
            Metadata={"owner": "data-team", "run": "42"},
        )
        for key, body in files.items()
    ]
    summary = world.notify(*records)

    assert summary["objects"] == 4 and summary["copied"] == 4 and summary["failed"] == 0
    assert summary["bytes"] == 2 * sum(len(b) for b in files.values())  # written, over both destinations
    for key, body in files.items():
        for bucket, name in ((plain, key), (prefixed, "mirror/" + key)):
            meta = world.gcs_object(bucket, name)
            assert meta is not None, f"gs://{bucket}/{name} missing"
            assert world.gcs_bytes(bucket, name) == body
            assert int(meta["size"]) == len(body)
            assert meta["crc32c"] == crc32c_b64(body)
            assert meta["md5Hash"] == md5_b64(body)
            assert meta["contentType"] == "text/plain; charset=utf-8"
            assert meta["contentDisposition"] == 'attachment; filename="x.txt"'
            assert meta["contentLanguage"] == "ja"
            assert meta["cacheControl"] == "max-age=60"
            assert meta["metadata"]["owner"] == "data-team" and meta["metadata"]["run"] == "42"
            head = world.rig.s3_client.head_object(Bucket=world.source, Key=key)
            assert meta["metadata"]["gcs-sync-source-bucket"] == world.source
            assert meta["metadata"]["gcs-sync-source-key"] == key
            assert meta["metadata"]["gcs-sync-source-etag"] == head["ETag"].strip('"')
    assert world.staging_leftovers() == []


def test_token_exchange_happens_once_across_warm_invocations(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    for i in range(6):
        world.notify(world.put(f"warm/{i}.txt", f"n{i}".encode()))
    assert world.rig.tokens.sts_calls == 1
    assert world.rig.tokens.iam_calls == 1
    assert world.gcs_bytes(dest, "warm/5.txt") == b"n5"
    # every Cloud Storage request carried a token our IAM endpoint issued (checked by the
    # fixture), and there were Cloud Storage requests to check
    assert any(path.startswith("/upload/") for _, path in world.rig.front.requests)


def test_one_bad_destination_does_not_stop_the_others(world):
    good, bad = world.bucket(), world.bucket()
    world.configure(f"gs://{bad} gs://{good}")
    world.rig.front.deny[bad] = 403
    records = [world.put("one.txt", b"1"), world.put("two.txt", b"2")]
    with pytest.raises(CopyFailed) as caught:
        world.notify(*records)
    message = str(caught.value)
    assert f"gs://{bad}/one.txt" in message and f"gs://{bad}/two.txt" in message
    assert "roles/storage.objectUser" in message
    assert f"gs://{good}" not in message
    assert world.gcs_bytes(good, "one.txt") == b"1"
    assert world.gcs_bytes(good, "two.txt") == b"2"
    assert caught.value.summary["failed"] == 2
    assert caught.value.retryable is False, "a 403 will not heal by retrying the same event"
    assert world.staging_leftovers() == []


def test_console_s3_put_template(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}/")
    event = json.loads((EVENTS / "console-s3-put.json").read_text())
    event["Records"][0]["s3"]["bucket"]["name"] = world.source
    world.rig.s3_client.put_object(Bucket=world.source, Key="test/key", Body=b"from the console")
    summary = world.invoke(event)
    assert summary["copied"] == 1
    assert world.gcs_bytes(dest, "test/key") == b"from the console"


def test_duplicate_event_uploads_nothing(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    record = world.put("dup.txt", b"same")
    assert world.notify(record)["copied"] == 1
    generation = world.gcs_object(dest, "dup.txt")["generation"]
    uploads_before = sum(1 for _, p in world.rig.front.requests if p.startswith("/upload/"))
    summary = world.notify(record)
    assert summary["already_current"] == 1 and summary["copied"] == 0
    assert world.gcs_object(dest, "dup.txt")["generation"] == generation
    assert sum(1 for _, p in world.rig.front.requests if p.startswith("/upload/")) == uploads_before


def test_source_deleted_before_read_is_skipped_and_reported(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    gone = world.put("gone.txt", b"bye")
    kept = world.put("kept.txt", b"hi")
    world.rig.s3_client.delete_object(Bucket=world.source, Key="gone.txt")
    summary = world.notify(gone, kept)
    assert summary["skipped"] == 1 and summary["copied"] == 1 and summary["failed"] == 0
    skipped = [r for r in summary["results"] if r["outcome"] == "skipped"]
    assert skipped[0]["source"].endswith("/gone.txt") and "source gone" in skipped[0]["reason"]
    assert world.gcs_object(dest, "gone.txt") is None


def test_missing_source_bucket_is_a_failure(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    record = world.record("x.txt", bucket="no-such-bucket-here", size=1)
    with pytest.raises(CopyFailed) as caught:
        world.notify(record)
    assert "no-such-bucket-here" in str(caught.value) and "does not exist" in str(caught.value)


def test_unrecognised_event_is_refused_listing_the_shapes(world):
    world.configure(f"gs://{world.bucket()}")
    with pytest.raises(EventError) as caught:
        world.invoke({"hello": "world"})
    assert "S3 event notification" in str(caught.value) and "sync" in str(caught.value)


def test_configuration_problems_are_reported_together(world):
    world.configure("s3://wrong, gs://UPPER", SOURCE_BUCKETS="Bad_Name", MIRROR_DELETES="maybe")
    with pytest.raises(ConfigError) as caught:
        world.notify(world.put("x", b"x"))
    problems = caught.value.problems
    assert len(problems) == 4
    assert sum("GCS_DESTINATIONS" in p for p in problems) == 2
    assert any("SOURCE_BUCKETS" in p for p in problems) and any("MIRROR_DELETES" in p for p in problems)


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "does not exist"),
        ("not json", "is not JSON"),
        (json.dumps({"type": "service_account", "private_key": "x"}), "ALLOW_SERVICE_ACCOUNT_KEY"),
        (json.dumps({"type": "external_account", "credential_source": {"file": "/x"}}), "not an AWS source"),
    ],
)
def test_credential_configuration_problems_are_clear(world, content, expected):
    path = world.tmp_path / "creds.json"
    if content is not None:
        path.write_text(content)
    world.configure(f"gs://{world.bucket()}", GOOGLE_APPLICATION_CREDENTIALS=str(path))
    with pytest.raises(CredentialsError) as caught:
        world.notify(world.put("x", b"x"))
    assert expected in str(caught.value) and "GOOGLE_APPLICATION_CREDENTIALS" in str(caught.value)


def test_source_allow_list_refuses_other_buckets_but_copies_the_rest(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}", SOURCE_BUCKETS=world.source)
    allowed = world.put("ok.txt", b"ok")
    foreign = world.record("evil.txt", bucket="other-bucket", size=1)
    with pytest.raises(CopyFailed) as caught:
        world.notify(allowed, foreign)
    assert "other-bucket" in str(caught.value) and "SOURCE_BUCKETS" in str(caught.value)
    assert world.gcs_bytes(dest, "ok.txt") == b"ok"


def test_refused_token_exchange_is_a_clear_error(world):
    world.configure(f"gs://{world.bucket()}")
    world.rig.tokens.refuse_sts = True
    with pytest.raises(CredentialsError) as caught:
        world.notify(world.put("x", b"x"))
    assert "STS" in str(caught.value)


def test_removed_records_do_nothing_without_mirroring(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    world.notify(world.put("keep.txt", b"k"))
    world.rig.s3_client.delete_object(Bucket=world.source, Key="keep.txt")
    summary = world.notify(world.record("keep.txt", event="ObjectRemoved:Delete"))
    assert summary["skipped"] == 1 and summary["failed"] == 0
    assert world.gcs_bytes(dest, "keep.txt") == b"k"


def test_a_console_test_naming_a_key_that_does_not_exist_says_so_with_the_encoding_rule(world):
    """The console's sample event edited by hand: a literal '+' in a key means a space once decoded."""
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    world.put("a+b.txt", b"plus")
    event = {"Records": [world.record("a+b.txt")]}
    event["Records"][0]["s3"]["object"]["key"] = "a+b.txt"  # as typed: not URL-encoded
    summary = world.invoke(event)
    reason = summary["results"][0]["reason"]
    assert summary["skipped"] == 1 and f"s3://{world.source}/a b.txt" in reason  # the decoded key looked for
    assert "not found" in reason and "URL-encoded" in reason and "'%2B'" in reason

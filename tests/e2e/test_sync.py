"""The manual sync end to end: {"sync": {"bucket", "prefix", "continuation", "dry_run"}}.

Every test goes through the real ``lambda_function.lambda_handler`` with a context whose
remaining time counts down from a deadline the test chooses, as Lambda's does.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import re
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

import lambda_function
from gcs_sync.errors import CopyFailed, EventError
from gcs_sync.sync import encode_token

from .conftest import CountdownContext, writes


class OutOfTime(CountdownContext):
    """Plenty of time at the first look, none after: the sync stops before its first chunk."""

    def __init__(self):
        super().__init__(0)
        self.calls = 0

    def get_remaining_time_in_millis(self) -> int:
        self.calls += 1
        return 60_000 if self.calls == 1 else 0


def invoke(event, context=None):
    """Through the real entry point, with the event as JSON would deliver it."""
    return lambda_function.lambda_handler(json.loads(json.dumps(event)), context or CountdownContext(300))


def put_many(world, objects: dict[str, bytes]) -> None:
    client = world.rig.s3_client
    with ThreadPoolExecutor(10) as pool:  # boto3 keeps 10 connections
        list(pool.map(lambda item: client.put_object(Bucket=world.source, Key=item[0], Body=item[1]),
                      objects.items()))


def names(world, bucket: str, prefix: str = "") -> set[str]:
    return {item["name"] for item in world.rig.gcs.list_objects(bucket, prefix)}


@contextmanager
def s3_requests():
    """Request lines moto's server logs (method, decoded path), to see what was read from S3."""
    seen: list[tuple[str, str]] = []
    line = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+"')

    class Collect(logging.Handler):
        def emit(self, record):
            match = line.search(record.getMessage())
            if match:
                seen.append((match.group(1), urllib.parse.unquote(match.group(2).split("?")[0])))

    handler = Collect()
    logger = logging.getLogger("werkzeug")
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        time.sleep(0.2)  # the server logs a request after answering it
        logger.removeHandler(handler)


# -- 1. more than one listing page, a tight budget, resumed until complete ---------------------

OBJECTS = 1150  # more than one S3 listing page (1,000 keys)
# Per invocation. At 3-4 s, one chunk of 32-64 objects on a loaded 2-core machine comes close to
# the function's own deadline (remaining time minus 10 %), and a chunk that overruns it fails
# objects instead of stopping cleanly (test_a_chunk_cut_off_by_the_deadline_is_resumed_not_skipped):
# 8 s leaves two chunks of margin while still needing ~10 invocations.
BUDGET_SECONDS = 8.0


def test_sync_over_a_thousand_objects_resumes_until_complete_and_writes_each_once(world):
    plain, prefixed = world.bucket(), world.bucket()
    world.configure(f"gs://{plain} gs://{prefixed}/mirror/", OBJECT_CONCURRENCY="8")
    objects = {f"bulk/{i % 7}/obj-{i:05d}.txt": f"object {i}\n".encode() * (1 + i % 5) for i in range(OBJECTS)}
    outside = {"bulkhead.txt": b"shares the letters, not the prefix", "other/x.txt": b"x", "zzz/after": b"z"}
    put_many(world, {**objects, **outside})

    results, durations, token = [], [], None
    for _ in range(100):
        request = {"bucket": world.source, "prefix": "bulk/"}
        if token:
            request["continuation"] = token
        started = time.monotonic()
        result = invoke({"sync": request}, CountdownContext(BUDGET_SECONDS))
        durations.append(time.monotonic() - started)
        results.append(result)
        assert result["failed"] == 0
        if result["complete"]:
            assert "continuation" not in result
            break
        assert result["continuation"] and result["continuation"] != token, "no progress between invocations"
        token = result["continuation"]

    assert results[-1]["complete"] is True, f"not complete after {len(results)} invocations"
    assert results[0]["complete"] is False and "continuation" in results[0]
    # a real token is bound to its bucket and prefix
    with pytest.raises(EventError) as caught:
        invoke({"sync": {"bucket": world.source, "prefix": "other/", "continuation": results[0]["continuation"]}})
    assert "bulk/" in str(caught.value)
    assert len(results) >= 3, f"the budget should have forced several invocations, got {len(results)}"
    assert sum(r["copied"] for r in results) == OBJECTS
    assert sum(r["to_copy"] for r in results) == OBJECTS
    # each invocation stopped on its own budget (checked between chunks, so allow one chunk over)
    assert max(durations) < BUDGET_SECONDS + 3, durations

    assert names(world, plain) == set(objects)
    assert names(world, prefixed) == {"mirror/" + key for key in objects}
    # nothing was written twice: exactly one upload per object and destination
    assert writes(world, plain) == OBJECTS
    assert writes(world, prefixed) == OBJECTS
    assert writes(world) == 2 * OBJECTS
    for key in random.Random(7).sample(sorted(objects), 25):
        assert world.gcs_bytes(plain, key) == objects[key]
        assert world.gcs_bytes(prefixed, "mirror/" + key) == objects[key]

    # and a sync of the now complete prefix copies nothing
    again = invoke({"sync": {"bucket": world.source, "prefix": "bulk/"}}, CountdownContext(120))
    assert again["complete"] is True and again["to_copy"] == 0 and again["copied"] == 0
    assert again["listed"] == OBJECTS
    assert writes(world) == 2 * OBJECTS


# -- 2. only what is missing or different ----------------------------------------------------

def test_second_sync_copies_only_changed_and_missing_objects(world):
    first, second = world.bucket(), world.bucket()
    world.configure(f"gs://{first} gs://{second}/copy/")
    objects = {f"data/file-{i:02d}.csv": f"row {i}\n".encode() for i in range(20)}
    put_many(world, objects)
    full = invoke({"sync": {"bucket": world.source, "prefix": "data/"}})
    assert full["complete"] is True and full["copied"] == 20 and full["failed"] == 0
    assert writes(world) == 40

    changed = ["data/file-03.csv", "data/file-07.csv", "data/file-19.csv"]
    for key in changed:
        world.rig.s3_client.put_object(Bucket=world.source, Key=key, Body=b"new bytes for " + key.encode())
    # one destination copy removed behind gcs-sync's back
    _delete_at_backend(world, second, "copy/data/file-11.csv")
    lambda_function.new_container()  # a cold container: it learns which names exist from the listing
    mark = len(world.rig.front.requests)

    with s3_requests() as seen:
        result = invoke({"sync": {"bucket": world.source, "prefix": "data/"}})
    assert result["complete"] is True and result["failed"] == 0
    assert result["listed"] == 20
    assert result["to_copy"] == 4
    assert result["copied"] == 4 and result["already_current"] == 0
    copied_sources = {r["source"].rsplit("/", 1)[-1] for r in result["results"] if r["outcome"] == "copied"}
    assert copied_sources == {"file-03.csv", "file-07.csv", "file-19.csv", "file-11.csv"}
    # 3 changed objects to both destinations, the missing copy to its one destination; no upload
    # is refused: names the listing found are looked up first, not sent "only if absent"
    assert writes(world, first, mark) == 3 and writes(world, second, mark) == 4
    for key in changed:
        assert world.gcs_bytes(first, key) == b"new bytes for " + key.encode()
        assert world.gcs_bytes(second, "copy/" + key) == b"new bytes for " + key.encode()
    assert world.gcs_bytes(second, "copy/data/file-11.csv") == objects["data/file-11.csv"]

    # S3 was asked only about the four objects that needed copying (plus the listing)
    object_paths = {path for method, path in seen if method in ("GET", "HEAD")
                    and path.startswith(f"/{world.source}/")}
    read_keys = {path[len(world.source) + 2:] for path in object_paths}
    assert read_keys == set(changed) | {"data/file-11.csv"}


def _delete_at_backend(world, bucket: str, name: str) -> None:
    url = f"{world.rig.gcs.url}/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}"
    with urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10) as answer:
        assert answer.status in (200, 204)
    assert world.gcs_object(bucket, name) is None


# -- 3. dry run --------------------------------------------------------------------------------

def test_dry_run_lists_what_would_be_copied_and_writes_nothing(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    objects = {f"dry/{i}.txt": b"x" * i for i in range(6)}
    put_many(world, {**objects, "elsewhere.txt": b"e"})
    # one object is already current at the destination
    assert invoke({"sync": {"bucket": world.source, "prefix": "dry/0"}})["copied"] == 1
    mark = len(world.rig.front.requests)

    result = invoke({"sync": {"bucket": world.source, "prefix": "dry/", "dry_run": True}})
    assert result["dry_run"] is True and result["complete"] is True
    assert result["listed"] == 6 and result["to_copy"] == 5
    assert sorted(result["would_copy"]) == sorted(k for k in objects if k != "dry/0.txt")
    assert result["copied"] == 0 and result["failed"] == 0
    assert writes(world, since=mark) == 0
    assert not [r for r in world.rig.front.requests[mark:] if r[0] in ("POST", "PUT", "PATCH", "DELETE")]
    assert names(world, dest) == {"dry/0.txt"}


def test_sync_honours_filters_and_source_prefix_remapping(world):
    everything, bdp = world.bucket(), world.bucket()
    world.configure(f"gs://{everything} incoming/=gs://{bdp}/bdp/", EXCLUDE="*.tmp")
    put_many(world, {"incoming/x/y.csv": b"y", "incoming/partial.tmp": b"t", "other/z": b"z"})
    result = invoke({"sync": {"bucket": world.source}})
    assert result["complete"] is True and result["failed"] == 0
    assert result["listed"] == 3 and result["to_copy"] == 2 and result["copied"] == 2
    assert names(world, everything) == {"incoming/x/y.csv", "other/z"}
    assert names(world, bdp) == {"bdp/x/y.csv"}
    assert world.gcs_bytes(bdp, "bdp/x/y.csv") == b"y"
    # the remapped copies are recognised as current: nothing to do the second time
    again = invoke({"sync": {"bucket": world.source}})
    assert again["to_copy"] == 0 and again["copied"] == 0
    assert writes(world) == 3


# -- 4. refused requests ------------------------------------------------------------------------

def test_bucket_defaults_to_s3_bucket_name(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}", S3_BUCKET_NAME=world.source)
    put_many(world, {"default/a.txt": b"a", "default/b.txt": b"b", "not-this.txt": b"n"})
    result = invoke({"sync": {"prefix": "default/"}})
    assert result["bucket"] == world.source and result["complete"] is True and result["copied"] == 2
    assert names(world, dest) == {"default/a.txt", "default/b.txt"}


def test_sync_without_any_bucket_names_s3_bucket_name(world):
    world.configure(f"gs://{world.bucket()}")
    with pytest.raises(EventError) as caught:
        invoke({"sync": {"prefix": "x/"}})
    assert "S3_BUCKET_NAME" in str(caught.value)
    assert writes(world) == 0


def test_continuation_tokens_must_match_bucket_and_prefix(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    put_many(world, {f"a/{i}.txt": b"a" for i in range(3)})
    # the token a sync of s3://SOURCE/a/ returns when it stops after a/0.txt
    token = encode_token(world.source, "a/", "a/0.txt")

    with pytest.raises(EventError) as caught:
        invoke({"sync": {"bucket": world.source, "prefix": "b/", "continuation": token}})
    assert "continuation" in str(caught.value) and "a/" in str(caught.value)
    with pytest.raises(EventError) as caught:
        invoke({"sync": {"bucket": "another-bucket", "prefix": "a/", "continuation": token}})
    assert "continuation" in str(caught.value)
    for garbage in ("not-a-token", "eyJ2IjogMn0=", "%%%", "e30="):
        with pytest.raises(EventError) as caught:
            invoke({"sync": {"bucket": world.source, "prefix": "a/", "continuation": garbage}})
        assert "continuation" in str(caught.value)
    assert writes(world) == 0

    # the genuine token resumes after the key it names
    resumed = invoke({"sync": {"bucket": world.source, "prefix": "a/", "continuation": token}})
    assert resumed["complete"] is True and resumed["copied"] == 2
    assert names(world, dest) == {"a/1.txt", "a/2.txt"}


def test_bucket_outside_source_buckets_is_refused(world):
    world.configure(f"gs://{world.bucket()}", SOURCE_BUCKETS="some-other-bucket")
    put_many(world, {"x.txt": b"x"})
    with pytest.raises(EventError) as caught:
        invoke({"sync": {"bucket": world.source}})
    assert "SOURCE_BUCKETS" in str(caught.value) and world.source in str(caught.value)
    assert writes(world) == 0


# -- 5. a failing destination -------------------------------------------------------------------

def test_a_denied_destination_fails_the_sync_but_not_the_other_destination(world):
    good, denied = world.bucket(), world.bucket()
    world.configure(f"gs://{good} gs://{denied}")
    world.rig.front.deny[denied] = 403
    objects = {f"part/{i}.txt": f"p{i}".encode() for i in range(5)}
    put_many(world, objects)
    with pytest.raises(CopyFailed) as caught:
        invoke({"sync": {"bucket": world.source, "prefix": "part/"}})
    message = str(caught.value)
    for key in objects:
        assert key in message
    assert f"gs://{denied}" in message and "roles/storage.objectUser" in message
    assert f"gs://{good}/" not in message
    assert names(world, good) == set(objects)


def test_a_chunk_cut_off_by_the_deadline_is_resumed_not_skipped(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}", OBJECT_CONCURRENCY="1")  # chunks of 4 objects, one at a time
    objects = {f"s/{group}-{i}.txt": f"{group}{i}".encode() for group in "abc" for i in range(4)}
    put_many(world, objects)

    # Cloud Storage answers the 6th upload (s/b-1.txt) slowly during the first invocation, so
    # the second chunk (s/b-0 .. s/b-3) cannot finish before the invocation's deadline.
    release = threading.Event()
    record = world.rig.front._record
    uploads = itertools.count(1)

    def slow_record(method, path):
        record(method, path)
        if method == "POST" and path == f"/upload/storage/v1/b/{dest}/o" and next(uploads) == 6:
            release.wait(8)

    world.monkeypatch.setattr(world.rig.front, "_record", slow_record)
    chain, token = [], None
    try:
        for attempt in range(10):
            request = {"bucket": world.source, "prefix": "s/"}
            if token:
                request["continuation"] = token
            try:
                result = invoke({"sync": request}, CountdownContext(4 if attempt == 0 else 60))
            except CopyFailed as exc:  # failures are fine, as long as the chain still gets there
                result = exc.summary
            release.set()  # Cloud Storage is quick again after the first invocation
            chain.append(result)
            if result["complete"]:
                break
            token = result["continuation"]
    finally:
        release.set()
    assert chain[0]["complete"] is False, "the first invocation should have run out of time"
    assert chain[-1]["complete"] is True
    assert names(world, dest) == set(objects), "objects cut off by the deadline were never copied"

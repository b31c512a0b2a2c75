"""Fault injection: the real handler against S3, Cloud Storage and Google's token endpoints that
throttle, fail, cut connections and stall (``tests.rig.faults.FaultProxy``).

Schedules are seeded. Seeds come from ``FAULT_SEEDS`` (e.g. ``FAULT_SEEDS="7 8 9"``) or the
fixed list below; every assertion message names its seed, and each seed prints one line
``seed=… faults=… copied=… corrupt=0 lost=0``. Rerun one seed with ``FAULT_SEEDS=<seed>``.
"""

from __future__ import annotations

import base64
import collections
import errno
import itertools
import json
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import google_crc32c
import pytest

import gcs_sync.staging
import lambda_function
from gcs_sync.errors import CopyFailed, CredentialsError, GcsSyncError
from tests.rig.faults import FAULT_RUNS, FaultPlan, FaultProxy

from .conftest import CountdownContext, FakeContext, md5_b64

MIB = 1024 * 1024
SEEDS = [int(s) for s in re.split(r"[\s,]+", os.environ.get("FAULT_SEEDS", "").strip()) if s] or [11, 23, 42]
BIG = 8 * MIB + 4097  # over google-cloud-storage's 8 MiB multipart limit: the resumable path
Usage = collections.namedtuple("Usage", "total used free")


def crc32c_b64(data: bytes) -> str:
    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode()


def invoke(event: Any, context: Any = None) -> tuple[Any, BaseException | None, float]:
    """Call the real handler; return (result, exception, seconds)."""
    started = time.monotonic()
    try:
        result = lambda_function.lambda_handler(json.loads(json.dumps(event)), context or FakeContext())
        return result, None, time.monotonic() - started
    except Exception as exc:  # noqa: BLE001 - returned for the test to judge
        return None, exc, time.monotonic() - started


def proxied_credentials(world, proxy: FaultProxy) -> None:
    """Rewrite the credential configuration the fixture wrote so both token URLs use ``proxy``."""
    config = world.rig.tokens.credential_config()
    for field_name in ("token_url", "service_account_impersonation_url"):
        assert config[field_name].startswith(world.rig.tokens.url)
        config[field_name] = proxy.url + config[field_name][len(world.rig.tokens.url):]
    (world.tmp_path / "task" / "gcp-credentials.json").write_text(json.dumps(config))


# --------------------------------------------------------------------------- watcher


@dataclass
class Watcher:
    """Polls the Cloud Storage backend directly (never through a proxy) while copies run.

    Every object seen must hold the bytes of one complete source version: never a prefix,
    never a mix. ``versions`` maps (bucket, name) -> the complete versions allowed there.
    """

    gcs: Any
    versions: dict[tuple[str, str], list[bytes]]
    checks: int = 0
    seen: int = 0
    violations: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._crcs = {t: {crc32c_b64(v) for v in vs} for t, vs in self.versions.items()}

    def __enter__(self) -> "Watcher":
        self._thread = threading.Thread(target=self._run, name="gcs-watcher", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            for (bucket, name), allowed in self.versions.items():
                self.checks += 1
                meta = self.gcs.object_metadata(bucket, name)
                if meta is None:
                    continue
                if meta.get("crc32c") not in self._crcs[(bucket, name)]:
                    self.violations.append(f"gs://{bucket}/{name}: crc32c {meta.get('crc32c')} is no source version's "
                                           f"({meta.get('size')} bytes)")
                try:
                    data = self.gcs.read_object(bucket, name)
                except RuntimeError:
                    continue  # replaced or removed between the two requests
                self.seen += 1
                if data not in allowed:
                    prefix = any(v.startswith(data) for v in allowed)
                    self.violations.append(
                        f"gs://{bucket}/{name}: {len(data)} bytes visible that are no complete source version"
                        + (" (a truncated prefix)" if prefix else ""))
            self._stop.wait(0.02)


# --------------------------------------------------------------------------- the proxy itself


def test_fault_proxy_is_seeded_capped_and_stops_cleanly(rig):
    import http.client

    def statuses(seed: int) -> tuple[list[int], FaultProxy]:
        proxy = FaultProxy(rig.tokens.url, seed=seed, plan=FaultPlan(status=0.5, max_faults=5)).start()
        port = int(proxy.url.rsplit(":", 1)[1])
        seen = []
        try:
            for _ in range(30):  # GET is answered 405 by the token server itself
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/v1/token")
                seen.append(conn.getresponse().status)
                conn.close()
        finally:
            proxy.stop()
        return seen, proxy

    first, proxy = statuses(1234)
    again, _ = statuses(1234)
    assert first == again  # the same seed, the same schedule
    assert proxy.total == 5 and sum(s != 405 for s in first) == 5  # capped by max_faults
    assert set(first) <= {405, 429, 500, 503}

    stalled = FaultProxy(rig.tokens.url, seed=1, plan=FaultPlan(stall=1.0, stall_seconds=30)).start()
    port = int(stalled.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/v1/token")
    time.sleep(0.2)
    started = time.monotonic()
    stalled.stop()  # wakes the stalled request and closes its connection
    with pytest.raises((http.client.HTTPException, OSError)):
        conn.getresponse()
    assert time.monotonic() - started < 6


# --------------------------------------------------------------------------- 1 + 2


def _batch(seed: int) -> dict[str, bytes]:
    rnd = random.Random(seed)
    return {
        "zero.bin": b"",
        "folder/": b"",
        "small.txt": f"seed {seed}\n".encode(),
        "mid.bin": rnd.randbytes(300_000 + seed),
        "multi.bin": rnd.randbytes(2 * MIB + seed),
        "big.bin": rnd.randbytes(BIG),
        "overwrite.bin": rnd.randbytes(700_000),  # v2: v1 is copied before the faults start
        "stubborn.bin": b"its HEAD fails past every retry until the faults stop",
    }


# FANOUT=copy (the default) on both write paths for every seed; FANOUT=upload on the streamed path
# for the first seed (its staged uploads are the same requests as the primary's).
RUNS = [(seed, path) for seed in SEEDS for path in ("staged", "streamed")] + [(SEEDS[0], "streamed-upload")]


@pytest.mark.parametrize("seed, path", RUNS)
def test_bounded_retries_converge_and_nothing_partial_is_ever_visible(world, seed, path):
    """staged: objects go through the temp dir (> 8 MiB: a resumable upload in one request);
    streamed: objects of 2 MiB and more stream in 1 MiB chunks of resumable uploads."""
    print(f"\n[faults] seed={seed} path={path} (set FAULT_SEEDS to choose)")
    # FANOUT=copy (the default): one upload, a server-side copy to the other destination (faults
    # hit the rewrite calls too); streamed-upload: FANOUT=upload, a stream to each destination.
    stream = {"STREAM_THRESHOLD_MB": "2", "STREAM_CHUNK_MB": "1"} if path.startswith("streamed") else {}
    if path == "streamed-upload":
        stream["FANOUT"] = "upload"
    plain, prefixed = world.bucket(), world.bucket()
    destinations = [(plain, ""), (prefixed, "mirror/")]
    bodies = _batch(seed)
    v1 = random.Random(seed + 1).randbytes(123_456)

    # The older version of overwrite.bin is already at both destinations (no faults yet).
    world.configure(f"gs://{plain}, gs://{prefixed}/mirror/", **stream)
    world.notify(world.put("overwrite.bin", v1, ContentType="application/x-v1"))
    records = [world.put(key, body, ContentType="application/octet-stream", Metadata={"seed": str(seed)})
               for key, body in bodies.items()]

    # ``corrupt`` alters one byte of the object's bytes in transit: of an upload chunk on its
    # way to Cloud Storage, of a GET's body on its way from S3. "0 corrupt" below means each was
    # caught (S3's record, the hashes Cloud Storage checks) and never became a copy.
    gcs_proxy = FaultProxy(world.rig.front.url, seed=seed, name="gcs-faults", plan=FaultPlan(
        status=0.10, reset_response=0.07, drop_request=0.06, stall=0.03, stall_seconds=2.0,
        stall_then="forward", max_faults=10, flavor="gcs", corrupt=0.05, corrupt_body="request",
        corruptible=lambda m, p: m == "PUT" and p.startswith("/upload/"))).start()
    s3_proxy = FaultProxy(world.rig.s3.url, seed=seed, name="s3-faults", plan=FaultPlan(
        status=0.10, reset_response=0.15, stall=0.03, stall_seconds=2.0, stall_then="forward",
        corrupt=0.08, corrupt_body="response", corruptible=lambda m, p: m == "GET",
        max_faults=8, flavor="s3", statuses=(500, 503),
        always=lambda m, p: m in ("HEAD", "GET") and p.split("?")[0].endswith("/stubborn.bin"))).start()
    try:
        world.configure(f"gs://{plain}, gs://{prefixed}/mirror/",
                        GCS_API_ENDPOINT=gcs_proxy.url, AWS_ENDPOINT_URL_S3=s3_proxy.url, **stream)
        targets = {(key, bucket, prefix + key) for key in bodies for bucket, prefix in destinations}
        versions = {(b, n): ([bodies[k], v1] if k == "overwrite.bin" else [bodies[k]]) for k, b, n in targets}
        with Watcher(world.rig.gcs, versions) as watcher:
            _, first_error, first_seconds = invoke({"Records": records})

            # What the first, faulty delivery left behind, and what it said about it.
            not_done = {t for t in targets if not _current(world, t, bodies[t[0]])}
            failed: set[tuple[str, str, str]] = set()
            if first_error is not None:
                assert isinstance(first_error, CopyFailed), f"seed={seed} path={path}: {type(first_error).__name__}: {first_error}"
                prefixes = {t: f"s3://{world.source}/{t[0]} -> gs://{t[1]}/{t[2]}:" for t in targets}
                for line in first_error.failures:
                    named = [t for t, p in prefixes.items() if line.startswith(p)]
                    assert named, f"seed={seed} path={path}: a failure names no object of the batch: {line}"
                    failed.update(named)
                assert first_error.summary["failed"] == len({t[0] for t in failed}), f"seed={seed} path={path}"
            assert not_done <= failed, (
                f"seed={seed} path={path}: objects missing or stale after the faulty run but not reported as failed: "
                f"{sorted(not_done - failed)}")
            stubborn = {t for t in targets if t[0] == "stubborn.bin"}
            assert stubborn <= failed, f"seed={seed} path={path}: the persistent fault was not reported: {first_error}"

            # The faults stop; Lambda re-delivers the same event.
            gcs_proxy.calm()
            s3_proxy.calm()
            summary, second_error, _ = invoke({"Records": records})
            assert second_error is None, f"seed={seed} path={path}: the re-delivery failed too: {second_error}"
            assert summary["failed"] == 0 and summary["objects"] == len(bodies), f"seed={seed} path={path}: {summary}"

        lost, corrupt = [], []
        for key, bucket, name in sorted(targets):
            meta = world.gcs_object(bucket, name)
            if meta is None:
                lost.append(f"gs://{bucket}/{name}")
                continue
            data, body = world.gcs_bytes(bucket, name), bodies[key]
            if data != body or meta["crc32c"] != crc32c_b64(body) or meta["md5Hash"] != md5_b64(body):
                (lost if data == v1 else corrupt).append(f"gs://{bucket}/{name} ({len(data)} bytes)")
            assert meta["metadata"]["seed"] == str(seed) and meta["contentType"] == "application/octet-stream"
        faults = gcs_proxy.total + s3_proxy.total
        FAULT_RUNS.append({"seed": seed, "path": path, "faults": faults, "lost": len(lost), "corrupt": len(corrupt),
                           "copied": len(targets) - len(lost) - len(corrupt), "failed_first": len(failed)})
        print(f"seed={seed} path={path} faults={faults} copied={len(targets) - len(lost) - len(corrupt)} "
              f"corrupt={len(corrupt)} lost={len(lost)} failed_first={len(failed)} "
              f"first_run={first_seconds:.1f}s watcher_reads={watcher.seen}")
        print(f"  {gcs_proxy.summary()}\n  {s3_proxy.summary()}")
        if gcs_proxy.slow or s3_proxy.slow:
            print(f"  slow requests: gcs={gcs_proxy.slow} s3={s3_proxy.slow}")
        assert faults >= 4, f"seed={seed} path={path}: the run injected too few faults to mean anything"
        uploads = [p for m, p in world.rig.front.requests if m == "PUT" and p.startswith("/upload/")]
        streams = {"staged": 0, "streamed": 1, "streamed-upload": 2}[path]
        assert len(uploads) >= (streams * 9 or 2), f"seed={seed} path={path}: resumable uploads: {len(uploads)}"
        rewrites = [p for m, p in world.rig.front.requests if m == "POST" and "/rewriteTo/" in p]
        assert bool(rewrites) == (path != "streamed-upload"), f"seed={seed} path={path}: rewrites: {len(rewrites)}"
        assert corrupt == [] and lost == [], f"seed={seed} path={path}: corrupt={corrupt} lost={lost}"
        assert watcher.seen > 0, f"seed={seed} path={path}: the watcher never saw an object"
        assert watcher.violations == [], f"seed={seed} path={path}: partial or foreign bytes were visible: {watcher.violations[:5]}"
        assert world.staging_leftovers() == [], f"seed={seed} path={path}"
    finally:
        gcs_proxy.stop()
        s3_proxy.stop()


def _current(world, target: tuple[str, str, str], body: bytes) -> bool:
    _, bucket, name = target
    meta = world.gcs_object(bucket, name)
    return meta is not None and meta["crc32c"] == crc32c_b64(body) and world.gcs_bytes(bucket, name) == body


# --------------------------------------------------------------------------- 3: token endpoints


def test_token_endpoints_that_stall_then_answer_still_copy_in_bounded_time(world):
    dest = world.bucket()
    proxy = FaultProxy(world.rig.tokens.url, seed=5, name="token-faults", plan=FaultPlan(
        stall=1.0, stall_seconds=2.0, stall_then="forward", max_faults=2, flavor="oauth")).start()
    try:
        proxied_credentials(world, proxy)
        world.configure(f"gs://{dest}")
        summary, error, seconds = invoke({"Records": [world.put("t.txt", b"token stall")]})
        print(f"\n[faults] token stall: {proxy.summary()} in {seconds:.1f}s")
        assert error is None, error
        assert summary["copied"] == 1 and world.gcs_bytes(dest, "t.txt") == b"token stall"
        assert proxy.injected["stall"] == 2  # STS and impersonation both stalled
        assert seconds < 15, f"took {seconds:.1f}s"
    finally:
        proxy.stop()


@pytest.mark.parametrize("endpoint", ["/v1/token", ":generateAccessToken"])
def test_token_endpoint_connection_reset_is_a_retryable_credentials_error(world, endpoint):
    dest = world.bucket()
    proxy = FaultProxy(world.rig.tokens.url, seed=6, name="token-faults", plan=FaultPlan(
        reset_response=1.0, max_faults=1, flavor="oauth", match=lambda m, path: endpoint in path)).start()
    try:
        proxied_credentials(world, proxy)
        world.configure(f"gs://{dest}")
        record = world.put("r.txt", b"after the reset")
        _, error, seconds = invoke({"Records": [record]})
        print(f"\n[faults] token reset at {endpoint}: {proxy.summary()} -> {type(error).__name__}: {error}")
        assert isinstance(error, CredentialsError), error
        assert error.retryable is True
        assert "token endpoint" in str(error)
        assert seconds < 10, f"took {seconds:.1f}s"
        assert world.gcs_object(dest, "r.txt") is None
        summary, error, _ = invoke({"Records": [record]})  # Lambda's retry, the endpoint healthy again
        assert error is None and summary["copied"] == 1
    finally:
        proxy.stop()


@pytest.mark.parametrize("endpoint", ["/v1/token", ":generateAccessToken"])
def test_token_endpoint_503_is_a_retryable_credentials_error(world, endpoint):
    dest = world.bucket()
    proxy = FaultProxy(world.rig.tokens.url, seed=7, name="token-faults", plan=FaultPlan(
        status=1.0, statuses=(503,), max_faults=3, flavor="oauth", match=lambda m, path: endpoint in path)).start()
    try:
        proxied_credentials(world, proxy)
        world.configure(f"gs://{dest}")
        summary, error, seconds = invoke({"Records": [world.put("u.txt", b"503")]})
        print(f"\n[faults] token 503 at {endpoint}: {proxy.summary()} -> {type(error).__name__}: {error}")
        assert seconds < 20, f"took {seconds:.1f}s"
        if error is None:  # retried past the 503s: that is fine too
            assert summary["copied"] == 1
            return
        assert isinstance(error, CredentialsError), error
        assert error.retryable is True, f"a 503 was reported as permanent: {error}"
        assert "PERMISSION_DENIED" not in str(error) and "check the pool" not in str(error)
    finally:
        proxy.stop()


def test_stalled_token_endpoint_does_not_outlive_the_invocation(world):
    dest = world.bucket()
    budget = 3.0
    proxy = FaultProxy(world.rig.tokens.url, seed=8, name="token-faults", plan=FaultPlan(
        stall=1.0, stall_seconds=6.0, stall_then="forward", max_faults=1, flavor="oauth",
        match=lambda m, path: path.startswith("/v1/token"))).start()
    try:
        proxied_credentials(world, proxy)
        world.configure(f"gs://{dest}")
        record = world.put("d.txt", b"deadline")
        _, error, seconds = invoke({"Records": [record]}, CountdownContext(budget))
        print(f"\n[faults] token stall past the deadline: {seconds:.2f}s for a {budget}s budget -> {error!r}")
        assert isinstance(error, GcsSyncError), error
        assert seconds <= budget + 1.0, f"returned after {seconds:.2f}s, budget {budget}s"
    finally:
        proxy.stop()


# --------------------------------------------------------------------------- 4: deadline


@pytest.mark.parametrize("stalled", ["every request", "uploads", "streamed chunks"])
def test_stalled_cloud_storage_fails_before_the_deadline(world, stalled):
    dest = world.bucket()
    budget = 4.0
    match = {
        "every request": None,
        "uploads": lambda m, path: path.startswith("/upload/"),
        "streamed chunks": lambda m, path: m == "PUT",
    }[stalled]
    proxy = FaultProxy(world.rig.front.url, seed=9, name="gcs-stall", plan=FaultPlan(
        stall=1.0, stall_seconds=2 * budget + 2, max_faults=1000, match=match)).start()
    try:
        extra = {"STREAM_THRESHOLD_MB": "0"} if stalled == "streamed chunks" else {}
        world.configure(f"gs://{dest}", GCS_API_ENDPOINT=proxy.url, **extra)
        record = world.put("slow.bin", os.urandom(50_000))
        _, error, seconds = invoke({"Records": [record]}, CountdownContext(budget))
        print(f"\n[faults] GCS stalls ({stalled}): returned after {seconds:.2f}s of a {budget}s budget; "
              f"{proxy.summary()}")
        assert proxy.injected["stall"] >= 1
        assert isinstance(error, CopyFailed), error
        assert error.retryable is True, "a stall is transient: the same event may succeed later"
        assert error.failures and all(line.startswith(f"s3://{world.source}/slow.bin -> gs://{dest}/slow.bin:")
                                      for line in error.failures), error.failures
        assert seconds <= budget + 1.0, f"returned after {seconds:.2f}s, budget {budget}s"
        assert world.gcs_object(dest, "slow.bin") is None
        assert world.staging_leftovers() == []

        if stalled == "every request":  # the same through S3 Batch Operations: a temporary failure
            task = {"taskId": "t1", "s3Key": "slow.bin", "s3VersionId": None,
                    "s3BucketArn": f"arn:aws:s3:::{world.source}"}
            event = {"invocationSchemaVersion": "1.0", "invocationId": "inv-1",
                     "job": {"id": "job-1"}, "tasks": [task]}
            result, error, seconds = invoke(event, CountdownContext(budget))
            assert error is None, error
            assert result["results"][0]["resultCode"] == "TemporaryFailure", result
            assert seconds <= budget + 1.0, f"batch task returned after {seconds:.2f}s"
    finally:
        proxy.stop()


@pytest.mark.parametrize("call", ["object GET", "sync listing"])
def test_stalled_s3_fails_before_the_deadline(world, call):
    dest = world.bucket()
    budget = 3.0
    wanted = {"object GET": lambda m, path: m == "GET" and "s3slow" in path,
              "sync listing": lambda m, path: m == "GET" and "list-type=2" in path}[call]
    proxy = FaultProxy(world.rig.s3.url, seed=10, name="s3-stall", plan=FaultPlan(
        stall=1.0, stall_seconds=6.0, max_faults=1, flavor="s3", match=wanted)).start()
    try:
        world.configure(f"gs://{dest}", AWS_ENDPOINT_URL_S3=proxy.url)
        record = world.put("s3slow.bin", b"x" * 1000)
        event = {"Records": [record]} if call == "object GET" else {"sync": {"bucket": world.source, "prefix": ""}}
        _, error, seconds = invoke(event, CountdownContext(budget))
        print(f"\n[faults] S3 {call} stall: returned after {seconds:.2f}s of a {budget}s budget -> {error!r}")
        assert proxy.injected["stall"] == 1
        assert isinstance(error, GcsSyncError), error
        assert error.retryable is True, "a stall is transient: the same event may succeed later"
        assert "s3slow.bin" in str(error) if call == "object GET" else f"s3://{world.source}/" in str(error)
        assert world.gcs_object(dest, "s3slow.bin") is None
        assert seconds <= budget + 1.0, f"returned after {seconds:.2f}s, budget {budget}s"
    finally:
        proxy.stop()


@pytest.mark.parametrize("size", [300_000, 2 * MIB + 5])
def test_lost_answer_to_a_streamed_upload_is_recovered_from_the_session(world, size, caplog):
    """The response to the PUT that finalizes a streamed upload is cut: the upload asks the
    session how far it got, learns it finished, and verifies that object (no second write)."""
    dest = world.bucket()
    body = os.urandom(size)
    puts, final_put = itertools.count(1), -(-size // MIB)  # 1 MiB chunks: the last PUT finalizes
    proxy = FaultProxy(world.rig.front.url, seed=12, name="gcs-lost-answer", plan=FaultPlan(
        reset_response=1.0, max_faults=1,
        match=lambda m, path: m == "PUT" and path.startswith("/upload/") and next(puts) == final_put)).start()
    try:
        world.configure(f"gs://{dest}", GCS_API_ENDPOINT=proxy.url, STREAM_THRESHOLD_MB="0", STREAM_CHUNK_MB="1")
        caplog.set_level("INFO", logger="gcs_sync.streaming")
        summary, error, _ = invoke({"Records": [world.put("lost-answer.bin", body)]})
        print(f"\n[faults] lost answer ({size} bytes): {proxy.summary()} -> {summary or error}")
        assert error is None, error
        assert proxy.injected["reset_response"] == 1
        assert summary["copied"] == 1
        assert world.gcs_bytes(dest, "lost-answer.bin") == body
        assert any("answer was lost" in r.getMessage() for r in caplog.records)
    finally:
        proxy.stop()


# --------------------------------------------------------------------------- 5: temp-dir hygiene


def test_no_staging_leftovers_after_many_failing_invocations(world):
    good, denied = world.bucket(), world.bucket()

    def configure(destinations: str, **env: str) -> None:
        direct = {"GCS_API_ENDPOINT": world.rig.front.url, "AWS_ENDPOINT_URL_S3": world.rig.s3.url,
                  "STREAM_THRESHOLD_MB": "64"}
        world.configure(destinations, **{**direct, **env})

    configure(f"gs://{good}")
    bodies = {f"h/{i}.bin": os.urandom(size) for i, size in enumerate((0, 10, 70_000, 2 * MIB))}
    records = [world.put(k, b) for k, b in bodies.items()]
    outcomes: list[str] = []

    def run(label: str, event: Any, context: Any = None, *, fails: bool) -> None:
        result, error, _ = invoke(event, context)
        assert (error is not None) == fails, f"{label}: {error or result}"
        if error is not None:
            assert isinstance(error, GcsSyncError), f"{label}: {type(error).__name__}: {error}"
        leftovers = world.staging_leftovers()
        assert leftovers == [], f"{label} left {leftovers} behind"
        outcomes.append(f"{label}: {'failed' if error else 'ok'}")

    # Faults in front of both services, converging or not.
    for seed in SEEDS:
        gcs = FaultProxy(world.rig.front.url, seed=seed, name="gcs-faults", plan=FaultPlan(
            status=0.2, reset_response=0.1, drop_request=0.1, max_faults=6)).start()
        s3 = FaultProxy(world.rig.s3.url, seed=seed, name="s3-faults", plan=FaultPlan(
            status=0.2, reset_response=0.3, max_faults=6, flavor="s3", statuses=(500, 503))).start()
        try:
            configure(f"gs://{good}", GCS_API_ENDPOINT=gcs.url, AWS_ENDPOINT_URL_S3=s3.url)
            result, error, _ = invoke({"Records": records})
            assert error is None or isinstance(error, CopyFailed), error
            assert world.staging_leftovers() == [], f"faults seed={seed}"
            outcomes.append(f"faults seed={seed}: {'failed' if error else 'ok'}")
        finally:
            gcs.stop()
            s3.stop()
    # Every S3 read of one object is cut off mid-body, after part of it was staged.
    s3 = FaultProxy(world.rig.s3.url, seed=1, name="s3-resets", plan=FaultPlan(
        flavor="s3", always=lambda m, path: m == "GET" and path.split("?")[0].endswith("/h/cut.bin"),
        always_kind="reset_response")).start()
    try:
        configure(f"gs://{good}", AWS_ENDPOINT_URL_S3=s3.url)
        run("download always cut off", {"Records": [world.put("h/cut.bin", os.urandom(2 * MIB))]}, fails=True)
        assert s3.injected["reset_response"] >= 2
    finally:
        s3.stop()
    # Cloud Storage refusing every streamed chunk with 503 until the deadline.
    gcs = FaultProxy(world.rig.front.url, seed=2, name="gcs-503", plan=FaultPlan(
        statuses=(503,), always=lambda m, path: m == "PUT")).start()
    try:
        configure(f"gs://{good}", GCS_API_ENDPOINT=gcs.url, STREAM_THRESHOLD_MB="0")
        run("streamed upload refused", {"Records": [world.put("h/stream.bin", os.urandom(MIB))]},
            CountdownContext(4.0), fails=True)
        assert gcs.injected["status_503"] >= 1
    finally:
        gcs.stop()
    configure(f"gs://{good} gs://{denied}")
    world.rig.front.deny[denied] = 403
    run("denied destination", {"Records": records}, fails=True)
    world.rig.front.deny.clear()
    configure(f"gs://{good}")
    run("missing source key", {"Records": [world.record("no/such/key.bin", size=5)]}, fails=False)
    run("missing source bucket", {"Records": [world.record("k", bucket="no-such-bucket-leftovers", size=1)]},
        fails=True)
    run("unrecognised event", {"nothing": "here"}, fails=True)
    run("healthy", {"Records": records}, fails=False)
    print("\n[faults] temp-dir hygiene:", "; ".join(outcomes))
    assert len(outcomes) >= 10
    for key, body in bodies.items():
        assert world.gcs_bytes(good, key) == body


def test_object_larger_than_the_free_space_streams_and_the_rest_copy(world, small_disk):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    free = 1_000_000
    small_disk(free)
    bodies = {"huge.bin": os.urandom(3 * free), "a.txt": b"a" * 1000, "b.txt": b"b" * 2000}
    summary, error, _ = invoke({"Records": [world.put(k, b) for k, b in bodies.items()]})
    assert error is None, error
    assert summary["copied"] == 3
    for key, body in bodies.items():
        assert world.gcs_bytes(dest, key) == body
        assert world.gcs_object(dest, key)["crc32c"] == crc32c_b64(body)
    assert world.staging_leftovers() == []


def test_disk_full_while_staging_streams_that_object_and_the_rest_copy(world, monkeypatch, caplog):
    """The disk fills up (ENOSPC) while one object is being staged: that object is read again on
    the streaming path, which needs no disk; nothing is lost and nothing is left behind."""
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    real_open = open

    class FillingDisk:
        def __init__(self, handle):
            self.handle, self.written = handle, 0

        def write(self, data: bytes) -> int:
            self.written += len(data)
            if self.written > 1_500_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.handle.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    def filling_open(path, mode="r", *args, **kwargs):
        return FillingDisk(real_open(path, mode, *args, **kwargs))

    monkeypatch.setattr(gcs_sync.staging, "open", filling_open, raising=False)  # only the staged files' writes
    bodies = {"fills-the-disk.bin": os.urandom(3 * MIB), "a.txt": b"a" * 1000, "b.txt": b"b" * 50_000}
    with caplog.at_level("INFO", logger="gcs_sync.transfer"):
        summary, error, _ = invoke({"Records": [world.put(k, b) for k, b in bodies.items()]})
    assert error is None and summary["copied"] == 3, (error, summary)
    for key, body in bodies.items():
        assert world.gcs_bytes(dest, key) == body
    streamed = [r.fields["source"].rsplit("/", 1)[1] for r in caplog.records
                if r.getMessage() == "streaming instead of staging"]
    assert streamed == ["fills-the-disk.bin"]  # staged until the disk filled, then streamed
    assert world.staging_leftovers() == []

def test_objects_that_fit_alone_but_not_together_all_copy(world, monkeypatch):
    dest = world.bucket()
    world.configure(f"gs://{dest}", OBJECT_CONCURRENCY="2")
    free = 3_000_000
    monkeypatch.setattr(gcs_sync.staging.shutil, "disk_usage", lambda path: Usage(10**10, 10**10 - free, free))
    both_checked = threading.Barrier(2, timeout=5)
    real_fits = gcs_sync.staging.Staging.fits

    def fits(self, size):  # let both objects look at the free space before either reserves it
        answer = real_fits(self, size)
        try:
            both_checked.wait()
        except threading.BrokenBarrierError:
            pass
        return answer

    monkeypatch.setattr(gcs_sync.staging.Staging, "fits", fits)
    bodies = {"one.bin": os.urandom(2_000_000), "two.bin": os.urandom(2_000_000)}
    summary, error, _ = invoke({"Records": [world.put(k, b) for k, b in bodies.items()]})
    print(f"\n[faults] staging race: {error or summary}")
    assert world.staging_leftovers() == []
    assert error is None, error
    for key, body in bodies.items():
        assert world.gcs_bytes(dest, key) == body


def test_a_429_storm_on_one_name_fails_no_invocation(world):
    """The hot-key storm as a fault run: Cloud Storage's one write per second per name enforced at
    the front, 12 versions of one key in 2 s through 3 containers; every 429 is looked at again,
    waited out or superseded, and no invocation fails."""
    from .test_hot_keys import _storm

    world.rig.front.limit_object_writes = True
    try:
        dests, last, failures, _ = _storm(world, "storm/key.bin", "copy")
    finally:
        world.rig.front.limit_object_writes = False
    refused = sum(world.rig.front.object_writes_refused.values())
    print(f"\n[faults] 429 storm on one name: {refused} writes refused 429, {len(failures)} failed invocations")
    assert failures == [] and refused > 0
    for dest in dests:
        assert world.gcs_bytes(dest, "storm/key.bin") == last

"""Small objects through the real handler: one request to S3 and one upload per destination, at
once, without a look at Cloud Storage; names the container wrote are written on the generation it
remembers; a rival writer in between costs a 412 and a look, never the ordering. And the
container's init phase: settings, clients and the first token made before the first event."""

from __future__ import annotations

import os
import tempfile
from urllib.parse import parse_qs, urlsplit

import pytest

import gcs_sync.staging
from gcs_sync.errors import ConfigError
from gcs_sync.handler import Container
from gcs_sync.plan import upload_each_max
from gcs_sync.staging import IN_MEMORY_MAX

from .conftest import FakeContext

SMALL = 10 * 1024  # under plan.upload_each_max at 1024 MB: uploaded to every destination at once


def s3_calls(container: Container) -> list[str]:
    """The S3 API operations the container's client makes from now on."""
    calls: list[str] = []
    container.runtime.s3.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    return calls


def gcs_wire(container: Container) -> list[tuple[str, str, int]]:
    """(method, path, ifGenerationMatch or -1) of every request the container sends Cloud Storage from now on."""
    sent: list[tuple[str, str, int]] = []
    session = container.runtime.writer.session
    real = session.request

    def request(method, url, *args, **kwargs):
        parts = urlsplit(url)
        sent.append((method, parts.path, int(parse_qs(parts.query).get("ifGenerationMatch", ["-1"])[0])))
        return real(method, url, *args, **kwargs)

    session.request = request
    return sent


def looks(sent) -> int:
    return sum(1 for m, p, _ in sent if m == "GET" and p.startswith("/storage/v1/b/") and "/o/" in p)


def uploads(sent) -> list[tuple[str, int]]:
    """(bucket, ifGenerationMatch) of each upload."""
    return sorted((p.split("/")[5], g) for m, p, g in sent if m == "POST" and p.startswith("/upload/storage/v1/b/"))


@pytest.fixture
def two(world):
    plain, prefixed = world.bucket(), world.bucket()
    world.configure(f"gs://{plain} gs://{prefixed}/p/")
    container = Container(code_dir=str(world.tmp_path / "task"))
    assert container.handle({"Event": "s3:TestEvent"}, FakeContext())["objects"] == 0
    yield world, container, plain, prefixed
    container.reset()


def test_a_small_object_is_one_s3_get_and_both_uploads_at_once_without_a_look(two):
    world, container, plain, prefixed = two
    assert SMALL < upload_each_max(1024)
    body = os.urandom(SMALL)
    record = world.put("logs/one.json", body)
    calls, sent, since = s3_calls(container), gcs_wire(container), len(world.rig.front.requests)
    summary = container.handle({"Records": [record]}, FakeContext())
    assert summary["copied"] == 1 and summary["failed"] == 0, summary
    assert calls == ["GetObject"]  # one request to S3: the GET brings the checksums, no HEAD
    assert uploads(sent) == sorted([(plain, 0), (prefixed, 0)]) and len(sent) == 2  # create-only; nothing else
    assert len(world.rig.front.requests) - since == 2 and looks(sent) == 0
    assert world.gcs_bytes(plain, "logs/one.json") == body == world.gcs_bytes(prefixed, "p/logs/one.json")
    assert all(r["proof"] not in (None, "none") for r in summary["results"][0]["destinations"])  # S3's own record


def test_a_name_the_container_wrote_is_written_on_its_remembered_generation_without_a_look(two):
    world, container, plain, prefixed = two
    first = world.put("state.json", b"one")
    first["s3"]["object"]["sequencer"] = "0062F3A1B2C3D4E5F1"
    container.handle({"Records": [first]}, FakeContext())
    remembered = {b: int(world.gcs_object(b, n)["generation"]) for b, n in ((plain, "state.json"),
                                                                             (prefixed, "p/state.json"))}
    second = world.put("state.json", b"two")
    second["s3"]["object"]["sequencer"] = "0062F3A1B2C3D4E5F2"
    calls, sent = s3_calls(container), gcs_wire(container)
    summary = container.handle({"Records": [second]}, FakeContext())
    assert summary["copied"] == 1, summary
    assert looks(sent) == 0 and calls == ["GetObject"] and len(sent) == 2
    assert uploads(sent) == sorted(remembered.items())  # on the generations it wrote, unlooked
    assert world.gcs_bytes(plain, "state.json") == b"two" == world.gcs_bytes(prefixed, "p/state.json")


def test_a_copy_replaced_since_by_another_container_costs_a_412_and_a_look_and_no_second_write(two):
    world, container, plain, prefixed = two
    first = world.put("race.json", b"one")
    first["s3"]["object"]["sequencer"] = "0062F3A1B2C3D4E5F1"
    container.handle({"Records": [first]}, FakeContext())
    second = world.put("race.json", b"two")
    second["s3"]["object"]["sequencer"] = "0062F3A1B2C3D4E5F2"
    rival = Container(code_dir=str(world.tmp_path / "task"))
    try:  # another container copies it first: ours still remembers the generations of "one"
        assert rival.handle({"Records": [second]}, FakeContext())["copied"] == 1
    finally:
        rival.reset()
    generations = {b: world.gcs_object(b, n)["generation"] for b, n in ((plain, "race.json"), (prefixed, "p/race.json"))}
    sent = gcs_wire(container)
    summary = container.handle({"Records": [second]}, FakeContext())
    assert summary["failed"] == 0 and summary["already_current"] == 1, summary
    # each upload on the remembered generation was refused (412), then looked at: current, no write
    assert looks(sent) == 2 and len(uploads(sent)) == 2 and all(g > 0 for _, g in uploads(sent))
    assert len(sent) == 4
    assert {b: world.gcs_object(b, n)["generation"] for b, n in ((plain, "race.json"), (prefixed, "p/race.json"))} \
        == generations
    assert world.gcs_bytes(plain, "race.json") == b"two" == world.gcs_bytes(prefixed, "p/race.json")



def test_objects_up_to_a_mebibyte_are_staged_in_memory_and_larger_ones_in_a_file_removed_after(two, monkeypatch):
    """Up to ``staging.IN_MEMORY_MAX`` the GET's bytes are uploaded from memory: no directory, no
    file, no disk-space check; one byte more and the object is staged in a file as before."""
    world, container, plain, prefixed = two
    made: list[str] = []  # every directory and file made under the temp dir, as it is made
    for name in ("mkdtemp", "mkstemp"):
        real = getattr(tempfile, name)

        def recording(*args, _real=real, **kwargs):
            answer = _real(*args, **kwargs)
            made.append(answer if isinstance(answer, str) else answer[1])
            return answer

        monkeypatch.setattr(tempfile, name, recording)
    checked: list[str] = []
    real_usage = gcs_sync.staging.shutil.disk_usage
    monkeypatch.setattr(gcs_sync.staging.shutil, "disk_usage", lambda path: checked.append(path) or real_usage(path))

    at_limit = os.urandom(IN_MEMORY_MAX)
    summary = container.handle({"Records": [world.put("in-memory.bin", at_limit)]}, FakeContext())
    assert summary["copied"] == 1 and summary["failed"] == 0, summary
    assert made == [] and checked == [] and world.staging_leftovers() == []
    assert world.gcs_bytes(plain, "in-memory.bin") == at_limit == world.gcs_bytes(prefixed, "p/in-memory.bin")
    assert all(r["proof"] not in (None, "none") for r in summary["results"][0]["destinations"])  # proven as before

    above = os.urandom(IN_MEMORY_MAX + 1)
    summary = container.handle({"Records": [world.put("in-a-file.bin", above)]}, FakeContext())
    assert summary["copied"] == 1 and summary["failed"] == 0, summary
    staged = [os.path.relpath(path, world.staging) for path in made]
    assert len(staged) == 2 and staged[1].startswith(staged[0] + os.sep), staged  # the directory, then its file
    assert checked and world.staging_leftovers() == []  # removed after the invocation
    assert world.gcs_bytes(plain, "in-a-file.bin") == above == world.gcs_bytes(prefixed, "p/in-a-file.bin")


# -- the init phase ------------------------------------------------------------------------------


def test_prepare_builds_the_clients_and_gets_the_token_before_the_first_event(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    container = Container(code_dir=str(world.tmp_path / "task"))
    try:
        container.prepare()
        assert container.runtime is not None and container.runtime.auth.credentials.valid
        assert world.rig.tokens.sts_calls == 1 and world.rig.tokens.iam_calls == 1
        assert container.runtime.deadline.remaining() is None  # the init's bound is not left behind
        record = world.put("after-init.txt", b"x")
        assert container.handle({"Records": [record]}, FakeContext())["copied"] == 1
        assert world.rig.tokens.sts_calls == 1  # the event used the token made at init
    finally:
        container.reset()


def test_the_init_token_exchange_runs_while_the_clients_are_built(world, monkeypatch):
    """The clients' build waits (up to 10 s) for the token exchange to reach the rig's STS: done one
    after the other, the exchange would start only after the build, which would see no call."""
    import time

    from gcs_sync import runtime

    world.configure(f"gs://{world.bucket()}")
    built, seen = runtime.Runtime.build, []

    def build_waiting_for_sts(settings, **kwargs):
        end = time.monotonic() + 10
        while world.rig.tokens.sts_calls == 0 and time.monotonic() < end:
            time.sleep(0.005)
        seen.append(world.rig.tokens.sts_calls)
        return built(settings, **kwargs)

    monkeypatch.setattr(runtime.Runtime, "build", build_waiting_for_sts)
    container = Container(code_dir=str(world.tmp_path / "task"))
    try:
        container.prepare()
        assert seen == [1] and container.runtime.auth.credentials.valid
        assert world.rig.tokens.iam_calls == 1
    finally:
        container.reset()


def test_prepare_leaves_a_broken_configuration_to_the_first_event(world, monkeypatch):
    world.configure("gs://")  # no bucket name
    container = Container(code_dir=str(world.tmp_path / "task"))
    container.prepare()
    assert container.runtime is None
    with pytest.raises(ConfigError) as raised:
        container.handle({"Records": [world.record("k")]}, FakeContext())
    assert "GCS_DESTINATIONS" in str(raised.value)


def test_prepare_does_nothing_outside_lambda(world, monkeypatch):
    world.configure(f"gs://{world.bucket()}")
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME")
    container = Container(code_dir=str(world.tmp_path / "task"))
    container.prepare()
    assert container.runtime is None and world.rig.tokens.sts_calls == 0


def test_a_token_endpoint_down_at_init_is_asked_again_by_the_first_event(world):
    world.configure(f"gs://{world.bucket()}")
    world.rig.tokens.refuse_sts = True
    container = Container(code_dir=str(world.tmp_path / "task"))
    try:
        container.prepare()
        assert container.runtime is not None and not container.runtime.auth.credentials.valid
        world.rig.tokens.refuse_sts = False
        assert container.handle({"Records": [world.put("k.txt", b"k")]}, FakeContext())["copied"] == 1
    finally:
        world.rig.tokens.refuse_sts = False
        container.reset()

"""A hot key: one S3 object overwritten many times a second, mirrored through several containers
while the Cloud Storage front enforces Cloud Storage's limit of about one write per second per
object name (429 ``rateLimitExceeded`` above it). The mirror converges on the last version with
no failed invocation and with few writes per destination name: a 429 is looked at again like a
412 (superseded when a newer copy is there), and an event whose version S3 has already replaced
writes nothing."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import pytest

from .test_ordering import enable_versioning, invoke, new_container

VERSIONS = 12
SPREAD_SECONDS = 2.0
CONTAINERS = 3
# The goal is 3 writes per destination name for one final state (writes at 0, 1 and 2 s): met in most
# runs (the figures are in the README); one more is allowed here, where a loaded machine can land the
# last version just after the third write. Without the engine's care the same storm took 5 or more.
WRITES_PER_NAME = 4


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
def limited(world):
    world.rig.front.limit_object_writes = True
    yield world.rig.front
    world.rig.front.limit_object_writes = False


def _storm(world, key: str, fanout: str):
    dests = [world.bucket(), world.bucket()]
    world.configure(" ".join(f"gs://{d}/" for d in dests), FANOUT=fanout)
    enable_versioning(world, world.source)
    containers = [new_container(world, str(world.tmp_path / f"c{i}")) for i in range(CONTAINERS)]
    busy = [threading.Lock() for _ in containers]  # a container runs one invocation at a time, as in Lambda
    failures: list[BaseException] = []
    summaries: list[dict] = []
    threads = []
    last = b""
    start = time.monotonic()
    for number in range(VERSIONS):
        time.sleep(max(0.0, start + number * SPREAD_SECONDS / (VERSIONS - 1) - time.monotonic()))
        last = f"version {number} ".encode() * 200
        record = world.put(key, last)
        record["eventTime"] = _now()

        def deliver(index=number % CONTAINERS, event={"Records": [record]}):
            try:
                with busy[index]:
                    summaries.append(invoke(containers[index], event))
            except BaseException as exc:  # noqa: BLE001 - a failed invocation, counted below
                failures.append(exc)

        thread = threading.Thread(target=deliver)
        thread.start()
        threads.append(thread)
    span = time.monotonic() - start
    for thread in threads:
        thread.join(timeout=120)
    assert span < SPREAD_SECONDS + 0.5, f"the versions took {span:.2f} s to write (a busy machine)"
    return dests, last, failures, summaries


@pytest.mark.parametrize("fanout", ["copy", "upload"])
def test_a_hot_key_converges_with_few_writes_and_no_failed_invocation(world, limited, fanout, capsys):
    dests, last, failures, summaries = _storm(world, "hot/key.json", fanout)
    assert failures == [], f"failed invocations: {failures}"
    for dest in dests:
        assert world.gcs_bytes(dest, "hot/key.json") == last, dest
    writes = {dest: limited.object_writes[(dest, "hot/key.json")] for dest in dests}
    refused = {dest: limited.object_writes_refused[(dest, "hot/key.json")] for dest in dests}
    outcomes: dict[str, int] = {}
    for summary in summaries:
        for result in summary["results"]:
            for d in result.get("destinations", []):
                outcomes[d["outcome"]] = outcomes.get(d["outcome"], 0) + 1
    with capsys.disabled():
        print(f"\nhot key (FANOUT={fanout}): {VERSIONS} versions in {SPREAD_SECONDS:.0f} s through {CONTAINERS} "
              f"containers: writes per name {writes}, refused 429 {refused}, outcomes {outcomes}")
    assert all(count <= WRITES_PER_NAME for count in writes.values()), writes
    assert outcomes.get("superseded", 0) > 0  # most versions were never written

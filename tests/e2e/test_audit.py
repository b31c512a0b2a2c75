"""The audit (`{"check": ...}`): every kind of drift found, nothing written, and a sync repairs it."""

from __future__ import annotations

import os

from .conftest import flip_stored_byte
from .test_proof import overwrite_behind_our_back

WRITES = ("POST", "PUT", "PATCH", "DELETE")


def writes(world, since: int) -> list:
    return [(m, p) for m, p in world.rig.front.requests[since:] if m in WRITES]


def drifted_world(world):
    """Two destinations (one with a prefix) holding one object of each kind of drift."""
    plain, prefixed = world.bucket(), world.bucket()
    world.configure(f"gs://{plain}, gs://{prefixed}/mirror/")
    bodies = {key: os.urandom(20_000 + i) for i, key in enumerate(
        ["a-ok.txt", "b-missing.txt", "c-stale.txt", "d-mismatched.txt", "e-foreign.txt", "f-extra.txt"])}
    records = {key: world.put(key, body) for key, body in bodies.items() if key not in ("b-missing.txt",
                                                                                         "e-foreign.txt")}
    assert world.notify(*records.values())["copied"] == 4
    world.put("b-missing.txt", bodies["b-missing.txt"])  # no event: never copied
    world.put("e-foreign.txt", bodies["e-foreign.txt"])
    bodies["c-stale.txt"] = os.urandom(30_000)  # a newer state whose event never came
    world.put("c-stale.txt", bodies["c-stale.txt"])
    world.rig.s3_client.delete_object(Bucket=world.source, Key="f-extra.txt")
    for bucket, name in ((plain, "d-mismatched.txt"), (prefixed, "mirror/d-mismatched.txt")):
        meta = world.gcs_object(bucket, name)
        overwrite_behind_our_back(world, bucket, name, bodies["d-mismatched.txt"][:-1], meta["metadata"])
        overwrite_behind_our_back(world, bucket, name.replace("d-mismatched", "e-foreign"), b"not ours", {})
    return plain, prefixed, bodies


def test_the_audit_reports_each_kind_of_drift_and_writes_nothing(world):
    plain, prefixed, _ = drifted_world(world)
    since = len(world.rig.front.requests)
    result = world.invoke({"check": {"bucket": world.source}})
    assert writes(world, since) == []
    assert result["ok"] is False and "continuation" not in result
    assert [d["destination"] for d in result["destinations"]] == [f"gs://{plain}/", f"gs://{prefixed}/mirror/"]
    for entry in result["destinations"]:
        assert entry["counts"] == {"ok": 1, "missing": 1, "stale": 1, "mismatched": 1, "foreign": 1, "extra": 1}
        assert entry["examples"] == {"missing": ["b-missing.txt"], "stale": ["c-stale.txt"],
                                     "mismatched": ["d-mismatched.txt"], "foreign": ["e-foreign.txt"],
                                     "extra": ["f-extra.txt"]}


def test_a_sync_repairs_what_the_audit_found(world):
    plain, prefixed, bodies = drifted_world(world)
    summary = world.invoke({"sync": {"bucket": world.source}})
    outcomes = {r["source"].rsplit("/", 1)[1]: r["outcome"] for r in summary["results"]}
    assert outcomes == {"b-missing.txt": "copied", "c-stale.txt": "copied", "d-mismatched.txt": "repaired",
                        "e-foreign.txt": "copied"}
    result = world.invoke({"check": {"bucket": world.source}})
    for entry in result["destinations"]:  # the sync never deletes: the extra copy stays, and is named
        assert entry["counts"] == {"ok": 5, "missing": 0, "stale": 0, "mismatched": 0, "foreign": 0, "extra": 1}
    for key, body in bodies.items():
        if key != "f-extra.txt":
            assert world.gcs_bytes(plain, key) == body and world.gcs_bytes(prefixed, f"mirror/{key}") == body


def test_a_prefix_limits_the_audit(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    world.notify(world.put("in/a.txt", b"a"), world.put("out/b.txt", b"b"))
    world.put("out/c.txt", b"c")
    result = world.invoke({"check": {"bucket": world.source, "prefix": "in/"}})
    assert result["ok"] is True and result["listed"] == 1
    assert result["destinations"][0]["counts"]["ok"] == 1


def test_deep_reads_the_source_to_prove_what_listings_cannot(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    body = os.urandom(50_000)
    world.notify(world.put("same-size.bin", body), world.put("fine.bin", b"fine"))
    # A copy whose bytes changed but not its size, with no checksum recorded (as copies written
    # before checksums were recorded): the listing cannot tell; reading the source can.
    meta = world.gcs_object(dest, "same-size.bin")["metadata"]
    meta.pop("gcs-sync-source-crc32c")
    overwrite_behind_our_back(world, dest, "same-size.bin", bytes([body[0] ^ 1]) + body[1:], meta)
    shallow = world.invoke({"check": {"bucket": world.source}})
    assert shallow["ok"] is True
    since = len(world.rig.front.requests)
    deep = world.invoke({"check": {"bucket": world.source, "deep": True}})
    assert writes(world, since) == []
    assert deep["ok"] is False
    assert deep["destinations"][0]["counts"]["mismatched"] == 1
    assert deep["destinations"][0]["examples"] == {"mismatched": ["same-size.bin"]}


def test_deep_names_a_source_whose_bytes_differ_from_s3s_record(world):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    record = world.put("rotten.bin", os.urandom(40_000))
    world.notify(record)
    flip_stored_byte(world, "rotten.bin", 100)
    deep = world.invoke({"check": {"bucket": world.source, "deep": True}})
    assert deep["destinations"][0]["examples"] == {"mismatched": ["rotten.bin"]}

"""Reads pinned to the state that was looked at: the audit's deep read is of the object the listing
saw, not of whatever replaced it since."""

from __future__ import annotations

import os

import pytest

from .test_audit import writes


@pytest.fixture
def replaced_after_listing(world, monkeypatch):
    """``replace(key, body)``: the next listing of the source bucket is answered as it was, then
    ``key`` is overwritten with ``body`` (same size): what a write between the audit's listing and
    its deep read leaves."""
    from moto.s3.models import S3Backend

    listed = S3Backend.list_objects_v2
    pending: list[tuple[str, bytes]] = []

    def list_then_replace(self, bucket, *args, **kwargs):
        answer = listed(self, bucket, *args, **kwargs)
        while pending and getattr(bucket, "name", bucket) == world.source:
            key, body = pending.pop()
            self.put_object(world.source, key, body)
        return answer

    monkeypatch.setattr(S3Backend, "list_objects_v2", list_then_replace)
    return lambda key, body: pending.append((key, body))


def test_deep_reads_the_state_the_listing_saw(world, replaced_after_listing):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    body = os.urandom(30_000)
    world.notify(world.put("racy.bin", body), world.put("calm.bin", b"calm"))
    replaced_after_listing("racy.bin", os.urandom(len(body)))  # another state, same size
    since = len(world.rig.front.requests)
    deep = world.invoke({"check": {"bucket": world.source, "deep": True}})
    assert writes(world, since) == []
    # The copy holds the listed state: the read of the newer one is refused (IfMatch), the listing's verdict stands.
    assert deep["ok"] is True, deep
    assert deep["destinations"][0]["counts"]["ok"] == 2
    # The newer state is then found stale by the next audit, deep or not.
    again = world.invoke({"check": {"bucket": world.source, "deep": True}})
    assert again["destinations"][0]["examples"] == {"stale": ["racy.bin"]}

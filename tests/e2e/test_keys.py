"""Key shapes: every key S3 allows lands under exactly the same name (after the destination prefix).

Each key is PUT into the source (moto), announced with a URL-encoded notification key, and must
appear at two destinations — one without prefix, one with ``pre/fix/`` — under exactly ``key``
and ``pre/fix/`` + ``key``, byte for byte, and nothing else. Names Cloud Storage cannot hold fail
for that object at that destination only, saying why. The local staging disk never carries a
name derived from a key, and is left empty after every invocation.
"""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote_plus

import pytest

from gcs_sync.events import printable

from gcs_sync.destination import GcsWriter
from gcs_sync.errors import CopyFailed, SourceError
from gcs_sync.source import S3Source
import gcs_sync.staging
from gcs_sync.staging import Staging

from .conftest import md5_b64

PREFIX = "pre/fix/"
ETAG = "gcs-sync-source-etag"


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def _long_key(total: int) -> str:
    """A key of exactly ``total`` UTF-8 bytes mixing 1-, 2-, 3- and 4-byte characters."""
    key = "long/é日😀-"
    while _utf8_len(key) + 4 <= total - 1:
        key += "日😀" if _utf8_len(key) % 2 else "é-"
    key += "x" * (total - _utf8_len(key))
    assert _utf8_len(key) == total
    return key


KEYS = {
    "japanese": "日本語/ファイル 名前.txt",
    "emoji": "emoji/😀🎉/party.bin",
    "nfc": "accents/caf\u00e9-nfc.txt",
    "nfd": "accents/cafe\u0301-nfd.txt",
    "leading-space": " leading-space.txt",
    "trailing-space": "trailing-space.txt ",
    "double-space": "double  space.txt",
    "plus": "a+b/c+d.txt",
    "percent": "100%/50%.txt",
    "percent20-literal": "literal%20not-a-space.txt",
    "question": "what?really?.txt",
    "hash": "issue#42#note.txt",
    "ampersand-equals": "q&a=b&c=d.txt",
    "double-slash": "a//b///c.txt",
    "leading-slash": "/leading-slash.txt",
    "dot-slash": "./dot-slash.txt",
    "dot-segment": "a/./b.txt",
    "dotdot-segment": "a/../b.txt",
    "dotdot-leading": "../up/out.txt",
    "dotdot-trailing": "dir/..",
    "folder": "folder/sub folder/",
    "long-1024-with-prefix": _long_key(1024 - len(PREFIX)),
    "tab": "tab\tseparated\tname.tsv",
    "tilde": "~user/~backup~",
    "quotes": "it's \"quoted\" `name`.txt",
    "backslash": "back\\slash\\path.txt",
    "mixed-specials": " ~!@$^*()[]{};:,<>|.txt ",
}
ENCODINGS = {
    "s3": lambda key: quote_plus(key, safe="/"),  # the form the conftest's records use
    "moto": lambda key: quote_plus(key, safe=""),  # moto's own notifications (''/'' encoded too)
}


class StagingSpy:
    """Records every staged path, every tempfile call, and the staging tree during each upload.
    ``in_memory=False``: every object is staged in a file, however small (none in memory)."""

    def __init__(self, world, monkeypatch, in_memory: bool = False):
        if not in_memory:
            monkeypatch.setattr(gcs_sync.staging, "IN_MEMORY_MAX", -1)
        self.root = Path(world.staging)
        self.paths: list[str] = []
        self.tempfile_calls: list[tuple[str, dict]] = []
        self.trees: list[list[str]] = []
        real_file = Staging.file
        spy = self

        @contextmanager
        def file(self, size, what):
            with real_file(self, size, what) as path:
                spy.paths.append(path)
                spy.trees.append(spy.tree())
                yield path

        monkeypatch.setattr(Staging, "file", file)
        for name in ("mkstemp", "mkdtemp"):
            real = getattr(tempfile, name)

            def recording(*args, _real=real, _name=name, **kwargs):
                spy.tempfile_calls.append((_name, dict(kwargs, args=args)))
                return _real(*args, **kwargs)

            monkeypatch.setattr(tempfile, name, recording)
        real_upload = GcsWriter.upload

        def upload(self, *args, **kwargs):
            spy.trees.append(spy.tree())  # what is on disk while the bytes go out
            return real_upload(self, *args, **kwargs)

        monkeypatch.setattr(GcsWriter, "upload", upload)

    def tree(self) -> list[str]:
        found = []
        for top, dirs, files in os.walk(self.root):
            for name in dirs + files:
                found.append(os.path.relpath(os.path.join(top, name), self.root))
        return sorted(found)

    def assert_never_named_after(self, *keys: str) -> None:
        assert self.paths, "nothing was staged"
        pattern = re.compile(r"^gcs-sync-staging-[A-Za-z0-9_]+(/obj-[A-Za-z0-9_]+)?$")
        relative = [os.path.relpath(p, self.root) for p in self.paths]
        seen = relative + [entry for tree in self.trees for entry in tree]
        for entry in seen:
            assert pattern.match(entry), f"unexpected staging entry {entry!r}"
        pieces = {piece for key in keys for piece in re.split(r"[/\s.]+", key) if len(piece) >= 4}
        for entry in seen:
            for piece in pieces:
                assert piece not in entry, f"staging entry {entry!r} contains key text {piece!r}"
        for name, call in self.tempfile_calls:
            if str(call.get("dir", "")).startswith(str(self.root)):
                assert call.get("prefix") in ("gcs-sync-staging-", "obj-") and not call.get("suffix"), (name, call)


def _two_destinations(world, **env):
    plain, prefixed = world.bucket(), world.bucket()
    world.configure(f"gs://{plain} gs://{prefixed}/{PREFIX}", **env)
    return plain, prefixed


def _record(world, key: str, body: bytes, encoding: str) -> dict:
    record = world.put(key, body)
    record["s3"]["object"]["key"] = ENCODINGS[encoding](key)
    return record


def _body(key: str) -> bytes:
    return b"" if key.endswith("/") else ("bytes of " + key).encode("utf-8") * 3


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("key", list(KEYS.values()), ids=list(KEYS))
def test_key_lands_under_exactly_the_same_name(world, monkeypatch, key, encoding):
    plain, prefixed = _two_destinations(world)
    spy = StagingSpy(world, monkeypatch)
    body = _body(key)
    record = _record(world, key, body, encoding)
    assert world.rig.s3_client.get_object(Bucket=world.source, Key=key)["Body"].read() == body

    summary = world.notify(record)

    assert summary["copied"] == 1 and summary["failed"] == 0, summary
    for bucket, name in ((plain, key), (prefixed, PREFIX + key)):
        assert [o["name"] for o in world.rig.gcs.list_objects(bucket)] == [name]
        meta = world.gcs_object(bucket, name)
        assert meta is not None, f"gs://{bucket}/{name!r} missing"
        assert world.gcs_bytes(bucket, name) == body
        assert int(meta["size"]) == len(body) and meta["md5Hash"] == md5_b64(body)
        assert meta["metadata"]["gcs-sync-source-key"] == key
    spy.assert_never_named_after(key)
    assert world.staging_leftovers() == []


def test_every_key_lands_exactly_through_the_streaming_path(world, monkeypatch):
    """The streamed write path names objects its own way (resumable sessions it opens itself):
    every key above, in one event, with every object streamed (STREAM_THRESHOLD_MB=0)."""
    plain, prefixed = _two_destinations(world, STREAM_THRESHOLD_MB="0")
    spy = StagingSpy(world, monkeypatch)
    records = [_record(world, key, _body(key), "moto" if i % 2 else "s3") for i, key in enumerate(KEYS.values())]
    summary = world.notify(*records)
    assert summary["copied"] == len(KEYS) and summary["failed"] == 0, summary
    for bucket, prefix in ((plain, ""), (prefixed, PREFIX)):
        assert sorted(o["name"] for o in world.rig.gcs.list_objects(bucket)) == sorted(prefix + k for k in KEYS.values())
        for key in KEYS.values():
            body = _body(key)
            assert world.gcs_bytes(bucket, prefix + key) == body, repr(key)
            meta = world.gcs_object(bucket, prefix + key)
            assert meta["md5Hash"] == md5_b64(body) and meta["metadata"]["gcs-sync-source-key"] == key
    assert spy.paths == [] and world.staging_leftovers() == []  # streamed: nothing staged


def test_nfc_and_nfd_forms_stay_distinct_objects(world):
    plain, prefixed = _two_destinations(world)
    nfc = unicodedata.normalize("NFC", "résumé/Ångström.txt")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    summary = world.notify(world.put(nfc, b"composed"), world.put(nfd, b"decomposed"))
    assert summary["copied"] == 2
    for bucket, prefix in ((plain, ""), (prefixed, PREFIX)):
        assert sorted(o["name"] for o in world.rig.gcs.list_objects(bucket)) == sorted([prefix + nfc, prefix + nfd])
        assert world.gcs_bytes(bucket, prefix + nfc) == b"composed"
        assert world.gcs_bytes(bucket, prefix + nfd) == b"decomposed"


def test_keys_differing_only_in_slashes_and_dots_stay_distinct(world):
    """No path normalisation anywhere: these six are six objects."""
    plain, prefixed = _two_destinations(world)
    keys = ["n/a.txt", "n//a.txt", "n/./a.txt", "n/x/../a.txt", "/n/a.txt", "n/a.txt/"]
    records = [world.put(key, b"" if key.endswith("/") else key.encode()) for key in keys]
    summary = world.notify(*records)
    assert summary["copied"] == len(keys) and summary["failed"] == 0
    for bucket, prefix in ((plain, ""), (prefixed, PREFIX)):
        assert sorted(o["name"] for o in world.rig.gcs.list_objects(bucket)) == sorted(prefix + k for k in keys)
        for key in keys:
            assert world.gcs_bytes(bucket, prefix + key) == (b"" if key.endswith("/") else key.encode())


# -- names Cloud Storage cannot hold ---------------------------------------------------------------

LONG_1020 = "L/" + "x" * 1018
# id: (key, stored in S3?, destinations that cannot hold it, why, the message names)
BAD = {
    "carriage-return": ("bad\rname.txt", True, {"plain", "prefixed"}, "carriage returns or line feeds"),
    "line-feed": ("bad\nname.txt", False, {"plain", "prefixed"}, "carriage returns or line feeds"),
    "too-long-after-prefix": (LONG_1020, True, {"prefixed"}, "1028 bytes of UTF-8"),
    "dot": (".", True, {"plain"}, "cannot be named '.'"),
    "dotdot": ("..", True, {"plain"}, "cannot be named '..'"),
    "acme-challenge": (".well-known/acme-challenge/x", True, {"plain"}, "cannot start with '.well-known/acme-challenge/'"),
}


@pytest.mark.parametrize("key, stored, failing, why", list(BAD.values()), ids=list(BAD))
def test_a_name_cloud_storage_cannot_hold_fails_for_that_object_only(world, monkeypatch, key, stored, failing, why):
    plain, prefixed = _two_destinations(world)
    spy = StagingSpy(world, monkeypatch)
    names = {"plain": (plain, key), "prefixed": (prefixed, PREFIX + key)}
    good = [world.put("good/one.txt", b"one"), world.put("good/two three.txt", b"two")]
    if stored:
        bad = world.put(key, b"bad-key bytes")
    else:  # S3 holds such keys, moto cannot: the name is refused before the source is read
        bad = world.record(key, size=13, etag="0" * 32)
    bad["s3"]["object"]["key"] = quote_plus(key, safe="")

    with pytest.raises(CopyFailed) as caught:
        world.notify(good[0], bad, good[1])

    failures = caught.value.failures
    assert len(failures) == len(failing), failures
    for label in failing:
        bucket, name = names[label]
        line = next(f for f in failures if f"gs://{bucket}/" in f)
        # keys are named with control characters escaped, so a CR/LF cannot fake extra lines
        assert printable(f"gs://{bucket}/{name}") in line and why in line, line
        assert "\n" not in line and "\r" not in line
        assert "other objects are unaffected" in line
        assert world.gcs_object(bucket, name) is None
    for label in {"plain", "prefixed"} - failing:  # the destination that can hold the name has it
        bucket, name = names[label]
        assert not any(f"gs://{bucket}/" in f for f in failures)
        assert world.gcs_bytes(bucket, name) == b"bad-key bytes"
    message = str(caught.value)
    assert "good/" not in message
    for bucket, prefix in ((plain, ""), (prefixed, PREFIX)):
        assert world.gcs_bytes(bucket, prefix + "good/one.txt") == b"one"
        assert world.gcs_bytes(bucket, prefix + "good/two three.txt") == b"two"
    summary = caught.value.summary
    assert summary["failed"] == 1 and summary["copied"] == 2
    spy.assert_never_named_after("good/one.txt", "good/two three.txt", key)
    assert world.staging_leftovers() == []


def test_one_event_with_every_bad_name_names_exactly_the_bad_ones(world):
    plain, prefixed = _two_destinations(world)
    good_keys = ["ok/a.txt", "ok/日本.txt", "ok/folder/"]
    records = [world.put(k, b"" if k.endswith("/") else k.encode()) for k in good_keys]
    expected = set()
    for key, stored, failing, _why in BAD.values():
        record = world.put(key, b"bad-key bytes") if stored else world.record(key, size=13, etag="0" * 32)
        records.append(record)
        for label in failing:
            bucket = plain if label == "plain" else prefixed
            expected.add(printable(f"gs://{bucket}/{'' if label == 'plain' else PREFIX}{key}"))
    with pytest.raises(CopyFailed) as caught:
        world.notify(*records)
    failures = caught.value.failures
    named = {f.split(" -> ", 1)[1].split(": ", 1)[0] for f in failures}
    assert named == expected
    assert len(failures) == len(expected)
    for key in good_keys:
        for bucket, prefix in ((plain, ""), (prefixed, PREFIX)):
            assert world.gcs_bytes(bucket, prefix + key) == (b"" if key.endswith("/") else key.encode())
    assert world.staging_leftovers() == []


# -- staging is cleaned up whatever happens ---------------------------------------------------------


def test_staging_is_empty_after_a_failed_upload(world, monkeypatch):
    good, denied = world.bucket(), world.bucket()
    world.configure(f"gs://{good} gs://{denied}/{PREFIX}")
    world.rig.front.deny[denied] = 403
    spy = StagingSpy(world, monkeypatch)
    key = "secret-project/quarterly report.pdf"
    with pytest.raises(CopyFailed):
        world.notify(world.put(key, os.urandom(100_000)))
    assert world.gcs_object(good, key) is not None
    spy.assert_never_named_after(key)
    assert world.staging_leftovers() == []


def test_staging_is_empty_after_a_failed_read(world, monkeypatch):
    dest = world.bucket()
    world.configure(f"gs://{dest}")
    spy = StagingSpy(world, monkeypatch)

    def broken_read(self, obj, sink, body=None):
        sink.write(b"half of the bytes")
        raise SourceError(f"{obj.url}: connection reset (test)", retryable=True)

    monkeypatch.setattr(S3Source, "read_into", broken_read)
    key = "confidential/half-read.bin"
    with pytest.raises(CopyFailed) as caught:
        world.notify(world.put(key, os.urandom(50_000)))
    assert "connection reset" in str(caught.value)
    assert world.gcs_object(dest, key) is None
    spy.assert_never_named_after(key)
    assert world.staging_leftovers() == []

"""Provenance metadata, ETag/MD5, object-name rules, user metadata and digests."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timezone

import google_crc32c
import pytest

from gcs_sync import metadata
from gcs_sync.metadata import (
    Digests,
    SourceState,
    object_name_problem,
    plain_md5,
    user_metadata,
)

LM = datetime(2024, 2, 29, 23, 59, 58, tzinfo=timezone.utc)


# --------------------------------------------------------------------------- provenance


@pytest.mark.parametrize(
    "state",
    [
        SourceState("src", "a/b c+d.txt", "3HL4kqtJlcpXroDTDmJ", "0123456789abcdef0123456789abcdef", LM, 42,
                    "0055AED6DCD90281E5"),
        SourceState("src", "k", None, "abc-3", LM, 0, None),
        SourceState("src", "k", None, "abc", None, None, None),
        SourceState("src", "日本/😀", "v", "e", LM, 10**12, "0A"),
    ],
    ids=["full", "no-version-no-sequencer", "minimal", "unicode"],
)
def test_source_state_round_trip(state):
    meta = state.to_metadata()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    assert all(k.startswith(metadata.PROVENANCE_PREFIX) for k in meta)
    assert SourceState.from_metadata(meta) == state
    # Foreign keys next to ours do not disturb it.
    assert SourceState.from_metadata({**meta, "owner": "someone"}) == state


def test_to_metadata_exact_fields():
    full = SourceState("src", "k", "v1", "etag", LM, 5, "0A").to_metadata()
    assert full == {
        "gcs-sync-source-bucket": "src",
        "gcs-sync-source-key": "k",
        "gcs-sync-source-etag": "etag",
        "gcs-sync-source-version": "v1",
        "gcs-sync-source-last-modified": "2024-02-29T23:59:58Z",
        "gcs-sync-source-size": "5",
        "gcs-sync-source-sequencer": "0A",
    }
    bare = SourceState("src", "k", None, "etag", None).to_metadata()
    assert set(bare) == {"gcs-sync-source-bucket", "gcs-sync-source-key", "gcs-sync-source-etag"}


def test_to_metadata_converts_time_to_utc():
    from datetime import timedelta

    local = datetime(2024, 3, 1, 1, 59, 58, tzinfo=timezone(timedelta(hours=2)))
    meta = SourceState("src", "k", None, "e", local).to_metadata()
    assert meta["gcs-sync-source-last-modified"] == "2024-02-29T23:59:58Z"
    assert SourceState.from_metadata(meta).last_modified == LM


@pytest.mark.parametrize(
    "meta",
    [
        None,
        {},
        {"owner": "someone", "color": "blue"},
        {"gcs-sync-source-bucket": "src", "gcs-sync-source-key": "k"},  # no etag
        {"gcs-sync-source-bucket": "src", "gcs-sync-source-etag": "e"},  # no key
        {"gcs-sync-source-key": "k", "gcs-sync-source-etag": "e"},  # no bucket
    ],
)
def test_from_metadata_foreign_is_none(meta):
    assert SourceState.from_metadata(meta) is None


def test_from_metadata_tolerates_bad_optional_values():
    state = SourceState.from_metadata({
        "gcs-sync-source-bucket": "src",
        "gcs-sync-source-key": "k",
        "gcs-sync-source-etag": "e",
        "gcs-sync-source-version": "",
        "gcs-sync-source-size": "-5",
        "gcs-sync-source-last-modified": "yesterday",
        "gcs-sync-source-sequencer": "",
    })
    assert state == SourceState("src", "k", None, "e", None, None, None)


# --------------------------------------------------------------------------- ETag / MD5


@pytest.mark.parametrize(
    "etag, kms, expected",
    [
        ("0123456789abcdef0123456789abcdef", False, "0123456789abcdef0123456789abcdef"),
        ('"0123456789abcdef0123456789abcdef"', False, "0123456789abcdef0123456789abcdef"),
        ("0123456789ABCDEF0123456789ABCDEF", False, "0123456789abcdef0123456789abcdef"),
        ("d41d8cd98f00b204e9800998ecf8427e-2", False, None),
        ('"d41d8cd98f00b204e9800998ecf8427e-12"', False, None),
        ("0123456789abcdef0123456789abcdef", True, None),
        ("0123456789abcdef0123456789abcde", False, None),  # 31 hex
        ("0123456789abcdef0123456789abcdef0", False, None),  # 33 hex
        ("0123456789abcdef0123456789abcdeg", False, None),
        ("", False, None),
        (None, False, None),
    ],
)
def test_plain_md5(etag, kms, expected):
    assert plain_md5(etag, encrypted_with_kms_or_customer_key=kms) == expected


# --------------------------------------------------------------------------- object names


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("", "empty"),
        ("a\rb", "carriage returns"),
        ("a\nb", "line feeds"),
        ("dir/\r\n", "line feeds"),
        ("\n", "line feeds"),
        (".", "'.'"),
        ("..", "'..'"),
        (".well-known/acme-challenge/token", "acme-challenge"),
        (".well-known/acme-challenge/", "acme-challenge"),
        ("a" * 1025, "1025 bytes"),
        ("é" * 512 + "a", "1025 bytes"),  # 2-byte characters
        ("€" * 341 + "ab", "1025 bytes"),  # 3-byte characters
        ("😀" * 256 + "a", "1025 bytes"),  # 4-byte characters
    ],
)
def test_object_name_refused(name, fragment):
    problem = object_name_problem(name)
    assert problem is not None
    assert fragment in problem


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "a" * 1024,
        "é" * 512,
        "€" * 341 + "a",
        "😀" * 256,
        "with space",
        "plus+sign",
        "100%",
        "what?",
        "hash#tag",
        "double//slash",
        "/leading",
        "./x",
        "a/../b",
        "trailing/",
        "...",
        ".well-known/other",
        "x/.well-known/acme-challenge/t",
        "tab\there",
    ],
)
def test_object_name_accepted(name):
    assert object_name_problem(name) is None


# --------------------------------------------------------------------------- user metadata


def test_user_metadata_drops_provenance_lookalikes():
    s3_meta = {
        "owner": "alice",
        "gcs-sync-source-bucket": "evil",
        "GCS-SYNC-SOURCE-ETAG": "forged",
        "Gcs-Sync-anything": "x",
        "gcs-sync": "kept: no trailing dash",
        "gcs-syncer": "kept",
        "x-gcs-sync-source-key": "kept",
    }
    assert user_metadata(s3_meta) == {
        "owner": "alice",
        "gcs-sync": "kept: no trailing dash",
        "gcs-syncer": "kept",
        "x-gcs-sync-source-key": "kept",
    }


@pytest.mark.parametrize("value", [None, {}])
def test_user_metadata_empty(value):
    assert user_metadata(value) == {}


def test_user_metadata_returns_a_copy():
    original = {"a": "1"}
    copy = user_metadata(original)
    copy["b"] = "2"
    assert original == {"a": "1"}


# --------------------------------------------------------------------------- digests


@pytest.mark.parametrize(
    "data, crc_hex",
    [
        (b"", "00000000"),
        (b"hello", "9a71bb4c"),
        (b"123456789", "e3069283"),  # the CRC-32C check value
    ],
)
def test_digests_known_values(data, crc_hex):
    digests = Digests()
    digests.update(data)
    assert digests.size == len(data)
    assert digests.crc32c_b64 == base64.b64encode(bytes.fromhex(crc_hex)).decode()
    assert digests.crc32c_b64 == base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()
    assert digests.md5_hex == hashlib.md5(data).hexdigest()
    assert digests.md5_b64 == base64.b64encode(hashlib.md5(data).digest()).decode()


def test_digests_known_strings():
    empty = Digests()
    assert empty.crc32c_b64 == "AAAAAA=="
    assert empty.md5_hex == "d41d8cd98f00b204e9800998ecf8427e"
    assert empty.md5_b64 == "1B2M2Y8AsgTpgAmY7PhCfg=="
    hello = Digests()
    hello.update(b"hello")
    assert hello.crc32c_b64 == "mnG7TA=="
    assert hello.md5_hex == "5d41402abc4b2a76b9719d911017c592"


def test_digests_chunked_equal_whole():
    data = bytes(range(256)) * 1000 + b"tail"
    whole = Digests()
    whole.update(data)
    chunked = Digests()
    for i in range(0, len(data), 4093):
        chunked.update(data[i:i + 4093])
    chunked.update(b"")
    assert (chunked.crc32c_b64, chunked.md5_hex, chunked.size) == (whole.crc32c_b64, whole.md5_hex, len(data))


def test_digests_without_md5_check_crc32c_only():
    crc_only = Digests(md5=False)
    crc_only.update(b"hello")
    assert crc_only.crc32c_b64 == "mnG7TA==" and crc_only.size == 5
    assert crc_only.md5_hex is None and crc_only.md5_b64 is None
    assert not crc_only.md5_differs("XUFAKrxLKna5cZ2REBfFkg==")  # nothing to contradict
    full = Digests()
    full.update(b"hello")
    assert not full.md5_differs("XUFAKrxLKna5cZ2REBfFkg==") and not full.md5_differs(None)
    assert full.md5_differs("1B2M2Y8AsgTpgAmY7PhCfg==")
    counted = Digests(md5=False, crc=False)
    counted.update(b"hello")
    assert counted.size == 5 and counted.crc32c_b64 is None

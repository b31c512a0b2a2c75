"""What ``GcsFront`` needs to refuse an upload whose declared CRC32C / MD5 disagrees with its bytes,
as Cloud Storage does: running digests, the declared values (upload metadata, ``X-Goog-Hash``),
``Content-Range`` of resumable chunks, and the media part of a multipart upload. Pure: no I/O
beyond the file object handed in.

Cloud Storage's answer to a mismatch is HTTP 400 with reason ``invalid`` and, for example, the
message ``Provided CRC32C "k8WV+A==" doesn't match calculated CRC32C "JNZSDg==".``; no object is
created and an existing one is left as it was. (storage-testbench answers 412 with "crc32c
validation failed. Expected = ... vs Actual = ..."; the rig follows Cloud Storage.)
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from dataclasses import dataclass, field
from typing import IO, Any

import google_crc32c

__all__ = [
    "RunningDigests",
    "declared_in_hash_header",
    "declared_in_metadata",
    "mismatch_message",
    "multipart_parts",
    "parse_content_range",
]

_NAMES = {"crc32c": "CRC32C", "md5Hash": "MD5 hash"}
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")
_HEAD = (1 << 20) + (64 << 10)  # a multipart head: the JSON part (at most 1 MiB) and the media headers
_TAIL = 4096


@dataclass
class RunningDigests:
    """CRC32C and MD5 of bytes 0..size-1 of an upload, fed in order."""

    size: int = 0
    crc: int = 0
    md5: Any = field(default_factory=lambda: hashlib.md5(usedforsecurity=False))

    def update(self, data: bytes) -> None:
        self.crc = google_crc32c.extend(self.crc, data)
        self.md5.update(data)
        self.size += len(data)

    def feed_at(self, start: int, data: bytes) -> None:
        """Feed ``data`` found at offset ``start``: bytes already counted are skipped (a resent
        or overlapping chunk); a gap (``start`` past ``size``) raises ``ValueError``."""
        if start > self.size:
            raise ValueError(f"bytes from {start} follow {self.size} counted bytes: a gap")
        skip = self.size - start
        if skip < len(data):
            self.update(data[skip:] if skip else data)

    def copy(self) -> RunningDigests:
        return RunningDigests(self.size, self.crc, self.md5.copy())

    @property
    def crc32c_b64(self) -> str:
        return base64.b64encode(struct.pack(">I", self.crc)).decode("ascii")

    @property
    def md5_b64(self) -> str:
        return base64.b64encode(self.md5.digest()).decode("ascii")

    def calculated(self, name: str) -> str:
        return self.crc32c_b64 if name == "crc32c" else self.md5_b64


def declared_in_metadata(body: bytes | None) -> dict[str, str]:
    """``crc32c`` / ``md5Hash`` an object resource (JSON) declares; {} when none or not JSON."""
    if not body:
        return {}
    try:
        resource = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(resource, dict):
        return {}
    return {name: resource[name] for name in _NAMES if isinstance(resource.get(name), str)}


def declared_in_hash_header(values: list[str]) -> dict[str, str]:
    """``X-Goog-Hash: crc32c=...,md5=...`` (one or more headers) as metadata field names."""
    declared: dict[str, str] = {}
    for value in values:
        for item in value.split(","):
            label, _, digest = item.strip().partition("=")
            name = {"crc32c": "crc32c", "md5": "md5Hash"}.get(label.strip().lower())
            if name and digest:
                declared[name] = digest.strip()
    return declared


def mismatch_message(declared: dict[str, str], digests: RunningDigests) -> str | None:
    """Cloud Storage's message for the first declared value the bytes disagree with; None if all agree.

    CRC32C is checked before MD5."""
    for name in ("crc32c", "md5Hash"):
        provided = declared.get(name)
        if provided is None:
            continue
        calculated = digests.calculated(name)
        if provided != calculated:
            label = _NAMES[name]
            return f'Provided {label} "{provided}" doesn\'t match calculated {label} "{calculated}".'
    return None


def parse_content_range(value: str | None) -> tuple[int | None, int | None, int | None] | None:
    """``bytes A-B/T`` -> (A, B + 1, T); ``*`` parts are None; None when absent or malformed."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        return None
    first, last, total = match.groups()
    start = int(first) if first is not None else None
    end = int(last) + 1 if last is not None else None
    return start, end, (int(total) if total != "*" else None)


def multipart_parts(body: IO[bytes], size: int, content_type: str) -> tuple[bytes, int, int] | None:
    """(JSON metadata part, media start, media end) of a ``multipart/related`` upload body held in
    ``body`` (seekable, ``size`` bytes); None when it cannot be parsed (the backend then decides)."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.lower().startswith("multipart/related") or match is None:
        return None
    delimiter = b"--" + match.group(1).encode("latin-1")
    body.seek(0)
    head = body.read(min(size, _HEAD))
    first = head.find(delimiter)
    if first < 0:
        return None
    json_start = head.find(b"\r\n\r\n", first) + 4
    json_end = head.find(b"\r\n" + delimiter, json_start)
    if json_start < 4 or json_end < 0:
        return None
    media_start = head.find(b"\r\n\r\n", json_end + 2 + len(delimiter)) + 4
    if media_start < 4:
        return None
    tail_size = min(size, _TAIL)
    body.seek(size - tail_size)
    tail = body.read(tail_size)
    close = tail.rfind(b"\r\n" + delimiter + b"--")
    if close < 0:
        return None
    media_end = size - tail_size + close
    if media_end < media_start:
        return None
    return head[json_start:json_end], media_start, media_end

"""A minimal Cloud Storage JSON API stand-in that streams uploads to files (for large-object figures).

    python -m bench.gcs_sink [--root DIR] [--discard] [--log] [--max-rate MB_PER_S]

It prints one JSON line (``{"url": ..., "pid": ...}``) and serves on 127.0.0.1 until its
standard input closes. It implements what google-cloud-storage, gcs-sync's streaming path and
rclone use, and nothing else:

* buckets exist as soon as they are named (``GET /storage/v1/b/B`` always answers 200);
* objects: metadata ``GET`` (404 when absent), ``alt=media`` download, ``PATCH`` of metadata,
  ``DELETE``, listing with ``prefix`` / ``delimiter`` / ``startOffset`` / ``endOffset`` / pages;
* uploads: ``uploadType=media``, ``multipart`` (buffered: small objects) and ``resumable``
  (initiation, then ``PUT`` chunks with ``Content-Range``; 308 with ``Range`` until the last
  byte, then 200 with the object resource; status queries ``bytes */N``; ``DELETE`` cancels;
  Go's client POSTs its chunks and asks for ``X-GUploader-No-308``: 200 plus
  ``X-Http-Status-Code-Override: 308`` instead of a 308);
* ``ifGenerationMatch`` / ``ifGenerationNotMatch`` on uploads (checked at initiation and when the
  object is finalized) and deletes;
* a client-supplied ``crc32c`` / ``md5Hash`` is checked against the bytes (400 on a mismatch),
  and every resource carries both, computed incrementally as the bytes arrive;
* ``objects.rewrite`` (``POST .../o/SRC/rewriteTo/b/B/o/DST``) as Cloud Storage does it within one
  location and storage class: no byte is copied (the new object shares the source's stored bytes
  and digests; a reference count keeps the file until its last object is deleted or replaced),
  done in one call (``"done": true``, no ``rewriteToken``); a non-empty body (not ``null``) is the
  whole new metadata, else the source's is copied; ``sourceGeneration`` (404 when not the live
  one), ``ifSourceGenerationMatch`` / ``ifSourceMetagenerationMatch`` (and ``NotMatch``) on the
  source and ``ifGenerationMatch`` (0: only if absent) / ``ifMetagenerationMatch`` on the target,
  412 otherwise;
* ``GET /_sink/stats``: counters since start (request-body bytes received, uploads and their
  bytes, rewrites, bytes downloaded); ``POST /_sink/clear`` drops every object.

``--max-rate MB_PER_S`` makes it network-bound: request bodies from all connections together are
admitted at that rate (a token bucket; reads wait, so clients are held back by TCP flow control),
as a Lambda function's uploads share its one network link. Responses are not limited.

It accepts any (or no) ``Authorization`` header: it does not check tokens. Object bytes go to
files under ``--root`` (with ``--discard`` they are hashed and dropped), never to this process's
memory; metadata lives in memory. Not a conformance fake: a yardstick that should never be the
slowest part of a measurement (``python -m bench.run`` measures its raw throughput first).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import os
import re
import secrets
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import google_crc32c

BUFFER = 1 << 20
MAX_BUFFERED_BODY = 512 << 20  # multipart / metadata bodies are read whole
_REWRITE = re.compile(r"^/storage/v1/b/([^/]+)/o/([^/]+)/rewriteTo/b/([^/]+)/o/([^/]+)$")
_OBJECT = re.compile(r"^/(?:download/)?storage/v1/b/([^/]+)/o/(.+)$")
_OBJECTS = re.compile(r"^/storage/v1/b/([^/]+)/o/?$")
_UPLOAD = re.compile(r"^/upload/storage/v1/b/([^/]+)/o/?$")
_BUCKET = re.compile(r"^/storage/v1/b/([^/]+)/?$")
_PERMISSIONS = re.compile(r"^/storage/v1/b/([^/]+)/iam/testPermissions$")
_RANGE = re.compile(r"^bytes (\*|(\d+)-(\d+))/(\*|\d+)$")
STATS = ("body_bytes", "requests", "uploads", "upload_bytes", "rewrites", "rewrite_bytes", "download_bytes")
CAPPED_READ = 256 << 10  # read size while --max-rate holds clients back: smooth pacing
_FIELDS = ("contentType", "contentEncoding", "contentDisposition", "contentLanguage", "cacheControl",
           "metadata", "customTime")


class HttpError(Exception):
    def __init__(self, status: int, message: str, reason: str = "invalid"):
        super().__init__(message)
        self.status, self.reason = status, reason


class TokenBucket:
    """At most ``rate`` bytes per second across every connection together (plus a small burst):
    a taker that overdraws the bucket waits for the debt, so each read is admitted in turn and
    clients are held back by TCP flow control, as behind one network link."""

    def __init__(self, rate: float):
        self.rate = rate
        self.burst = max(float(CAPPED_READ), rate / 50)  # 20 ms of the link
        self.tokens, self.stamp = self.burst, time.monotonic()
        self.lock = threading.Lock()

    def take(self, n: int) -> None:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate) - n
            self.stamp = now
            wait = -self.tokens / self.rate if self.tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


class Digest:
    def __init__(self) -> None:
        self.crc = google_crc32c.Checksum()
        self.md5 = hashlib.md5()
        self.size = 0

    def update(self, data: Any) -> None:
        self.crc.update(data)
        self.md5.update(data)
        self.size += len(data)

    def b64(self) -> tuple[str, str]:
        return (base64.b64encode(self.crc.digest()).decode(), base64.b64encode(self.md5.digest()).decode())


@dataclass
class Session:
    bucket: str
    name: str
    resource: dict
    preconditions: dict
    total: int | None
    path: str
    digest: Digest = field(default_factory=Digest)
    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: dict | None = None


class Store:
    def __init__(self, root: str, discard: bool):
        self.root, self.discard = root, discard
        self.lock = threading.Lock()
        self.objects: dict[tuple[str, str], tuple[dict, str | None]] = {}
        self.sessions: dict[str, Session] = {}
        self.refs: dict[str, int] = {}  # stored file -> objects sharing it (rewrite copies no bytes)
        self.stats = dict.fromkeys(STATS, 0)
        self._last_generation = 0
        self._counter = itertools.count()

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.stats[key] += n

    def new_path(self) -> str:
        return os.path.join(self.root, f"{os.getpid()}-{next(self._counter)}.bin")

    def generation(self) -> int:
        with self.lock:
            self._last_generation = max(self._last_generation + 1, time.time_ns() // 1000)
            return self._last_generation

    def current(self, bucket: str, name: str) -> dict | None:
        with self.lock:
            entry = self.objects.get((bucket, name))
            return entry[0] if entry else None

    def check(self, bucket: str, name: str, preconditions: dict) -> None:
        held = self.current(bucket, name)
        generation = int(held["generation"]) if held else 0
        match = preconditions.get("ifGenerationMatch")
        if match is not None and int(match) != generation:
            raise HttpError(412, "At least one of the pre-conditions you specified did not hold.",
                            "conditionNotMet")
        not_match = preconditions.get("ifGenerationNotMatch")
        if not_match is not None and int(not_match) == generation:
            raise HttpError(412 if held else 412, "ifGenerationNotMatch did not hold.", "conditionNotMet")

    def finalize(self, bucket: str, name: str, resource: dict, preconditions: dict, digest: Digest,
                 path: str | None, host: str) -> dict:
        crc, md5 = digest.b64()
        wanted_crc, wanted_md5 = resource.get("crc32c"), resource.get("md5Hash")
        if (wanted_crc and wanted_crc != crc) or (wanted_md5 and wanted_md5 != md5):
            _unlink(path)
            raise HttpError(400, f"Provided checksums (crc32c {wanted_crc}, md5 {wanted_md5}) do not match "
                                 f"the data (crc32c {crc}, md5 {md5}).")
        with self.lock:
            held = self.objects.get((bucket, name))
            generation = int(held[0]["generation"]) if held else 0
            match = preconditions.get("ifGenerationMatch")
            if match is not None and int(match) != generation:
                _unlink(path)
                raise HttpError(412, "At least one of the pre-conditions you specified did not hold.",
                                "conditionNotMet")
            out = self._resource(bucket, name, host, resource, digest.size, md5, crc)
            self.objects[(bucket, name)] = (out, path)
            if path:
                self.refs[path] = 1
            self.stats["uploads"] += 1
            self.stats["upload_bytes"] += digest.size
        if held:
            self._release(held[1])
        return out

    def _resource(self, bucket: str, name: str, host: str, resource: dict, size: int, md5: str, crc: str) -> dict:
        """A new generation's object resource (called with the lock held)."""
        self._last_generation = max(self._last_generation + 1, time.time_ns() // 1000)
        generation = self._last_generation
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000Z"
        quoted = urllib.parse.quote(name, safe="")
        base = f"http://{host}"
        out = {
            "kind": "storage#object", "id": f"{bucket}/{name}/{generation}",
            "selfLink": f"{base}/storage/v1/b/{bucket}/o/{quoted}",
            "mediaLink": f"{base}/download/storage/v1/b/{bucket}/o/{quoted}?generation={generation}&alt=media",
            "name": name, "bucket": bucket, "generation": str(generation), "metageneration": "1",
            "contentType": resource.get("contentType") or "application/octet-stream",
            "storageClass": "STANDARD", "size": str(size), "md5Hash": md5, "crc32c": crc,
            "etag": base64.b64encode(str(generation).encode()).decode(),
            "timeCreated": stamp, "updated": stamp, "timeStorageClassUpdated": stamp,
        }
        for key in _FIELDS:
            if resource.get(key) is not None and key != "contentType":
                out[key] = resource[key]
        return out

    def rewrite(self, source: tuple[str, str], target: tuple[str, str], query: dict, body: dict | None,
                host: str) -> dict:
        """objects.rewrite within one location and storage class: the new object shares the source's
        stored bytes and digests (no byte is copied), done in one call. ``body`` None (empty or
        ``null``): the source's metadata is copied; otherwise the body is the whole new metadata."""
        with self.lock:
            entry = self.objects.get(source)
            if entry is None:
                raise HttpError(404, f"No such object: {source[0]}/{source[1]}", "notFound")
            meta, path = entry
            generation = int(meta["generation"])
            wanted = query.get("sourceGeneration")
            if wanted is not None and int(wanted) != generation:
                raise HttpError(404, f"No such object: {source[0]}/{source[1]}#{wanted}", "notFound")
            held = self.objects.get(target)
            for prefix, current in (("ifSource", meta), ("if", held[0] if held else None)):
                have = {"Generation": int(current["generation"]) if current else 0,
                        "Metageneration": int(current["metageneration"]) if current else 0}
                for field_name, value in have.items():
                    match = query.get(f"{prefix}{field_name}Match")
                    not_match = query.get(f"{prefix}{field_name}NotMatch")
                    if (match is not None and int(match) != value) or \
                            (not_match is not None and int(not_match) == value):
                        raise HttpError(412, "At least one of the pre-conditions you specified did not hold.",
                                        "conditionNotMet")
            if body:
                for key, have_value in (("crc32c", meta["crc32c"]), ("md5Hash", meta["md5Hash"])):
                    if body.get(key) and body[key] != have_value:
                        raise HttpError(400, f"Provided {key} {body[key]} does not match the source's {have_value}.")
            resource = body if body else {key: meta[key] for key in _FIELDS if key in meta}
            out = self._resource(target[0], target[1], host, resource, int(meta["size"]), meta["md5Hash"],
                                 meta["crc32c"])
            self.objects[target] = (out, path)
            if path:
                self.refs[path] = self.refs.get(path, 0) + 1
            self.stats["rewrites"] += 1
            self.stats["rewrite_bytes"] += int(meta["size"])
        if held:
            self._release(held[1])
        return out

    def _release(self, path: str | None) -> None:
        """One object less shares ``path``: the file goes when the last one does."""
        if not path:
            return
        with self.lock:
            left = self.refs.get(path, 1) - 1
            if left > 0:
                self.refs[path] = left
                return
            self.refs.pop(path, None)
        _unlink(path)

    def delete(self, bucket: str, name: str, preconditions: dict) -> None:
        with self.lock:
            held = self.objects.get((bucket, name))
            if held is None:
                raise HttpError(404, f"No such object: {bucket}/{name}", "notFound")
            match = preconditions.get("ifGenerationMatch")
            if match is not None and int(match) != int(held[0]["generation"]):
                raise HttpError(412, "At least one of the pre-conditions you specified did not hold.",
                                "conditionNotMet")
            del self.objects[(bucket, name)]
        self._release(held[1])

    def path_of(self, bucket: str, name: str) -> tuple[dict, str | None]:
        with self.lock:
            entry = self.objects.get((bucket, name))
        if entry is None:
            raise HttpError(404, f"No such object: {bucket}/{name}", "notFound")
        return entry

    def listing(self, bucket: str) -> list[dict]:
        with self.lock:
            return sorted((meta for (b, _), (meta, _) in self.objects.items() if b == bucket),
                          key=lambda m: m["name"].encode())

    def clear(self) -> None:
        with self.lock:
            entries, self.objects = list(self.objects.values()), {}
            sessions, self.sessions = list(self.sessions.values()), {}
            self.refs = {}
        for path in {path for _, path in entries}:
            _unlink(path)
        for session in sessions:
            _unlink(session.path)


def _unlink(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "SinkServer"

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes: without this, Nagle holds the body until the
        # client's delayed ACK (~40 ms on Linux loopback) and every request costs 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.log:
            sys.stderr.write("gcs_sink: " + (format % args) + "\n")

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    # -- plumbing ---------------------------------------------------------------------------

    def _dispatch(self) -> None:
        split = urllib.parse.urlsplit(self.path)
        self.query = {k: v[-1] for k, v in urllib.parse.parse_qs(split.query, keep_blank_values=True).items()}
        self.body_consumed = False
        self.server.store.count("requests")
        try:
            self._route(split.path)
        except HttpError as exc:
            self._error(exc.status, str(exc), exc.reason)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - report, keep serving
            self.close_connection = True
            sys.stderr.write(f"gcs_sink: {self.command} {self.path}: {type(exc).__name__}: {exc}\n")
            self._error(500, f"gcs_sink: {type(exc).__name__}: {exc}", "backendError")
        finally:
            if not self.body_consumed:
                self._drain()

    def _route(self, path: str) -> None:
        method, store = self.command, self.server.store
        if path == "/_sink/clear" and method == "POST":
            store.clear()
            return self._json(200, {"cleared": True})
        if path == "/_sink/stats" and method == "GET":
            with store.lock:
                counters = dict(store.stats)
            return self._json(200, {**counters, "max_rate": self.server.limit.rate if self.server.limit else None})
        if m := _REWRITE.match(path):
            if method == "POST":
                return self._rewrite(*(urllib.parse.unquote(g) for g in m.groups()))
        if m := _UPLOAD.match(path):
            bucket = urllib.parse.unquote(m.group(1))
            if method in ("PUT", "POST") and "upload_id" in self.query:  # Go's client POSTs chunks
                return self._upload_chunk()
            if method == "POST":
                return self._upload_start(bucket)
            if method == "DELETE":
                self.server.store.sessions.pop(self.query.get("upload_id", ""), None)
                return self._json(499, {"error": {"code": 499, "message": "upload cancelled"}})
        if m := _OBJECT.match(path):
            bucket, name = urllib.parse.unquote(m.group(1)), urllib.parse.unquote(m.group(2))
            if method in ("GET", "HEAD"):
                meta, file_path = store.path_of(bucket, name)
                if self.query.get("alt") == "media":
                    return self._media(meta, file_path)
                return self._json(200, meta)
            if method == "DELETE":
                store.delete(bucket, name, self.query)
                return self._empty(204)
            if method == "PATCH":
                meta, _ = store.path_of(bucket, name)
                patch = json.loads(self._read_body() or b"{}")
                for key in _FIELDS:
                    if key in patch:
                        meta[key] = patch[key]
                return self._json(200, meta)
        if m := _OBJECTS.match(path):
            if method == "GET":
                return self._list(urllib.parse.unquote(m.group(1)))
        if m := _PERMISSIONS.match(path):
            asked = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("permissions", [])
            return self._json(200, {"kind": "storage#testIamPermissionsResponse", "permissions": asked})
        if m := _BUCKET.match(path):
            if method in ("GET", "HEAD"):
                return self._json(200, _bucket(urllib.parse.unquote(m.group(1))))
        if path.rstrip("/") == "/storage/v1/b":
            if method == "POST":
                body = json.loads(self._read_body() or b"{}")
                return self._json(200, _bucket(body.get("name", "")))
            if method == "GET":
                return self._json(200, {"kind": "storage#buckets", "items": []})
        raise HttpError(501, f"gcs_sink does not implement {method} {path}", "notImplemented")

    def _body(self) -> Iterator[bytes]:
        """The request body in pieces of at most BUFFER bytes (Content-Length or chunked)."""
        self.body_consumed = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline(1024).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield from self._exact(size)
                self.rfile.readline(8)
        else:
            yield from self._exact(int(self.headers.get("Content-Length") or 0))

    def _exact(self, remaining: int) -> Iterator[bytes]:
        limit, store = self.server.limit, self.server.store
        while remaining > 0:
            want = min(remaining, BUFFER)
            if limit is not None:  # admitted before it leaves the socket: the client waits
                want = min(want, CAPPED_READ)
                limit.take(want)
            piece = self.rfile.read(want)
            if not piece:
                raise ConnectionError("client closed the connection mid-body")
            remaining -= len(piece)
            store.count("body_bytes", len(piece))
            yield piece

    def _read_body(self) -> bytes:
        pieces, size = [], 0
        for piece in self._body():
            size += len(piece)
            if size > MAX_BUFFERED_BODY:
                self.close_connection = True
                raise HttpError(413, "body too large for gcs_sink's buffered paths")
            pieces.append(piece)
        return b"".join(pieces)

    def _drain(self) -> None:
        try:
            for _ in self._body():
                pass
        except (ConnectionError, ValueError, OSError):
            self.close_connection = True

    def _json(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _error(self, status: int, message: str, reason: str) -> None:
        self._json(status, {"error": {"code": status, "message": message,
                                      "errors": [{"domain": "global", "reason": reason, "message": message}]}})

    # -- uploads ------------------------------------------------------------------------------

    def _stream_to(self, path: str | None, digest: Digest, offset: int | None = None) -> None:
        store = self.server.store
        if store.discard or path is None:
            for piece in self._body():
                digest.update(piece)
            return
        with open(path, "r+b" if offset else "wb", buffering=0) as sink:
            if offset:
                sink.seek(offset)
            for piece in self._body():
                sink.write(piece)
                digest.update(piece)

    def _upload_start(self, bucket: str) -> None:
        kind = self.query.get("uploadType", "media")
        store = self.server.store
        host = self.headers.get("Host", "127.0.0.1")
        if kind == "media":
            name = self.query.get("name") or ""
            store.check(bucket, name, self.query)
            path, digest = None if store.discard else store.new_path(), Digest()
            self._stream_to(path, digest)
            resource = {"contentType": self.headers.get("Content-Type")}
            return self._json(200, store.finalize(bucket, name, resource, self.query, digest, path, host))
        if kind == "multipart":
            resource, data = _multipart(self.headers.get("Content-Type", ""), self._read_body())
            name = self.query.get("name") or resource.get("name") or ""
            store.check(bucket, name, self.query)
            path, digest = None if store.discard else store.new_path(), Digest()
            digest.update(data)
            if path:
                with open(path, "wb") as sink:
                    sink.write(data)
            return self._json(200, store.finalize(bucket, name, resource, self.query, digest, path, host))
        if kind == "resumable":
            body = self._read_body()
            resource = json.loads(body) if body.strip() else {}
            name = self.query.get("name") or resource.get("name") or ""
            if not name:
                raise HttpError(400, "no object name")
            store.check(bucket, name, self.query)
            if "contentType" not in resource and self.headers.get("X-Upload-Content-Type"):
                resource["contentType"] = self.headers["X-Upload-Content-Type"]
            total = self.headers.get("X-Upload-Content-Length")
            upload_id = secrets.token_urlsafe(16)
            preconditions = {k: v for k, v in self.query.items() if k.startswith("if")}
            store.sessions[upload_id] = Session(bucket, name, resource, preconditions,
                                                int(total) if total else None, store.new_path())
            location = (f"http://{host}/upload/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o"
                        f"?uploadType=resumable&upload_id={upload_id}")
            return self._json(200, {}, {"Location": location, "X-GUploader-UploadID": upload_id})
        raise HttpError(400, f"unknown uploadType {kind!r}")

    def _upload_chunk(self) -> None:
        store = self.server.store
        session = store.sessions.get(self.query.get("upload_id", ""))
        if session is None:
            raise HttpError(404, "no such upload session", "notFound")
        with session.lock:
            if session.finished is not None:
                return self._json(200, session.finished)
            header = self.headers.get("Content-Range", "").strip()
            length = int(self.headers.get("Content-Length") or 0)
            if not header:  # a single PUT of the whole object
                start, total = 0, length
            else:
                m = _RANGE.match(header)
                if m is None:
                    raise HttpError(400, f"bad Content-Range {header!r}")
                start = None if m.group(1) == "*" else int(m.group(2))
                total = None if m.group(4) == "*" else int(m.group(4))
            if total is not None:
                session.total = total
            received = session.digest.size
            if start is not None and start != received:
                if start > received:
                    raise HttpError(400, f"chunk starts at {start}, {received} bytes received so far")
                self._rewind(session, start)
            if start is not None:
                self._stream_to(session.path, session.digest, offset=session.digest.size)
            if session.total is not None and session.digest.size >= session.total:
                store.sessions.pop(self.query.get("upload_id", ""), None)
                session.finished = store.finalize(session.bucket, session.name, session.resource,
                                                  session.preconditions, session.digest,
                                                  None if store.discard else session.path,
                                                  self.headers.get("Host", "127.0.0.1"))
                return self._json(200, session.finished)
            headers = {"Range": f"bytes=0-{session.digest.size - 1}"} if session.digest.size else {}
            if self.headers.get("X-GUploader-No-308", "").lower() == "yes":  # Go's client asks for this
                return self._empty(200, {**headers, "X-Http-Status-Code-Override": "308"})
            return self._empty(308, headers)

    def _rewind(self, session: Session, offset: int) -> None:
        """The client re-sends from ``offset``: keep the bytes before it and hash them again."""
        session.digest = Digest()
        if self.server.store.discard:
            raise HttpError(503, "gcs_sink --discard cannot rewind an upload", "backendError")
        with open(session.path, "r+b") as handle:
            handle.truncate(offset)
            while piece := handle.read(BUFFER):
                session.digest.update(piece)

    def _rewrite(self, src_bucket: str, src_name: str, dst_bucket: str, dst_name: str) -> None:
        """objects.rewrite, answered as Cloud Storage does within one location and storage class."""
        raw = self._read_body().strip()
        body = json.loads(raw) if raw else None  # Go's client sends ``null`` for no metadata
        if body is not None and not isinstance(body, dict):
            raise HttpError(400, "the rewrite body must be an object resource")
        out = self.server.store.rewrite((src_bucket, src_name), (dst_bucket, dst_name), self.query, body or None,
                                        self.headers.get("Host", "127.0.0.1"))
        self._json(200, {"kind": "storage#rewriteResponse", "totalBytesRewritten": out["size"],
                         "objectSize": out["size"], "done": True, "resource": out})

    def _media(self, meta: dict, path: str | None) -> None:
        size = int(meta["size"])
        if path is None:
            raise HttpError(410, "gcs_sink --discard keeps no bytes", "gone")
        self.send_response(200)
        self.send_header("Content-Type", meta.get("contentType", "application/octet-stream"))
        self.send_header("Content-Length", str(size))
        self.send_header("X-Goog-Generation", meta["generation"])
        self.send_header("X-Goog-Hash", f"crc32c={meta['crc32c']},md5={meta['md5Hash']}")
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(path, "rb") as handle:
            while piece := handle.read(BUFFER):
                self.wfile.write(piece)
                self.server.store.count("download_bytes", len(piece))

    def _list(self, bucket: str) -> None:
        q = self.query
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        start, end = q.get("startOffset", ""), q.get("endOffset", "")
        after = q.get("pageToken", "")
        limit = int(q.get("maxResults") or 1000)
        items, prefixes = [], []
        for meta in self.server.store.listing(bucket):
            name = meta["name"]
            if not name.startswith(prefix) or (start and name < start) or (end and name >= end):
                continue
            if delimiter and delimiter in name[len(prefix):]:
                sub = name[:len(prefix) + name[len(prefix):].index(delimiter) + len(delimiter)]
                if sub not in prefixes and sub > after:
                    prefixes.append(sub)
                continue
            if name > after:
                items.append(meta)
        entries = sorted([(m["name"], m) for m in items] + [(p, None) for p in prefixes])
        page, rest = entries[:limit], entries[limit:]
        answer: dict[str, Any] = {"kind": "storage#objects"}
        if any(m for _, m in page):
            answer["items"] = [m for _, m in page if m]
        if any(m is None for _, m in page):
            answer["prefixes"] = [n for n, m in page if m is None]
        if rest:
            answer["nextPageToken"] = page[-1][0]
        self._json(200, answer)


def _bucket(name: str) -> dict:
    return {"kind": "storage#bucket", "id": name, "name": name, "location": "US", "storageClass": "STANDARD",
            "metageneration": "1", "timeCreated": "2026-01-01T00:00:00.000Z",
            "updated": "2026-01-01T00:00:00.000Z", "iamConfiguration": {"uniformBucketLevelAccess": {"enabled": True}}}


def _multipart(content_type: str, body: bytes) -> tuple[dict, bytes]:
    """(metadata, media) of a multipart/related upload body."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if m is None:
        raise HttpError(400, "multipart upload without a boundary")
    delimiter = b"--" + m.group(1).encode()
    parts = body.split(delimiter)
    # ['', meta-part, media-part, '--\r\n']: each part is headers CRLF CRLF content CRLF
    if len(parts) < 4:
        raise HttpError(400, "multipart upload needs a metadata part and a media part")

    def content(part: bytes) -> bytes:
        head, sep, rest = part.partition(b"\r\n\r\n")
        if not sep:
            raise HttpError(400, "malformed multipart part")
        return rest[:-2] if rest.endswith(b"\r\n") else rest

    meta = json.loads(content(parts[1]) or b"{}")
    media = content(delimiter.join(parts[2:-1]))
    return meta, media


class SinkServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, store: Store, log: bool = False, max_rate: float | None = None):
        self.store, self.log = store, log
        self.limit = TokenBucket(max_rate) if max_rate else None
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="where object bytes go (default: a new temporary directory)")
    parser.add_argument("--discard", action="store_true", help="hash the bytes, keep none")
    parser.add_argument("--log", action="store_true", help="log each request on stderr")
    parser.add_argument("--max-rate", type=float, metavar="MB_PER_S",
                        help="admit at most this many MB (10^6 bytes) of request bodies per second, all "
                             "connections together (a token bucket): one network link, as a Lambda's")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gcs-sink-", dir=args.root) as root:
        server = SinkServer(Store(root, args.discard), log=args.log,
                            max_rate=args.max_rate * 1e6 if args.max_rate else None)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        thread.start()
        sys.stdout.write(json.dumps({"url": server.url, "pid": os.getpid(), "root": root,
                                    "max_rate": server.limit.rate if server.limit else None}) + "\n")
        sys.stdout.flush()
        try:
            sys.stdin.read()
        except KeyboardInterrupt:
            pass
        server.shutdown()
        server.server_close()
        server.store.clear()


if __name__ == "__main__":
    main()

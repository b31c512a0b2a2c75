"""A minimal Cloud Storage JSON API stand-in that streams uploads to files (for large-object figures).

    python -m bench.gcs_sink [--root DIR] [--discard] [--log]

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
  and every resource carries both, computed incrementally as the bytes arrive.

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
_OBJECT = re.compile(r"^/(?:download/)?storage/v1/b/([^/]+)/o/(.+)$")
_OBJECTS = re.compile(r"^/storage/v1/b/([^/]+)/o/?$")
_UPLOAD = re.compile(r"^/upload/storage/v1/b/([^/]+)/o/?$")
_BUCKET = re.compile(r"^/storage/v1/b/([^/]+)/?$")
_PERMISSIONS = re.compile(r"^/storage/v1/b/([^/]+)/iam/testPermissions$")
_RANGE = re.compile(r"^bytes (\*|(\d+)-(\d+))/(\*|\d+)$")
_FIELDS = ("contentType", "contentEncoding", "contentDisposition", "contentLanguage", "cacheControl",
           "metadata", "customTime")


class HttpError(Exception):
    def __init__(self, status: int, message: str, reason: str = "invalid"):
        super().__init__(message)
        self.status, self.reason = status, reason


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
        self._last_generation = 0
        self._counter = itertools.count()

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
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000Z"
        with self.lock:
            held = self.objects.get((bucket, name))
            generation = int(held[0]["generation"]) if held else 0
            match = preconditions.get("ifGenerationMatch")
            if match is not None and int(match) != generation:
                _unlink(path)
                raise HttpError(412, "At least one of the pre-conditions you specified did not hold.",
                                "conditionNotMet")
            self._last_generation = max(self._last_generation + 1, time.time_ns() // 1000)
            generation = self._last_generation
            quoted = urllib.parse.quote(name, safe="")
            base = f"http://{host}"
            out = {
                "kind": "storage#object", "id": f"{bucket}/{name}/{generation}",
                "selfLink": f"{base}/storage/v1/b/{bucket}/o/{quoted}",
                "mediaLink": f"{base}/download/storage/v1/b/{bucket}/o/{quoted}?generation={generation}&alt=media",
                "name": name, "bucket": bucket, "generation": str(generation), "metageneration": "1",
                "contentType": resource.get("contentType") or "application/octet-stream",
                "storageClass": "STANDARD", "size": str(digest.size), "md5Hash": md5, "crc32c": crc,
                "etag": base64.b64encode(str(generation).encode()).decode(),
                "timeCreated": stamp, "updated": stamp, "timeStorageClassUpdated": stamp,
            }
            for key in _FIELDS:
                if resource.get(key) is not None and key != "contentType":
                    out[key] = resource[key]
            self.objects[(bucket, name)] = (out, path)
        if held:
            _unlink(held[1])
        return out

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
        _unlink(held[1])

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
        for _, path in entries:
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
        while remaining > 0:
            piece = self.rfile.read(min(remaining, BUFFER))
            if not piece:
                raise ConnectionError("client closed the connection mid-body")
            remaining -= len(piece)
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

    def __init__(self, store: Store, log: bool = False):
        self.store, self.log = store, log
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="where object bytes go (default: a new temporary directory)")
    parser.add_argument("--discard", action="store_true", help="hash the bytes, keep none")
    parser.add_argument("--log", action="store_true", help="log each request on stderr")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gcs-sink-", dir=args.root) as root:
        server = SinkServer(Store(root, args.discard), log=args.log)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        thread.start()
        sys.stdout.write(json.dumps({"url": server.url, "pid": os.getpid(), "root": root}) + "\n")
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

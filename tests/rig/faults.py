"""A seeded, fault-injecting HTTP proxy for the rig's servers.

``FaultProxy(upstream_url, seed=..., plan=FaultPlan(...))`` listens on 127.0.0.1 and forwards
every request to ``upstream_url`` (the GcsFront, moto's S3, the Google token server...),
streaming bodies both ways. On a schedule drawn from ``random.Random(seed)`` it instead:

* ``status``: answers 429 / 500 / 503 itself, with an error body shaped like the upstream's
  (S3 XML ``<Error><Code>SlowDown</Code>...``, Google JSON ``{"error": {"code": 503, ...}}``,
  or an OAuth ``{"error": "temporarily_unavailable"}``);
* ``reset_response``: forwards the request, sends the response's status, headers and part of
  its body, then resets the connection (RST) - a download cut short;
* ``drop_request``: reads part of the request body, then resets the connection without ever
  contacting the upstream - an upload cut short (nothing reaches the server);
* ``stall``: holds the request for ``stall_seconds`` (bounded; meant to outlast the client's
  timeout), then closes the connection or forwards the request late (``stall_then``);
* ``corrupt``: forwards the request but alters one byte in transit (XOR 0xFF, the length
  unchanged) of the response body (``corrupt_body="response"``, e.g. an S3 GET), of the request
  body (``"request"``, e.g. an upload to Cloud Storage) or of both (``"both"``) - bytes that
  arrive whole but wrong, which only a checksum can catch.

Decisions are drawn in the order requests arrive (always the same number of draws per
eligible request), so a serial client sees exactly the same faults for the same seed; with
concurrent clients the sequence of decisions is the same but which request gets which one may
vary. ``max_faults`` caps the faults injected so every run converges; ``calm()`` switches
injection off (everything is forwarded) and ``rage()`` back on. ``injected`` counts what was
injected by kind (``status_503``, ``reset_response``, ``drop_request``, ``stall``,
``corrupt_request``, ``corrupt_response``...); ``corruptions`` lists where each altered byte was.

Redirects (``Location``) naming the upstream are rewritten to the proxy, so a resumable upload
session stays behind it. Loopback only; every loop is bounded; ``stop()`` wakes stalled
requests and closes open connections.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import socket
import struct
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal

from .serving import HOP_BY_HOP, BodyReading, RigHTTPServer, RigService, connection_tokens

__all__ = ["FaultPlan", "FaultProxy"]

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024
_UPSTREAM_TIMEOUT = 60.0
_MAX_STALL = 30.0
_MAX_DRAIN = 256 << 20  # request bodies read (and discarded) before answering an error ourselves
_S3_CODES = {429: "SlowDown", 500: "InternalError", 503: "SlowDown"}
_GOOGLE_STATUS = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
_GOOGLE_REASON = {429: "rateLimitExceeded", 500: "backendError", 503: "backendError"}

Flavor = Literal["gcs", "s3", "oauth"]
KINDS = ("status", "reset_response", "drop_request", "stall", "corrupt")  # new kinds go last: seeds keep their schedule
Side = Literal["response", "request", "both"]

# One line per seeded fault run of the suite (seed, faults injected, copies verified, corrupt,
# lost), printed at the end of the test session so every run shows its seeds and totals.
FAULT_RUNS: list[dict[str, Any]] = []


@dataclass
class FaultPlan:
    """Probabilities (per eligible request) and bounds of the faults a ``FaultProxy`` injects.

    ``match(method, path_with_query)`` narrows which requests are eligible (default: all).
    ``drop_request`` applies only to requests that carry a body; a ``reset_response`` drawn for
    a response without a body is not injected (and not counted).

    ``corruptible(method, path_with_query)`` narrows which requests ``corrupt`` may alter, the same way.

    ``resettable(method, path_with_query)`` narrows which responses ``reset_response`` may cut
    (default: all; the draws are consumed either way, so the schedule does not shift).

    ``always(method, path_with_query)`` names requests that get ``always_kind`` every time (a
    fault that persists past any retry) until ``calm()``; these draw nothing from the seeded
    schedule and are not capped by ``max_faults`` (they are counted in ``injected``).

    ``corrupt`` alters one byte of the body named by ``corrupt_body`` (``"response"``,
    ``"request"`` or ``"both"``) at a seeded position; a body that is empty (or absent) is left
    alone and not counted. Its position comes from the draws every eligible request makes, so
    adding ``corrupt`` to a plan does not shift the schedule of the other kinds.
    """

    status: float = 0.0
    reset_response: float = 0.0
    drop_request: float = 0.0
    stall: float = 0.0
    corrupt: float = 0.0
    corrupt_body: Side = "response"
    statuses: tuple[int, ...] = (429, 500, 503)
    stall_seconds: float = 3.0
    stall_then: Literal["close", "forward"] = "close"
    max_faults: int = 10
    flavor: Flavor = "gcs"
    match: Callable[[str, str], bool] | None = None
    resettable: Callable[[str, str], bool] | None = None
    corruptible: Callable[[str, str], bool] | None = None  # narrows ``corrupt`` like ``resettable``
    always: Callable[[str, str], bool] | None = None
    always_kind: Literal["status", "reset_response", "drop_request", "stall", "corrupt"] = "status"

    def __post_init__(self) -> None:
        chances = [getattr(self, kind) for kind in KINDS]
        total = sum(chances)
        if not 0.0 <= total <= 1.0 or min(chances) < 0:
            raise ValueError(f"fault probabilities must be >= 0 and sum to at most 1 (got {total})")
        if self.corrupt_body not in ("response", "request", "both"):
            raise ValueError("corrupt_body must be 'response', 'request' or 'both'")
        if not 0 < self.stall_seconds <= _MAX_STALL:
            raise ValueError(f"stall_seconds must be in (0, {_MAX_STALL}]")
        if self.max_faults < 0:
            raise ValueError("max_faults must be >= 0")
        if not self.statuses:
            raise ValueError("statuses must name at least one HTTP status")
        if self.always_kind not in KINDS:
            raise ValueError(f"always_kind must be one of {KINDS}")


@dataclass(frozen=True)
class _Decision:
    kind: str | None  # None: forward untouched
    status: int = 0
    fraction: float = 0.5  # how much of the body goes through before a reset / drop
    scheduled: bool = True  # drawn from the seeded schedule (False: an ``always`` rule)


@dataclass
class FaultProxy(RigService):
    upstream_url: str
    seed: int
    plan: FaultPlan = field(default_factory=FaultPlan)
    name: str = "fault-proxy"

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.upstream_url.rstrip("/"))
        if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError("FaultProxy forwards to http://127.0.0.1 only")
        self.upstream_url = f"http://{parts.netloc}"
        self._upstream = (parts.hostname, parts.port or 80)
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._enabled = True
        self.injected: Counter[str] = Counter()
        self.scheduled = 0  # faults drawn from the seeded schedule so far (capped by max_faults)
        self.requests = 0
        self.forwarded = 0
        self.events: list[tuple[str, str, str]] = []  # (kind, method, path) of each fault
        self.slow: list[tuple[float, str, str, str]] = []  # (seconds, kind, method, path) over 5 s
        self.corruptions: list[tuple[str, str, str, int]] = []  # (kind, method, path, offset altered)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._stopping.clear()  # set only by stop()
        if self._serve(_ProxyHandler, self.name):
            # WARNING: fault injection is on (and the seed is what reproduces the run).
            log.warning("%s: fault injection seed=%d for %s, listening on %s", self.name, self.seed,
                        self.upstream_url, self.url)
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes stalled requests
        super().stop()

    @property
    def total(self) -> int:
        return sum(self.injected.values())

    def calm(self) -> None:
        """Stop injecting: every request from now on is forwarded untouched."""
        with self._lock:
            self._enabled = False

    def rage(self) -> None:
        """Inject again (within what is left of ``max_faults``)."""
        with self._lock:
            self._enabled = True

    def summary(self) -> str:
        kinds = ", ".join(f"{k}={v}" for k, v in sorted(self.injected.items())) or "none"
        return (f"{self.name} seed={self.seed}: {self.total} fault(s) in {self.requests} request(s) "
                f"[{kinds}]")

    # -- decisions -------------------------------------------------------------------

    def _decide(self, method: str, path: str, has_body: bool) -> _Decision:
        plan = self.plan
        with self._lock:
            self.requests += 1
            if not self._enabled:
                return _Decision(None)
            if plan.always is not None and plan.always(method, path):
                if plan.always_kind == "drop_request" and not has_body:
                    return _Decision(None)
                return _Decision(plan.always_kind, plan.statuses[0], 0.5, scheduled=False)
            if self.scheduled >= plan.max_faults:
                return _Decision(None)
            if plan.match is not None and not plan.match(method, path):
                return _Decision(None)
            # Always three draws per eligible request: the schedule depends only on the seed
            # and the order of eligible requests.
            roll, pick, fraction = self._rng.random(), self._rng.randrange(len(plan.statuses)), self._rng.random()
            fraction = 0.1 + 0.8 * fraction
            edge = 0.0
            for kind in KINDS:
                edge += getattr(plan, kind)
                if roll < edge:
                    if kind == "drop_request" and not has_body:
                        return _Decision(None)
                    if kind == "reset_response" and plan.resettable and not plan.resettable(method, path):
                        return _Decision(None)
                    if kind == "corrupt" and plan.corruptible and not plan.corruptible(method, path):
                        return _Decision(None)
                    status = plan.statuses[pick] if kind == "status" else 0
                    self.scheduled += 1  # reserved now, so concurrent requests cannot overshoot
                    return _Decision(kind, status, fraction)
            return _Decision(None)

    def _count(self, decision: _Decision, method: str, path: str, kind: str | None = None) -> None:
        kind = kind or (f"status_{decision.status}" if decision.kind == "status" else str(decision.kind))
        with self._lock:
            self.injected[kind] += 1
            self.events.append((kind, method, path.split("?", 1)[0]))

    def _count_corruption(self, decision: _Decision, side: str, method: str, path: str, offset: int) -> None:
        kind = f"corrupt_{side}"
        self._count(decision, method, path, kind)
        with self._lock:
            self.corruptions.append((kind, method, path.split("?", 1)[0], offset))

    def _count_forwarded(self) -> None:
        with self._lock:
            self.forwarded += 1

    # -- answers made up by the proxy ---------------------------------------------------

    def error_body(self, status: int, path: str) -> tuple[bytes, str]:
        flavor = self.plan.flavor
        if flavor == "s3":
            code = _S3_CODES.get(status, "ServiceUnavailable")
            xml = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code>'
                "<Message>Fault injected by the rig (HTTP %d); please retry.</Message>"
                "<Resource>%s</Resource><RequestId>FAULT%08d</RequestId></Error>"
                % (code, status, _xml_escape(path.split("?", 1)[0]), self.requests)
            )
            return xml.encode(), "application/xml"
        if flavor == "oauth":
            payload: dict[str, Any] = {
                "error": "temporarily_unavailable",
                "error_description": f"Fault injected by the rig (HTTP {status}); please retry.",
            }
        else:
            message = f"Fault injected by the rig (HTTP {status}); please retry."
            payload = {"error": {
                "code": status, "message": message, "status": _GOOGLE_STATUS.get(status, "UNAVAILABLE"),
                "errors": [{"domain": "global", "reason": _GOOGLE_REASON.get(status, "backendError"),
                            "message": message}],
            }}
        return json.dumps(payload).encode(), "application/json; charset=UTF-8"


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class _ProxyHandler(BodyReading):
    protocol_version = "HTTP/1.1"
    body_chunk = _CHUNK
    server: RigHTTPServer

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silent: request lines may carry signed query strings."""

    # -- request flow ----------------------------------------------------------------

    def _handle(self) -> None:
        proxy: FaultProxy = self.server.owner
        started = time.monotonic()
        has_body = self._body_length() != 0
        decision = proxy._decide(self.command, self.path, has_body)
        try:
            self._act(proxy, decision)
        finally:
            seconds = time.monotonic() - started
            if seconds > 5:
                with proxy._lock:
                    proxy.slow.append((round(seconds, 1), str(decision.kind), self.command, self.path.split("?")[0]))

    def _act(self, proxy: FaultProxy, decision: _Decision) -> None:
        try:
            if decision.kind == "status":
                proxy._count(decision, self.command, self.path)
                self._drain_body(_MAX_DRAIN)  # a body cut short or too long: the connection is not kept
                body, content_type = proxy.error_body(decision.status, self.path)
                self._send_own(decision.status, body, content_type)
            elif decision.kind == "drop_request":
                proxy._count(decision, self.command, self.path)
                self._read_part_of_body(decision.fraction)
                self._reset()
            elif decision.kind == "stall":
                proxy._count(decision, self.command, self.path)
                proxy._stopping.wait(proxy.plan.stall_seconds)
                if proxy.plan.stall_then == "forward" and not proxy._stopping.is_set():
                    self._forward(proxy, None)
                else:
                    self._drain_body(_MAX_DRAIN)
                    self.close_connection = True  # no answer at all: the connection just closes
            else:
                self._forward(proxy, decision if decision.kind in ("reset_response", "corrupt") else None)
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True

    def _forward(self, proxy: FaultProxy, altered: _Decision | None) -> None:
        """Forward the request; ``altered``: a ``reset_response`` or ``corrupt`` to apply on the way."""
        host, port = proxy._upstream
        conn = http.client.HTTPConnection(host, port, timeout=_UPSTREAM_TIMEOUT)
        corrupt = altered if altered is not None and altered.kind == "corrupt" else None
        reset = altered if altered is not None and altered.kind == "reset_response" else None
        side = proxy.plan.corrupt_body
        try:
            try:
                self._send_upstream(conn, f"{host}:{port}", proxy, corrupt if side in ("request", "both") else None)
                response = conn.getresponse()
            except (OSError, ValueError, http.client.HTTPException) as exc:
                self.close_connection = True
                body = json.dumps({"error": {"code": 502, "message": f"fault proxy: upstream failed: {type(exc).__name__}"}})
                self._send_own(502, body.encode(), "application/json")
                return
            proxy._count_forwarded()
            self._relay(proxy, response, reset, corrupt if side in ("response", "both") else None)
        finally:
            conn.close()

    def _send_upstream(self, conn: http.client.HTTPConnection, netloc: str, proxy: FaultProxy,
                       corrupt: _Decision | None) -> None:
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", netloc)
        dropped = HOP_BY_HOP | {"host", "content-length", "expect"} | connection_tokens(self.headers)
        for name, value in self.headers.items():
            if name.lower() not in dropped:
                conn.putheader(name, value)
        length = self._body_length()
        pieces = self._iter_body()
        if corrupt is not None:
            pieces = self._altering(pieces, length, corrupt, "request", proxy)
        if length is None:  # chunked: pass it on chunked
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            for piece in pieces:
                conn.send(b"%x\r\n%b\r\n" % (len(piece), piece))
            conn.send(b"0\r\n\r\n")
        else:
            if length or self.command in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(length))
            conn.endheaders()
            for piece in pieces:
                conn.send(piece)

    def _altering(self, pieces: Iterator[bytes], length: int | None, decision: _Decision, side: str,
                  proxy: FaultProxy) -> Iterator[bytes]:
        """``pieces`` with one byte altered: at ``fraction`` of ``length``, or (unknown length) of
        the first non-empty piece. Counted when it happens; an empty body is left alone."""
        target = int(length * decision.fraction) if length else None
        offset = 0
        done = length == 0
        for piece in pieces:
            if not done and piece:
                at = int(len(piece) * decision.fraction) if target is None else target - offset
                if 0 <= at < len(piece):
                    piece = piece[:at] + bytes([piece[at] ^ 0xFF]) + piece[at + 1:]
                    proxy._count_corruption(decision, side, self.command, self.path, offset + at)
                    done = True
            offset += len(piece)
            yield piece

    def _relay(self, proxy: FaultProxy, response: http.client.HTTPResponse, reset: _Decision | None,
               corrupt: _Decision | None = None) -> None:
        old, new = proxy.upstream_url, self.server.url
        dropped = HOP_BY_HOP | {"content-length"} | connection_tokens(response.headers)
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() == "location":
                value = _rewrite_location(value, old, new)
            if name.lower() not in dropped:
                self.send_header(name, value)
        no_body = self.command == "HEAD" or response.status in (204, 304) or response.status < 200
        length = response.length
        if no_body:
            if response.getheader("Content-Length") is not None:
                self.send_header("Content-Length", response.getheader("Content-Length"))
            self.end_headers()
            return
        if length is not None:
            self.send_header("Content-Length", str(length))
            self.end_headers()
            cut = int(length * reset.fraction) if reset is not None and length >= 2 else None
            if cut is not None:
                proxy._count(reset, self.command, self.path)
                self._copy_exact(response, max(1, cut))
                self._reset()
                return
            if corrupt is not None:
                sent = 0
                for piece in self._altering(_read_exact(response, length), length, corrupt, "response", proxy):
                    self.wfile.write(piece)
                    sent += len(piece)
                if sent < length:
                    self.close_connection = True  # the upstream ended early, as in _copy_exact
                return
            self._copy_exact(response, length)
            return
        # Unknown length: relay chunked (a reset cuts it after the first piece).
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        first = True
        pieces: Iterator[bytes] = iter(lambda: response.read1(_CHUNK), b"")
        if corrupt is not None:
            pieces = self._altering(pieces, None, corrupt, "response", proxy)
        for piece in pieces:
            if reset is not None and first:
                proxy._count(reset, self.command, self.path)
                half = piece[: max(1, int(len(piece) * reset.fraction))]
                self.wfile.write(b"%x\r\n%b" % (len(piece), half))
                self._reset()
                return
            first = False
            self.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def _copy_exact(self, response: http.client.HTTPResponse, count: int) -> None:
        while count > 0:
            piece = response.read(min(count, _CHUNK))
            if not piece:
                self.close_connection = True
                return
            self.wfile.write(piece)
            count -= len(piece)

    # -- request bodies ------------------------------------------------------------

    def _read_part_of_body(self, fraction: float) -> None:
        """Read part of the body (a short while at most: a small chunked body may end sooner)."""
        length = self._body_length()
        wanted = max(1, int((length if length is not None else _CHUNK) * fraction))
        try:
            self.connection.settimeout(1.0)
            while wanted > 0:
                piece = self.rfile.read1(min(wanted, _CHUNK))
                if not piece:
                    return
                wanted -= len(piece)
        except OSError:
            return

    # -- answers -------------------------------------------------------------------

    def _send_own(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response_only(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reset(self) -> None:
        """Abort the client connection with a TCP RST (SO_LINGER 0), mid-whatever."""
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass


def _read_exact(response: http.client.HTTPResponse, count: int) -> Iterator[bytes]:
    """Up to ``count`` bytes of ``response`` in pieces (fewer if it ends early)."""
    while count > 0:
        piece = response.read(min(count, _CHUNK))
        if not piece:
            return
        count -= len(piece)
        yield piece


def _rewrite_location(value: str, old: str, new: str) -> str:
    if value.startswith(old):
        return new + value[len(old):]
    # The upstream may name itself as localhost, or by another spelling of its port.
    parts = urllib.parse.urlsplit(value)
    old_parts = urllib.parse.urlsplit(old)
    if parts.hostname in ("127.0.0.1", "localhost") and parts.port == old_parts.port:
        return new + value[len(f"{parts.scheme}://{parts.netloc}"):]
    return value

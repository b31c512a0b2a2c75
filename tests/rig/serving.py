"""What the rig's HTTP stand-ins share: the threaded server, its start / stop lifecycle, and
reading request bodies (Content-Length or chunked) for the proxies."""

from __future__ import annotations

import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator, Self

__all__ = ["HOP_BY_HOP", "BodyReading", "RigHTTPServer", "RigService", "connection_tokens"]

HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
        "proxy-connection", "te", "trailer", "trailers", "transfer-encoding", "upgrade",
    }
)  # fmt: skip
_MAX_CHUNKS = 1 << 20


def connection_tokens(headers: Any) -> set[str]:
    """Header names listed in ``Connection`` (hop-by-hop by declaration)."""
    value = headers.get("Connection") or ""
    return {token.strip().lower() for token in value.split(",") if token.strip()}


class RigHTTPServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` on 127.0.0.1 that can sever its open connections.

    Shared by the rig's HTTP stand-ins. ``owner`` is the rig object handlers
    consult; ``close_connections()`` unblocks keep-alive handler threads on stop.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], owner: Any) -> None:
        self.owner = owner
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def process_request(self, request: Any, client_address: Any) -> None:
        # Headers and body go out in separate writes: without TCP_NODELAY the body waits for the
        # client's delayed ACK (~40 ms on every request).
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about peers that hang up; report anything else."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @classmethod
    def serve_in_thread(
        cls, handler: type[BaseHTTPRequestHandler], owner: Any, name: str
    ) -> tuple[RigHTTPServer, threading.Thread]:
        server = cls(handler, owner)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
        )
        thread.start()
        return server, thread

    def stop(self, thread: threading.Thread) -> None:
        self.shutdown()
        self.close_connections()
        self.server_close()
        thread.join(timeout=5)


class RigService:
    """An owner served by a ``RigHTTPServer`` on its own thread: a context manager with ``url``.

    Subclasses start with ``_serve(handler, thread_name)`` and may extend ``stop``.
    """

    _server: RigHTTPServer | None = None
    _thread: threading.Thread | None = None

    def _serve(self, handler: type[BaseHTTPRequestHandler], name: str) -> bool:
        """Start serving unless already started; True when started now."""
        if self._server is not None:
            return False
        self._server, self._thread = RigHTTPServer.serve_in_thread(handler, self, name)
        return True

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.stop(self._thread)
        self._server = self._thread = None

    def start(self) -> Self:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._server.url


class BodyReading(BaseHTTPRequestHandler):
    """Request bodies for handlers that forward or discard them: ``Content-Length`` or chunked."""

    body_chunk = 1 << 20  # the largest piece read at once

    def _body_length(self) -> int | None:
        """The declared length; None for a chunked body."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return None
        try:
            return max(0, int(self.headers.get("Content-Length") or 0))
        except ValueError:
            return 0

    def _iter_body(self) -> Iterator[bytes]:
        """The request body in pieces, de-chunking ``Transfer-Encoding: chunked`` (trailers dropped)."""
        length = self._body_length()
        if length is not None:
            yield from self._iter_exact(length)
            return
        for _ in range(_MAX_CHUNKS):  # bounded
            line = self.rfile.readline(1024)
            if not line.endswith(b"\n"):
                raise ConnectionError("truncated chunked body")
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                for _ in range(100):
                    if self.rfile.readline(8192) in (b"\r\n", b"\n", b""):
                        break
                return
            yield from self._iter_exact(size)
            self.rfile.readline(8)  # CRLF after the chunk data
        raise ConnectionError("too many chunks")

    def _iter_exact(self, remaining: int) -> Iterator[bytes]:
        while remaining > 0:
            piece = self.rfile.read(min(remaining, self.body_chunk))
            if not piece:
                raise ConnectionError("client closed the connection mid-body")
            remaining -= len(piece)
            yield piece

    def _drain_body(self, limit: int | None = None) -> bool:
        """Read and discard the request body. False, and the connection is not kept, when it
        is cut short or declared longer than ``limit``."""
        length = self._body_length()
        if limit is not None and length is not None and length > limit:
            self.close_connection = True
            return False
        try:
            for _ in self._iter_body():
                pass
        except (ConnectionError, ValueError, OSError):
            self.close_connection = True
            return False
        return True

"""Local S3: moto in server mode on 127.0.0.1, reached over real HTTP.

moto keeps its state in process-wide backends: every ``LocalS3`` in one
process (and any ``moto.mock_aws`` in use at the same time) sees the same
buckets. ``reset()`` wipes that shared state.

``latency_ms`` (given at construction, changed at any time) makes every request wait that long
before moto handles it: S3 farther away than a loopback.
"""

from __future__ import annotations

import time
import urllib.request
from typing import Any, Callable, Iterable

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

__all__ = [
    "AWS_ACCESS_KEY_ID",
    "AWS_REGION",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "LocalS3",
]

# Fake AWS identity shared by the rig: give {AWS_ACCESS_KEY_ID: AWS_SECRET_ACCESS_KEY}
# to GoogleTokenServer(aws_keys=...) so the function's Workload Identity exchange verifies.
AWS_ACCESS_KEY_ID = "AKIARIGTESTKEY000001"
AWS_SECRET_ACCESS_KEY = "rig/fake+secret/access/key/0000000000000"
AWS_SESSION_TOKEN = "rig-fake-session-token"
AWS_REGION = "us-east-1"


class LocalS3:
    """``moto.server.ThreadedMotoServer`` on a free port of 127.0.0.1."""

    def __init__(self, *, latency_ms: float = 0.0) -> None:
        self._server: ThreadedMotoServer | None = None
        self._url: str | None = None
        self.latency_ms = latency_ms

    def start(self) -> LocalS3:
        if self._server is None:
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            wsgi_server = getattr(server, "_server", None)
            if wsgi_server is not None:  # werkzeug's handler reads server.app for every request
                wsgi_server.app = self._delayed(wsgi_server.app)
            host, port = server.get_host_and_port()
            self._server, self._url = server, f"http://{host}:{port}"
        return self

    def _delayed(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        def delayed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            latency = self.latency_ms
            if latency > 0:
                time.sleep(latency / 1000)
            return app(environ, start_response)

        return delayed

    def stop(self) -> None:
        server, self._server, self._url = self._server, None, None
        if server is not None:
            server.stop()
            # ThreadedMotoServer.stop() shuts the loop down but leaves the socket bound.
            wsgi_server = getattr(server, "_server", None)
            if wsgi_server is not None:
                wsgi_server.server_close()

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("LocalS3 is not started")
        return self._url

    def aws_env(self) -> dict[str, str]:
        """Environment variables that point boto3 (and google-auth's AWS signer) at the rig."""
        return {
            "AWS_ENDPOINT_URL_S3": self.url,
            "AWS_ACCESS_KEY_ID": AWS_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": AWS_SECRET_ACCESS_KEY,
            "AWS_SESSION_TOKEN": AWS_SESSION_TOKEN,
            "AWS_REGION": AWS_REGION,
            "AWS_DEFAULT_REGION": AWS_REGION,
        }

    def client(self) -> Any:
        """A boto3 S3 client for this server (path-style addressing, fake keys)."""
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=AWS_REGION,
            aws_access_key_id=AWS_ACCESS_KEY_ID,
            aws_secret_access_key=AWS_SECRET_ACCESS_KEY,
            aws_session_token=AWS_SESSION_TOKEN,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def reset(self) -> None:
        """Wipe moto's (process-wide) state: all buckets and objects."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

"""google-auth's "allowed locations" lookup: against local stand-ins a token refresh and the requests
made with the token reach no host but the local ones; against Google the library's lookup is kept.

The hosts are recorded where every HTTP client of the process resolves them (``socket.getaddrinfo``,
which urllib3 calls for every connection, IP literals included).
"""

from __future__ import annotations

import json
import socket
import threading
import uuid

import pytest

from gcs_sync import auth as auth_module
from gcs_sync.auth import GoogleAuth, location_lookup_wanted
from gcs_sync.config import Settings
from gcs_sync.runtime import gcs_client

LOCAL = {"127.0.0.1", "localhost", "::1"}
GOOGLE_CONFIG = {
    "type": "external_account",
    "token_url": "https://sts.googleapis.com/v1/token",
    "service_account_impersonation_url": (
        "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/"
        "gcs-sync@p.iam.gserviceaccount.com:generateAccessToken"),
}


@pytest.fixture
def hosts(monkeypatch) -> list[str]:
    """Every host name the process resolves while the test runs."""
    seen: list[str] = []
    real = socket.getaddrinfo

    def recording(host, *args, **kwargs):
        seen.append(host.decode() if isinstance(host, bytes) else str(host))
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording)
    return seen


def _local_auth(rig, tmp_path, monkeypatch) -> tuple[GoogleAuth, Settings]:
    config = tmp_path / "gcp-credentials.json"
    config.write_text(json.dumps(rig.tokens.credential_config()))
    for name, value in rig.s3.aws_env().items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_environ({
        **rig.s3.aws_env(), "GCS_DESTINATIONS": "gs://lookup-bucket",
        "GOOGLE_APPLICATION_CREDENTIALS": str(config), "GCS_API_ENDPOINT": rig.front.url,
    }, code_dir=str(tmp_path))
    return GoogleAuth.from_settings(settings), settings


def _refresh_and_request(auth: GoogleAuth, settings: Settings, rig) -> None:
    """What the function does with a new token: refresh it, then use it on Cloud Storage; then wait
    for any background work the request started (google-auth's lookup runs in its own thread)."""
    before = set(threading.enumerate())
    auth.ensure_token()
    bucket = f"lookup-{uuid.uuid4().hex[:12]}"
    rig.gcs.create_bucket(bucket)
    client = gcs_client(settings, auth, pool=2)
    assert list(client.bucket(bucket).list_blobs()) == []
    for thread in set(threading.enumerate()) - before:
        if "RegionalAccessBoundary" in type(thread).__name__:
            thread.join(timeout=30)


def test_a_local_token_refresh_and_its_requests_reach_only_local_hosts(rig, tmp_path, monkeypatch, hosts):
    auth, settings = _local_auth(rig, tmp_path, monkeypatch)
    calls = rig.tokens.sts_calls
    _refresh_and_request(auth, settings, rig)
    assert rig.tokens.sts_calls == calls + 1  # the token was really exchanged, here
    assert hosts, "the recorder saw the requests"
    assert set(hosts) <= LOCAL, f"non-local hosts contacted: {sorted(set(hosts) - LOCAL)}"


def test_the_recorder_catches_the_lookup_when_it_is_left_on(rig, tmp_path, monkeypatch, hosts):
    """The check above, broken once: with the lookup kept, google-auth calls Google's IAM."""
    monkeypatch.setattr(auth_module, "location_lookup_wanted", lambda info, settings: True)
    auth, settings = _local_auth(rig, tmp_path, monkeypatch)
    _refresh_and_request(auth, settings, rig)
    assert "iamcredentials.googleapis.com" in hosts


def _settings(tmp_path, **environ) -> Settings:
    return Settings.from_environ({"GCS_DESTINATIONS": "gs://bucket-a", **environ}, code_dir=str(tmp_path))


@pytest.mark.parametrize("info, environ, wanted", [
    (GOOGLE_CONFIG, {}, True),  # Google's endpoints: the library's behaviour is kept
    ({**GOOGLE_CONFIG, "token_url": "https://sts-psc1.p.googleapis.com/v1/token"}, {}, True),
    ({**GOOGLE_CONFIG, "service_account_impersonation_url": None}, {}, True),  # no impersonation
    (GOOGLE_CONFIG, {"GCS_API_ENDPOINT": "https://storage.googleapis.com"}, True),
    (GOOGLE_CONFIG, {"GCS_API_ENDPOINT": "http://127.0.0.1:4443"}, False),  # a local Cloud Storage
    ({**GOOGLE_CONFIG, "token_url": "http://127.0.0.1:8080/v1/token"}, {}, False),
    ({**GOOGLE_CONFIG, "service_account_impersonation_url": "http://localhost:1/v1/x:generateAccessToken"},
     {}, False),
    ({**GOOGLE_CONFIG, "token_url": "https://sts.googleapis.com.example.net/v1/token"}, {}, False),
])
def test_the_lookup_is_kept_only_when_every_endpoint_is_googles(tmp_path, info, environ, wanted):
    assert location_lookup_wanted(info, _settings(tmp_path, **environ)) is wanted

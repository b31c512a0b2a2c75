"""The Cloud Storage session reads the environment once (``destination.settle_environment``) and
then gives every request the proxies and CA bundle requests itself would have read per request."""

from __future__ import annotations

import pytest
import requests

from gcs_sync.destination import settle_environment

ENDPOINTS = ["https://storage.googleapis.com", "http://127.0.0.1:8123", "https://private.example.internal:8443"]
ENVIRONMENTS = {
    "none": {},
    "https-proxy": {"HTTPS_PROXY": "http://proxy.corp:3128"},
    "both-lowercase": {"http_proxy": "http://p1:80", "https_proxy": "http://p2:443"},
    "all-proxy": {"ALL_PROXY": "socks5://s:1080"},
    "no-proxy-covers": {"HTTPS_PROXY": "http://proxy.corp:3128", "HTTP_PROXY": "http://proxy.corp:3128",
                        "NO_PROXY": "googleapis.com,127.0.0.1,.internal"},
    "no-proxy-elsewhere": {"HTTPS_PROXY": "http://proxy.corp:3128", "NO_PROXY": "example.org"},
    "ca-bundle": {"REQUESTS_CA_BUNDLE": "/etc/ssl/corp.pem"},
    "curl-bundle": {"CURL_CA_BUNDLE": "/etc/ssl/curl.pem", "HTTPS_PROXY": "http://proxy.corp:3128"},
}
VARIABLES = {name for env in ENVIRONMENTS.values() for name in env} | {
    "http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"}


def _settings(session: requests.Session, url: str) -> dict:
    return session.merge_environment_settings(url, {}, None, None, None)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("env", list(ENVIRONMENTS.values()), ids=list(ENVIRONMENTS))
@pytest.mark.parametrize("own", [{}, {"https": "http://mine:1"}], ids=["no-own-proxy", "own-proxy"])
def test_every_request_gets_what_requests_would_read_from_the_environment(monkeypatch, endpoint, env, own):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    trusting, settled = requests.Session(), requests.Session()
    trusting.proxies.update(own)
    settled.proxies.update(own)
    settle_environment(settled, endpoint)
    assert settled.trust_env is False
    for path in ("/storage/v1/b/bkt/o/name", "/upload/storage/v1/b/bkt/o?uploadType=multipart"):
        assert _settings(settled, endpoint + path) == _settings(trusting, endpoint + path)
    before = _settings(settled, endpoint + "/storage/v1/b")
    monkeypatch.setenv("HTTPS_PROXY", "http://late:1")  # read once: the environment is not read again
    assert _settings(settled, endpoint + "/storage/v1/b") == before


def test_the_clients_session_is_settled_and_a_settled_one_is_left_alone(monkeypatch):
    from google.auth.credentials import AnonymousCredentials

    from gcs_sync.config import Settings
    from gcs_sync.runtime import gcs_client

    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")

    class Auth:
        credentials = AnonymousCredentials()

    session = gcs_client(Settings(destinations=(), google_cloud_project="p"), Auth(), 4)._http
    assert session.trust_env is False and session.proxies["https"] == "http://proxy.corp:3128"
    session.proxies.clear()
    settle_environment(session, "https://storage.googleapis.com")  # already settled: not read again
    assert session.proxies == {}
    settle_environment(None, "https://storage.googleapis.com")  # no session: nothing to do

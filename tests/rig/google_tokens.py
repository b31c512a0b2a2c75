"""Local stand-in for Google's STS and IAM Credentials endpoints.

``GoogleTokenServer`` implements just enough of Workload Identity Federation for
``google.auth.aws.Credentials``:

* ``POST /v1/token`` (STS token exchange) verifies the AWS-signed
  GetCallerIdentity request that google-auth sends as the subject token, SigV4
  signature included, against the fake AWS keys it was given, and answers with a
  federated token;
* ``POST /v1/projects/-/serviceAccounts/<sa>:generateAccessToken`` (service
  account impersonation) trades a federated token for a service-account access
  token. Only these access tokens are accepted by ``tests.rig.gcs.GcsFront``.

Tokens and secrets are never logged; rejection reasons name the check that
failed, never a credential.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import posixpath
import re
import secrets
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import Any

from .serving import RigHTTPServer, RigService

__all__ = [
    "DEFAULT_AUDIENCE",
    "DEFAULT_SERVICE_ACCOUNT",
    "GoogleTokenServer",
]

DEFAULT_AUDIENCE = (
    "//iam.googleapis.com/projects/123456/locations/global/"
    "workloadIdentityPools/pool/providers/aws"
)
DEFAULT_SERVICE_ACCOUNT = "gcs-sync@rig-project.iam.gserviceaccount.com"

AWS_SUBJECT_TOKEN_TYPE = "urn:ietf:params:aws:token-type:aws4_request"
TOKEN_EXCHANGE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
CREDENTIAL_SOURCE = {
    "environment_id": "aws1",
    "region_url": "http://169.254.169.254/latest/meta-data/placement/availability-zone",
    "url": "http://169.254.169.254/latest/meta-data/iam/security-credentials",
    "regional_cred_verification_url": (
        "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"
    ),
}

_MAX_CLOCK_SKEW = dt.timedelta(minutes=15)
_MAX_BODY = 1 << 20
_STS_HOST = re.compile(r"sts\.([a-z0-9-]+)\.amazonaws\.com")
_IAM_PATH = re.compile(r"/v1/projects/-/serviceAccounts/([^/:]+):generateAccessToken")
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]{64})"
)


class _Refused(Exception):
    """A request failed a check; the message is the (secret-free) reason."""


class GoogleTokenServer(RigService):
    """Google STS + IAM Credentials stand-in verifying AWS SigV4 subject tokens.

    ``aws_keys`` maps the AWS access key ids it trusts to their secret keys.
    Knobs (``refuse_sts``, ``refuse_impersonation``) may be flipped at any time.
    """

    def __init__(
        self,
        *,
        aws_keys: dict[str, str],
        audience: str = DEFAULT_AUDIENCE,
        service_account: str = DEFAULT_SERVICE_ACCOUNT,
        token_lifetime: int = 3600,
    ) -> None:
        self.aws_keys = dict(aws_keys)
        self.audience = audience
        self.service_account = service_account
        self.token_lifetime = token_lifetime
        self.sts_calls = 0
        self.iam_calls = 0
        self.issued_access_tokens: set[str] = set()
        # Every secret handed out or received (federated and access tokens issued, Signature= of
        # the subject tokens verified), under _lock; the no-leak check (tests/leaks.py) reads it.
        self.secrets_seen: set[str] = set()
        self.rejections: list[str] = []
        self.refuse_sts = False
        self.refuse_impersonation = False
        self._federated_tokens: set[str] = set()
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> GoogleTokenServer:
        self._serve(_TokenHandler, "google-token-server")
        return self

    @property
    def token_url(self) -> str:
        return f"{self.url}/v1/token"

    @property
    def impersonation_url(self) -> str:
        return (
            f"{self.url}/v1/projects/-/serviceAccounts/"
            f"{self.service_account}:generateAccessToken"
        )

    def reset(self) -> None:
        """Zero the counters, clear rejections and restore the knobs (tokens stay valid)."""
        with self._lock:
            self.sts_calls = 0
            self.iam_calls = 0
            self.rejections.clear()
            self.refuse_sts = False
            self.refuse_impersonation = False

    def credential_config(self, *, audience: str | None = None) -> dict[str, Any]:
        """An ``external_account`` credential configuration pointing at this server."""
        return {
            "type": "external_account",
            "audience": audience if audience is not None else self.audience,
            "subject_token_type": AWS_SUBJECT_TOKEN_TYPE,
            "token_url": self.token_url,
            "service_account_impersonation_url": self.impersonation_url,
            "credential_source": dict(CREDENTIAL_SOURCE),
        }

    # -- endpoints -----------------------------------------------------------------

    def _reject(self, reason: str) -> None:
        with self._lock:
            self.rejections.append(reason)

    def handle_sts(self, body: bytes) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.sts_calls += 1
        try:
            if self.refuse_sts:
                raise _Refused("refuse_sts is set")
            self._verify_exchange(_parse_form(body))
        except _Refused as exc:
            self._reject(f"STS: {exc}")
            return 400, {"error": "invalid_grant", "error_description": str(exc)}
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._federated_tokens.add(token)
            self.secrets_seen.add(token)
        return 200, {
            "access_token": token,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
        }

    def handle_iam(
        self, path: str, authorization: str | None, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.iam_calls += 1
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or token not in self._federated_tokens:
            return self._iam_error(401, "UNAUTHENTICATED", "missing or unknown federated token")
        if self.refuse_impersonation:
            return self._iam_error(403, "PERMISSION_DENIED", "refuse_impersonation is set")
        match = _IAM_PATH.fullmatch(path)
        requested = urllib.parse.unquote(match.group(1)) if match else ""
        if requested != self.service_account:
            return self._iam_error(
                403,
                "PERMISSION_DENIED",
                f"iam.serviceAccounts.getAccessToken denied on {requested!r}",
            )
        try:
            scope = json.loads(body).get("scope")
        except (ValueError, AttributeError):
            scope = None
        if not isinstance(scope, list) or not scope or not all(isinstance(s, str) for s in scope):
            return self._iam_error(400, "INVALID_ARGUMENT", "body needs a non-empty 'scope' list")
        access_token = "ya29." + secrets.token_urlsafe(32)
        expire = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=self.token_lifetime)
        with self._lock:
            self.issued_access_tokens.add(access_token)
            self.secrets_seen.add(access_token)
        return 200, {"accessToken": access_token, "expireTime": expire.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def _iam_error(self, code: int, status: str, message: str) -> tuple[int, dict[str, Any]]:
        self._reject(f"IAM: {message}")
        return code, {"error": {"code": code, "status": status, "message": message}}

    # -- verification --------------------------------------------------------------

    def _verify_exchange(self, form: dict[str, str]) -> None:
        expected = {
            "grant_type": TOKEN_EXCHANGE_GRANT_TYPE,
            "requested_token_type": ACCESS_TOKEN_TYPE,
            "subject_token_type": AWS_SUBJECT_TOKEN_TYPE,
        }
        for field, value in expected.items():
            if form.get(field) != value:
                raise _Refused(f"form field {field}={form.get(field)!r}, expected {value!r}")
        if form.get("audience") != self.audience:
            raise _Refused(f"audience {form.get('audience')!r} is not the configured audience")
        try:
            signed = json.loads(urllib.parse.unquote(form.get("subject_token", "")))
        except ValueError:
            raise _Refused("subject_token is not URL-quoted JSON") from None
        self._verify_signed_request(signed)

    def _verify_signed_request(self, signed: Any) -> None:
        """Check the serialized GetCallerIdentity request like Google STS would."""
        if not isinstance(signed, dict) or not isinstance(signed.get("headers"), list):
            raise _Refused("subject_token lacks url/method/headers")
        if signed.get("method") != "POST":
            raise _Refused(f"subject_token method {signed.get('method')!r}, expected 'POST'")
        url = signed.get("url")
        parts = urllib.parse.urlsplit(url if isinstance(url, str) else "")
        host_match = _STS_HOST.fullmatch(parts.hostname or "")
        query = sorted(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        if (
            parts.scheme != "https"
            or host_match is None
            or parts.port is not None
            or parts.path not in ("", "/")
            or query != [("Action", "GetCallerIdentity"), ("Version", "2011-06-15")]
        ):
            raise _Refused(f"subject_token url {url!r} is not a regional STS GetCallerIdentity URL")
        region = host_match.group(1)

        headers: dict[str, str] = {}
        for item in signed["headers"]:
            if not isinstance(item, dict) or not isinstance(item.get("key"), str):
                raise _Refused("subject_token header entry is not {key, value}")
            key = item["key"].lower()
            if key in headers:
                raise _Refused(f"subject_token header {key!r} repeated")
            headers[key] = str(item.get("value", ""))

        if headers.get("x-goog-cloud-target-resource") != self.audience:
            raise _Refused("x-goog-cloud-target-resource header does not equal the audience")
        if headers.get("host") != parts.hostname:
            raise _Refused("host header does not match the url")
        amz_date = headers.get("x-amz-date", "")
        try:
            signed_at = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
        except ValueError:
            raise _Refused(f"x-amz-date {amz_date!r} is missing or malformed") from None
        if abs(dt.datetime.now(dt.timezone.utc) - signed_at) > _MAX_CLOCK_SKEW:
            raise _Refused(f"x-amz-date {amz_date} is more than 15 minutes from now")

        auth = _AUTHORIZATION.fullmatch(headers.get("authorization", ""))
        if auth is None:
            raise _Refused("Authorization header is not AWS4-HMAC-SHA256")
        with self._lock:
            self.secrets_seen.add(auth.group("signature"))
        access_key, _, scope = auth.group("credential").partition("/")
        expected_scope = f"{amz_date[:8]}/{region}/sts/aws4_request"
        if scope != expected_scope:
            raise _Refused(f"credential scope {scope!r}, expected {expected_scope!r}")
        secret = self.aws_keys.get(access_key)
        if secret is None:
            raise _Refused("unknown AWS access key id")
        signed_names = auth.group("signed").split(";")
        if signed_names != sorted(set(signed_names)) or any(n != n.lower() for n in signed_names):
            raise _Refused("SignedHeaders is not a sorted list of lower-case names")
        required = {"host", "x-amz-date"} | ({"x-amz-security-token"} & headers.keys())
        if not required <= set(signed_names):
            raise _Refused(f"SignedHeaders must include {sorted(required)}")
        if not set(signed_names) <= headers.keys():
            raise _Refused("SignedHeaders names a header that is not present")

        canonical_request = "\n".join(
            [
                "POST",
                _canonical_uri(parts.path),
                _canonical_query(parts.query),
                "".join(f"{n}:{' '.join(headers[n].split())}\n" for n in signed_names),
                ";".join(signed_names),
                hashlib.sha256(str(signed.get("data") or "").encode()).hexdigest(),
            ]
        )
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                amz_date,
                scope,
                hashlib.sha256(canonical_request.encode()).hexdigest(),
            ]
        )
        key = ("AWS4" + secret).encode()
        for part in (amz_date[:8], region, "sts", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected_signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected_signature, auth.group("signature")):
            raise _Refused("AWS SigV4 signature does not match")


def _parse_form(body: bytes) -> dict[str, str]:
    try:
        pairs = urllib.parse.parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise _Refused("body is not application/x-www-form-urlencoded") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise _Refused(f"form field {key!r} repeated")
        form[key] = value
    return form


def _canonical_uri(path: str) -> str:
    normalized = posixpath.normpath(path) if path else "/"
    return urllib.parse.quote(normalized, safe="/-_.~")


def _canonical_query(query: str) -> str:
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    encoded = sorted(
        (urllib.parse.quote(k, safe="-_.~"), urllib.parse.quote(v, safe="-_.~")) for k, v in pairs
    )
    return "&".join(f"{k}={v}" for k, v in encoded)


class _TokenHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RigHTTPServer

    def do_POST(self) -> None:
        owner: GoogleTokenServer = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding") or not 0 <= length <= _MAX_BODY:
            self.close_connection = True
            self._send_json(413, {"error": {"code": 413, "message": "body too large or chunked"}})
            return
        body = self.rfile.read(length)
        path = urllib.parse.urlsplit(self.path).path
        if path == "/v1/token":
            status, payload = owner.handle_sts(body)
        elif _IAM_PATH.fullmatch(path):
            status, payload = owner.handle_iam(path, self.headers.get("Authorization"), body)
        else:
            status, payload = 404, {"error": {"code": 404, "message": "no such endpoint"}}
        self._send_json(status, payload)

    def do_GET(self) -> None:
        self._send_json(405, {"error": {"code": 405, "message": "use POST"}})

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silent: request lines could carry credentials."""

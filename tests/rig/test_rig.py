"""Tests of the rig itself: each stand-in must refuse what the real service refuses."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.client
import io
import json
import os
import pathlib
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import google.auth
import google.auth.aws
import google.auth.exceptions
import google.auth.transport.requests
import google_crc32c
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from google.api_core import exceptions as api_exceptions
from google.cloud import storage

from .faults import FaultPlan, FaultProxy
from .gcs import FakeGcsServer, GcsFront
from .google_tokens import GoogleTokenServer
from .s3 import AWS_ACCESS_KEY_ID, AWS_REGION, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, LocalS3

SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
OTHER_AUDIENCE = (
    "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/pool/providers/other"
)
BIG = 9 * 1024 * 1024 + 12345  # above google-cloud-storage's 8 MiB multipart limit: resumable


# -- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_server() -> Iterator[GoogleTokenServer]:
    with GoogleTokenServer(aws_keys={AWS_ACCESS_KEY_ID: AWS_SECRET_ACCESS_KEY}) as server:
        yield server


@pytest.fixture(scope="module")
def gcs_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcsServer]:
    with FakeGcsServer(tmp_path_factory.mktemp("fake-gcs")) as server:
        yield server


@pytest.fixture(scope="module")
def front(gcs_backend: FakeGcsServer, token_server: GoogleTokenServer) -> Iterator[GcsFront]:
    with GcsFront(gcs_backend.url, token_server) as server:
        yield server


@pytest.fixture(scope="module")
def local_s3() -> Iterator[LocalS3]:
    with LocalS3() as server:
        yield server


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lambda-like environment: AWS keys and region, no emulator shortcuts."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", AWS_SESSION_TOKEN)
    monkeypatch.setenv("AWS_REGION", AWS_REGION)
    for name in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def clean_servers(request: pytest.FixtureRequest) -> None:
    """Reset knobs and logs of the module's servers, where a test uses them."""
    for name in ("token_server", "front"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()


def make_credentials(config: dict[str, Any]) -> google.auth.aws.Credentials:
    # from_info, not google.auth.load_credentials_from_dict: the latter warns (deprecated).
    credentials = google.auth.aws.Credentials.from_info(config)
    return credentials.with_scopes([SCOPE])  # type: ignore[no-any-return]


def refresh(credentials: google.auth.aws.Credentials) -> None:
    credentials.refresh(google.auth.transport.requests.Request())


@pytest.fixture
def credentials(token_server: GoogleTokenServer) -> google.auth.aws.Credentials:
    return make_credentials(token_server.credential_config())


@pytest.fixture
def client(front: GcsFront, credentials: google.auth.aws.Credentials) -> storage.Client:
    return storage.Client(
        project="p", credentials=credentials, client_options={"api_endpoint": front.url}
    )


@pytest.fixture
def bucket_name(front: GcsFront) -> str:
    name = f"rig-{uuid.uuid4().hex[:12]}"
    front.create_bucket(name)
    return name


def post_form(url: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    data = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def botocore_subject_token(audience: str, *, secret: str = AWS_SECRET_ACCESS_KEY) -> dict[str, Any]:
    """A GetCallerIdentity request signed by botocore (an independent SigV4 signer)."""
    url = f"https://sts.{AWS_REGION}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"
    request = AWSRequest(method="POST", url=url, headers={"x-goog-cloud-target-resource": audience})
    credentials = BotoCredentials(AWS_ACCESS_KEY_ID, secret, AWS_SESSION_TOKEN)
    SigV4Auth(credentials, "sts", AWS_REGION).add_auth(request)
    headers = [{"key": key, "value": value} for key, value in request.headers.items()]
    headers.append({"key": "host", "value": f"sts.{AWS_REGION}.amazonaws.com"})
    return {"url": url, "method": "POST", "headers": headers}


def sts_form(token_server: GoogleTokenServer, subject: dict[str, Any]) -> dict[str, str]:
    return {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "audience": token_server.audience,
        "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "scope": "https://www.googleapis.com/auth/cloud-platform",
        "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
        "subject_token": urllib.parse.quote(json.dumps(subject)),
    }


# -- GoogleTokenServer ---------------------------------------------------------------


def test_refresh_obtains_impersonated_token(
    token_server: GoogleTokenServer, credentials: google.auth.aws.Credentials
) -> None:
    refresh(credentials)

    assert credentials.token in token_server.issued_access_tokens
    assert credentials.token.startswith("ya29.")
    assert token_server.sts_calls == 1
    assert token_server.iam_calls == 1
    assert token_server.rejections == []
    assert credentials.expiry > dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def test_wrong_secret_is_refused(
    token_server: GoogleTokenServer,
    credentials: google.auth.aws.Credentials,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")

    with pytest.raises(google.auth.exceptions.OAuthError, match="invalid_grant"):
        refresh(credentials)

    assert token_server.sts_calls == 1
    assert token_server.iam_calls == 0
    assert len(token_server.rejections) == 1
    assert "signature" in token_server.rejections[0]


def test_unknown_access_key_is_refused(
    token_server: GoogleTokenServer,
    credentials: google.auth.aws.Credentials,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWN000000000")

    with pytest.raises(google.auth.exceptions.GoogleAuthError):
        refresh(credentials)

    assert token_server.rejections == ["STS: unknown AWS access key id"]


def test_wrong_audience_is_refused(token_server: GoogleTokenServer) -> None:
    credentials = make_credentials(token_server.credential_config(audience=OTHER_AUDIENCE))

    with pytest.raises(google.auth.exceptions.GoogleAuthError):
        refresh(credentials)

    assert token_server.iam_calls == 0
    assert len(token_server.rejections) == 1
    assert "audience" in token_server.rejections[0]


def test_stale_signature_is_refused(
    token_server: GoogleTokenServer,
    credentials: google.auth.aws.Credentials,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_utcnow = google.auth.aws._helpers.utcnow
    monkeypatch.setattr(
        google.auth.aws._helpers, "utcnow", lambda: real_utcnow() - dt.timedelta(minutes=20)
    )

    with pytest.raises(google.auth.exceptions.GoogleAuthError):
        refresh(credentials)

    assert len(token_server.rejections) == 1
    assert "15 minutes" in token_server.rejections[0]


@pytest.mark.parametrize(
    ("knob", "sts_calls", "iam_calls"),
    [("refuse_sts", 1, 0), ("refuse_impersonation", 1, 1)],
)
def test_refusal_knobs_fail_refresh(
    token_server: GoogleTokenServer,
    credentials: google.auth.aws.Credentials,
    knob: str,
    sts_calls: int,
    iam_calls: int,
) -> None:
    setattr(token_server, knob, True)

    with pytest.raises(google.auth.exceptions.GoogleAuthError):
        refresh(credentials)

    assert (token_server.sts_calls, token_server.iam_calls) == (sts_calls, iam_calls)
    assert knob in token_server.rejections[0]
    token_server.reset()
    assert not getattr(token_server, knob)
    refresh(credentials)
    assert credentials.token in token_server.issued_access_tokens


def test_botocore_signed_subject_token_agrees(token_server: GoogleTokenServer) -> None:
    """An independent SigV4 signer (botocore, which also signs the target header) passes."""
    status, answer = post_form(
        token_server.token_url, sts_form(token_server, botocore_subject_token(token_server.audience))
    )
    assert status == 200, token_server.rejections
    assert answer["token_type"] == "Bearer"
    assert answer["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert answer["expires_in"] == token_server.token_lifetime

    tampered = botocore_subject_token(token_server.audience)
    for header in tampered["headers"]:
        if header["key"].lower() == "x-amz-security-token":
            header["value"] += "x"  # signed header changed after signing
    status, answer = post_form(token_server.token_url, sts_form(token_server, tampered))
    assert (status, answer["error"]) == (400, "invalid_grant")
    assert token_server.rejections == ["STS: AWS SigV4 signature does not match"]


def test_subject_token_for_another_target_is_refused(token_server: GoogleTokenServer) -> None:
    subject = botocore_subject_token(OTHER_AUDIENCE)  # form audience right, signed header wrong
    status, _ = post_form(token_server.token_url, sts_form(token_server, subject))
    assert status == 400
    assert "x-goog-cloud-target-resource" in token_server.rejections[0]


def test_impersonation_needs_a_federated_token(token_server: GoogleTokenServer) -> None:
    request = urllib.request.Request(
        token_server.impersonation_url,
        data=json.dumps({"scope": [SCOPE]}).encode(),
        headers={"Authorization": "Bearer forged", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 401
    assert json.load(raised.value)["error"]["status"] == "UNAUTHENTICATED"
    assert token_server.iam_calls == 1
    assert token_server.rejections == ["IAM: missing or unknown federated token"]


def test_impersonation_of_another_service_account_is_refused(
    token_server: GoogleTokenServer,
) -> None:
    _, answer = post_form(
        token_server.token_url, sts_form(token_server, botocore_subject_token(token_server.audience))
    )
    other = token_server.impersonation_url.replace(
        token_server.service_account, "other@x.iam.gserviceaccount.com"
    )
    request = urllib.request.Request(
        other,
        data=json.dumps({"scope": [SCOPE]}).encode(),
        headers={"Authorization": f"Bearer {answer['access_token']}"},
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 403
    assert json.load(raised.value)["error"]["status"] == "PERMISSION_DENIED"


# -- GcsFront + FakeGcsServer ------------------------------------------------------------


def test_upload_and_download_through_front(
    front: GcsFront,
    gcs_backend: FakeGcsServer,
    token_server: GoogleTokenServer,
    credentials: google.auth.aws.Credentials,
    client: storage.Client,
    bucket_name: str,
) -> None:
    # Refresh up front: a fresh credentials object used by the client's first call may
    # be refreshed twice at once (google-cloud-storage's background bucket lookup races it).
    refresh(credentials)
    bucket = client.bucket(bucket_name)
    small = bucket.blob("dir/small file+1.txt")
    small.upload_from_string(b"hello rig", content_type="text/plain; charset=utf-8")
    big_data = os.urandom(BIG)
    big = bucket.blob("big.bin")
    assert big.chunk_size is None
    big.upload_from_string(big_data, content_type="application/octet-stream")

    # Object JSON from the backend names the front, so media links stay behind it.
    assert big.media_link is not None and big.media_link.startswith(front.url)
    fetched = bucket.get_blob("big.bin")
    assert fetched is not None and fetched.size == BIG
    assert fetched.download_as_bytes() == big_data
    assert bucket.blob("dir/small file+1.txt").download_as_bytes() == b"hello rig"

    assert gcs_backend.read_object(bucket_name, "big.bin") == big_data
    metadata = gcs_backend.object_metadata(bucket_name, "dir/small file+1.txt")
    assert metadata is not None and metadata["contentType"] == "text/plain; charset=utf-8"

    upload_path = f"/upload/storage/v1/b/{bucket_name}/o"
    assert ("POST", upload_path) in front.requests  # multipart, and resumable initiation
    assert ("PUT", upload_path) in front.requests  # resumable session, through the front
    assert ("GET", f"/download/storage/v1/b/{bucket_name}/o/big.bin") in front.requests
    big.delete()  # 204 No Content relayed
    assert not bucket.blob("big.bin").exists()
    assert gcs_backend.object_metadata(bucket_name, "big.bin") is None
    assert front.unauthorized == []
    assert (token_server.sts_calls, token_server.iam_calls) == (1, 1)  # one token, reused


def test_anonymous_requests_are_refused(front: GcsFront, bucket_name: str) -> None:
    path = f"/storage/v1/b/{bucket_name}/o"
    for headers in ({}, {"Authorization": "Bearer ya29.forged"}):
        request = urllib.request.Request(front.url + path, headers=headers)
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=10)
        assert raised.value.code == 401
        assert json.load(raised.value)["error"]["errors"][0]["reason"] == "required"
    assert front.unauthorized == [f"GET {path}", f"GET {path}"]


def test_chunked_request_body_is_streamed(
    front: GcsFront,
    gcs_backend: FakeGcsServer,
    credentials: google.auth.aws.Credentials,
    bucket_name: str,
) -> None:
    refresh(credentials)
    pieces = [os.urandom(700_001) for _ in range(5)]
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(front.url).netloc, timeout=30)
    try:
        for name in ("chunked-1", "chunked-2"):  # two requests on one keep-alive connection
            conn.request(
                "POST",
                f"/upload/storage/v1/b/{bucket_name}/o?uploadType=media&name={name}",
                body=iter(pieces),
                headers={"Authorization": f"Bearer {credentials.token}", "Content-Type": "application/x-rig"},
                encode_chunked=True,
            )
            response = conn.getresponse()
            answer = json.loads(response.read())
            assert response.status == 200, answer
            assert answer["size"] == str(sum(map(len, pieces)))
    finally:
        conn.close()
    assert gcs_backend.read_object(bucket_name, "chunked-2") == b"".join(pieces)


def test_resumable_upload_honours_if_generation_match(
    front: GcsFront, gcs_backend: FakeGcsServer, client: storage.Client, bucket_name: str
) -> None:
    bucket = client.bucket(bucket_name)
    bucket.blob("target").upload_from_string(b"first")
    generation = gcs_backend.object_metadata(bucket_name, "target")["generation"]  # type: ignore[index]

    # Baseline: the backend itself enforces preconditions on (small) multipart uploads.
    with pytest.raises(api_exceptions.PreconditionFailed):
        bucket.blob("target").upload_from_string(b"second", if_generation_match=0)
    # Resumable: only the front enforces it, at initiation.
    with pytest.raises(api_exceptions.PreconditionFailed):
        bucket.blob("target").upload_from_string(os.urandom(BIG), if_generation_match=0)
    with pytest.raises(api_exceptions.PreconditionFailed):
        bucket.blob("target").upload_from_string(os.urandom(BIG), if_generation_match=int(generation) + 1)
    assert gcs_backend.read_object(bucket_name, "target") == b"first"

    data = os.urandom(BIG)
    bucket.blob("target").upload_from_string(data, if_generation_match=int(generation))
    assert gcs_backend.read_object(bucket_name, "target") == data
    bucket.blob("fresh").upload_from_string(data, if_generation_match=0)
    assert gcs_backend.read_object(bucket_name, "fresh") == data

    # Without the front's check, fake-gcs-server lets the resumable overwrite through.
    front.enforce_generation_match = False
    bucket.blob("fresh").upload_from_string(b"x" * BIG, if_generation_match=0)
    assert gcs_backend.read_object(bucket_name, "fresh") == b"x" * BIG


def test_deny_knob_surfaces_as_forbidden(
    front: GcsFront, client: storage.Client, bucket_name: str
) -> None:
    client.bucket(bucket_name).blob("kept").upload_from_string(b"kept")
    front.deny[bucket_name] = 403

    blob = client.bucket(bucket_name).blob("kept")
    with pytest.raises(api_exceptions.Forbidden):
        blob.upload_from_string(b"new")
    with pytest.raises(api_exceptions.Forbidden):
        blob.download_as_bytes()
    with pytest.raises(api_exceptions.Forbidden):
        blob.upload_from_string(os.urandom(BIG))

    # A server-side copy touches two buckets: denied whichever of them is.
    other = f"rig-{uuid.uuid4().hex[:12]}"
    front.create_bucket(other)
    theirs = client.bucket(other).blob("theirs")
    theirs.upload_from_string(b"theirs")
    with pytest.raises(api_exceptions.Forbidden):
        blob.rewrite(theirs)  # into the denied bucket
    front.deny = {other: 403}
    with pytest.raises(api_exceptions.Forbidden):
        client.bucket(bucket_name).blob("copy").rewrite(theirs)  # out of the denied bucket

    front.reset()
    assert blob.download_as_bytes() == b"kept"


def test_test_permissions_are_answered_from_the_knob(
    front: GcsFront, client: storage.Client, bucket_name: str
) -> None:
    asked = ["storage.objects.create", "storage.objects.delete", "storage.objects.get"]
    assert client.bucket(bucket_name).test_iam_permissions(asked) == asked

    front.permissions[bucket_name] = {"storage.objects.create", "storage.objects.get", "storage.buckets.get"}
    assert client.bucket(bucket_name).test_iam_permissions(asked) == [
        "storage.objects.create",
        "storage.objects.get",
    ]
    front.permissions[bucket_name] = set()
    assert client.bucket(bucket_name).test_iam_permissions(asked) == []
    assert ("GET", f"/storage/v1/b/{bucket_name}/iam/testPermissions") in front.requests


def test_backend_name_handling(gcs_backend: FakeGcsServer, tmp_path: pathlib.Path) -> None:
    """The filesystem backend maps names onto paths; the memory backend keeps them exact."""
    gcs_backend.create_bucket("fs-names")
    with FakeGcsServer(tmp_path, backend="memory") as memory:
        memory.create_bucket("mem-names")
        for server, bucket in ((gcs_backend, "fs-names"), (memory, "mem-names")):
            for name, body in (("folder/", b"marker"), ("a/b", b"1"), ("a//b", b"2")):
                query = urllib.parse.urlencode({"uploadType": "media", "name": name})
                request = urllib.request.Request(
                    f"{server.url}/upload/storage/v1/b/{bucket}/o?{query}", data=body, method="POST"
                )
                with urllib.request.urlopen(request, timeout=10) as response:
                    assert response.status == 200
        assert memory.read_object("mem-names", "folder/") == b"marker"
        assert memory.read_object("mem-names", "a/b") == b"1"
    # Known fake-gcs-server filesystem quirks (accepted with 200, then not what was sent):
    assert gcs_backend.object_metadata("fs-names", "folder/") is None
    assert gcs_backend.read_object("fs-names", "a/b") == b"2"


# -- LocalS3 ---------------------------------------------------------------------------


def test_local_s3_latency_delays_every_request(local_s3: LocalS3) -> None:
    s3 = local_s3.client()
    s3.create_bucket(Bucket="latency")
    s3.put_object(Bucket="latency", Key="k", Body=b"v")

    def timed() -> float:
        started = time.perf_counter()
        s3.head_object(Bucket="latency", Key="k")
        return time.perf_counter() - started

    assert min(timed() for _ in range(5)) < 0.2  # moto alone answers well under the delay below
    local_s3.latency_ms = 200
    try:
        assert all(timed() >= 0.2 for _ in range(3))
    finally:
        local_s3.latency_ms = 0
    assert min(timed() for _ in range(5)) < 0.2


def test_local_s3_round_trip(local_s3: LocalS3) -> None:
    s3 = local_s3.client()
    bucket = f"rig-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="a b/c+d.txt", Body=b"payload", ContentType="text/plain")

    obj = s3.get_object(Bucket=bucket, Key="a b/c+d.txt")
    assert obj["Body"].read() == b"payload"
    assert obj["ContentType"] == "text/plain"
    assert local_s3.url.startswith("http://127.0.0.1:")
    assert local_s3.aws_env()["AWS_ENDPOINT_URL_S3"] == local_s3.url

    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=bucket, Key="missing")


# -- GcsFront: declared checksums are checked as Cloud Storage checks them ------------------------


def crc32c_of(data: bytes) -> str:
    return base64.b64encode(struct.pack(">I", google_crc32c.value(data))).decode()


def md5_of(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


WRONG = {"crc32c": crc32c_of(b"other bytes"), "md5Hash": md5_of(b"other bytes")}
MESSAGE = {"crc32c": "Provided CRC32C", "md5Hash": "Provided MD5 hash"}


def upload_declaring(bucket: storage.Bucket, name: str, data: bytes, declared: dict[str, str],
                     chunk_size: int | None = None) -> storage.Blob:
    """Upload through the real client with ``declared`` checksums sent as they are (checksum=None:
    the client computes none of its own)."""
    blob = bucket.blob(name, chunk_size=chunk_size)
    blob.crc32c = declared.get("crc32c")
    blob.md5_hash = declared.get("md5Hash")
    blob.upload_from_file(io.BytesIO(data), size=len(data), checksum=None)
    return blob


@pytest.mark.parametrize("field", ["crc32c", "md5Hash"])
@pytest.mark.parametrize(
    ("path", "size", "chunk_size"),
    [("multipart", 300_000, None), ("resumable, one chunk", BIG, None),
     ("resumable, many chunks", 3 * 1024 * 1024 + 17, 1024 * 1024)],
)
def test_upload_with_a_wrong_declared_checksum_is_refused(
    front: GcsFront, gcs_backend: FakeGcsServer, client: storage.Client, bucket_name: str,
    field: str, path: str, size: int, chunk_size: int | None,
) -> None:
    bucket = client.bucket(bucket_name)
    data = os.urandom(size)
    bucket.blob("kept").upload_from_string(b"the object before")

    for name in ("new", "kept"):
        with pytest.raises(api_exceptions.BadRequest) as raised:
            upload_declaring(bucket, name, data, {field: WRONG[field]}, chunk_size)
        error = raised.value.response.json()["error"]
        assert error["code"] == 400 and error["errors"][0]["reason"] == "invalid"
        assert error["message"].startswith(f'{MESSAGE[field]} "{WRONG[field]}" doesn\'t match calculated')
    assert gcs_backend.object_metadata(bucket_name, "new") is None  # nothing created
    assert gcs_backend.read_object(bucket_name, "kept") == b"the object before"  # nothing changed
    assert len(front.checksum_refusals) == 2

    right = {"crc32c": crc32c_of(data), "md5Hash": md5_of(data)}
    upload_declaring(bucket, "new", data, right, chunk_size)
    upload_declaring(bucket, "kept", data, {field: right[field]}, chunk_size)
    for name in ("new", "kept"):
        metadata = gcs_backend.object_metadata(bucket_name, name)
        assert metadata is not None and (metadata["crc32c"], metadata["md5Hash"]) == (right["crc32c"], right["md5Hash"])
        assert gcs_backend.read_object(bucket_name, name) == data
    assert front.unverified == [] and len(front.checksum_refusals) == 2

    # The refusal is the front's: fake-gcs-server itself stores bytes that contradict their checksum.
    front.check_checksums = False
    upload_declaring(bucket, "unchecked", data, {field: WRONG[field]}, chunk_size)
    assert gcs_backend.read_object(bucket_name, "unchecked") == data


def test_resumable_session_checks_every_byte_once_whatever_the_client_resends(
    front: GcsFront, gcs_backend: FakeGcsServer, credentials: google.auth.aws.Credentials, bucket_name: str
) -> None:
    """Raw requests: a resent chunk and an overlapping one count each byte once; a final chunk whose
    bytes differ from the declared checksums is refused and the session stays usable; a wrong
    ``X-Goog-Hash`` on the final chunk is refused too."""
    refresh(credentials)
    KIB = 256 * 1024
    data = os.urandom(3 * KIB + 1000)
    auth = {"Authorization": f"Bearer {credentials.token}"}
    netloc = urllib.parse.urlsplit(front.url).netloc

    def call(method: str, url: str, body: bytes = b"", **headers: str) -> tuple[int, dict[str, str], bytes]:
        parts = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(netloc, timeout=30)
        try:
            conn.request(method, f"{parts.path}?{parts.query}", body=body,
                         headers={**auth, **{k.replace("_", "-"): v for k, v in headers.items()}})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def start(name: str) -> str:
        resource = {"name": name, "crc32c": crc32c_of(data), "md5Hash": md5_of(data)}
        status, headers, _ = call("POST", f"{front.url}/upload/storage/v1/b/{bucket_name}/o?uploadType=resumable",
                                  json.dumps(resource).encode(), Content_Type="application/json")
        assert status == 200
        return headers["Location"]

    def chunk(session: str, first: int, end: int, body: bytes | None = None, total: str = "*",
              **headers: str) -> tuple[int, dict[str, str], bytes]:
        return call("PUT", session, data[first:end] if body is None else body,
                    Content_Range=f"bytes {first}-{end - 1}/{total}", **headers)

    session = start("resent")
    assert chunk(session, 0, KIB)[1]["Range"] == f"bytes=0-{KIB - 1}"
    assert chunk(session, 0, KIB)[1]["Range"] == f"bytes=0-{KIB - 1}"  # the same chunk again
    status, headers, _ = chunk(session, KIB // 2, 2 * KIB)  # overlaps what is persisted
    assert status == 308, headers
    persisted = int(headers["Range"].rsplit("-", 1)[1]) + 1
    altered = bytearray(data[persisted:])
    altered[-1] ^= 0xFF
    status, _, answer = chunk(session, persisted, len(data), bytes(altered), str(len(data)))
    assert status == 400 and b"Provided CRC32C" in answer, answer
    assert gcs_backend.object_metadata(bucket_name, "resent") is None
    status, headers, _ = call("PUT", session, Content_Range="bytes */*")  # the session lives on
    assert (status, headers.get("Range")) == (308, f"bytes=0-{persisted - 1}")
    status, _, answer = chunk(session, persisted, len(data), total=str(len(data)))
    assert status == 200, answer
    assert gcs_backend.read_object(bucket_name, "resent") == data

    session = start("hash-header")
    assert chunk(session, 0, KIB)[0] == 308
    status, _, answer = chunk(session, KIB, len(data), total=str(len(data)), X_Goog_Hash=f"crc32c={WRONG['crc32c']}")
    assert status == 400 and json.loads(answer)["error"]["message"].startswith(f'Provided CRC32C "{WRONG["crc32c"]}"')
    assert gcs_backend.object_metadata(bucket_name, "hash-header") is None
    status, _, _ = chunk(session, KIB, len(data), total=str(len(data)), X_Goog_Hash=f"crc32c={crc32c_of(data)}")
    assert status == 200 and gcs_backend.read_object(bucket_name, "hash-header") == data
    assert front.unverified == [] and len(front.checksum_refusals) == 2


# -- FaultProxy: bytes altered in transit ---------------------------------------------------------


def test_corrupt_fault_alters_one_byte_and_keeps_the_length(
    front: GcsFront, gcs_backend: FakeGcsServer, credentials: google.auth.aws.Credentials, bucket_name: str
) -> None:
    refresh(credentials)
    data = os.urandom(200_001)
    auth = {"Authorization": f"Bearer {credentials.token}"}

    def call(proxy: FaultProxy, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(urllib.parse.urlsplit(proxy.url).netloc, timeout=30)
        try:
            conn.request(method, path, body=body, headers={**auth, "Content-Type": "application/octet-stream"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    # The request body: what the backend stores is the upload with one byte altered.
    upload = f"/upload/storage/v1/b/{bucket_name}/o?uploadType=media&name=altered"
    with FaultProxy(front.url, seed=3, plan=FaultPlan(corrupt=1.0, corrupt_body="request", max_faults=1)) as proxy:
        assert call(proxy, "POST", upload, data)[0] == 200
        assert call(proxy, "POST", upload.replace("altered", "intact"), data)[0] == 200  # max_faults=1
    stored = gcs_backend.read_object(bucket_name, "altered")
    assert len(stored) == len(data) and stored != data
    assert [i for i in range(len(data)) if stored[i] != data[i]] == [proxy.corruptions[0][3]]
    assert gcs_backend.read_object(bucket_name, "intact") == data
    assert proxy.injected == {"corrupt_request": 1} and "corrupt_request=1" in proxy.summary()

    # The response body: a download arrives whole, one byte wrong; the stored object is intact.
    media = f"/download/storage/v1/b/{bucket_name}/o/intact?alt=media"
    with FaultProxy(front.url, seed=4, plan=FaultPlan(corrupt=1.0, max_faults=1,
                                                      match=lambda m, p: "alt=media" in p)) as proxy:
        status, received = call(proxy, "GET", media)
    assert status == 200 and len(received) == len(data) and received != data
    assert sum(a != b for a, b in zip(received, data)) == 1
    assert proxy.injected == {"corrupt_response": 1}
    assert gcs_backend.read_object(bucket_name, "intact") == data


def test_an_upload_altered_in_transit_is_refused_by_its_declared_checksum(
    front: GcsFront, gcs_backend: FakeGcsServer, credentials: google.auth.aws.Credentials, bucket_name: str
) -> None:
    """The two together: the copier's declared CRC32C / MD5 make Cloud Storage refuse altered bytes."""
    data = os.urandom(500_000)
    plan = FaultPlan(corrupt=1.0, corrupt_body="request", max_faults=1,
                     match=lambda method, path: method == "POST" and path.startswith("/upload/"))
    with FaultProxy(front.url, seed=5, plan=plan) as proxy:
        client = storage.Client(project="p", credentials=credentials, client_options={"api_endpoint": proxy.url})
        bucket = client.bucket(bucket_name)
        with pytest.raises(api_exceptions.BadRequest):
            upload_declaring(bucket, "declared", data, {"crc32c": crc32c_of(data), "md5Hash": md5_of(data)})
        assert gcs_backend.object_metadata(bucket_name, "declared") is None
        assert proxy.injected == {"corrupt_request": 1} and len(front.checksum_refusals) == 1
        upload_declaring(bucket, "declared", data, {"crc32c": crc32c_of(data), "md5Hash": md5_of(data)})
    assert gcs_backend.read_object(bucket_name, "declared") == data


def test_fault_plan_schedule_is_unchanged_by_the_corrupt_kind() -> None:
    """Seeds reproduce the runs they reproduced before ``corrupt`` existed: it draws nothing more."""
    def schedule(plan: FaultPlan) -> list[str | None]:
        proxy = FaultProxy("http://127.0.0.1:9", seed=77, plan=plan)
        return [proxy._decide("PUT", "/x", True).kind for _ in range(200)]

    base = dict(status=0.1, reset_response=0.1, drop_request=0.1, stall=0.1, max_faults=1000)
    without = schedule(FaultPlan(**base))
    with_corrupt = schedule(FaultPlan(**base, corrupt=0.2))
    assert with_corrupt.count("corrupt") > 10 and without.count(None) > 10
    # Every decision is the same, except that some requests left alone before are now corrupted.
    assert all(b == a or (a, b) == (None, "corrupt") for a, b in zip(without, with_corrupt))
    with pytest.raises(ValueError):
        FaultPlan(corrupt=0.5, corrupt_body="sideways")  # type: ignore[arg-type]


# -- GcsFront: preconditions of server-side copies --------------------------------------------------


def test_rewrite_honours_target_and_source_preconditions(
    front: GcsFront, gcs_backend: FakeGcsServer, client: storage.Client, bucket_name: str
) -> None:
    other = f"rig-{uuid.uuid4().hex[:12]}"
    front.create_bucket(other)
    source = client.bucket(bucket_name).blob("src")
    source.upload_from_string(b"source bytes", content_type="text/plain")
    source.reload()
    target = client.bucket(other).blob("dst")
    target.upload_from_string(b"what the target held")
    generation = int(gcs_backend.object_metadata(other, "dst")["generation"])  # type: ignore[index]

    refused = [
        dict(if_generation_match=0),  # "only if absent", and the target exists
        dict(if_generation_match=generation + 1),
        dict(if_metageneration_match=7),
        dict(if_source_generation_match=int(source.generation) + 1),
        dict(if_source_metageneration_match=7),
    ]
    for preconditions in refused:
        with pytest.raises(api_exceptions.PreconditionFailed) as raised:
            target.rewrite(source, **preconditions)
        assert raised.value.errors[0]["reason"] == "conditionNotMet", preconditions
    assert gcs_backend.read_object(other, "dst") == b"what the target held"

    token, written, total = target.rewrite(source, if_generation_match=generation,
                                           if_source_generation_match=int(source.generation))
    assert (token, written, total) == (None, 12, 12)  # done in one call: the rewrite response's shape
    assert gcs_backend.read_object(other, "dst") == b"source bytes"
    client.bucket(other).blob("fresh").rewrite(source, if_generation_match=0)
    assert gcs_backend.read_object(other, "fresh") == b"source bytes"

    # The refusals are the front's: fake-gcs-server rewrites whatever the preconditions say.
    front.enforce_generation_match = False
    client.bucket(other).blob("fresh").rewrite(source, if_generation_match=0, if_source_generation_match=1)


def test_compose_honours_target_and_source_preconditions(
    front: GcsFront, gcs_backend: FakeGcsServer, client: storage.Client, bucket_name: str
) -> None:
    bucket = client.bucket(bucket_name)
    parts = [bucket.blob("p1"), bucket.blob("p2")]
    for part, data in zip(parts, (b"one", b"two")):
        part.upload_from_string(data)
        part.reload()
    generations = [int(part.generation) for part in parts]
    composed = bucket.blob("composed")
    composed.upload_from_string(b"before")
    current = int(gcs_backend.object_metadata(bucket_name, "composed")["generation"])  # type: ignore[index]

    for preconditions in (dict(if_generation_match=0), dict(if_generation_match=current + 1),
                          dict(if_source_generation_match=[generations[0], generations[1] + 1])):
        with pytest.raises(api_exceptions.PreconditionFailed):
            composed.compose(parts, **preconditions)
    assert gcs_backend.read_object(bucket_name, "composed") == b"before"

    composed.compose(parts, if_generation_match=current, if_source_generation_match=generations)
    assert gcs_backend.read_object(bucket_name, "composed") == b"onetwo"

    front.enforce_generation_match = False
    composed.compose(parts, if_generation_match=0)  # the backend alone lets it through


# -- GcsFront: names Cloud Storage cannot hold -----------------------------------------------------

BAD_NAMES = ["a\nb", "a\rb", ".", "..", ".well-known/acme-challenge/token", "x" * 1025, "é" * 513]


@pytest.mark.parametrize("name", BAD_NAMES, ids=["lf", "cr", "dot", "dotdot", "acme", "1025", "1026-utf8"])
def test_a_name_cloud_storage_refuses_is_refused(
    front: GcsFront, gcs_backend: FakeGcsServer, client: storage.Client, bucket_name: str, name: str
) -> None:
    bucket = client.bucket(bucket_name)
    bucket.blob("src").upload_from_string(b"s")
    uploads = [
        lambda: bucket.blob(name).upload_from_string(b"small"),  # multipart, the name in the metadata part
        lambda: bucket.blob(name).upload_from_string(os.urandom(BIG)),  # resumable
        lambda: bucket.blob(name).rewrite(bucket.blob("src")),
        lambda: bucket.blob(name).compose([bucket.blob("src")]),
    ]
    if name in (".", ".."):
        del uploads[2:]  # in a URL path the HTTP client resolves them away before sending
    for upload in uploads:
        with pytest.raises(api_exceptions.BadRequest) as raised:
            upload()
        assert "The object name is not valid" in raised.value.message
    assert [o["name"] for o in gcs_backend.list_objects(bucket_name)] == ["src"]

    if name not in ("a\nb", ".well-known/acme-challenge/token"):
        return  # the others the filesystem backend cannot store either (500 / 400)
    front.check_names = False  # fake-gcs-server itself stores it
    bucket.blob(name).upload_from_string(b"small")
    assert name in [o["name"] for o in gcs_backend.list_objects(bucket_name)]


def test_names_at_the_limits_are_accepted(client: storage.Client, gcs_backend: FakeGcsServer, bucket_name: str) -> None:
    # Path segments stay under 256 bytes: the filesystem backend cannot store longer ones.
    longest = ["/".join(["x" * 200] * 5) + "/" + "y" * 19, "/".join(["é" * 100] * 5) + "/" + "z" * 19]
    assert [len(n.encode()) for n in longest] == [1024, 1024]
    for name in (*longest, ".well-known/other", "..."):
        client.bucket(bucket_name).blob(name).upload_from_string(b"ok")
    assert len(gcs_backend.list_objects(bucket_name)) == 4

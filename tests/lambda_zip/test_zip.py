"""The deployment zip: right platform, right size, reproducible, clean, self-sufficient."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import stat
import struct
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from .conftest import REPO, TARGET_VERSION, ZIP_NAME, build, run_in_tree, unzip, zip_from

MiB = 1024 * 1024
TAG = TARGET_VERSION.replace(".", "")
EXT_SUFFIX = f".cpython-{TAG}-x86_64-linux-gnu.so"
# Highest glibc symbol version the runtime offers: python3.11 and older run on Amazon Linux 2
# (glibc 2.26), python3.12 and newer on Amazon Linux 2023 (glibc 2.34).
MAX_GLIBC_MINOR = 26 if sys.version_info[:2] <= (3, 11) else 34
SHARED_OBJECT = re.compile(r"\.so(\.\d+)*$")
VENDORED_LIB = re.compile(r"lib[A-Za-z0-9_.+-]+\.so(\.\d+)*")  # auditwheel's copies in *.libs/
GOOD_CONFIG = {
    "type": "external_account",
    "audience": "//iam.googleapis.com/projects/123456789012/locations/global/"
                "workloadIdentityPools/aws-pool/providers/aws-provider",
    "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
    "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/"
                                         "serviceAccounts/gcs-sync@example-project.iam.gserviceaccount.com"
                                         ":generateAccessToken",
    "token_url": "https://sts.googleapis.com/v1/token",
    "credential_source": {
        "environment_id": "aws1",
        "region_url": "http://169.254.169.254/latest/meta-data/placement/availability-zone",
        "url": "http://169.254.169.254/latest/meta-data/iam/security-credentials",
        "regional_cred_verification_url":
            "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
    },
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def names(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as zf:
        return zf.namelist()


def service_account_key() -> dict:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return {
        "type": "service_account", "project_id": "example-project", "private_key_id": "0" * 40,
        "private_key": pem, "client_email": "gcs-sync@example-project.iam.gserviceaccount.com",
        "client_id": "1" * 21, "token_uri": "https://oauth2.googleapis.com/token",
    }


# -- 1. platform ---------------------------------------------------------------------------------

def test_every_shared_object_is_x86_64_linux_for_the_target_python(lambda_zip):
    seen = []
    with zipfile.ZipFile(lambda_zip) as zf:
        for info in zf.infolist():
            name = info.filename
            if info.is_dir():
                continue
            with zf.open(info) as handle:
                head = handle.read(20)
            is_elf = head[:4] == b"\x7fELF"
            if not (is_elf or SHARED_OBJECT.search(name)):
                assert not name.endswith((".pyd", ".dll", ".dylib", ".exe")), name
                continue
            assert is_elf, f"{name}: named like a shared object but not an ELF file"
            assert head[4] == 2, f"{name}: not ELFCLASS64"
            assert head[5] == 1, f"{name}: not little-endian"
            (machine,) = struct.unpack_from("<H", head, 18)
            assert machine == 62, f"{name}: e_machine {machine}, not x86_64 (62)"
            path = PurePosixPath(name)
            if path.parent.name.endswith(".libs"):
                assert VENDORED_LIB.fullmatch(path.name), f"{name}: unexpected file in a .libs dir"
            else:
                assert name.endswith((EXT_SUFFIX, ".abi3.so")), (
                    f"{name}: an extension module must carry {EXT_SUFFIX} or .abi3.so")
            glibc = [int(m) for m in re.findall(rb"GLIBC_2\.(\d+)", zf.read(info))]
            assert max(glibc, default=0) <= MAX_GLIBC_MINOR, (
                f"{name} needs GLIBC_2.{max(glibc)}; the Lambda runtime has 2.{MAX_GLIBC_MINOR}")
            seen.append(name)
    # The pinned dependencies do ship compiled code (cryptography, protobuf, crc32c, ...).
    assert any(n.startswith("cryptography/") for n in seen), seen
    assert any(n.startswith("google_crc32c/") for n in seen), seen


# -- 2. size ---------------------------------------------------------------------------------------

def test_zip_is_under_the_console_upload_limit(lambda_zip, lambda_build):
    size = lambda_zip.stat().st_size
    assert size < 50 * MiB, f"{size / MiB:.1f} MiB"
    with zipfile.ZipFile(lambda_zip) as zf:
        unzipped = sum(i.file_size for i in zf.infolist())
    assert unzipped < 250 * MiB, f"{unzipped / MiB:.1f} MiB unzipped"
    # Output contract: one line on stdout, the absolute zip path; progress on stderr.
    assert lambda_build.stdout.splitlines() == [str(lambda_zip)]
    assert lambda_zip.name == ZIP_NAME


# -- 3. reproducible -------------------------------------------------------------------------------

def test_a_second_build_is_byte_identical(lambda_zip, tmp_path):
    # Another output dir, another temp dir (the tree path must not leak into .pyc files),
    # another umask and hash seed.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    result = build(tmp_path / "out", env={"TMPDIR": str(tmp), "PYTHONHASHSEED": "12345"},
                   umask=0o077, label="second build")
    again = zip_from(result)
    assert sha256(again) == sha256(lambda_zip)


def test_entries_are_normalised(lambda_zip):
    with zipfile.ZipFile(lambda_zip) as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    for info in infos:
        assert info.date_time == (1980, 1, 1, 0, 0, 0), info
        assert info.extra == b"", info
        assert info.create_system == 3, info
        mode = info.external_attr >> 16
        if info.is_dir():
            assert mode == stat.S_IFDIR | 0o755, info
        else:
            assert mode in (stat.S_IFREG | 0o644, stat.S_IFREG | 0o755), info
            assert info.compress_type == zipfile.ZIP_DEFLATED, info


# -- 4. contents -----------------------------------------------------------------------------------

def test_no_tests_no_stray_bytecode_and_every_pyc_is_unchecked_hash(lambda_zip):
    all_names = names(lambda_zip)
    files = {n for n in all_names if not n.endswith("/")}
    assert not [n for n in all_names if "tests" in PurePosixPath(n).parts]
    assert not [n for n in all_names if n.startswith("bin/")]
    pycs = [n for n in files if n.endswith(".pyc")]
    assert len(pycs) > 500
    with zipfile.ZipFile(lambda_zip) as zf:
        for name in pycs:
            path = PurePosixPath(name)
            assert path.parent.name == "__pycache__", f"{name}: .pyc outside __pycache__"
            module, _, tag = path.name[: -len(".pyc")].partition(".")
            assert tag == f"cpython-{TAG}", f"{name}: not a plain cpython-{TAG} .pyc"
            source = str(path.parent.parent / f"{module}.py").removeprefix("./")
            assert source in files, f"{name}: no {source} beside it"
            header = zf.read(name)[:16]
            assert header[:4] == importlib.util.MAGIC_NUMBER, f"{name}: wrong magic"
            (flags,) = struct.unpack("<I", header[4:8])
            assert flags == 0b01, f"{name}: flags {flags:#b}, not unchecked-hash"
    for name in files:
        parts = PurePosixPath(name).parts
        if "__pycache__" in parts:
            assert name.endswith(".pyc"), name
    # Every module was compiled, so nothing is compiled at each cold start.
    missing = [n for n in files if n.endswith(".py") and _pyc_of(n) not in files]
    assert not missing, missing[:20]


def _pyc_of(py: str) -> str:
    path = PurePosixPath(py)
    return str(path.parent / "__pycache__" / f"{path.stem}.cpython-{TAG}.pyc").removeprefix("./")


def test_function_code_is_exactly_the_sources(lambda_zip):
    expected = {"lambda_function.py"} | {
        p.relative_to(REPO).as_posix() for p in (REPO / "gcs_sync").rglob("*.py")
        if "__pycache__" not in p.parts and "tests" not in p.parts
    }
    with zipfile.ZipFile(lambda_zip) as zf:
        shipped = {n for n in zf.namelist()
                   if n == "lambda_function.py" or (n.startswith("gcs_sync/") and n.endswith(".py"))}
        assert shipped == expected
        for name in expected:
            assert zf.read(name) == (REPO / name).read_bytes(), name
        assert not [n for n in zf.namelist()
                    if n.startswith("gcs_sync/") and not n.endswith((".py", ".pyc", "/"))]
    assert "gcp-credentials.json" not in names(lambda_zip)


def test_pip_bookkeeping_is_stripped_and_metadata_kept(lambda_zip):
    all_names = names(lambda_zip)
    dist_infos = {n.split("/")[0] for n in all_names if n.split("/")[0].endswith(".dist-info")}
    assert len(dist_infos) >= 20
    for dist_info in dist_infos:
        assert f"{dist_info}/METADATA" in all_names, dist_info
        for pip_file in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json"):
            assert f"{dist_info}/{pip_file}" not in all_names


# -- 5. credentials --------------------------------------------------------------------------------

def test_credentials_are_checked_and_included(lambda_zip, tmp_path):
    config = tmp_path / "wif config.json"
    config.write_text(json.dumps(GOOD_CONFIG, indent=2))
    result = build(tmp_path / "out", "--credentials", str(config), label="with credentials")
    zipped = zip_from(result)
    assert "GOOGLE_APPLICATION_CREDENTIALS=gcp-credentials.json" in result.stderr
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in result.stdout
    with zipfile.ZipFile(zipped) as zf, zipfile.ZipFile(lambda_zip) as plain:
        assert zf.read("gcp-credentials.json") == config.read_bytes()
        assert zf.getinfo("gcp-credentials.json").external_attr >> 16 == stat.S_IFREG | 0o644
        # Otherwise the very same zip.
        crcs = {i.filename: i.CRC for i in zf.infolist() if i.filename != "gcp-credentials.json"}
        assert crcs == {i.filename: i.CRC for i in plain.infolist()}

    # A first invocation from the unzipped tree alone: settings, the credential configuration
    # (relative path, resolved against the code directory), clients, then an s3:TestEvent,
    # which needs no network.
    tree = unzip(zipped, tmp_path / "tree")
    env = {
        "GCS_DESTINATIONS": "gs://example-bucket/copies/",
        "GOOGLE_APPLICATION_CREDENTIALS": "gcp-credentials.json",
        "AWS_LAMBDA_FUNCTION_NAME": "gcs-sync", "LAMBDA_TASK_ROOT": str(tree),
        "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEEXAMPLE00",
        "AWS_SECRET_ACCESS_KEY": "example/secret/key", "AWS_SESSION_TOKEN": "example-token",
        "HOME": str(tmp_path),
    }
    result = run_in_tree(tree, FIRST_INVOCATION, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.splitlines()[-1])
    assert answer["result"]["objects"] == 0, answer
    assert answer["outside"] == [], answer
    # ... and it is the packaged file that made it work.
    result = run_in_tree(tree, FIRST_INVOCATION, env={**env, "GOOGLE_APPLICATION_CREDENTIALS": "missing.json"})
    assert result.returncode != 0
    assert "GOOGLE_APPLICATION_CREDENTIALS" in result.stderr


# Modules loaded from anywhere but the tree and the standard library (printed as JSON "outside").
OUTSIDE = """
import os, sysconfig
_tree = os.path.realpath(sys.path[0])
_stdlib = tuple(os.path.realpath(sysconfig.get_paths()[k]) + os.sep for k in ("stdlib", "platstdlib"))
outside = sorted(
    f"{name}: {m.__file__}" for name, m in list(sys.modules.items())
    if getattr(m, "__file__", None)
    and not os.path.realpath(m.__file__).startswith((_tree + os.sep,) + _stdlib))
"""

FIRST_INVOCATION = """
import json
import lambda_function
result = lambda_function.lambda_handler(
    {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "source-bucket"}, None)
""" + OUTSIDE + """
print(json.dumps({
    "result": result,
    "outside": outside,
}))
"""


def test_a_service_account_key_is_refused_without_the_opt_in(tmp_path):
    key = tmp_path / "key.json"
    key.write_text(json.dumps(service_account_key()))
    result = build(tmp_path / "out", "--credentials", str(key), label="refused key")
    assert result.returncode != 0
    assert "ALLOW_SERVICE_ACCOUNT_KEY" in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "out" / ZIP_NAME).exists()


def test_a_service_account_key_is_included_with_the_opt_in(tmp_path):
    key = tmp_path / "key.json"
    key.write_text(json.dumps(service_account_key()))
    result = build(tmp_path / "out", "--credentials", str(key),
                   env={"ALLOW_SERVICE_ACCOUNT_KEY": "true"}, label="key with opt-in")
    with zipfile.ZipFile(zip_from(result)) as zf:
        assert zf.read("gcp-credentials.json") == key.read_bytes()


@pytest.mark.parametrize("content, complaint", [
    ("{not json", "JSON"),
    (json.dumps(["external_account"]), "JSON object"),
    (json.dumps({**GOOD_CONFIG, "type": "authorized_user"}), "external_account"),
    (json.dumps({**GOOD_CONFIG, "audience": "//iam.googleapis.com/projects/1"}), "audience"),
    (json.dumps({**GOOD_CONFIG, "credential_source": {"environment_id": "aws1"}}), "credential_source"),
])
def test_a_malformed_credential_configuration_is_refused(tmp_path, content, complaint):
    config = tmp_path / "config.json"
    config.write_text(content)
    result = build(tmp_path / "out", "--credentials", str(config), label="refused config")
    assert result.returncode != 0
    assert complaint in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_bad_python_version_is_refused(tmp_path):
    result = build(tmp_path / "out", "--python", "3.11.7", label="refused version")
    assert result.returncode != 0 and "3.11" in result.stderr and result.stdout == ""


# -- 6. the tree alone -----------------------------------------------------------------------------

ISOLATED_IMPORT = """
import json
import lambda_function
import boto3, google.cloud.storage, google.auth.aws
from importlib import metadata
""" + OUTSIDE + """
print(json.dumps({
    "lambda_function": lambda_function.__file__,
    "boto3": boto3.__file__,
    "storage": google.cloud.storage.__file__,
    "outside": outside,
    "site_packages": [p for p in sys.path if "site-packages" in p],
    "versions": {d: metadata.version(d) for d in (
        "google-cloud-storage", "google-api-core", "google-auth", "opentelemetry-api", "boto3")},
}))
"""


def test_the_tree_alone_imports_the_function(lambda_tree):
    result = run_in_tree(lambda_tree, ISOLATED_IMPORT)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.splitlines()[-1])
    for key in ("lambda_function", "boto3", "storage"):
        assert Path(answer[key]).resolve().is_relative_to(lambda_tree.resolve()), answer
    assert answer["outside"] == [], answer["outside"]
    assert answer["site_packages"] == []
    assert answer["versions"]["google-cloud-storage"] == _pinned("google-cloud-storage")


def _pinned(name: str) -> str:
    match = re.search(rf"^{re.escape(name)}==(\S+)", (REPO / "requirements.txt").read_text(), re.M)
    assert match, name
    return match.group(1)


COPY_ONE_OBJECT = """
import json, sys
import lambda_function

class Context:
    aws_request_id = "zip-e2e"
    function_name = "gcs-sync-zip"
    def get_remaining_time_in_millis(self):
        return 60_000

event = json.loads(sys.argv[1]) if len(sys.argv) > 1 else json.loads(EVENT)
print(json.dumps(lambda_function.lambda_handler(event, Context())))
"""


def test_the_unzipped_tree_copies_an_object_end_to_end(lambda_tree, rig, tmp_path):
    """The zip as Lambda runs it: only the tree on the path, the real servers on the other side."""
    import uuid
    from urllib.parse import quote_plus

    source, dest = f"zip-src-{uuid.uuid4().hex[:8]}", f"zip-dst-{uuid.uuid4().hex[:8]}"
    rig.s3_client.create_bucket(Bucket=source)
    rig.gcs.create_bucket(dest)
    key, body = "from the zip/äöü+1.bin", bytes(range(256)) * 100
    put = rig.s3_client.put_object(Bucket=source, Key=key, Body=body, ContentType="application/x-test")
    credentials = tmp_path / "gcp-credentials.json"
    credentials.write_text(json.dumps(rig.tokens.credential_config()))
    staging = tmp_path / "staging"
    staging.mkdir()
    event = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": source},
        "object": {"key": quote_plus(key, safe="/"), "size": len(body), "eTag": put["ETag"].strip('"')}}}]}
    env = {**rig.s3.aws_env(), "GCS_DESTINATIONS": f"gs://{dest}/z/", "GCS_API_ENDPOINT": rig.front.url,
           "GOOGLE_APPLICATION_CREDENTIALS": str(credentials), "STAGING_DIR": str(staging),
           "AWS_LAMBDA_FUNCTION_NAME": "gcs-sync-zip", "LAMBDA_TASK_ROOT": str(lambda_tree),
           "LOG_LEVEL": "ERROR"}
    code = COPY_ONE_OBJECT.replace("json.loads(EVENT)", repr(json.dumps(event)).join(("json.loads(", ")")))
    result = run_in_tree(lambda_tree, code, env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["copied"] == 1 and summary["failed"] == 0, summary
    assert rig.gcs.read_object(dest, "z/" + key) == body
    assert rig.gcs.object_metadata(dest, "z/" + key)["contentType"] == "application/x-test"
    assert list(staging.iterdir()) == []
    assert not rig.front.unauthorized

"""The deployment zip: right platform, right size, reproducible, clean, self-sufficient."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from .conftest import BUILD_SH, REPO, TARGET_VERSION, ZIP_NAME, build, run_in_tree, unzip, zip_from

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

def test_credentials_are_checked_and_included(lambda_zip, build_cache, tmp_path):
    config = tmp_path / "wif config.json"
    config.write_text(json.dumps(GOOD_CONFIG, indent=2))
    result = build(tmp_path / "out", "--credentials", str(config), label="with credentials", cache=build_cache)
    zipped = zip_from(result)
    assert "reusing the dependencies" in result.stderr  # the session's cache, not a second install
    assert "GOOGLE_APPLICATION_CREDENTIALS=gcp-credentials.json" in result.stderr
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in result.stdout
    assert "ALLOW_SERVICE_ACCOUNT_KEY" not in result.stderr  # not a key: no opt-in to speak of
    with zipfile.ZipFile(zipped) as zf, zipfile.ZipFile(lambda_zip) as plain:
        assert zf.read("gcp-credentials.json") == config.read_bytes()
        assert zf.getinfo("gcp-credentials.json").external_attr >> 16 == stat.S_IFREG | 0o644
        # Otherwise the very same zip (which also shows a build from the cache equals a full one).
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


def test_a_service_account_key_is_included_with_the_opt_in(build_cache, tmp_path):
    key = tmp_path / "key.json"
    key.write_text(json.dumps(service_account_key()))
    result = build(tmp_path / "out", "--credentials", str(key),
                   env={"ALLOW_SERVICE_ACCOUNT_KEY": "true"}, label="key with opt-in", cache=build_cache)
    with zipfile.ZipFile(zip_from(result)) as zf:
        assert zf.read("gcp-credentials.json") == key.read_bytes()
    # The function refuses a key unless its own environment opts in too: the build says so.
    last = result.stderr.strip().splitlines()[-2]  # the line before "done in N s"
    assert "ALLOW_SERVICE_ACCOUNT_KEY=true on the function" in last, result.stderr[-2000:]
    assert "GOOGLE_APPLICATION_CREDENTIALS=gcp-credentials.json" in last


def test_an_audience_naming_the_project_id_is_refused_with_the_fix(tmp_path):
    config = tmp_path / "config.json"
    audience = ("//iam.googleapis.com/projects/my-project/locations/global/"
                "workloadIdentityPools/aws-pool/providers/aws-provider")
    config.write_text(json.dumps({**GOOD_CONFIG, "audience": audience}))
    result = build(tmp_path / "out", "--credentials", str(config), label="refused audience")
    assert result.returncode != 0
    assert "project number" in result.stderr and "'my-project'" in result.stderr
    assert "gcloud projects describe my-project --format='value(projectNumber)'" in result.stderr
    assert "installing" not in result.stderr  # refused before anything is downloaded
    assert result.stdout == ""
    assert not (tmp_path / "out" / ZIP_NAME).exists()


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


@pytest.mark.parametrize("version", ["3.9", "3.10", "3.15", "3.7"])
def test_an_unsupported_python_version_gets_one_clear_message(tmp_path, version):
    result = build(tmp_path / "out", "--python", version, label="unsupported version")
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"build.sh: error: Python {version} is not supported: the pinned dependencies (requirements.txt) "
        "have Lambda x86_64 wheels for Python 3.11, 3.12, 3.13, 3.14 only; use --python with one of them "
        "(default 3.11)"]
    assert not (tmp_path / "out" / ZIP_NAME).exists()


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


# -- 7. awscrt off the import path -----------------------------------------------------------------

LAZY_AWSCRT = """
import json
import lambda_function
import boto3, botocore.httpchecksum, google.cloud.storage
loaded_at_start = sorted(m for m in sys.modules if m.split(".")[0] in ("awscrt", "_awscrt"))
try:
    import awscrt
    importable = True
except ImportError:
    importable = False
sys.path.insert(0, sys.argv[1])
from awscrt import checksums
print(json.dumps({"loaded_at_start": loaded_at_start, "importable": importable,
                  "crc": checksums.crc64nvme(b"123456789"), "from": checksums.__file__}))
"""


def test_awscrt_is_shipped_under_lazy_and_not_on_the_import_path(lambda_zip):
    all_names = names(lambda_zip)
    top = {n.split("/")[0] for n in all_names}
    assert not [t for t in top if "awscrt" in t], top
    assert "lazy/awscrt/__init__.py" in all_names and "lazy/awscrt/checksums.py" in all_names
    assert [n for n in all_names if re.fullmatch(r"lazy/_awscrt\..*so", n)], "no _awscrt extension under lazy/"
    assert [n for n in all_names if re.fullmatch(r"lazy/awscrt-[^/]+\.dist-info/METADATA", n)]
    assert "lazy/awscrt/__pycache__/checksums.cpython-%s.pyc" % TAG in all_names
    # Nothing but awscrt goes under lazy/.
    assert [n for n in all_names if n.startswith("lazy/")
            and not re.match(r"lazy/(awscrt/|awscrt-[^/]+\.dist-info/|_awscrt\.[^/]*so$|$)", n)] == []


def test_importing_the_function_does_not_load_awscrt_and_lazy_loads_it(lambda_tree):
    code = LAZY_AWSCRT.replace("sys.argv[1]", repr(str(lambda_tree / "lazy")))
    result = run_in_tree(lambda_tree, code)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.splitlines()[-1])
    assert answer["loaded_at_start"] == [], answer
    assert answer["importable"] is False
    assert answer["crc"] == 0xAE8B14860A799888  # CRC-64/NVME check value of "123456789"
    assert Path(answer["from"]).resolve().is_relative_to((lambda_tree / "lazy").resolve())


FUNCTION_LOADS_AWSCRT = """
import json
import lambda_function
from gcs_sync import proof
before = "awscrt" in sys.modules
crc = proof.crc64nvme_function()(b"123456789", 0)
print(json.dumps({"before": before, "crc": crc, "after": "awscrt" in sys.modules}))
"""


@pytest.mark.parametrize("task_root", [True, False], ids=["LAMBDA_TASK_ROOT", "beside lambda_function"])
def test_the_function_finds_awscrt_under_lazy_when_it_needs_it(lambda_tree, task_root, tmp_path):
    env = {"LAMBDA_TASK_ROOT": str(lambda_tree)} if task_root else {"HOME": str(tmp_path)}
    result = run_in_tree(lambda_tree, FUNCTION_LOADS_AWSCRT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.splitlines()[-1])
    assert answer == {"before": False, "crc": 0xAE8B14860A799888, "after": True}


# -- 8. a zip that cannot be a working function is never written -----------------------------------

def _helper_source() -> str:
    """The packaging step of build.sh (its Python heredoc), run alone on crafted trees."""
    text = BUILD_SH.read_text()
    start = text.index("<<'PY'\n") + len("<<'PY'\n")
    return text[start:text.index("\nPY\n", start)]


def _zip_step(tree: Path, zip_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", "-c", _helper_source(), "zip", str(tree), str(zip_path)],
                          capture_output=True, text=True, timeout=120)


WORKING_TREE = ["lambda_function.py", "gcs_sync/__init__.py", "gcs_sync/handler.py", "boto3/__init__.py",
                "botocore/__init__.py", "google/cloud/storage/__init__.py", "google/auth/__init__.py",
                "lazy/awscrt/__init__.py"]


def _craft(root: Path, files: list[str]) -> Path:
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("# crafted\n")
    return root


def test_the_zip_step_writes_a_tree_that_can_work(tmp_path):
    """The control for the refusals below: the same step, the complete crafted tree, a zip."""
    zip_path = tmp_path / "out.zip"
    result = _zip_step(_craft(tmp_path / "tree", WORKING_TREE), zip_path)
    assert result.returncode == 0, result.stderr
    assert set(WORKING_TREE) <= set(names(zip_path))


@pytest.mark.parametrize("removed, complaint", [
    ("lambda_function.py", "lambda_function.py is missing"),
    ("gcs_sync", "gcs_sync/__init__.py is missing"),
    ("boto3", "boto3/__init__.py is missing"),
    ("botocore", "botocore/__init__.py is missing"),
    ("google/cloud/storage", "google/cloud/storage/__init__.py is missing"),
    ("google/auth", "google/auth/__init__.py is missing"),
    ("google", "google-auth"),
])
def test_the_zip_step_refuses_a_tree_missing_a_part(tmp_path, removed, complaint):
    tree = _craft(tmp_path / "tree", WORKING_TREE)
    target = tree / removed
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    zip_path = tmp_path / "out.zip"
    result = _zip_step(tree, zip_path)
    assert result.returncode != 0
    assert "cannot be a working function" in result.stderr and complaint in result.stderr, result.stderr
    assert not zip_path.exists() and os.listdir(tmp_path) == ["tree"]  # nor its temporary file


@pytest.mark.parametrize("how", ["vanished", "emptied"])
def test_the_zip_step_refuses_a_tree_gone_mid_build(tmp_path, how):
    tree = _craft(tmp_path / "tree", WORKING_TREE)
    shutil.rmtree(tree)
    if how == "emptied":
        tree.mkdir()
    zip_path = tmp_path / "out.zip"
    result = _zip_step(tree, zip_path)
    assert result.returncode != 0
    assert ("is gone" if how == "vanished" else "nothing was written (0 entries)") in result.stderr
    assert not zip_path.exists()


def test_the_zip_step_refuses_awscrt_on_the_import_path(tmp_path):
    tree = _craft(tmp_path / "tree", [n for n in WORKING_TREE if not n.startswith("lazy/")] + [
        "awscrt/__init__.py", "_awscrt.abi3.so"])
    zip_path = tmp_path / "out.zip"
    result = _zip_step(tree, zip_path)
    assert result.returncode != 0
    assert "awscrt is at the top of the zip" in result.stderr and "_awscrt.abi3.so" in result.stderr
    assert not zip_path.exists()


STUB_CHECKER = {
    "gcs_sync/__init__.py": "",
    "gcs_sync/config.py": "class Settings:\n    def __init__(self, **kwargs):\n        pass\n",
    "gcs_sync/auth.py": "def config_problems(info, settings):\n    return []\n",
}


@pytest.mark.parametrize("project, refused", [("my-project", True), ("123456789012", False)])
def test_the_build_checks_the_audience_itself(tmp_path, project, refused):
    """build.sh's own audience check, alone: gcs_sync's checker is replaced by one that finds
    nothing, so only the build's check can refuse a project ID (and it lets a number through)."""
    root = tmp_path / "root"
    for name, text in STUB_CHECKER.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    config = tmp_path / "config.json"
    audience = (f"//iam.googleapis.com/projects/{project}/locations/global/"
                "workloadIdentityPools/aws-pool/providers/aws-provider")
    config.write_text(json.dumps({**GOOD_CONFIG, "audience": audience}))
    result = subprocess.run([sys.executable, "-I", "-c", _helper_source(), "check-credentials", str(config),
                             "", str(root)], capture_output=True, text=True, timeout=120)
    if refused:
        assert result.returncode == 2, result.stderr
        assert f"gcloud projects describe {project} --format='value(projectNumber)'" in result.stderr
        assert "//iam.googleapis.com/projects/PROJECT_NUMBER/locations/global/" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert "valid Workload Identity Federation configuration" in result.stderr


def test_build_sh_fails_when_its_tree_lacks_the_dependencies(build_cache, tmp_path):
    """Through build.sh itself: a cache entry emptied under it gives a tree with the function's
    code and nothing else; the build fails, names what is missing and leaves no zip."""
    (entry,) = [p.name for p in build_cache.iterdir() if p.name.startswith("deps-")]
    emptied = tmp_path / "cache"
    (emptied / entry).mkdir(parents=True)
    result = build(tmp_path / "out", cache=emptied, label="emptied cache")
    assert result.returncode != 0 and result.stdout == ""
    assert "reusing the dependencies" in result.stderr
    assert "cannot be a working function" in result.stderr
    for missing in ("boto3/__init__.py", "botocore/__init__.py", "google/cloud/storage/__init__.py",
                    "google/auth/__init__.py"):
        assert f"{missing} is missing" in result.stderr, result.stderr
    assert "lambda_function.py is missing" not in result.stderr
    assert not (tmp_path / "out" / ZIP_NAME).exists()


# -- 8. botocore's data: the function's services only --------------------------------------------
CLIENTS = """
import json
import botocore.exceptions
from gcs_sync import aws
answer = {}
for service in aws.AWS_SERVICES:
    for region in ("us-east-1", "eu-west-3", "cn-north-1", "us-gov-west-1"):
        client = aws.client(service, region=region)
        answer[f"{service} {region}"] = [client.meta.endpoint_url, client.meta.service_model.signing_name,
                                         len(client.meta.service_model.operation_names)]
class Sent(Exception):
    pass


def stop(request, **kwargs):  # the request as it would be sent, not sent
    body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
    raise Sent([request.method, request.url, body, request.headers.get("Content-Type", b"").decode()])


calls = {"s3": ("get_object", {"Bucket": "b", "Key": "k/x y", "Range": "bytes=0-9"}),
         "sqs": ("send_message", {"QueueUrl": "https://sqs.us-east-1.amazonaws.com/1/q", "MessageBody": "x"}),
         "sts": ("get_caller_identity", {})}
for service, (operation, params) in calls.items():
    client = aws.client(service, region="us-east-1")
    client.meta.events.register("before-send", stop)
    try:
        getattr(client, operation)(**params)
    except Sent as sent:
        answer[f"{service} {operation}"] = sent.args[0]
try:
    aws.client("ec2", region="us-east-1")
    answer["ec2"] = "built"
except botocore.exceptions.UnknownServiceError as exc:
    answer["ec2"] = type(exc).__name__
print(json.dumps(answer))
"""


def test_botocore_keeps_only_the_models_the_function_calls(lambda_zip):
    from gcs_sync.aws import AWS_SERVICES

    all_names = names(lambda_zip)
    models = {n.split("/")[2] for n in all_names if n.startswith("botocore/data/") and n.count("/") >= 3}
    assert models == set(AWS_SERVICES), sorted(models)
    kept = [n for n in all_names if n.startswith("botocore/data/") and not n.endswith("/")]
    assert not [n for n in kept if n.endswith(".gz") or "/examples-" in n], kept
    for service in AWS_SERVICES:
        assert [n for n in kept if re.fullmatch(rf"botocore/data/{service}/[^/]+/service-2\.json", n)], service
    with zipfile.ZipFile(lambda_zip) as zf:
        endpoints = json.loads(zf.read("botocore/data/endpoints.json"))
        s3_model = json.loads(zf.read(next(n for n in kept if n.startswith("botocore/data/s3/")
                                           and n.endswith("/service-2.json"))))
    # The S3 model is botocore's own, less its documentation strings.
    import botocore.loaders

    whole = botocore.loaders.Loader().load_service_model("s3", "service-2")
    assert "documentation" in whole["operations"]["GetObject"]
    assert "documentation" not in s3_model["operations"]["GetObject"]
    assert s3_model["operations"] == {name: {k: v for k, v in op.items() if k not in ("documentation", "documentationUrl")}
                                      for name, op in whole["operations"].items()}
    assert s3_model["shapes"].keys() == whole["shapes"].keys()
    assert s3_model["shapes"]["GetObjectOutput"]["members"].keys() == whole["shapes"]["GetObjectOutput"]["members"].keys()
    assert {p["partition"] for p in endpoints["partitions"]} >= {"aws", "aws-cn", "aws-us-gov"}
    for partition in endpoints["partitions"]:
        assert set(partition["services"]) <= set(AWS_SERVICES), partition["partition"]
    assert set(endpoints["partitions"][0]["services"]) == set(AWS_SERVICES)


def test_the_pruned_models_build_the_same_clients_as_botocore_whole(lambda_tree):
    """Clients built from the zip's pruned, uncompressed data (and read into plain dicts) have the
    endpoints, signing names and operations of clients built from botocore's full data here; a
    service the zip has no model for is refused by name."""
    result = run_in_tree(lambda_tree, CLIENTS, env={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})
    assert result.returncode == 0, result.stderr[-3000:]
    pruned = json.loads(result.stdout.splitlines()[-1])
    whole = subprocess.run([sys.executable, "-c", CLIENTS.replace("aws.client(service, region=region)",
                                                                "boto3.session.Session().client(service, region_name=region)")
                            .replace('aws.client("ec2", region=', 'boto3.session.Session().client("ec2", region_name=')
                            .replace("from gcs_sync import aws", "import boto3.session\nfrom gcs_sync import aws")],
                           cwd=REPO, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})
    assert whole.returncode == 0, whole.stderr[-3000:]
    expected = json.loads(whole.stdout.splitlines()[-1])
    assert expected.pop("ec2") == "built" and pruned.pop("ec2") == "UnknownServiceError"
    assert pruned == expected
    assert pruned["sqs us-east-1"][0] == "https://sqs.us-east-1.amazonaws.com"
    assert pruned["sqs send_message"][2] == '{"QueueUrl": "https://sqs.us-east-1.amazonaws.com/1/q", "MessageBody": "x"}'


def test_the_function_imports_botocore_not_boto3(lambda_tree):
    """The function's clients are botocore's: boto3 and its transfer manager (s3transfer) are in the
    zip but not imported by the function's start or its S3 client; nor is what only some events need
    (slicing, the doctor, the audit, a sync, a redrive, the command line)."""
    code = ("import json, sys\nimport lambda_function\nfrom gcs_sync import runtime\n"
            "runtime.s3_client(10)\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'boto3', 's3transfer', 'botocore'}"
            " | {m for m in sys.modules if m in ('gcs_sync.slices', 'gcs_sync.doctor', 'gcs_sync.audit',"
            " 'gcs_sync.sync', 'gcs_sync.redrive', 'gcs_sync.cli')})))")
    result = run_in_tree(lambda_tree, code, env={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
                                                 "AWS_DEFAULT_REGION": "us-east-1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == ["botocore"]


GC_AFTER_INIT = """
import gc, json, sys
if sys.argv[-1] == "broken":
    sys.modules["gcs_sync.handler"] = None  # the init fails on its import
try:
    import lambda_function
    failed = None
except ImportError as exc:
    failed = type(exc).__name__
print(json.dumps({"enabled": gc.isenabled(), "frozen": gc.get_freeze_count(), "failed": failed}))
"""


@pytest.mark.parametrize("init", ["working", "broken"])
def test_the_collector_is_back_on_after_the_init_with_its_objects_frozen(lambda_tree, init):
    result = run_in_tree(lambda_tree, GC_AFTER_INIT.replace('sys.argv[-1]', repr(init)))
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.splitlines()[-1])
    assert answer["enabled"] is True
    assert answer["frozen"] > (50_000 if init == "working" else 1_000), answer
    assert answer["failed"] == (None if init == "working" else "ModuleNotFoundError")

"""Fixtures shared by every test folder: the local servers and the deployment zip, each made
once per session."""

from __future__ import annotations

pytest_plugins = ["tests.leaks"]  # the no-leak check over the whole session (tests/leaks.py)

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lambda_zip.building import BUILD_TIMES, build, unzip, zip_from

from tests.rig import DEFAULT_AUDIENCE, DEFAULT_SERVICE_ACCOUNT, FakeGcsServer, GcsFront, GoogleTokenServer, LocalS3
from tests.rig.s3 import AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY


@dataclass
class Rig:
    s3: LocalS3
    gcs: FakeGcsServer
    front: GcsFront
    tokens: GoogleTokenServer
    s3_client: Any


@pytest.fixture(scope="session")
def rig(tmp_path_factory) -> Rig:
    tokens = GoogleTokenServer(
        aws_keys={AWS_ACCESS_KEY_ID: AWS_SECRET_ACCESS_KEY},
        audience=DEFAULT_AUDIENCE,
        service_account=DEFAULT_SERVICE_ACCOUNT,
    ).start()
    # The memory backend keeps names the filesystem one cannot (a trailing '/', '//', '.').
    gcs = FakeGcsServer(tmp_path_factory.mktemp("fake-gcs"), backend="memory").start()
    front = GcsFront(gcs.url, tokens).start()
    s3 = LocalS3().start()
    yield Rig(s3=s3, gcs=gcs, front=front, tokens=tokens, s3_client=s3.client())
    s3.stop()
    front.stop()
    gcs.stop()
    tokens.stop()


# -- the deployment zip: ./build.sh --no-docker, once per session -------------------------------

@pytest.fixture(scope="session")
def _build_cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("build-cache")


@pytest.fixture(scope="session")
def lambda_build(tmp_path_factory, _build_cache_dir) -> subprocess.CompletedProcess:
    """The session's one full build (pip install included), for the running interpreter's
    Python version; it leaves its dependencies in the session's build cache."""
    return build(tmp_path_factory.mktemp("build-1"), label="first build", cache=_build_cache_dir)


@pytest.fixture(scope="session")
def lambda_zip(lambda_build) -> Path:
    """``Path`` of the session's zip."""
    return zip_from(lambda_build)


@pytest.fixture(scope="session")
def lambda_tree(lambda_zip, tmp_path_factory) -> Path:
    """The session's zip unzipped, exactly what Lambda puts in /var/task. Read-only: copy it to
    add files."""
    return unzip(lambda_zip, tmp_path_factory.mktemp("lambda-tree"))


@pytest.fixture(scope="session")
def build_cache(lambda_build, _build_cache_dir) -> Path:
    """The build cache holding the first build's dependencies: ``build(..., cache=build_cache)``
    makes a zip with other options (credentials...) without installing them again."""
    return _build_cache_dir


def pytest_terminal_summary(terminalreporter):
    if BUILD_TIMES:
        terminalreporter.write_line(
            "build.sh timings: " + ", ".join(f"{label} {seconds:.1f} s" for label, seconds in BUILD_TIMES))

"""Fixtures shared by every test folder: the local servers, started once per session."""

from __future__ import annotations

pytest_plugins = ["tests.leaks"]  # the no-leak check over the whole session (tests/leaks.py)

from dataclasses import dataclass
from typing import Any

import pytest

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



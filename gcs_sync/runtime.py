"""The composition root: everything built once per container (settings in, clients out).

``handler``, ``doctor`` and the command line build their clients here, so none imports another.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from botocore.config import Config

from .auth import GoogleAuth
from .aws import client as aws_service_client
from .config import Settings
from .deadline import Deadline
from .destination import GCS_ENDPOINT, GcsWriter, settle_environment
from .source import CONNECT_TIMEOUT, READ_TIMEOUT, S3Source
from .transfer import Copier


@dataclass
class Runtime:
    """Everything built once per container and shared by warm invocations."""

    settings: Settings
    auth: GoogleAuth
    s3: Any
    writer: GcsWriter
    copier: Copier
    deadline: Deadline

    @classmethod
    def build(cls, settings: Settings, *, auth: GoogleAuth | None = None,
              deadline: Deadline | None = None) -> "Runtime":
        """``auth`` and its ``deadline``: credentials made (and perhaps refreshing) already."""
        deadline = deadline or Deadline()
        auth = auth or GoogleAuth.from_settings(settings, deadline)
        pool = settings.object_concurrency * max(1, len(settings.destinations)) + 2
        s3 = s3_client(pool + settings.object_concurrency * settings.s3_read_parts)
        client = gcs_client(settings, auth, pool)
        writer = GcsWriter(client, deadline, session=client._http, endpoint=settings.gcs_api_endpoint)
        copier = Copier(settings, S3Source(s3, deadline, parts=settings.s3_read_parts, part_size=settings.stream_chunk),
                        writer, deadline)
        return cls(settings, auth, s3, writer, copier, deadline)


def s3_client(pool: int) -> Any:
    # Bounded: each attempt connects within 3 s and each socket read within 30 s; S3Source then
    # shortens both the reads and botocore's retries to the invocation's remaining time.
    config = Config(
        retries={"mode": "standard", "max_attempts": 4},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        max_pool_connections=max(10, pool),
    )
    return aws_service_client("s3", config=config)


def gcs_client(settings: Settings, auth: GoogleAuth, pool: int) -> Any:
    import requests.adapters
    from google.auth.transport.requests import AuthorizedSession
    from google.cloud import storage

    # python-storage >= 3.11 otherwise issues a GET of each bucket's metadata per blob call,
    # only to annotate traces (and needs storage.buckets.get to do so).
    os.environ.setdefault("DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA", "1")
    session = AuthorizedSession(auth.credentials)
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=max(10, pool))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    settle_environment(session, settings.gcs_api_endpoint or GCS_ENDPOINT)
    options = {"api_endpoint": settings.gcs_api_endpoint} if settings.gcs_api_endpoint else None
    # project=None explicitly: no project lookup, so no call to cloudresourcemanager.
    return storage.Client(
        project=settings.google_cloud_project, credentials=auth.credentials,
        _http=session, client_options=options,
    )


# -- the doctor's clients ----------------------------------------------------------------------
# Short administrative calls: each attempt connects within 5 s and reads within 15 s.
ADMIN_CONNECT_TIMEOUT = 5
ADMIN_READ_TIMEOUT = 15


def google_auth(settings: Settings, deadline: Deadline | None = None) -> GoogleAuth:
    """The Google credentials of the credential configuration (no token asked yet)."""
    return GoogleAuth.from_settings(settings, deadline)


def aws_client(service: str, region: str | None, *, attempts: int = 3) -> Any:
    """A boto3 client for short administrative calls (STS, S3, SQS: the doctor's).

    Built the ordinary way, so boto3 picks the endpoint itself: ``AWS_ENDPOINT_URL_<SERVICE>``
    (``AWS_ENDPOINT_URL_STS``, ``_S3``, ``_SQS``), else ``AWS_ENDPOINT_URL``, else the service's
    regional endpoint; keys come from the environment, as in Lambda.
    """
    config = Config(connect_timeout=ADMIN_CONNECT_TIMEOUT, read_timeout=ADMIN_READ_TIMEOUT,
                    retries={"mode": "standard", "max_attempts": attempts})
    return aws_service_client(service, region=region, config=config)

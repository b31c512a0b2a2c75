"""Local test rig: stand-ins for S3, Google STS/IAM and Cloud Storage, all on 127.0.0.1."""

from .gcs import FakeGcsServer, GcsFront
from .google_tokens import DEFAULT_AUDIENCE, DEFAULT_SERVICE_ACCOUNT, GoogleTokenServer
from .s3 import LocalS3

__all__ = [
    "DEFAULT_AUDIENCE",
    "DEFAULT_SERVICE_ACCOUNT",
    "FakeGcsServer",
    "GcsFront",
    "GoogleTokenServer",
    "LocalS3",
]

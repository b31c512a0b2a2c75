"""Local test rig: stand-ins for S3, Google STS/IAM and Cloud Storage, all on 127.0.0.1.

Typical wiring (see ``test_rig.py`` for fixtures)::

    tokens = GoogleTokenServer(aws_keys={AWS_ACCESS_KEY_ID: AWS_SECRET_ACCESS_KEY}).start()
    backend = FakeGcsServer(tmp_dir).start()
    front = GcsFront(backend.url, tokens).start()   # the function talks only to front.url
    s3 = LocalS3().start()
    # env: s3.aws_env(); credential configuration: tokens.credential_config()
"""

from .gcs import FakeGcsServer, GcsFront
from .google_tokens import DEFAULT_AUDIENCE, DEFAULT_SERVICE_ACCOUNT, GoogleTokenServer
from .s3 import AWS_ACCESS_KEY_ID, AWS_REGION, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, LocalS3

__all__ = [
    "AWS_ACCESS_KEY_ID",
    "AWS_REGION",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "DEFAULT_AUDIENCE",
    "DEFAULT_SERVICE_ACCOUNT",
    "FakeGcsServer",
    "GcsFront",
    "GoogleTokenServer",
    "LocalS3",
]

"""AWS Lambda entry point for gcs-sync: ``lambda_handler``.

Logging follows Lambda's own controls (log format, application log level; ``LOG_LEVEL``
overrides the level) from the moment the container starts, so even a configuration error is
one JSON line. Settings, credentials and clients are built once per container, on the first
invocation, and shared by every warm invocation after it; the work itself lives in ``gcs_sync``.
"""

import os

from gcs_sync import logs
from gcs_sync.config import LogSettings
from gcs_sync.handler import Container

logs.configure_from(LogSettings.from_environ())
_container = Container(code_dir=os.path.dirname(os.path.abspath(__file__)))


def lambda_handler(event, context):
    # Set before anything is logged, for every thread of this invocation.
    logs.set_request_id(getattr(context, "aws_request_id", None))
    return _container.handle(event, context)

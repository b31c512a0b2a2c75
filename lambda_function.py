"""AWS Lambda entry point for gcs-sync: ``lambda_function.lambda_handler``.

Settings, credentials and clients are built once per container, on the first invocation, and
shared by every warm invocation after it; the work itself lives in ``gcs_sync``.
"""

import os

from gcs_sync.handler import Container

_container = Container(code_dir=os.path.dirname(os.path.abspath(__file__)))


def lambda_handler(event, context):
    return _container.handle(event, context)

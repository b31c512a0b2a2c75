"""AWS Lambda entry point for gcs-sync: ``lambda_function.lambda_handler``.

Settings, credentials and clients are built once per container, on the first invocation, and
shared by every warm invocation after it; the work itself lives in ``gcs_sync``.
"""

import os

from gcs_sync.handler import Runtime, handle

_CODE_DIR = os.path.dirname(os.path.abspath(__file__))
_runtime = None


def lambda_handler(event, context):
    global _runtime
    if _runtime is None:
        _runtime = Runtime.from_environment(code_dir=_CODE_DIR)
    return handle(event, context, _runtime)

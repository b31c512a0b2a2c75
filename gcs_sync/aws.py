"""The AWS clients of the function, made with botocore directly.

boto3's clients are botocore's clients (boto3 adds resources and the transfer manager, which the
function does not use); importing boto3 as well costs ~40 ms of every cold start (s3transfer and
boto3's own modules, measured in bench/cold_start.py). boto3 stays in the zip, so the zip behaves the
same whatever SDK the runtime provides.
"""

from __future__ import annotations

import gzip
import json
import os
from typing import Any

import botocore.loaders
import botocore.session
from botocore.config import Config

# The AWS services the function calls: S3 (every event), SQS (slices, the doctor), STS (the doctor).
AWS_SERVICES = ("s3", "sqs", "sts")


class ModelFiles(botocore.loaders.JSONFileLoader):
    """botocore's model files read into plain dicts, ``name.json`` before ``name.json.gz`` as
    botocore does. botocore's own reader builds an ``OrderedDict`` for every JSON object, which
    doubles the parse of the S3 model and of endpoints.json (~20 ms of a cold start measured in
    bench/cold_start.py); a dict keeps the order as well, and botocore relies on nothing else."""

    def load_file(self, file_path: str) -> Any:
        for suffix, opener in ((".json", open), (".json.gz", gzip.open)):
            try:
                with opener(file_path + suffix, "rb") as fp:
                    return json.loads(fp.read())
            except (FileNotFoundError, NotADirectoryError):
                continue
        return None


class ServiceModels(botocore.loaders.Loader):
    """botocore's loader of service models, told which services exist: botocore otherwise lists the
    model directories of every AWS service (~440 unpruned) before building its first client,
    only to check the name (~30-55 ms of a cold start, measured in bench/cold_start.py)."""

    def __init__(self, extra_search_paths: list[str] | None = None) -> None:
        super().__init__(extra_search_paths=extra_search_paths, file_loader=ModelFiles())

    def list_available_services(self, type_name: str) -> list[str]:
        return sorted(AWS_SERVICES)


def session() -> Any:
    """A botocore session that loads only the models of ``AWS_SERVICES``."""
    core = botocore.session.get_session()
    paths = core.get_config_variable("data_path")  # AWS_DATA_PATH, as botocore's own loader takes it
    core.register_component("data_loader", ServiceModels(extra_search_paths=paths.split(os.pathsep) if paths else None))
    return core


def client(service: str, *, region: str | None = None, config: Config | None = None) -> Any:
    """A client of ``service`` (one of ``AWS_SERVICES``), configured as boto3 configures its own:
    botocore reads the region, the credentials and ``AWS_ENDPOINT_URL_<SERVICE>`` /
    ``AWS_ENDPOINT_URL`` from the environment."""
    return session().create_client(service, region_name=region, config=config)

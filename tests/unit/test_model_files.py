"""The loader of botocore's model files: plain dicts, the same content as botocore's own reader."""

from __future__ import annotations

import gzip
import json
import os

import botocore
import botocore.loaders

from gcs_sync.aws import ModelFiles

DATA = os.path.join(os.path.dirname(botocore.__file__), "data")


def test_the_s3_model_reads_as_botocore_reads_it_into_plain_dicts():
    base = botocore.loaders.Loader().load_service_model  # botocore's own reader, OrderedDicts
    ours = botocore.loaders.Loader(file_loader=ModelFiles())
    theirs = base("s3", "service-2")
    mine = ours.load_service_model("s3", "service-2")
    assert mine == theirs and type(mine) is dict and type(mine["shapes"]) is dict
    assert list(mine["operations"]) == list(theirs["operations"])  # the order is kept
    endpoints = ModelFiles().load_file(os.path.join(DATA, "endpoints"))
    assert endpoints == botocore.loaders.JSONFileLoader().load_file(os.path.join(DATA, "endpoints"))


def test_name_json_is_read_before_name_json_gz_and_nothing_is_none(tmp_path):
    with gzip.open(tmp_path / "model.json.gz", "wt") as packed:
        json.dump({"from": "gz"}, packed)
    assert ModelFiles().load_file(str(tmp_path / "model")) == {"from": "gz"}
    (tmp_path / "model.json").write_text(json.dumps({"from": "json"}))
    assert ModelFiles().load_file(str(tmp_path / "model")) == {"from": "json"}
    assert ModelFiles().load_file(str(tmp_path / "absent")) is None
    assert ModelFiles().load_file(str(tmp_path / "model.json" / "below")) is None

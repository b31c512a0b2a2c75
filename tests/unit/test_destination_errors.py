"""How Cloud Storage's answers to a server-side copy are read: who is missing decides what to do."""

from __future__ import annotations

from google.api_core import exceptions as gexc

from gcs_sync.config import parse_destination
from gcs_sync.destination import translate
from gcs_sync.gcs_errors import RewriteRefused
from gcs_sync.errors import DestinationError, PreconditionFailed

TARGET = parse_destination("gs://target-bucket/p/")


def test_a_replaced_origin_generation_is_a_412_not_a_missing_bucket():
    gone = gexc.NotFound("No such object: primary-bucket/p/k")
    error = translate(gone, TARGET, "p/k", "rewrite", source="gs://primary-bucket/p/k")
    assert isinstance(error, PreconditionFailed) and "replaced since it was verified" in str(error)


def test_a_missing_target_bucket_is_still_named_as_such():
    missing = gexc.NotFound("The specified bucket does not exist.")
    error = translate(missing, TARGET, "p/k", "rewrite", source="gs://primary-bucket/p/k")
    assert type(error) is DestinationError and not error.retryable and "does not exist" in str(error)


def test_a_refused_server_copy_names_the_origin_and_both_fixes():
    refused = gexc.Forbidden("caller does not have storage.objects.get access")
    error = translate(refused, TARGET, "p/k", "rewrite", source="gs://primary-bucket/p/k")
    assert isinstance(error, RewriteRefused) and "gs://primary-bucket/p/k" in str(error)
    assert "roles/storage.objectViewer" in str(error) and "FANOUT=upload" in str(error)

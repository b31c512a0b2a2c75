"""The checks of a destination bucket's settings, with the bucket's settings given directly.

The local Cloud Storage (fake-gcs-server) keeps none of Autoclass, default KMS key, retention
policy, object retention, lifecycle rules or soft delete: it answers every bucket as a plain
STANDARD one. So each setting these checks read is given here as a ``BucketFacts`` (what
``Context.bucket`` makes of a real bucket resource); tests/e2e/test_doctor.py runs the same checks
against the local servers for what they can answer (a plain bucket).
"""

from __future__ import annotations

import json

import pytest
from google.api_core import exceptions as api_exc

from gcs_sync.config import Destination, Settings
from gcs_sync.doctor import BucketFacts, Context, policy_checks, setup_checks
from gcs_sync.doctor.policy_checks import covers_slices

KEY = "projects/keys-p/locations/us-central1/keyRings/ring/cryptoKeys/mirror"
SLICES = {"action": {"type": "Delete"}, "condition": {"age": 2, "matchesPrefix": [".gcs-sync-slices/"]}}


class FakeBucket:
    def __init__(self, held):
        self.held = held

    def test_iam_permissions(self, permissions, **kwargs):
        if isinstance(self.held, Exception):
            raise self.held
        return [p for p in permissions if p in self.held]


class FakeStorage:
    def __init__(self, held=()):
        self.held = held

    def bucket(self, name):
        return FakeBucket(self.held)


def context(facts: BucketFacts | Exception, held=("storage.objects.setRetention",), **settings) -> Context:
    ctx = Context(environ={}, settings=Settings(destinations=(Destination("b"),), **settings))
    ctx.buckets["b"] = facts
    ctx.clients["storage"] = FakeStorage(held)
    return ctx


def facts(**fields) -> BucketFacts:
    return BucketFacts(name="b", location="US-CENTRAL1", project_number="4242", **fields)


# -- storage class -------------------------------------------------------------------------------


def test_an_autoclass_bucket_ignores_the_class_asked_for():
    outcome = policy_checks.storage_class(context(facts(autoclass=True)), Destination("b", storage_class="COLDLINE"))
    assert outcome.ok is False and "Autoclass" in outcome.detail and "no effect" in outcome.detail
    assert "--no-enable-autoclass" in outcome.fix and "remove storage_class" in outcome.fix


@pytest.mark.parametrize("wanted, days", [("COLDLINE", "COLDLINE 90 days"), ("archive", "ARCHIVE 365 days"),
                                          ("source", "COLDLINE 90 days and ARCHIVE 365 days")])
def test_cold_classes_warn_of_minimum_durations_and_soft_delete(wanted, days):
    outcome = policy_checks.storage_class(context(facts(soft_delete_seconds=7 * 86400)),
                                          Destination("b", storage_class=wanted))
    assert outcome.ok is True and outcome.detail.startswith("warning: ")
    assert days in outcome.detail and "early-deletion" in outcome.detail
    assert "soft delete keeps each replaced copy billed for 7 more days" in outcome.detail
    assert "STANDARD" in outcome.fix and "--clear-soft-delete" in outcome.fix


def test_warm_classes_pass_and_say_the_buckets_default():
    standard = policy_checks.storage_class(context(facts(storage_class="NEARLINE")), Destination("b", storage_class="STANDARD"))
    assert standard.ok is True and standard.fix is None
    assert "copies written as STANDARD; the bucket's default is NEARLINE" in standard.detail
    nearline = policy_checks.storage_class(context(facts()), Destination("b", storage_class="NEARLINE"))
    assert nearline.ok is True and "30 days" in nearline.detail and not nearline.detail.startswith("warning")
    off = policy_checks.storage_class(context(facts(soft_delete_seconds=0)), Destination("b", storage_class="ARCHIVE"))
    assert "soft delete is off" in off.detail


def test_a_class_cloud_storage_does_not_have_is_refused():
    outcome = policy_checks.storage_class(context(facts()), Destination("b", storage_class="GLACIER"))
    assert outcome.ok is False and "GLACIER" in outcome.detail and "COLDLINE" in outcome.fix


# -- encryption key ------------------------------------------------------------------------------


def test_the_key_against_the_buckets_default_and_the_service_agent_grant():
    agent = "service-4242@gs-project-accounts.iam.gserviceaccount.com"
    own = policy_checks.encryption_key(context(facts()), Destination("b", kms_key=KEY))
    assert own.ok is True and "no default key" in own.detail
    assert "cannot be checked without Cloud KMS access" in own.detail and agent in own.detail
    assert ("gcloud kms keys add-iam-policy-binding mirror --keyring=ring --location=us-central1 "
            f"--project=keys-p --member=serviceAccount:{agent} --role=roles/cloudkms.cryptoKeyEncrypterDecrypter") in own.fix
    same = policy_checks.encryption_key(context(facts(default_kms_key=KEY)), Destination("b", kms_key=KEY))
    assert "the bucket's default key too" in same.detail
    other = KEY.replace("mirror", "default")
    override = policy_checks.encryption_key(context(facts(default_kms_key=other)), Destination("b", kms_key=KEY))
    assert f"overrides the bucket's default key {other}" in override.detail


def test_a_key_outside_the_buckets_location_is_named():
    europe = KEY.replace("us-central1", "europe-west1")
    outcome = policy_checks.encryption_key(context(facts()), Destination("b", kms_key=europe))
    assert outcome.ok is True and outcome.detail.startswith("warning: ")
    assert "europe-west1" in outcome.detail and "US-CENTRAL1" in outcome.detail and "us-central1" in outcome.fix
    dual = policy_checks.encryption_key(context(BucketFacts("b", location="NAM4")),
                                        Destination("b", kms_key=KEY.replace("us-central1", "us")))
    assert not dual.detail.startswith("warning")  # a predefined dual-region's keys live in its multi-region


def test_a_key_name_that_is_not_a_full_resource_name_fails():
    outcome = policy_checks.encryption_key(context(facts()), Destination("b", kms_key="mirror-key"))
    assert outcome.ok is False and "projects/P/locations/L/keyRings/R/cryptoKeys/K" in outcome.fix


# -- holds and retention ---------------------------------------------------------------------------


def test_holds_need_object_retention_on_the_bucket():
    outcome = policy_checks.holds(context(facts()), Destination("b", holds=True))
    assert outcome.ok is False and "does not have object retention enabled" in outcome.detail
    assert "--enable-per-object-retention" in outcome.fix and "holds=source" in outcome.fix


def test_holds_need_the_permission_to_set_retention():
    outcome = policy_checks.holds(context(facts(object_retention=True), held=()), Destination("b", holds=True))
    assert outcome.ok is False and "storage.objects.setRetention missing" in outcome.detail
    fine = policy_checks.holds(context(facts(object_retention=True)), Destination("b", holds=True))
    assert fine.ok is True and "Unlocked" in fine.detail and "Locked" in fine.detail
    assert "s3:GetObjectRetention" in fine.fix and "s3:GetObjectLegalHold" in fine.fix
    broken = policy_checks.holds(context(facts(object_retention=True), held=api_exc.ServiceUnavailable("down")),
                                 Destination("b", holds=True))
    assert broken.ok is False and "503" in broken.detail


def test_a_retention_policy_means_held_copies():
    unlocked = policy_checks.retention(context(facts(retention_period=30 * 86400)), Destination("b"))
    assert unlocked.ok is True and unlocked.detail.startswith("warning: ")
    assert "retention policy of 30 days, unlocked" in unlocked.detail and "outcome held" in unlocked.detail
    assert "--clear-retention-period" in unlocked.fix
    locked = policy_checks.retention(context(facts(retention_period=3600, retention_locked=True)), Destination("b"))
    assert "3600 s, locked" in locked.detail and "--clear-retention-period" not in locked.fix
    none = policy_checks.retention(context(facts(object_retention=True)), Destination("b"))
    assert none.ok is True and none.fix is None and "no bucket retention policy" in none.detail
    assert "object retention enabled" in none.detail


# -- slice leftovers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rule, covers", [
    (SLICES, True),
    ({"action": {"type": "Delete"}, "condition": {"age": 7}}, True),  # every object: slices too
    ({"action": {"type": "Delete"}, "condition": {"age": 1, "matchesPrefix": [".gcs"]}}, True),
    ({"action": {"type": "Delete"}, "condition": {"age": 1, "matchesPrefix": ["logs/"]}}, False),
    ({"action": {"type": "SetStorageClass", "storageClass": "COLDLINE"}, "condition": {"age": 2}}, False),
    ({"action": {"type": "Delete"}, "condition": {"numNewerVersions": 2}}, False),
    ({"action": {"type": "Delete"}, "condition": {"age": 2, "isLive": False}}, False),
    ({"action": {"type": "Delete"}, "condition": {"age": 2, "matchesStorageClass": ["ARCHIVE"]}}, False),
    ({"action": {"type": "Delete"}, "condition": {"age": 2, "createdBefore": "2020-01-01"}}, False),
])
def test_which_lifecycle_rules_remove_abandoned_slices(rule, covers):
    assert covers_slices(rule) is covers


def test_without_the_rule_the_fix_merges_it_with_the_buckets_own_rules():
    own = {"action": {"type": "SetStorageClass", "storageClass": "NEARLINE"}, "condition": {"age": 30}}
    outcome = policy_checks.slice_leftovers(context(facts(lifecycle_rules=(own,))), Destination("b"))
    assert outcome.ok is False and ".gcs-sync-slices/" in outcome.detail
    lines = outcome.fix.splitlines()
    assert "keeping its 1 rule(s)" in lines[0]
    written = json.loads(lines[1].split("'")[1])
    assert written == {"rule": [own, SLICES]}
    assert lines[2] == "gcloud storage buckets update gs://b --lifecycle-file=lifecycle.json"
    present = policy_checks.slice_leftovers(context(facts(lifecycle_rules=(own, SLICES))), Destination("b"))
    assert present.ok is True and present.fix is None and "after 2 day(s)" in present.detail
    slow_rule = {"action": {"type": "Delete"}, "condition": {"age": 400}}
    slow = policy_checks.slice_leftovers(context(facts(lifecycle_rules=(slow_rule,))), Destination("b"))
    assert slow.ok is True and slow.detail.startswith("warning: ") and "waits 400 days" in slow.detail
    assert json.loads(slow.fix.splitlines()[1].split("'")[1]) == {"rule": [slow_rule, SLICES]}


# -- a bucket whose settings cannot be read ------------------------------------------------------------


def test_checks_that_cannot_read_the_bucket_say_so_and_how_to_look():
    refused = context(api_exc.Forbidden("caller does not have storage.buckets.get access"))
    for check in (policy_checks.retention, policy_checks.slice_leftovers, policy_checks.holds):
        outcome = check(refused, Destination("b", holds=True))
        assert outcome.ok is True and outcome.detail.startswith("not checked: ")
        assert "storage.buckets.get" in outcome.fix and "gcloud storage buckets describe gs://b" in outcome.fix
    missing = policy_checks.retention(context(api_exc.NotFound("no bucket")), Destination("b"))
    assert missing.ok is False and "does not exist" in missing.detail


# -- where the token goes ----------------------------------------------------------------------------


@pytest.mark.parametrize("host, google", [
    ("storage.googleapis.com", True), ("storage-abc.p.googleapis.com", True), ("STORAGE.GOOGLEAPIS.COM.", True),
    ("googleapis.com", True), ("googleapis.com.evil.example", False), ("evilgoogleapis.com", False),
    ("127.0.0.1", False), ("storage.example.com", False),
])
def test_google_hosts(host, google):
    assert setup_checks.is_google_host(host) is google


def test_an_endpoint_elsewhere_warns_that_the_token_goes_there():
    def outcome(endpoint):
        ctx = Context(environ={}, settings=Settings(destinations=(), gcs_api_endpoint=endpoint))
        return setup_checks.gcs_endpoint(ctx)

    assert outcome("https://storage-xyz.p.googleapis.com").detail == "https://storage-xyz.p.googleapis.com: a Google endpoint"
    elsewhere = outcome("https://gcs.example.com")
    assert elsewhere.ok is True and elsewhere.detail.startswith("warning: ")
    assert "not a Google endpoint" in elsewhere.detail and "access token" in elsewhere.detail
    assert "*.googleapis.com" in elsewhere.fix
    assert "local endpoint" in outcome("http://localhost:4443").detail

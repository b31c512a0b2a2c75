"""Checks of each destination: what this identity may do in its bucket, and server-side copies."""

from __future__ import annotations

import uuid
from typing import Any

from ..config import Destination
from ..gcs_errors import WRITER_ROLE
from .context import GCS_RETRY_DEADLINE, GCS_TIMEOUT, Context
from .identity import brief
from .runner import Outcome, failed, passed

PERMISSIONS = (
    "storage.objects.create",
    "storage.objects.delete",
    "storage.objects.get",
    "storage.objects.list",
)
PROBE_DIR = ".gcs-sync-doctor-probe/"


def grant_command(ctx: Context, bucket: str) -> str:
    return (f"gcloud storage buckets add-iam-policy-binding gs://{bucket} "
            f"--member='{ctx.member()}' --role=roles/storage.objectUser (or the role deploy/gcp-setup.sh creates, "
            f"{WRITER_ROLE})")


def destination(ctx: Context, dest: Destination) -> Outcome:
    """testIamPermissions on the bucket (create, delete to overwrite, get, list), a listing, and
    with ``write_probe`` a probe object written, overwritten and deleted."""
    from google.api_core import exceptions as api_exc

    client = ctx.storage()
    bucket = client.bucket(dest.bucket)
    grant = grant_command(ctx, dest.bucket)
    retry = _retry()
    try:
        held = set(bucket.test_iam_permissions(list(PERMISSIONS), timeout=GCS_TIMEOUT, retry=retry))
    except api_exc.NotFound as exc:
        return bucket_missing(dest, exc)
    except api_exc.Forbidden as exc:
        return failed(f"403 on bucket {dest.bucket} itself: no access at all ({brief(exc)})",
                      f"grant roles/storage.objectUser on the bucket: {grant}; if it is granted, look "
                      "for a VPC Service Controls perimeter or organization policy denying access")
    except api_exc.Unauthorized as exc:
        return failed(f"Cloud Storage refused the token (401): {brief(exc)}",
                      "the token from the token exchange is not accepted; check GCS_API_ENDPOINT points at "
                      "Cloud Storage")
    except api_exc.GoogleAPICallError as exc:
        return failed(f"testIamPermissions on {dest.bucket} failed: HTTP {exc.code}: {brief(exc)}",
                      "retry; if it persists, see the detail")
    ctx.permissions[dest.url] = held
    missing = [p for p in PERMISSIONS if p not in held]
    problems = permission_problems(missing)
    notes = []
    if "storage.objects.list" in held:
        try:
            listed = list(client.list_blobs(dest.bucket, prefix=dest.prefix, max_results=1,
                                            timeout=GCS_TIMEOUT, retry=retry))
        except api_exc.NotFound as exc:
            return bucket_missing(dest, exc)
        except api_exc.GoogleAPICallError as exc:
            problems.append(f"listing {dest.url} failed: HTTP {exc.code}: {brief(exc)}")
        else:
            notes.append("listing works (" + ("objects present" if listed else "empty") + ")")
    if problems:
        if ctx.write_probe:
            problems.append("write probe not tried: with these permissions it could fail or leave its object behind")
        fix = f"grant roles/storage.objectUser (Object Creator cannot overwrite): {grant}"
        if missing == ["storage.objects.list"]:
            fix = f"grant roles/storage.objectUser, which includes storage.objects.list: {grant}"
        return failed("; ".join(problems), fix)
    detail = "; ".join(["create, delete (overwrite), get and list permitted", *notes])
    if not ctx.write_probe:
        return passed(detail)
    return probe(bucket, dest, detail, grant)


def permission_problems(missing: list[str]) -> list[str]:
    """What each missing permission stops, most serious first."""
    problems = []
    if "storage.objects.create" in missing:
        problems.append("storage.objects.create missing: cannot copy anything here")
    elif "storage.objects.delete" in missing:
        problems.append("storage.objects.delete missing: can create but not overwrite "
                        "(a changed source object would fail to copy)")
    if "storage.objects.get" in missing:
        problems.append("storage.objects.get missing: cannot check what the destination holds "
                        "(ordering, already-current)")
    if "storage.objects.list" in missing:
        problems.append("storage.objects.list missing: sync cannot compare listings")
    return problems


def bucket_missing(dest: Destination, exc: Exception) -> Outcome:
    return failed(f"bucket {dest.bucket} does not exist, or this identity may not see it (404: {brief(exc)})",
                  f"create the bucket (gcloud storage buckets create gs://{dest.bucket}) or correct the name "
                  "in GCS_DESTINATIONS")


def probe(bucket: Any, dest: Destination, detail: str, grant: str) -> Outcome:
    """Write, overwrite and delete one probe object; report each step."""
    from google.api_core import exceptions as api_exc

    name = dest.object_name(PROBE_DIR + uuid.uuid4().hex)
    url = f"gs://{dest.bucket}/{name}"
    blob = bucket.blob(name)
    steps: list[str] = []
    step = "create (ifGenerationMatch=0)"
    try:
        blob.upload_from_string(b"gcs-sync doctor probe 1\n", content_type="text/plain",
                                if_generation_match=0, timeout=GCS_TIMEOUT)
        steps.append(f"created {url} (generation {blob.generation})")
        step = "overwrite (ifGenerationMatch=its generation)"
        blob.upload_from_string(b"gcs-sync doctor probe 2\n", content_type="text/plain",
                                if_generation_match=blob.generation, timeout=GCS_TIMEOUT)
        steps.append(f"overwritten (generation {blob.generation})")
        step = "delete"
        blob.delete(if_generation_match=blob.generation, timeout=GCS_TIMEOUT)
        steps.append("deleted")
    except api_exc.GoogleAPICallError as exc:
        steps.append(f"{step} failed: HTTP {exc.code}: {brief(exc)}")
        if len(steps) > 1:  # created: try to clean up
            try:
                blob.delete(timeout=GCS_TIMEOUT)
                steps.append("probe deleted")
            except api_exc.GoogleAPICallError:
                steps.append(f"probe object left at {url}: delete it by hand")
        return failed(f"{detail}; write probe: " + "; ".join(steps), f"grant roles/storage.objectUser: {grant}")
    return passed(f"{detail}; write probe: " + "; ".join(steps))


def server_copy(ctx: Context, primary: Destination, target: Destination) -> Outcome:
    """FANOUT=copy: objects.rewrite from the primary needs storage.objects.get on the primary's
    bucket and create + delete on the target's (both asked with testIamPermissions)."""
    fix = (f"grant roles/storage.objectViewer on gs://{primary.bucket} to {ctx.member()} (a VPC "
           "Service Controls perimeter around one bucket also refuses it), or set FANOUT=upload to "
           "upload to every destination from the function")
    if "storage.objects.get" not in ctx.permissions.get(primary.url, set()):
        return failed(f"storage.objects.get missing on {primary.bucket}: the server-side copy from "
                      f"{primary.url} is refused, so {target.url} is uploaded to instead", fix)
    if target.url in ctx.refused_server_copies:
        return failed(f"this container saw Cloud Storage refuse (403) server-side copies from {primary.url} "
                      f"to {target.url}; it uploads to {target.url} instead (one more transfer out of AWS)", fix)
    return passed(f"objects.rewrite from {primary.url} permitted: each object leaves AWS once")


def _retry() -> Any:
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_deadline(GCS_RETRY_DEADLINE)

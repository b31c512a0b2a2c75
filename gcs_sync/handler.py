"""Invocation shapes in, result shapes out.

S3 / SNS / EventBridge invocations return a JSON summary, or raise ``CopyFailed`` naming each
failed object and destination after everything else was attempted; SQS invocations return
``batchItemFailures``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable

from . import events, logs
from .auth import GoogleAuth
from .config import Settings
from .destination import GcsWriter
from .errors import CopyFailed
from .events import Notifications, ObjectRef, SqsBatch
from .source import S3Source
from .transfer import FAILED, SKIPPED, Copier, DestinationResult, ObjectReport, Staging

log = logging.getLogger(__name__)

MAX_LISTED_RESULTS = 100


@dataclass
class Runtime:
    """Everything built once per container and shared by warm invocations."""

    settings: Settings
    auth: GoogleAuth
    copier: Copier

    @classmethod
    def from_environment(cls, *, code_dir: str | None = None) -> "Runtime":
        settings = Settings.from_environ(code_dir=code_dir)
        logs.configure(settings.log_level)
        for warning in settings.warnings:
            log.warning(warning)
        return cls.build(settings)

    @classmethod
    def build(cls, settings: Settings) -> "Runtime":
        auth = GoogleAuth.from_settings(settings)
        pool = settings.object_concurrency * max(1, len(settings.destinations)) + 2
        copier = Copier(settings, S3Source(s3_client(pool)), GcsWriter(gcs_client(settings, auth, pool)))
        return cls(settings, auth, copier)


def s3_client(pool: int) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=max(10, pool),
    )
    return boto3.session.Session().client("s3", config=config)


def gcs_client(settings: Settings, auth: GoogleAuth, pool: int) -> Any:
    import os

    import requests.adapters
    from google.auth.transport.requests import AuthorizedSession
    from google.cloud import storage

    # python-storage >= 3.11 otherwise issues a GET of each bucket's metadata per blob call,
    # only to annotate traces (and needs storage.buckets.get to do so).
    os.environ.setdefault("DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA", "1")
    session = AuthorizedSession(auth.credentials)
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=max(10, pool))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    options = {"api_endpoint": settings.gcs_api_endpoint} if settings.gcs_api_endpoint else None
    # project=None explicitly: no project lookup, so no call to cloudresourcemanager.
    return storage.Client(
        project=settings.google_cloud_project, credentials=auth.credentials,
        _http=session, client_options=options,
    )


def handle(event: Any, context: Any, runtime: Runtime) -> dict:
    logs.set_request_id(getattr(context, "aws_request_id", None))
    invocation = events.parse(event)
    if isinstance(invocation, SqsBatch):
        return _sqs(invocation, runtime)
    return _notifications(invocation, runtime)


def _notifications(invocation: Notifications, runtime: Runtime) -> dict:
    for line in invocation.ignored:
        log.info("record ignored", extra={"fields": {"reason": line}})
    reports = _copy(invocation.refs, runtime)
    summary = summarize(reports, ignored=invocation.ignored, problems=invocation.problems)
    log.info("invocation summary", extra={"fields": {"summary": _counts(summary)}})
    failures = [f"{r.source} -> {d.object}: {d.error}" for r in reports for d in r.failures]
    failures += [f"event: {p}" for p in invocation.problems]
    if failures:
        raise CopyFailed(failures, summary)
    return summary


def _sqs(batch: SqsBatch, runtime: Runtime) -> dict:
    all_refs = [ref for message in batch.messages for ref in message.refs]
    reports = iter(_copy(all_refs, runtime))
    failed_ids = []
    for message in batch.messages:
        message_reports = [next(reports) for _ in message.refs]
        for line in message.ignored:
            log.info("record ignored", extra={"fields": {"messageId": message.message_id, "reason": line}})
        for problem in message.problems:
            log.error("message refused", extra={"fields": {"messageId": message.message_id, "error": problem}})
        if message.problems or any(r.outcome == FAILED for r in message_reports):
            failed_ids.append(message.message_id)
    log.info("invocation summary", extra={"fields": {
        "messages": len(batch.messages), "failedMessages": len(failed_ids)}})
    return {"batchItemFailures": [{"itemIdentifier": i} for i in failed_ids]}


def _copy(refs: Iterable[ObjectRef], runtime: Runtime) -> list[ObjectReport]:
    """One report per ref, in order: refused, ignored or copied."""
    refs = list(refs)
    settings = runtime.settings
    reports: list[ObjectReport | None] = [None] * len(refs)
    work: list[int] = []
    for i, ref in enumerate(refs):
        if settings.source_buckets is not None and ref.bucket not in settings.source_buckets:
            reports[i] = _refused(ref, (
                f"bucket {ref.bucket!r} is not in SOURCE_BUCKETS; the event was refused. Add the "
                "bucket to SOURCE_BUCKETS if it should be copied."))
        elif ref.removed:
            reports[i] = ObjectReport(source=ref.url, skipped="delete not mirrored (MIRROR_DELETES is off)")
            log.info("delete ignored", extra={"fields": {"source": ref.url, "outcome": SKIPPED}})
        else:
            work.append(i)
    if work:
        runtime.auth.ensure_token()
        if settings.in_lambda:
            Staging.sweep(settings.staging_dir)
        with Staging(settings.staging_dir) as staging:
            for i, report in zip(work, runtime.copier.copy_all([refs[i] for i in work], staging)):
                reports[i] = report
    return [r for r in reports if r is not None]


def _refused(ref: ObjectRef, reason: str) -> ObjectReport:
    log.error("object refused", extra={"fields": {"source": ref.url, "error": reason}})
    return ObjectReport(source=ref.url, results=[DestinationResult(
        destination="*", object="*", outcome=FAILED, error=reason)])


def summarize(reports: list[ObjectReport], *, ignored: Iterable[str] = (), problems: Iterable[str] = ()) -> dict:
    counts: dict[str, int] = {}
    for report in reports:
        counts[report.outcome] = counts.get(report.outcome, 0) + 1
    summary = {
        "objects": len(reports),
        **{k: counts.get(k, 0) for k in ("copied", "already_current", "superseded", "skipped", "failed")},
        "bytes": sum(r.bytes for r in reports),
        "results": [r.as_dict() for r in reports[:MAX_LISTED_RESULTS]],
    }
    if len(reports) > MAX_LISTED_RESULTS:
        summary["results_truncated"] = len(reports) - MAX_LISTED_RESULTS
    if ignored:
        summary["ignored"] = list(ignored)
    if problems:
        summary["problems"] = list(problems)
    return summary


def _counts(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("results", "ignored", "problems")}

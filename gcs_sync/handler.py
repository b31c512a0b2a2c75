"""Invocation shapes in, result shapes out.

- S3 / SNS / EventBridge / manual sync: a JSON summary, or ``CopyFailed`` naming each failed
  object and destination, raised after everything else was attempted.
- SQS: ``{"batchItemFailures": [...]}`` with exactly the failed message ids.
- S3 Batch Operations: one result per task (Succeeded / TemporaryFailure / PermanentFailure).
- Health check: the doctor's report, never an exception.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, Iterable

from . import events, logs, metrics
from .auth import GoogleAuth
from .config import Settings
from .deadline import Deadline
from .errors import CopyFailed, GcsSyncError
from .events import BatchOperations, CheckRequest, DoctorRequest, Notifications, ObjectRef, SqsBatch, SyncRequest
from .runtime import Runtime
from .results import FAILED, SKIPPED, ObjectReport
from .staging import Staging

log = logging.getLogger(__name__)

# The token asked for in Lambda's init phase (see Container.prepare) may take this long at most.
INIT_TOKEN_MS = 3000
MAX_LISTED_RESULTS = 100
MAX_RESULT_STRING = 1000
COUNTED = ("copied", "repaired", "sliced", "deleted", "already_current", "superseded", "kept", "already_absent", "skipped", "failed")


class Container:
    """The Lambda container's state: the runtime, built on first use and kept while warm."""

    def __init__(self, *, code_dir: str | None = None):
        self.code_dir = code_dir
        self.runtime: Runtime | None = None

    def handle(self, event: Any, context: Any) -> Any:
        logs.set_request_id(getattr(context, "aws_request_id", None))
        if isinstance(event, dict) and "doctor" in event:
            # Before building anything: the doctor must also report a broken configuration.
            from . import doctor

            events.parse(event)  # refuses options: the event form never writes
            refused = tuple(self.runtime.copier.refused_server_copies) if self.runtime else ()
            return doctor.run_checks(code_dir=self.code_dir, refused_server_copies=refused)
        if self.runtime is None:
            self.runtime = self._build(Settings.from_environ(code_dir=self.code_dir))
        return handle(event, context, self.runtime)

    def prepare(self) -> None:
        """In Lambda's init phase (the module's import, at full CPU, before any event waits): build
        the settings and clients, and ask for the first Google token. Whatever fails here (the
        configuration, the credentials, the token endpoint) is left to the first event, which
        reports it as it would have without this; outside Lambda nothing is done."""
        try:
            settings = Settings.from_environ(code_dir=self.code_dir)
            if not settings.in_lambda:
                return
            self._configure(settings)
            deadline = Deadline()
            auth = GoogleAuth.from_settings(settings, deadline)
        except GcsSyncError:
            return
        # The token exchange (two round trips to Google) runs while the clients are built.
        deadline.start(INIT_TOKEN_MS)
        token = threading.Thread(target=_first_token, args=(auth,), name="gcs-sync-first-token", daemon=True)
        token.start()
        try:
            self.runtime = Runtime.build(settings, auth=auth, deadline=deadline)
        except GcsSyncError:
            pass
        finally:
            token.join(INIT_TOKEN_MS / 1000)
            deadline.start(None)

    @classmethod
    def _build(cls, settings: Settings) -> Runtime:
        cls._configure(settings)
        return Runtime.build(settings)

    @staticmethod
    def _configure(settings: Settings) -> None:
        logs.configure_from(settings.log)
        for warning in settings.warnings:
            log.warning(warning)

    def reset(self) -> None:
        if self.runtime is not None:
            self.runtime.copier.close()
        self.runtime = None


def _first_token(auth: GoogleAuth) -> None:
    try:
        auth.ensure_token()
    except GcsSyncError as exc:
        log.info("no Google token at start-up; the first event asks again", extra={"fields": {"error": str(exc)}})


def handle(event: Any, context: Any, runtime: Runtime) -> Any:
    invocation = events.parse(event)
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    runtime.deadline.start(remaining() if remaining else None)
    if isinstance(invocation, SqsBatch):
        return _sqs(invocation, runtime)
    if isinstance(invocation, BatchOperations):
        return _batch_operations(invocation, runtime)
    if isinstance(invocation, SyncRequest):
        return _sync(invocation, context, runtime)
    if isinstance(invocation, CheckRequest):
        return check(invocation, context, runtime)
    if isinstance(invocation, DoctorRequest):
        from . import doctor

        return doctor.run_checks()
    return _notifications(invocation, runtime)


def _notifications(invocation: Notifications, runtime: Runtime) -> dict:
    for line in invocation.ignored:
        log.info("record ignored", extra={"fields": {"reason": line}})
    reports = process(invocation.refs, runtime)
    metrics.emit(reports, function_name=runtime.settings.function_name, shape="notification", refs=invocation.refs,
                 started=runtime.deadline.began)
    summary = summarize(reports, ignored=invocation.ignored, problems=invocation.problems)
    _raise_for_failures(reports, summary, [f"event: {p}" for p in invocation.problems])
    return summary


def _sqs(batch: SqsBatch, runtime: Runtime) -> dict:
    failed_ids = _slices(batch, runtime)
    refs = [ref for message in batch.messages for ref in message.refs]
    all_reports = process(refs, runtime)
    metrics.emit(all_reports, function_name=runtime.settings.function_name, shape="sqs", refs=refs,
                 started=runtime.deadline.began)
    reports = iter(all_reports)
    for message in batch.messages:
        if message.slice is not None:
            continue
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


def _slices(batch: SqsBatch, runtime: Runtime) -> list[str]:
    """Run the batch's slice tasks (``slices``); the ids of the messages whose slice failed."""
    from .slices import parallel

    messages = [m for m in batch.messages if m.slice is not None]
    if not messages:
        return []
    kinds = []
    foreign = [m for m in messages if not queue_matches(runtime.settings.slice_queue_url, m.queue_arn)]
    for message in foreign:  # a slice task only ever comes from the function's own work queue
        kinds.append("refused")
        log.error("slice task refused", extra={"fields": {
            "source": message.slice.url, "messageId": message.message_id, "queue": message.queue_arn,
            "reason": "slice tasks are accepted only from SLICE_QUEUE_URL's queue",
            "next": "nothing was written; the message is dropped (metric SliceTasksRefused)"}})
    messages = [m for m in messages if m not in foreign]
    if messages:
        runtime.auth.ensure_token()
    slicer = runtime.copier.fanout.slicer
    outcomes = parallel([m.slice for m in messages], slicer.run, runtime.settings.object_concurrency)
    failed, reports = [], []
    for message, outcome in zip(messages, outcomes):
        task = message.slice
        if isinstance(outcome, GcsSyncError):
            failed.append(message.message_id)
            kinds.append("failed")
            log.error("slice failed", extra={"fields": {
                "source": task.url, "plan": task.plan, "slice": task.index + 1, "of": task.count,
                "messageId": message.message_id, "receiveCount": message.receive_count, "error": str(outcome),
                "next": "SQS delivers it again; after the queue's maxReceiveCount it moves to the dead-letter queue"}})
            continue
        kinds.append(outcome.kind)
        if outcome.report is not None:
            reports.append(outcome.report)
    metrics.emit_slices(kinds, function_name=runtime.settings.function_name)
    if reports:
        metrics.emit(reports, function_name=runtime.settings.function_name, shape="slices")  # from the planning
    return failed


def queue_matches(url: str | None, arn: str | None) -> bool:
    """Whether the queue ``arn`` (``arn:aws:sqs:REGION:ACCOUNT:NAME``) is the queue at ``url``
    (``https://sqs.REGION.amazonaws.com/ACCOUNT/NAME``, or an endpoint's ``.../ACCOUNT/NAME``)."""
    if not url or not arn:
        return False
    arn_parts = arn.split(":")
    path = [p for p in url.split("?")[0].rstrip("/").split("/") if p]
    if len(arn_parts) != 6 or len(path) < 2 or arn_parts[:3] != ["arn", arn_parts[1], "sqs"]:
        return False
    region = re.match(r"^https?://sqs[.-]([a-z0-9-]+)\.", url)
    return (arn_parts[4], arn_parts[5]) == (path[-2], path[-1]) and (region is None or region.group(1) == arn_parts[3])


def _batch_operations(batch: BatchOperations, runtime: Runtime) -> dict:
    refs = [task.ref for task in batch.tasks if task.ref is not None]
    try:
        task_reports = process(refs, runtime)
        metrics.emit(task_reports, function_name=runtime.settings.function_name, shape="batch_operations",
                     refs=refs, started=runtime.deadline.began)
        reports, shared_failure = iter(task_reports), None
    except GcsSyncError as exc:  # e.g. no Google token: every task fails alike
        reports, shared_failure = iter(()), exc
    results = []
    for task in batch.tasks:
        if task.ref is None:
            code, text = "PermanentFailure", task.problem or "malformed task"
        elif shared_failure is not None:
            code = "TemporaryFailure" if shared_failure.retryable else "PermanentFailure"
            text = str(shared_failure)
        else:
            code, text = _task_result(next(reports))
        results.append({"taskId": task.task_id, "resultCode": code, "resultString": text[:MAX_RESULT_STRING]})
    log.info("invocation summary", extra={"fields": {"tasks": len(results), "failedTasks": sum(
        r["resultCode"] != "Succeeded" for r in results)}})
    return {
        "invocationSchemaVersion": batch.schema_version,
        "treatMissingKeysAs": "PermanentFailure",
        "invocationId": batch.invocation_id,
        "results": results,
    }


def _task_result(report: ObjectReport) -> tuple[str, str]:
    if report.outcome == FAILED:
        return ("TemporaryFailure" if report.retryable else "PermanentFailure"), "; ".join(report.failure_lines())
    if report.outcome == SKIPPED:
        return "Succeeded", f"skipped: {report.skipped}"
    outcomes = ", ".join(f"{r.object} {r.outcome}" for r in report.results)
    return "Succeeded", outcomes or report.outcome


def _sync(request: SyncRequest, context: Any, runtime: Runtime) -> dict:
    from . import sync

    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if not request.dry_run:
        runtime.auth.ensure_token()
    result = sync.run(request, runtime.settings, runtime.s3, runtime.copier, runtime.writer, remaining)
    reports = result.pop("reports")
    metrics.emit(reports, function_name=runtime.settings.function_name, shape="sync",
                 started=runtime.deadline.began)
    summary = {**result, **summarize(reports)}
    _raise_for_failures(reports, summary, [], continuation=summary.get("continuation"))
    return summary


def check(request: CheckRequest, context: Any, runtime: Runtime) -> dict:
    """The audit: drift is reported in the result, never raised (it writes nothing)."""
    from . import audit

    remaining = getattr(context, "get_remaining_time_in_millis", None)
    runtime.auth.ensure_token()
    return audit.run(request.bucket, request.prefix, request.continuation, request.deep, runtime.settings,
                     runtime.s3, runtime.writer, runtime.copier.source, remaining)


def process(refs: Iterable[ObjectRef], runtime: Runtime) -> list[ObjectReport]:
    """One report per ref, in order: refused, filtered, ignored, copied or delete-mirrored."""
    refs = list(refs)
    settings = runtime.settings
    reports: list[ObjectReport | None] = [None] * len(refs)
    work: list[int] = []
    for i, ref in enumerate(refs):
        if settings.source_buckets is not None and ref.bucket not in settings.source_buckets:
            reports[i] = ObjectReport(source=ref.url, refused=(
                f"bucket {ref.bucket!r} is not in SOURCE_BUCKETS; the event was refused. Add the "
                "bucket to SOURCE_BUCKETS if it should be copied."))
            log.error("object refused", extra={"fields": {"source": ref.url, "outcome": FAILED,
                                                          "error": reports[i].refused}})
        elif not settings.key_filter.allows(ref.key):
            reports[i] = ObjectReport(source=ref.url, skipped="excluded by INCLUDE / EXCLUDE")
        elif ref.removed and not settings.mirror_deletes:
            reports[i] = ObjectReport(source=ref.url, skipped="delete not mirrored (MIRROR_DELETES is off)")
            log.info("delete ignored", extra={"fields": {"source": ref.url, "outcome": SKIPPED}})
        else:
            work.append(i)
    if work:
        runtime.auth.ensure_token()
        if settings.in_lambda:
            Staging.sweep(settings.staging_dir)
        # One copy per object state, however often the batch announces it (e.g. a multipart
        # upload's Put and CompleteMultipartUpload): duplicates share the first one's report.
        first: dict[tuple, int] = {}
        for i in work:
            first.setdefault((refs[i].bucket, refs[i].key, refs[i].version_id, refs[i].removed), i)
        unique = sorted(set(first.values()))
        with Staging(settings.staging_dir) as staging:
            done = dict(zip(unique, runtime.copier.copy_all([refs[i] for i in unique], staging)))
        for i in work:
            reports[i] = done[first[(refs[i].bucket, refs[i].key, refs[i].version_id, refs[i].removed)]]
    return [r for r in reports if r is not None]


def summarize(reports: list[ObjectReport], *, ignored: Iterable[str] = (), problems: Iterable[str] = ()) -> dict:
    reports = list({id(r): r for r in reports}.values())  # an object announced twice counts once
    counts: dict[str, int] = {}
    for report in reports:
        counts[report.outcome] = counts.get(report.outcome, 0) + 1
    summary = {
        "objects": len(reports),
        **{k: counts.get(k, 0) for k in COUNTED},
        "bytes": sum(r.bytes for r in reports),
        "results": [r.as_dict() for r in reports[:MAX_LISTED_RESULTS]],
    }
    if len(reports) > MAX_LISTED_RESULTS:
        summary["results_truncated"] = len(reports) - MAX_LISTED_RESULTS
    if ignored:
        summary["ignored"] = list(ignored)
    if problems:
        summary["problems"] = list(problems)
    log.info("invocation summary", extra={"fields": {"summary": {
        k: v for k, v in summary.items() if k not in ("results", "ignored", "problems", "would_copy")}}})
    return summary


def _raise_for_failures(reports: list[ObjectReport], summary: dict, extra: list[str],
                        continuation: str | None = None) -> None:
    failures = [line for r in reports for line in r.failure_lines()] + extra
    if failures:
        if continuation:
            failures.append(f"(the sync stopped early; resume it with continuation {continuation})")
        failed = [r for r in reports if r.failure_lines()]
        raise CopyFailed(failures, summary, retryable=not extra and bool(failed) and all(r.retryable for r in failed))

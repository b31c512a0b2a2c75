"""Raw invocation events of every supported shape -> plain values. Pure: no I/O.

Keys are URL-decoded here, once, at the boundary; nothing downstream decodes again.
A malformed record never hides the good ones: it becomes a problem string on the parsed
invocation, reported (and failed) after everything else is copied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Union
from urllib.parse import unquote_plus

from .errors import EventError

ACCEPTED_SHAPES = (
    "an S3 event notification ({'Records': [{'eventSource': 'aws:s3', ...}]}), "
    "S3 notifications delivered through SQS, SNS or SNS inside SQS, "
    "an EventBridge 'Object Created' / 'Object Deleted' event from aws.s3, "
    "an S3 Batch Operations invocation (schema 1.0 or 2.0), "
    "a manual sync {'sync': {'bucket': NAME, 'prefix': PREFIX}}, "
    "an audit {'check': {'bucket': NAME, 'prefix': PREFIX}}, "
    "a health check {'doctor': {}}, "
    "or a record of the function's on-failure destination ({'version': '1.0', 'requestContext': {...}, "
    "'requestPayload': ORIGINAL_EVENT, ...}: the original event is processed again)"
)
# A failure record whose original event is itself a failure record (a redrive that failed
# asynchronously): followed this many levels deep, no further.
MAX_REDRIVE_DEPTH = 3


@dataclass(frozen=True)
class ObjectRef:
    """One changed S3 object as an event names it (key already decoded)."""

    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None
    sequencer: str | None = None
    event_time: str | None = None
    removed: bool = False

    @property
    def url(self) -> str:
        version = f" (version {self.version_id})" if self.version_id else ""
        return printable(f"s3://{self.bucket}/{self.key}{version}")


def printable(text: str) -> str:
    """``text`` with line breaks and other control characters escaped, for one-line messages."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


@dataclass(frozen=True)
class Notifications:
    """S3 notifications delivered directly, through SNS, or through EventBridge."""

    refs: tuple[ObjectRef, ...]
    ignored: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


SLICE_TASK = "gcs-sync-slice"  # the key of an SQS message body that holds one slice of a large object


@dataclass(frozen=True)
class SliceTask:
    """One slice of an object too large for one invocation, as the planning invocation queued it
    (see ``slices``): everything the slice needs, pinned to the source state the plan saw."""

    plan: str  # the plan's id: the same source state planned again gives the same id
    bucket: str
    key: str
    version_id: str | None
    etag: str
    size: int  # of the whole object
    index: int  # 0-based
    count: int
    start: int  # byte range [start, end) of the object
    end: int
    parts: tuple[int, ...] = ()  # sizes of the S3 parts this slice holds (empty: not aligned with parts)
    first_part: int = 0  # the S3 part number of parts[0]
    destination: str = ""  # Destination.url of the destination composed into (the primary)
    name: str = ""  # the final object's name there
    generation: int = 0  # what that name held when planned (0: nothing): the compose's precondition
    record: dict = field(default_factory=dict)  # S3's record: etag, checksums, type, digest
    headers: dict = field(default_factory=dict)
    user_metadata: dict = field(default_factory=dict)
    last_modified: str | None = None
    sequencer: str | None = None
    round: int = 1  # planned again (after a failed proof) with round + 1
    planned_at: float = 0.0  # Unix time of the planning, for the final result's duration

    @property
    def url(self) -> str:
        version = f" (version {self.version_id})" if self.version_id else ""
        return printable(f"s3://{self.bucket}/{self.key}{version}")

    def body(self) -> str:
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        fields["parts"] = list(self.parts)
        return json.dumps({SLICE_TASK: fields}, separators=(",", ":"))

    @classmethod
    def from_fields(cls, data: Any) -> "SliceTask":
        """ValueError naming the field that is missing or of the wrong type."""
        if not isinstance(data, dict):
            raise ValueError("not an object")
        kinds = {"plan": str, "bucket": str, "key": str, "etag": str, "size": int, "index": int, "count": int,
                 "start": int, "end": int, "destination": str, "name": str}
        optional = {"version_id": str, "first_part": int, "generation": int, "record": dict, "headers": dict,
                    "user_metadata": dict, "last_modified": str, "sequencer": str, "round": int,
                    "planned_at": (int, float), "parts": list}
        values = {}
        for name, kind in {**kinds, **optional}.items():
            value = data.get(name)
            if value is None and name in optional:
                continue
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"field {name!r} missing or not a {getattr(kind, '__name__', 'number')}")
            values[name] = value
        if not all(isinstance(p, int) and p >= 0 for p in values.get("parts", [])):
            raise ValueError("field 'parts' must list part sizes")
        values["parts"] = tuple(values.get("parts", ()))
        values.setdefault("version_id", None)
        task = cls(**values)
        if not (0 <= task.index < task.count and 0 <= task.start <= task.end <= task.size):
            raise ValueError(f"slice {task.index} of {task.count}, bytes {task.start}-{task.end} of {task.size}: "
                             "out of range")
        if task.parts and sum(task.parts) != task.end - task.start:
            raise ValueError("the part sizes do not add up to the slice's range")
        _unicode(task.key, "object key")
        return task


@dataclass(frozen=True)
class SqsMessage:
    """One SQS message: the S3 notifications it carries, or one slice task."""

    message_id: str
    refs: tuple[ObjectRef, ...] = ()
    ignored: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    slice: SliceTask | None = None  # a slice of a large object, queued by this function
    receive_count: int | None = None  # SQS's ApproximateReceiveCount, for a slice's logs
    queue_arn: str | None = None  # the queue the message came from (a slice task must come from SLICE_QUEUE_URL's)


@dataclass(frozen=True)
class SqsBatch:
    """An SQS batch: one result per message (``batchItemFailures``)."""

    messages: tuple[SqsMessage, ...]


@dataclass(frozen=True)
class BatchTask:
    """One task of an S3 Batch Operations job: the object it names, or why it names none."""

    task_id: str
    ref: ObjectRef | None
    problem: str | None = None


@dataclass(frozen=True)
class BatchOperations:
    """An S3 Batch Operations invocation (schema 1.0 or 2.0): one result per task."""

    schema_version: str
    invocation_id: str
    tasks: tuple[BatchTask, ...]
    user_arguments: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SyncRequest:
    """A manual sync: copy what is missing or different under a prefix, resumably."""

    bucket: str | None
    prefix: str = ""
    continuation: str | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class CheckRequest:
    """An audit: compare a prefix with every destination and report drift; writes nothing."""

    bucket: str | None
    prefix: str = ""
    continuation: str | None = None
    deep: bool = False


@dataclass(frozen=True)
class DoctorRequest:
    """The health check from the console: reads and asks permissions, never writes."""


Invocation = Union[Notifications, SqsBatch, BatchOperations, SyncRequest, CheckRequest, DoctorRequest]


def parse(event: Any, *, depth: int = 0) -> Invocation:
    """Classify and parse an invocation event; raise EventError for any other shape.

    A record of the function's on-failure destination is unwrapped: its original event
    (``requestPayload``) is parsed as if it had arrived itself (a redrive). ``depth`` counts the
    failure records already unwrapped around ``event``.
    """
    if isinstance(event, dict):
        if is_failure_record(event):
            return _redrive(event, depth)
        records = event.get("Records")
        if isinstance(records, list) and records:
            sources = {_source_of(r) for r in records if isinstance(r, dict)} - {None}
            if sources == {"aws:sqs"}:
                return SqsBatch(tuple(_sqs_message(r, i, depth) for i, r in enumerate(records)))
            if sources and sources <= {"aws:s3", "aws:sns"}:
                return _notification_records(records, depth)
        if event.get("source") == "aws.s3" and "detail-type" in event:
            return _eventbridge(event)
        if "invocationSchemaVersion" in event and "tasks" in event:
            return _batch_operations(event)
        if "sync" in event:
            return _sync(event["sync"])
        if "check" in event:
            return _check(event["check"])
        if "doctor" in event:
            return _doctor(event["doctor"])
        if _is_s3_test_event(event):
            return Notifications(refs=(), ignored=("s3:TestEvent",))
    raise EventError(f"unrecognised event: gcs-sync accepts {ACCEPTED_SHAPES}. {_describe(event)}")


def decode_key(raw: Any) -> str:
    """An event's URL-encoded key ('+' is a space, '%2B' a plus) -> the real key."""
    if not isinstance(raw, str) or not raw:
        raise ValueError("object key missing or not a string")
    return _unicode(unquote_plus(raw), "object key")


def _unicode(text: str, what: str) -> str:
    """``text`` if it is valid Unicode (no lone surrogates), else ValueError naming ``what``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not valid Unicode") from exc
    return text


def is_failure_record(payload: Any) -> bool:
    """Whether ``payload`` is a record Lambda writes to an asynchronous invocation's destination
    (``{"version": "1.0", "requestContext": {...}, "requestPayload": ORIGINAL_EVENT, ...}``)."""
    return (isinstance(payload, dict) and "requestPayload" in payload
            and isinstance(payload.get("requestContext"), dict))


def failure_record(body: Any) -> dict | None:
    """The failure record an SQS message body holds (directly, or as the message of an SNS
    notification), or None when it holds none."""
    payload = _json(body) if isinstance(body, str) else body
    if isinstance(payload, dict) and payload.get("Type") == "Notification" and isinstance(payload.get("Message"), str):
        payload = _json(payload["Message"])
    return payload if is_failure_record(payload) else None


def describe_failure_record(record: dict) -> str:
    """One line naming a failure record: its request id, condition and number of attempts."""
    context = record.get("requestContext") if isinstance(record.get("requestContext"), dict) else {}
    parts = [f"request {context.get('requestId')}" if context.get("requestId") else "request (no id)"]
    if context.get("condition"):
        parts.append(str(context["condition"]))
    if context.get("approximateInvokeCount"):
        parts.append(f"{context['approximateInvokeCount']} attempt(s)")
    if record.get("timestamp"):
        parts.append(f"at {record['timestamp']}")
    return printable(", ".join(str(p)[:200] for p in parts))


def _redrive(record: dict, depth: int) -> Invocation:
    """The original event of a failure record, parsed as if it had arrived itself."""
    if depth >= MAX_REDRIVE_DEPTH:
        raise EventError(
            f"failure record ({describe_failure_record(record)}): nested more than {MAX_REDRIVE_DEPTH} failure "
            "records deep; redrive the innermost requestPayload instead")
    payload = record["requestPayload"]
    if isinstance(payload, str):  # an original event Lambda could not keep as JSON
        payload = _json(payload) or payload
    try:
        return parse(payload, depth=depth + 1)
    except EventError as exc:
        raise EventError(f"failure record ({describe_failure_record(record)}): its requestPayload, the original "
                         f"event, is not one gcs-sync accepts: {exc}") from None


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _notification_records(records: list, depth: int = 0) -> Notifications:
    refs: list[ObjectRef] = []
    ignored: list[str] = []
    problems: list[str] = []
    for index, record in enumerate(records):
        _one_record(record, f"Records[{index}]", refs, ignored, problems, depth)
    return Notifications(tuple(refs), tuple(ignored), tuple(problems))


def _one_record(record: Any, where: str, refs: list, ignored: list, problems: list, depth: int = 0) -> None:
    if not isinstance(record, dict):
        problems.append(f"{where}: not an object")
        return
    source = record.get("eventSource") or record.get("EventSource")
    if source == "aws:sns":
        sns = record.get("Sns")
        message = sns.get("Message") if isinstance(sns, dict) else None
        _embedded_notification(message, f"{where}.Sns.Message", refs, ignored, problems, depth)
        return
    if source != "aws:s3":
        problems.append(f"{where}: eventSource {source!r} is not aws:s3")
        return
    name = record.get("eventName")
    if not isinstance(name, str):
        problems.append(f"{where}: eventName missing")
        return
    if name.startswith("s3:"):  # tolerate the prefix some emulators add
        name = name[3:]
    created = name.startswith("ObjectCreated:")
    if not created and not name.startswith("ObjectRemoved:"):
        ignored.append(f"{where}: {name} events change no object bytes")
        return
    try:
        s3 = record["s3"]
        obj = s3["object"]
        bucket = s3["bucket"]["name"]
        if not isinstance(bucket, str) or not bucket:
            raise ValueError("bucket name missing")
        refs.append(
            ObjectRef(
                bucket=bucket,
                key=decode_key(obj.get("key")),
                version_id=_opt_str(obj.get("versionId")),
                etag=_etag(obj.get("eTag")),
                size=_opt_int(obj.get("size")),
                sequencer=_opt_str(obj.get("sequencer")),
                event_time=_opt_str(record.get("eventTime")),
                removed=not created,
            )
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        problems.append(f"{where}: malformed {name} record ({_reason(exc)})")


def _embedded_notification(message: Any, where: str, refs: list, ignored: list, problems: list,
                           depth: int = 0) -> None:
    """A JSON string holding an S3 notification (the body of an SNS or SQS message), or a failure
    record whose original event holds one."""
    try:
        payload = json.loads(message) if isinstance(message, str) else None
    except (ValueError, RecursionError):
        payload = None
    if isinstance(payload, dict) and payload.get("Type") == "Notification" and "Message" in payload:
        _embedded_notification(payload.get("Message"), f"{where}.Message", refs, ignored, problems, depth)
        return
    if is_failure_record(payload):
        _embedded_failure_record(payload, where, refs, ignored, problems, depth)
        return
    if isinstance(payload, dict) and _is_s3_test_event(payload):
        ignored.append(f"{where}: s3:TestEvent")
        return
    if isinstance(payload, dict) and payload.get("source") == "aws.s3" and "detail-type" in payload:
        parsed = _eventbridge(payload)
        refs.extend(parsed.refs)
        ignored.extend(parsed.ignored)
        problems.extend(parsed.problems)
        return
    records = payload.get("Records") if isinstance(payload, dict) else None
    if not isinstance(records, list) or not records:
        problems.append(f"{where}: holds no S3 event notification")
        return
    for index, record in enumerate(records):
        _one_record(record, f"{where}.Records[{index}]", refs, ignored, problems, depth)


def _embedded_failure_record(record: dict, where: str, refs: list, ignored: list, problems: list,
                             depth: int) -> None:
    """A failure record inside a message: the S3 notifications of its original event. A message
    carries objects only, so an original event of another kind (a sync, a Batch Operations job)
    is a problem saying how to redrive it."""
    try:
        inner = _redrive(record, depth)
    except EventError as exc:
        problems.append(f"{where}: {exc}")
        return
    if isinstance(inner, SqsBatch):
        messages = inner.messages
        inner = Notifications(
            refs=tuple(r for m in messages for r in m.refs), ignored=tuple(i for m in messages for i in m.ignored),
            problems=tuple(p for m in messages for p in m.problems) + tuple(
                f"SQS message {m.message_id}: a slice task is not redriven; the object's next event or "
                "a sync copies it" for m in messages if m.slice is not None))
    if isinstance(inner, Notifications):
        refs.extend(inner.refs)
        ignored.extend(f"{where} (redriven): {line}" for line in inner.ignored)
        problems.extend(f"{where} (redriven): {line}" for line in inner.problems)
        return
    kind = {SyncRequest: "manual sync", CheckRequest: "audit", DoctorRequest: "health check",
            BatchOperations: "S3 Batch Operations invocation"}.get(type(inner), type(inner).__name__)
    problems.append(
        f"{where}: a failure record ({describe_failure_record(record)}) of a {kind}; a queue message redrives "
        "S3 notifications only. Fix: paste the record into the Lambda console as a test event, or run "
        "`python -m gcs_sync redrive FAILURE_QUEUE_URL`")


def _sqs_message(record: Any, index: int, depth: int = 0) -> SqsMessage:
    message_id = record.get("messageId") if isinstance(record, dict) else None
    if not isinstance(message_id, str) or not message_id:
        message_id = f"Records[{index}]"
    refs: list[ObjectRef] = []
    ignored: list[str] = []
    problems: list[str] = []
    body = record.get("body") if isinstance(record, dict) else None
    task = _slice_task(body)
    if task is not None:  # a slice queued by this function, before any S3 notification shape
        if isinstance(task, str):
            return SqsMessage(message_id, problems=(f"SQS message {message_id}: malformed slice task ({task})",))
        attributes = record.get("attributes") if isinstance(record.get("attributes"), dict) else {}
        count = attributes.get("ApproximateReceiveCount")
        arn = record.get("eventSourceARN")
        return SqsMessage(message_id, slice=task,
                          receive_count=int(count) if isinstance(count, str) and count.isdigit() else None,
                          queue_arn=arn if isinstance(arn, str) else None)
    _embedded_notification(body, f"SQS message {message_id}", refs, ignored, problems, depth)
    return SqsMessage(message_id, tuple(refs), tuple(ignored), tuple(problems))


def _slice_task(body: Any) -> SliceTask | str | None:
    """The slice task in an SQS body; a str saying what is wrong with a malformed one; None when
    the body is not a slice task."""
    if not isinstance(body, str) or SLICE_TASK not in body:
        return None
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(payload, dict) or SLICE_TASK not in payload:
        return None
    try:
        return SliceTask.from_fields(payload[SLICE_TASK])
    except (TypeError, ValueError) as exc:
        return _reason(exc)


def _eventbridge(event: dict) -> Notifications:
    kind = event.get("detail-type")
    if kind not in ("Object Created", "Object Deleted"):
        return Notifications(refs=(), ignored=(f"EventBridge {kind!r} events change no object bytes",))
    try:
        detail = event["detail"]
        obj = detail["object"]
        bucket = detail["bucket"]["name"]
        if not isinstance(bucket, str) or not bucket:
            raise ValueError("bucket name missing")
        ref = ObjectRef(
            bucket=bucket,
            key=decode_key(obj.get("key")),
            version_id=_opt_str(obj.get("version-id")),
            etag=_etag(obj.get("etag")),
            size=_opt_int(obj.get("size")),
            sequencer=_opt_str(obj.get("sequencer")),
            event_time=_opt_str(event.get("time")),
            removed=kind == "Object Deleted",
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return Notifications(refs=(), problems=(f"EventBridge {kind} event: malformed ({_reason(exc)})",))
    return Notifications(refs=(ref,))


def _source_of(record: dict) -> str | None:
    source = record.get("eventSource") or record.get("EventSource")
    return source if isinstance(source, str) else None


def _batch_operations(event: dict) -> BatchOperations:
    version = event.get("invocationSchemaVersion")
    if version not in ("1.0", "2.0"):
        raise EventError(f"S3 Batch Operations: invocationSchemaVersion {version!r} is not 1.0 or 2.0")
    invocation_id = event.get("invocationId")
    tasks = event.get("tasks")
    if not isinstance(invocation_id, str) or not isinstance(tasks, list):
        raise EventError("S3 Batch Operations: invocationId and a tasks list are required")
    job = event.get("job") if isinstance(event.get("job"), dict) else {}
    arguments = job.get("userArguments") if isinstance(job.get("userArguments"), dict) else {}
    return BatchOperations(version, invocation_id, tuple(_batch_task(t, i) for i, t in enumerate(tasks)), arguments)


def _batch_task(task: Any, index: int) -> BatchTask:
    task_id = task.get("taskId") if isinstance(task, dict) else None
    if not isinstance(task_id, str) or not task_id:
        task_id = f"tasks[{index}]"
    try:
        if not isinstance(task, dict):
            raise ValueError("not an object")
        bucket = task.get("s3Bucket")
        if bucket is None:
            arn = task.get("s3BucketArn")
            if not isinstance(arn, str) or not arn.startswith("arn:aws:s3:::"):
                raise ValueError("neither s3Bucket nor an s3BucketArn of the form arn:aws:s3:::BUCKET")
            bucket = arn[len("arn:aws:s3:::"):]
        if not isinstance(bucket, str) or not bucket:
            raise ValueError("bucket name missing")
        ref = ObjectRef(bucket=bucket, key=decode_key(task.get("s3Key")),
                        version_id=_opt_str(task.get("s3VersionId")))
    except (TypeError, ValueError) as exc:
        return BatchTask(task_id, None, f"malformed task ({_reason(exc)})")
    return BatchTask(task_id, ref)


def _sync(body: Any) -> SyncRequest:
    bucket, prefix, token, dry_run = _listing_request(body, "manual sync", "sync", "dry_run")
    return SyncRequest(bucket=bucket, prefix=prefix, continuation=token, dry_run=dry_run)


def _check(body: Any) -> CheckRequest:
    bucket, prefix, token, deep = _listing_request(body, "audit", "check", "deep")
    return CheckRequest(bucket=bucket, prefix=prefix, continuation=token, deep=deep)


def _listing_request(body: Any, what: str, key: str, flag: str) -> tuple[Any, str, Any, bool]:
    """The fields of a sync or an audit: bucket, prefix, continuation and one true/false option."""
    if body is None and key == "check":
        body = {}
    if not isinstance(body, dict):
        raise EventError(f'{what}: expected {{"{key}": {{"bucket": NAME, "prefix": PREFIX}}}}')
    unknown = set(body) - {"bucket", "prefix", "continuation", flag}
    if unknown:
        raise EventError(f"{what}: unknown field(s) {', '.join(sorted(map(str, unknown)))}; "
                         f"accepted: bucket, prefix, continuation, {flag}")
    bucket, prefix, token = body.get("bucket"), body.get("prefix", ""), body.get("continuation")
    option = body.get(flag, False)
    if bucket is not None and (not isinstance(bucket, str) or not bucket):
        raise EventError(f"{what}: bucket must be a bucket name")
    if prefix is None:
        prefix = ""
    if not isinstance(prefix, str):
        raise EventError(f"{what}: prefix must be a string")
    if token is not None and not isinstance(token, str):
        raise EventError(f"{what}: continuation must be the token a previous {key} returned")
    if not isinstance(option, bool):
        raise EventError(f"{what}: {flag} must be true or false")
    for name, value in (("bucket", bucket), ("prefix", prefix), ("continuation", token)):
        try:
            if value is not None:
                _unicode(value, name)
        except ValueError as exc:
            raise EventError(f"{what}: {exc}") from exc
    return bucket, prefix, token, option


def _doctor(body: Any) -> DoctorRequest:
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise EventError('health check: expected {"doctor": {}}')
    if body:
        raise EventError(
            "health check: {\"doctor\": {}} takes no options; it never writes to a bucket. "
            "To test writes, run `python -m gcs_sync doctor --write-probe` with the same settings."
        )
    return DoctorRequest()


def _is_s3_test_event(payload: dict) -> bool:
    return payload.get("Event") == "s3:TestEvent"


def _etag(value: Any) -> str | None:
    text = _opt_str(value)
    return text.strip('"') if text else None


def _opt_str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return _unicode(value, "a field")


def _opt_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"size is not a number: {value!r}"[:120])
    number = int(value)
    if number < 0:
        raise ValueError("size is negative")
    return number


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    return str(exc)[:200] or type(exc).__name__


def _describe(event: Any) -> str:
    if isinstance(event, dict):
        keys = ", ".join(sorted(str(k) for k in event)[:10])
        return f"Received an object with keys: {keys or '(none)'}."
    return f"Received a {type(event).__name__}."

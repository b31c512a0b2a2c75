"""Settings: the only reader of the environment.

Everything is parsed and validated once, when the container starts. Every problem found is
collected and reported together in one ``ConfigError`` naming the variable, so a deployment is
fixed in one go. Tests build ``Settings`` directly.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
import os
import re
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Mapping

from .credential_config import credential_file_problems
from .errors import ConfigError, Problem

GS_SCHEME = "gs://"
_SPLIT = re.compile(r"[\s,]+")
_BUCKET_COMPONENT = re.compile(r"^[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
MIB = 1024 * 1024
_COMPAT_BUCKET = re.compile(r"^GCS_BUCKET_NAME_(.+)$")


@dataclass(frozen=True)
class Destination:
    """One place copied objects land: ``gs://bucket/`` + prefix + key.

    With ``source_prefix`` (written ``SRC_PREFIX=gs://bucket/prefix``) only keys under that
    source prefix go to this destination, and the source prefix is replaced, not kept.

    The options written after ``?`` (see ``DESTINATION_OPTIONS``) say how every copy there is
    written: ``storage_class`` (a Cloud Storage class, or ``source``: S3's, mapped), ``kms_key``
    (a Cloud KMS key's resource name), ``custom_time`` (the source's Last-Modified as the copy's
    customTime) and ``holds`` (S3 Object Lock carried over). Unset, the bucket's defaults apply.
    """

    bucket: str
    prefix: str = ""
    source_prefix: str = ""
    storage_class: str | None = None
    kms_key: str | None = None
    custom_time: bool = False
    holds: bool = False

    @property
    def url(self) -> str:
        """``gs://bucket/prefix``, without the options: how results and PRIMARY_DESTINATION name it."""
        return f"{GS_SCHEME}{self.bucket}/{self.prefix}"

    @property
    def policy(self) -> str | None:
        """The options set, as a short stable text (``storage_class=ARCHIVE&custom_time=source``),
        recorded on each copy to say which policy it was written under; None when none is set."""
        parts = []
        if self.storage_class:
            parts.append(f"storage_class={self.storage_class}")
        if self.kms_key:
            parts.append(f"kms_key={self.kms_key}")
        if self.custom_time:
            parts.append("custom_time=source")
        if self.holds:
            parts.append("holds=source")
        return "&".join(parts) or None

    def maps(self, key: str) -> bool:
        return key.startswith(self.source_prefix)

    def object_name(self, key: str) -> str:
        return self.prefix + key[len(self.source_prefix):]


@dataclass(frozen=True)
class KeyFilter:
    """INCLUDE / EXCLUDE: key prefixes, or globs when a pattern holds * ? or [."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def allows(self, key: str) -> bool:
        if self.include and not any(_matches(p, key) for p in self.include):
            return False
        return not any(_matches(p, key) for p in self.exclude)


def _matches(pattern: str, key: str) -> bool:
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(key, pattern)
    return key.startswith(pattern)


# Python level names gcs-sync logs at, from any name a user or Lambda writes (Lambda's console
# uses TRACE, DEBUG, INFO, WARN, ERROR, FATAL; Python uses WARNING and CRITICAL).
_LEVELS = {"TRACE": "DEBUG", "DEBUG": "DEBUG", "INFO": "INFO", "WARN": "WARNING", "WARNING": "WARNING",
           "ERROR": "ERROR", "FATAL": "ERROR", "CRITICAL": "ERROR"}
_LEVEL_GUESSES = {"VERBOSE": "DEBUG", "ALL": "DEBUG", "WARNINGS": "WARNING", "ERR": "ERROR",
                  "ERRORS": "ERROR", "QUIET": "WARNING", "NOTICE": "INFO"}
_LAMBDA_LEVEL_ORDER = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
_PYTHON_LEVEL_ORDER = ("DEBUG", "INFO", "WARNING", "ERROR")
_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen".split())}


@dataclass(frozen=True)
class LogSettings:
    """How gcs-sync logs: its level, and Lambda's own logging controls when they are set.

    ``level``: the Python level name gcs-sync's loggers use: ``LOG_LEVEL`` when set (the
    override), else Lambda's application log level (``AWS_LAMBDA_LOG_LEVEL``, set by the
    console's "Log level" under the JSON log format), else INFO. ``lambda_format``: ``JSON`` or
    ``Text`` (``AWS_LAMBDA_LOG_FORMAT``), None outside Lambda. ``lambda_level``: Lambda's
    application log level name (``WARN``...), below which Lambda itself drops JSON lines.
    """

    level: str = "INFO"
    lambda_format: str | None = None
    lambda_level: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "LogSettings":
        """Never raises: a bad LOG_LEVEL is reported by ``Settings.from_environ``; here it is ignored."""
        return cls._parse(os.environ if environ is None else environ, [], [])

    @classmethod
    def _parse(cls, env: Mapping[str, str], problems: list, warnings: list[str]) -> "LogSettings":
        raw_format = env.get("AWS_LAMBDA_LOG_FORMAT", "").strip().upper()
        lambda_format = {"JSON": "JSON", "TEXT": "Text"}.get(raw_format)
        raw_lambda = env.get("AWS_LAMBDA_LOG_LEVEL", "").strip().upper()
        lambda_level = raw_lambda if raw_lambda in _LAMBDA_LEVEL_ORDER else None
        level = _LEVELS[lambda_level] if lambda_level else "INFO"
        raw = env.get("LOG_LEVEL", "").strip()
        if raw:
            upper = raw.upper()
            if upper in _LEVELS:
                level = _LEVELS[upper]
            else:
                guess = _LEVEL_GUESSES.get(upper.rstrip("S") if upper not in _LEVEL_GUESSES else upper)
                problems.append(Problem(
                    "LOG_LEVEL", f"{raw!r} is not a log level",
                    (f"LOG_LEVEL={guess} is probably what you mean; the levels are " if guess else
                     "set LOG_LEVEL to one of ") + "DEBUG, INFO, WARNING, ERROR (Lambda's TRACE, WARN "
                    "and FATAL are accepted too), or remove it to follow the function's log level "
                    "(INFO by default)"))
            if (lambda_level and lambda_format == "JSON" and upper in _LEVELS
                    and _PYTHON_LEVEL_ORDER.index(level) < _PYTHON_LEVEL_ORDER.index(_LEVELS[lambda_level])):
                warnings.append(
                    f"LOG_LEVEL={raw} writes {level} lines, but the function's application log level is "
                    f"{lambda_level}, so Lambda drops every line below {lambda_level}; to see them, set "
                    "the log level in the Lambda console (Configuration > Monitoring and operations "
                    f"tools > Logging configuration) to {'DEBUG' if level == 'DEBUG' else level[:4]} "
                    "or lower")
        return cls(level=level, lambda_format=lambda_format, lambda_level=lambda_level)


@dataclass(frozen=True)
class Settings:
    """Every setting of the function, read once from the environment (``from_environ``)."""

    destinations: tuple[Destination, ...]
    key_filter: KeyFilter = KeyFilter()
    credentials_path: str | None = None
    credentials_setting: str | None = None  # GOOGLE_APPLICATION_CREDENTIALS as written
    credentials_base: str | None = None  # what a relative path was resolved against, in words
    allow_service_account_key: bool = False
    google_cloud_project: str | None = None
    gcs_api_endpoint: str | None = None
    source_buckets: frozenset[str] | None = None
    default_source_bucket: str | None = None
    mirror_deletes: bool = False
    staging_dir: str = field(default_factory=tempfile.gettempdir)
    object_concurrency: int = 4
    stream_threshold: int = 8 * MIB  # objects this large stream instead of staging
    stream_chunk: int = 8 * MIB
    s3_read_parts: int = 1  # 1: one streamed GET per object; N: N ranged GETs of stream_chunk in flight
    memory_mb: int = 1024  # the function's memory setting (AWS_LAMBDA_FUNCTION_MEMORY_SIZE)
    log_level: str = "INFO"
    log: LogSettings = LogSettings()
    fanout: str = "copy"  # copy: upload once, copy server-side to the other destinations; upload: to each
    primary_destination: str | None = None  # Destination.url of the one uploaded to (FANOUT=copy)
    aws_region: str | None = None
    aws_keys_present: bool = False
    in_lambda: bool = False
    function_name: str = "gcs-sync"
    # Objects too large for one invocation: split into slices of slice_mb, each a task on this
    # SQS queue (the function's own). slice_threshold_mb None: decided from the remaining time.
    slice_queue_url: str | None = None
    slice_mb: int = 256
    slice_threshold_mb: int | None = None
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        code_dir: str | None = None,
        relative_to: str | None = None,
        check_credential_file: bool = True,
    ) -> "Settings":
        """Parse and validate every variable; raise one ``ConfigError`` listing every problem.

        A relative ``GOOGLE_APPLICATION_CREDENTIALS`` is resolved against ``relative_to`` when
        given (the command line passes the current directory), else against the function's code
        directory (``LAMBDA_TASK_ROOT``, else ``code_dir``). When any variable is wrong and
        ``check_credential_file`` is true, the credential file's own problems are listed in the
        same error, so one round of fixes covers both.
        """
        env = os.environ if environ is None else environ
        problems: list[Problem] = []
        warnings: list[str] = []
        credentials = cls.for_credentials(env, code_dir=code_dir, relative_to=relative_to)
        destinations = _destinations(env, problems, warnings)
        _require_credentials_in_lambda(credentials, problems)
        fields = {  # each group's own parser, in the order its problems are listed
            **_source_fields(env, problems),
            **_endpoint_fields(env, problems),
            **_flag_fields(env, problems),
            **_size_fields(env, problems),
            **_staging_fields(env, credentials.in_lambda, problems),
            **_log_fields(env, problems, warnings),
            **_fanout_fields(env, destinations, problems),
            **_slice_fields(env, problems, warnings),
        }
        if problems:
            if check_credential_file and credentials.credentials_path is not None:
                problems.extend(credential_file_problems(credentials))
            raise ConfigError(problems)
        return dataclasses.replace(
            credentials,
            destinations=tuple(destinations),
            key_filter=_key_filter(env),
            google_cloud_project=env.get("GOOGLE_CLOUD_PROJECT", "").strip() or None,
            function_name=env.get("AWS_LAMBDA_FUNCTION_NAME") or "gcs-sync",
            warnings=tuple(warnings),
            **fields,
        )

    @classmethod
    def for_credentials(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        code_dir: str | None = None,
        relative_to: str | None = None,
    ) -> "Settings":
        """Only what checking the credential configuration needs (no destinations); never raises.

        Lets the credential file be checked, and its problems reported, even when other
        variables are wrong. A malformed ALLOW_SERVICE_ACCOUNT_KEY counts as false here.
        """
        env = os.environ if environ is None else environ
        path, setting, base = _credentials_path(env, code_dir, relative_to)
        return cls(
            destinations=(),
            credentials_path=path,
            credentials_setting=setting,
            credentials_base=base,
            allow_service_account_key=_flag(env, "ALLOW_SERVICE_ACCOUNT_KEY", []),
            aws_region=(env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None),
            aws_keys_present=bool(env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY")),
            in_lambda=bool(env.get("AWS_LAMBDA_FUNCTION_NAME")),
        )


# --------------------------------------------------------------------------- one parser per group
# Each reads its variables, appends what is wrong to ``problems`` (warnings to ``warnings``) and
# returns its Settings fields by name.


def _require_credentials_in_lambda(credentials: Settings, problems: list) -> None:
    if credentials.credentials_path is None and credentials.in_lambda:
        problems.append(Problem(
            "GOOGLE_APPLICATION_CREDENTIALS", "not set; in Lambda it is required",
            "set GOOGLE_APPLICATION_CREDENTIALS=gcp-credentials.json, the name ./build.sh "
            "--credentials FILE gives the Workload Identity Federation credential configuration "
            "in the zip (see the README's setup section)"))


def _source_fields(env: Mapping[str, str], problems: list) -> dict[str, Any]:
    """SOURCE_BUCKETS and S3_BUCKET_NAME."""
    source_buckets = None
    raw_sources = env.get("SOURCE_BUCKETS", "").strip()
    if raw_sources:
        names = [n for n in _SPLIT.split(raw_sources) if n]
        bad = [n for n in names if not _valid_s3_bucket(n)]
        if bad:
            problems.append(_s3_names_problem("SOURCE_BUCKETS", names, bad))
        source_buckets = frozenset(names)
    default_source = env.get("S3_BUCKET_NAME", "").strip() or None
    if default_source and not _valid_s3_bucket(default_source):
        problems.append(_s3_names_problem("S3_BUCKET_NAME", [default_source], [default_source]))
    return {"source_buckets": source_buckets, "default_source_bucket": default_source}


def _endpoint_fields(env: Mapping[str, str], problems: list) -> dict[str, Any]:
    """GCS_API_ENDPOINT, its trailing slashes dropped."""
    endpoint = env.get("GCS_API_ENDPOINT", "").strip() or None
    if endpoint:
        problem = _endpoint_problem(endpoint)
        if problem:
            problems.append(problem)
        else:
            endpoint = endpoint.rstrip("/")
    return {"gcs_api_endpoint": endpoint}


def _flag_fields(env: Mapping[str, str], problems: list) -> dict[str, Any]:
    """MIRROR_DELETES; ALLOW_SERVICE_ACCOUNT_KEY is only checked here (``for_credentials`` reads it)."""
    mirror_deletes = _flag(env, "MIRROR_DELETES", problems)
    _flag(env, "ALLOW_SERVICE_ACCOUNT_KEY", problems)
    return {"mirror_deletes": mirror_deletes}


def _size_fields(env: Mapping[str, str], problems: list) -> dict[str, Any]:
    """The function's memory, and what follows from it: concurrency, streaming, ranged reads."""
    memory_mb = _int(env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", 1024, problems, minimum=128, example=1024)
    concurrency = _int(
        env, "OBJECT_CONCURRENCY", max(2, min(16, memory_mb // 256)), problems, minimum=1, example=4
    )
    stream_threshold = _int(env, "STREAM_THRESHOLD_MB", 8, problems, minimum=0, example=8, unit="MB")
    stream_chunk = _int(env, "STREAM_CHUNK_MB", 8, problems, minimum=1, example=8, unit="MB")
    s3_read_parts = _int(env, "S3_READ_PARTS", 1, problems, minimum=1, example=4)
    return {"memory_mb": memory_mb, "object_concurrency": concurrency, "stream_threshold": stream_threshold * MIB,
            "stream_chunk": stream_chunk * MIB, "s3_read_parts": s3_read_parts}


def _staging_fields(env: Mapping[str, str], in_lambda: bool, problems: list) -> dict[str, Any]:
    """STAGING_DIR: an existing directory (the system's temporary directory by default)."""
    staging_dir = env.get("STAGING_DIR", "").strip() or tempfile.gettempdir()
    if not os.path.isdir(staging_dir):
        problems.append(Problem(
            "STAGING_DIR", f"{staging_dir!r} is not a directory",
            "in Lambda only /tmp is writable: remove STAGING_DIR (the default is /tmp) or name a "
            "directory under /tmp" if in_lambda else
            f"create {staging_dir}, or remove STAGING_DIR to stage under {tempfile.gettempdir()}"))
    return {"staging_dir": staging_dir}


def _log_fields(env: Mapping[str, str], problems: list, warnings: list[str]) -> dict[str, Any]:
    """LOG_LEVEL and Lambda's own logging controls."""
    log = LogSettings._parse(env, problems, warnings)
    return {"log": log, "log_level": log.level}


def _key_filter(env: Mapping[str, str]) -> KeyFilter:
    """INCLUDE and EXCLUDE."""
    return KeyFilter(
        include=tuple(t for t in _SPLIT.split(env.get("INCLUDE", "").strip()) if t),
        exclude=tuple(t for t in _SPLIT.split(env.get("EXCLUDE", "").strip()) if t),
    )


def _fanout_fields(env: Mapping[str, str], destinations: list, problems: list) -> dict[str, Any]:
    """FANOUT (copy | upload) and PRIMARY_DESTINATION (one of GCS_DESTINATIONS, as written)."""
    fanout = env.get("FANOUT", "").strip().lower() or "copy"
    if fanout not in ("copy", "upload"):
        problems.append(Problem(
            "FANOUT", f"{env.get('FANOUT')!r} is neither copy nor upload",
            "set FANOUT=copy (upload once, copy inside Cloud Storage: the default) or FANOUT=upload "
            "(upload to every destination from the function)"))
        fanout = "copy"
    return {"fanout": fanout, "primary_destination": _primary_destination(env, destinations, problems)}


def _primary_destination(env: Mapping[str, str], destinations: list, problems: list) -> str | None:
    """The URL of the destination PRIMARY_DESTINATION names, written with its options or without."""
    raw = env.get("PRIMARY_DESTINATION", "").strip()
    if not raw:
        return None
    urls = [d.url for d in destinations]
    location, query = _split_options(raw)
    wanted = _parsed_or_none(location)
    if wanted is None or wanted.url not in urls:
        problems.append(Problem(
            "PRIMARY_DESTINATION", f"{raw!r} is not one of GCS_DESTINATIONS",
            "set it to one destination exactly as written in GCS_DESTINATIONS, e.g. "
            f"PRIMARY_DESTINATION={urls[0] if urls else 'gs://my-bucket/backup/'}, or remove it (the first "
            "destination that needs the write is used)"))
        return None
    given = {d.policy for d in destinations if d.url == wanted.url}
    with_options = _parsed_or_none(raw)
    if query is not None and (with_options is None or with_options.policy not in given):
        problems.append(Problem(
            "PRIMARY_DESTINATION",
            f"{raw!r}: the options after '?' are not those GCS_DESTINATIONS gives {wanted.url} ("
            + " or ".join(sorted(p or "none" for p in given)) + ")",
            f"write PRIMARY_DESTINATION={wanted.url}: it names the destination by its URL, and the "
            "options belong in GCS_DESTINATIONS"))
        return None
    return wanted.url


def _parsed_or_none(text: str) -> Destination | None:
    try:
        return parse_destination(text)
    except ValueError:
        return None


SLICE_MB_MAX = 5 * 1024  # one slice is read and written by one invocation


def _slice_fields(env: Mapping[str, str], problems: list, warnings: list[str]) -> dict[str, Any]:
    """SLICE_QUEUE_URL, SLICE_MB and SLICE_THRESHOLD_MB."""
    url = env.get("SLICE_QUEUE_URL", "").strip() or None
    if url and not re.match(r"^https?://[^/\s]+/\d+/[A-Za-z0-9_-]+(\.fifo)?/?$", url):
        problems.append(Problem(
            "SLICE_QUEUE_URL", f"{url!r} is not an SQS queue URL",
            "set it to the URL of the function's own queue, as the SQS console shows it, e.g. "
            "SLICE_QUEUE_URL=https://sqs.eu-west-1.amazonaws.com/123456789012/gcs-sync-work (not its ARN "
            "or name), or remove it to fail objects too large for one invocation"))
        url = None
    slice_mb = _int(env, "SLICE_MB", 256, problems, minimum=1, example=256, unit="MB")
    if slice_mb > SLICE_MB_MAX:
        problems.append(Problem(
            "SLICE_MB", f"{slice_mb} is above {SLICE_MB_MAX} (one slice must be copied by one invocation)",
            f"set SLICE_MB to at most {SLICE_MB_MAX}, e.g. SLICE_MB=256"))
        slice_mb = 256
    threshold = None
    if env.get("SLICE_THRESHOLD_MB", "").strip():
        threshold = _int(env, "SLICE_THRESHOLD_MB", 0, problems, minimum=1, example=1024, unit="MB") or None
        if threshold and not url:
            warnings.append("SLICE_THRESHOLD_MB is set but SLICE_QUEUE_URL is not, so nothing is sliced; set "
                            "SLICE_QUEUE_URL to the function's own queue to slice large objects")
    return {"slice_queue_url": url, "slice_mb": slice_mb, "slice_threshold_mb": threshold}


class _DestinationProblem(ValueError):
    """What is wrong with one destination entry (``str``) and its fix (``fix``); ``more``: the
    entry's further mistakes (its options are all checked at once), each its own problem."""

    def __init__(self, wrong: str, fix: str, more: "tuple[_DestinationProblem, ...]" = ()):
        super().__init__(wrong)
        self.wrong = wrong
        self.fix = fix
        self.more = more

    @property
    def every(self) -> "tuple[_DestinationProblem, ...]":
        return (self, *self.more)


def parse_destination(text: str) -> Destination:
    """``gs://bucket``, ``gs://bucket/prefix`` or ``SRC_PREFIX=gs://bucket/prefix``, each optionally
    followed by ``?OPTIONS`` -> Destination.

    ValueError says what is wrong; its ``fix`` attribute says what to write instead.
    """
    written = text
    if len(text) >= 2 and (text[0] in "\"'" or text[-1] in "\"'"):
        bare = text.strip("\"'")
        raise _DestinationProblem(
            f"{written!r} is wrapped in quotes, which become part of the value",
            f"remove the quotes: {bare} (the Lambda console takes a value exactly as typed)")
    if text.startswith(("?", "&")) or text.partition("=")[0] in DESTINATION_OPTIONS:
        raise _DestinationProblem(
            f"{written!r} is an option on its own, not a destination",
            "write a destination's options right after it, after '?' and joined by '&', without spaces or "
            "commas: e.g. gs://my-bucket/backup/?storage_class=ARCHIVE&custom_time=source")
    text, query = _split_options(text)
    options = "" if query is None else "?" + query
    source_prefix = ""
    if "=" + GS_SCHEME in text:
        source_prefix, _, rest = text.partition("=")
        if not source_prefix:
            raise _DestinationProblem(
                f"{text + options!r}: nothing before '='",
                f"write SOURCE_PREFIX=gs://BUCKET/PREFIX (e.g. incoming/={rest + options}), or drop the '=' "
                f"to copy every key: {rest + options}")
        text = rest
    if not text.startswith(GS_SCHEME):
        raise _DestinationProblem(f"{text + options!r} does not start with gs://",
                                  _scheme_fix(text + options, source_prefix))
    bucket, prefix = _bucket_and_prefix(text, options)
    fields = _parse_options(written, query) if query is not None else {}
    return Destination(bucket=bucket, prefix=prefix, source_prefix=source_prefix, **fields)


def _split_options(text: str) -> tuple[str, str | None]:
    """A destination as written -> (without its options, the options after '?' or None).

    The options start at the first '?' after ``gs://`` (a source prefix before it may hold one)."""
    start = text.find(GS_SCHEME)
    mark = text.find("?", max(start, 0))
    return (text, None) if mark < 0 else (text[:mark], text[mark + 1:])


def _bucket_and_prefix(text: str, options: str) -> tuple[str, str]:
    """``gs://bucket/prefix`` (``options``: the '?...' written after it, for the messages)."""
    bucket, _, prefix = text[len(GS_SCHEME):].partition("/")
    problem = bucket_name_problem(bucket)
    if problem:
        lowered = bucket.lower()
        if bucket != lowered and bucket_name_problem(lowered) is None:
            fix = f"bucket names are lowercase: write {GS_SCHEME}{lowered}/{prefix}{options}"
        elif not bucket:
            fix = f"write the bucket's name after gs://, e.g. gs://my-bucket/{prefix}{options}"
        else:
            fix = ("write the bucket's exact name, as `gcloud storage buckets list` shows it "
                   "(Cloud Storage accepts no other)")
        raise _DestinationProblem(f"{text + options!r}: {problem}", fix)
    if "\r" in prefix or "\n" in prefix:
        raise _DestinationProblem(f"{text!r}: the prefix contains a line break",
                                  "remove the line break from the prefix")
    if len(prefix.encode("utf-8")) >= 1024:
        raise _DestinationProblem(
            f"{text!r}: the prefix leaves no room for object names (1024 bytes max)",
            "shorten the prefix: prefix and key together must fit in 1024 bytes")
    return bucket, prefix


# --------------------------------------------------------------------------- destination options

DESTINATION_OPTIONS = ("storage_class", "kms_key", "custom_time", "holds")
STORAGE_CLASSES = ("STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE")
_OPTION_VALUES = {"storage_class": "e.g. storage_class=ARCHIVE (STANDARD, NEARLINE, COLDLINE, ARCHIVE, or "
                                    "source for each object's S3 class, mapped)",
                  "kms_key": "kms_key=projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY",
                  "custom_time": "custom_time=source (its only value)", "holds": "holds=source (its only value)"}
_OPTIONS_TEXT = ("the options are storage_class (STANDARD, NEARLINE, COLDLINE, ARCHIVE or source), "
                 "kms_key (projects/P/locations/L/keyRings/R/cryptoKeys/K), custom_time=source and "
                 "holds=source, written name=value and joined by '&'")
# Other names people give the options (lowercase, '-' as '_').
_OPTION_ALIASES = {"class": "storage_class", "storageclass": "storage_class", "kms": "kms_key",
                   "kmskeyname": "kms_key", "kms_key_name": "kms_key", "encryption_key": "kms_key",
                   "key": "kms_key", "customtime": "custom_time", "hold": "holds", "legal_hold": "holds",
                   "temporary_hold": "holds", "retention": "holds", "object_lock": "holds"}
# S3's class names (and the console's), as a storage_class value: Cloud Storage's class for them,
# the same mapping storage_class=source applies object by object.
_S3_CLASSES = {"GLACIER": "ARCHIVE", "DEEP_ARCHIVE": "ARCHIVE", "GLACIER_DEEP_ARCHIVE": "ARCHIVE",
               "GLACIER_FLEXIBLE_RETRIEVAL": "ARCHIVE", "GLACIER_IR": "COLDLINE",
               "GLACIER_INSTANT_RETRIEVAL": "COLDLINE", "STANDARD_IA": "NEARLINE", "ONEZONE_IA": "NEARLINE",
               "INTELLIGENT_TIERING": "STANDARD", "REDUCED_REDUNDANCY": "STANDARD"}
_LEGACY_CLASSES = ("MULTI_REGIONAL", "REGIONAL", "DURABLE_REDUCED_AVAILABILITY")
_KMS_KEY = re.compile(r"projects/[^/\s]+/locations/[^/\s]+/keyRings/[^/\s]+/cryptoKeys/[^/\s]+")


def close_matches(word: str, choices: tuple[str, ...]) -> list[str]:
    """The choice ``word`` was probably meant to be (only a mistake needs it: difflib is imported then)."""
    import difflib

    return difflib.get_close_matches(word, choices, n=1, cutoff=0.6)


class _OptionMistake(ValueError):
    def __init__(self, wrong: str, fix: str):
        super().__init__(wrong)
        self.wrong, self.fix = wrong, fix


def _parse_options(written: str, query: str) -> dict[str, Any]:
    """The options after '?' of the destination ``written`` -> its Destination fields.

    Every mistake is found: the ValueError raised is the first, with the others in ``more``."""
    fields: dict[str, Any] = {}
    mistakes: list[_DestinationProblem] = []
    repeated: set[str] = set()
    for item in query.split("&"):
        try:
            name, value = _option(item, query)
        except _OptionMistake as exc:
            if not any(m.wrong == f"{written!r}: {exc.wrong}" for m in mistakes):  # '&&&' is one mistake
                mistakes.append(_DestinationProblem(f"{written!r}: {exc.wrong}", exc.fix))
            continue
        if name in fields:
            if name not in repeated:
                repeated.add(name)
                mistakes.append(_DestinationProblem(
                    f"{written!r}: option {name} is given twice",
                    f"give each option once: keep the {name}=... the copies should have"))
            continue
        fields[name] = value
    if mistakes:
        raise _DestinationProblem(mistakes[0].wrong, mistakes[0].fix, tuple(mistakes[1:]))
    return fields


def _option(item: str, query: str) -> tuple[str, Any]:
    """One ``name=value`` -> (the Destination field, its value); _OptionMistake when wrong."""
    if not item:
        rest = "&".join(i for i in query.split("&") if i)
        raise _OptionMistake("an empty option ('?' or '&' with nothing after it)",
                             f"remove the extra '&' or '?': write ?{rest}" if rest else
                             "remove the '?' when no option is given")
    name, equals, value = item.partition("=")
    if not equals:
        raise _OptionMistake(f"option {item!r} has no '=' (options are written name=value)", _no_equals_fix(item))
    if name not in DESTINATION_OPTIONS:
        raise _OptionMistake(f"unknown option {name!r}", _unknown_option_fix(name, value))
    if not value:
        raise _OptionMistake(f"option {name} has an empty value",
                             f"give it a value: {_OPTION_VALUES[name]}, or remove it to keep the bucket's default")
    if name == "storage_class":
        return name, _storage_class(value)
    if name == "kms_key":
        return name, _kms_key(value)
    return name, _from_source(name, value)


def _no_equals_fix(item: str) -> str:
    if item in DESTINATION_OPTIONS:
        return f"give it a value after '=': {_OPTION_VALUES[item]}"
    named, colon, value = item.partition(":")
    if colon and named in DESTINATION_OPTIONS:
        return f"write '=' between name and value: {named}={value}"
    if item.upper() in STORAGE_CLASSES:
        return f"name the option: storage_class={item.upper()}"
    if item.startswith("projects/"):
        return f"name the option: kms_key={item}"
    return _OPTIONS_TEXT + "; a '?' ends the prefix and starts the options, so a prefix cannot hold one"


def _unknown_option_fix(name: str, value: str) -> str:
    lowered = name.lower().replace("-", "_")
    close = [lowered] if lowered in DESTINATION_OPTIONS else [_OPTION_ALIASES[lowered]] \
        if lowered in _OPTION_ALIASES else close_matches(lowered, DESTINATION_OPTIONS)
    if close:
        return f"did you mean {close[0]}={value}? " + _OPTIONS_TEXT[0].upper() + _OPTIONS_TEXT[1:]
    return _OPTIONS_TEXT


def _storage_class(value: str) -> str:
    upper = value.upper().replace("-", "_").replace(" ", "_")
    if upper in STORAGE_CLASSES:
        return upper
    if upper == "SOURCE":
        return "source"
    valid = "the classes are STANDARD, NEARLINE, COLDLINE and ARCHIVE, or source (each object's S3 class, mapped)"
    upper_valid = valid[0].upper() + valid[1:]
    if upper in _S3_CLASSES:
        raise _OptionMistake(
            f"storage class {value!r} is S3's, not a Cloud Storage class",
            f"write storage_class={_S3_CLASSES[upper]}, Cloud Storage's class for it, or storage_class=source "
            f"to map each object's own S3 class; {valid}")
    if upper in _LEGACY_CLASSES or upper == "DRA":
        raise _OptionMistake(
            f"storage class {value!r} is a legacy Cloud Storage class, kept only for older data",
            f"write storage_class=STANDARD, which replaces it (or remove the option for the bucket's default); "
            f"{valid}")
    close = close_matches(upper, STORAGE_CLASSES)
    raise _OptionMistake(f"Cloud Storage has no storage class {value!r}",
                         f"did you mean storage_class={close[0]}? {upper_valid}" if close else valid)


def _kms_key(value: str) -> str:
    if _KMS_KEY.fullmatch(value):
        return value
    repaired = re.sub(r"^(?:https?://cloudkms\.googleapis\.com/v1/|//cloudkms\.googleapis\.com/)", "",
                      value, flags=re.IGNORECASE).rstrip("/")
    for segment in ("projects", "locations", "keyRings", "cryptoKeys", "cryptoKeyVersions"):
        repaired = re.sub(rf"(^|/){segment}/", rf"\g<1>{segment}/", repaired, flags=re.IGNORECASE)
    version = re.fullmatch(r"(.+/cryptoKeys/[^/]+)/cryptoKeyVersions/[^/]+", repaired)
    if version:
        key = version.group(1)
        raise _OptionMistake(
            f"kms_key {value!r} names a key version (.../cryptoKeyVersions/N); Cloud Storage takes the key "
            "and encrypts with its primary version",
            f"drop the version: kms_key={key}" if _KMS_KEY.fullmatch(key) else _kms_fix(key))
    if _KMS_KEY.fullmatch(repaired):
        raise _OptionMistake(f"kms_key {value!r} is not written as a Cloud KMS key resource name",
                             f"write kms_key={repaired}")
    if "/" not in value:
        raise _OptionMistake(
            f"kms_key {value!r} is a key's name alone; Cloud Storage needs its full Cloud KMS resource name",
            f"write kms_key=projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/{value} (`gcloud kms "
            f"keys describe {value} --keyring RING --location LOCATION --format='value(name)'` prints it)")
    raise _OptionMistake(f"kms_key {value!r} is not a full Cloud KMS key resource name", _kms_fix(repaired))


def _kms_fix(text: str) -> str:
    """The full resource name to write, from whatever part of it ``text`` holds."""
    parts = dict(re.findall(r"(projects|locations|keyRings|cryptoKeys)/([^/]+)", text))
    name = "/".join(f"{kind}/{parts.get(kind, placeholder)}" for kind, placeholder in (
        ("projects", "PROJECT"), ("locations", "LOCATION"), ("keyRings", "RING"), ("cryptoKeys", "KEY")))
    return (f"write the key's full resource name: kms_key={name} (as `gcloud kms keys list --keyring RING "
            "--location LOCATION --format='value(name)'` prints it)")


def _from_source(name: str, value: str) -> bool:
    if value.lower() == "source":
        return True
    meaning = ("the copy's customTime is the source object's Last-Modified" if name == "custom_time" else
               "the source's S3 Object Lock legal hold and retention are carried to the copy")
    if value.strip("\"'").lower() in _FALSE | {"none"}:
        fix = f"remove {name}={value} to leave it off (the default); {name}=source turns it on ({meaning})"
    else:
        fix = f"write {name}=source ({meaning}), or remove it to leave it off"
    raise _OptionMistake(f"option {name}={value}: {name} takes only the value source", fix)


def _scheme_fix(text: str, source_prefix: str) -> str:
    """What to write instead of a destination without ``gs://``."""
    lead = f"{source_prefix}=" if source_prefix else ""
    lower = text.lower()
    if lower.startswith(GS_SCHEME):
        return f"write the scheme in lowercase: {lead}{_gs_url(text[len(GS_SCHEME):])}"
    if lower.startswith("gs:"):
        return f"write two slashes after gs: {lead}{_gs_url(text[3:].lstrip('/'))}"
    if lower.startswith("s3://"):
        return (f"a destination is a Cloud Storage bucket: write gs://BUCKET[/PREFIX] (e.g. "
                f"{lead}{_gs_url(text[5:])}); the S3 source comes from the event, and SOURCE_BUCKETS "
                "limits which S3 buckets are accepted")
    match = re.match(r"^https?://(?:storage\.googleapis\.com|storage\.cloud\.google\.com|"
                     r"console\.cloud\.google\.com/storage/browser)/([^?#]+)", text, re.IGNORECASE)
    if match:
        return f"write the bucket as a gs:// URL: {lead}{_gs_url(match.group(1).removeprefix('_details/'))}"
    if "://" in text:
        return ("a destination is gs://BUCKET[/PREFIX], not a URL; a Cloud Storage API endpoint "
                "goes in GCS_API_ENDPOINT")
    return f"write {lead}{_gs_url(text)}"


def _gs_url(rest: str) -> str:
    """``gs://`` + ``rest``, the bucket lowercased when only its case was wrong."""
    bucket, slash, prefix = rest.partition("/")
    if bucket != bucket.lower() and bucket_name_problem(bucket.lower()) is None:
        bucket = bucket.lower()
    return f"{GS_SCHEME}{bucket}{slash}{prefix}"


def bucket_name_problem(name: str) -> str | None:
    """Why ``name`` is not a Cloud Storage bucket name, or None when it is one."""
    if not name:
        return "no bucket name"
    parts = name.split(".")
    if not 3 <= len(name) <= (222 if len(parts) > 1 else 63):
        return f"bucket name {name!r} must be 3-63 characters (222 with dots)"
    if any(len(p) > 63 or not _BUCKET_COMPONENT.match(p) for p in parts):
        return (
            f"bucket name {name!r} may hold only lowercase letters, digits, '-', '_' and '.', "
            "and must start and end with a letter or digit"
        )
    if name.startswith("goog") or "google" in name or "g00gle" in name:
        return f"bucket name {name!r} may not start with 'goog' or contain 'google'"
    if re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", name):
        return f"bucket name {name!r} may not be an IP address"
    return None


def _destinations(env: Mapping[str, str], problems: list, warnings: list[str]) -> list[Destination]:
    """GCS_DESTINATIONS, or the GCS_BUCKET_NAME_* compatibility form."""
    items = _destination_items(env, problems, warnings)
    if items is None:
        return []
    seen: dict[tuple[str, str, str], Destination] = {}
    result: list[Destination] = []
    for variable, text in items:
        try:
            destination = parse_destination(text)
        except _DestinationProblem as exc:
            problems.extend(Problem(variable, each.wrong, each.fix) for each in exc.every)
            continue
        place = (destination.bucket, destination.prefix, destination.source_prefix)
        if place in seen:
            if seen[place] == destination:
                problems.append(Problem(variable, f"{destination.url} is listed twice", "list it once"))
            else:
                problems.append(Problem(variable, f"{destination.url} is listed twice, with different options",
                                        "list it once, with the options its copies should have"))
            continue
        seen[place] = destination
        if destination.prefix and not destination.prefix.endswith("/"):
            options = f"?{destination.policy}" if destination.policy else ""
            warnings.append(
                f"{variable}: prefix {destination.prefix!r} has no trailing '/', so it is joined "
                f"to keys as written ({destination.prefix}KEY); to put objects under "
                f"{destination.prefix}/, write {destination.url}/{options}"
            )
        result.append(destination)
    return result


def _destination_items(env: Mapping[str, str], problems: list,
                       warnings: list[str]) -> list[tuple[str, str]] | None:
    """(variable, destination as written) for every destination listed; None when none is."""
    raw = env.get("GCS_DESTINATIONS", "").strip()
    compat = sorted(
        (m.group(1), value.strip()) for name, value in env.items() if (m := _COMPAT_BUCKET.match(name))
    )
    if raw:
        if compat:
            warnings.append(
                "GCS_DESTINATIONS is set, so GCS_BUCKET_NAME_* variables are ignored: "
                + ", ".join(f"GCS_BUCKET_NAME_{suffix}" for suffix, _ in compat)
                + "; remove them, or list their buckets in GCS_DESTINATIONS"
            )
        items = [("GCS_DESTINATIONS", t) for t in _SPLIT.split(raw) if t]
    elif compat:
        items = _compat_items(compat, problems)
    else:
        problems.append(Problem(
            "GCS_DESTINATIONS", "not set",
            "set GCS_DESTINATIONS to the Cloud Storage bucket (and optional prefix) to copy into, "
            "e.g. GCS_DESTINATIONS=gs://my-bucket/backup/; separate several with commas"))
        return None
    if not items:
        problems.append(Problem("GCS_DESTINATIONS", f"{raw!r} holds only separators",
                                "list at least one destination, e.g. GCS_DESTINATIONS=gs://my-bucket/"))
    return items


def _compat_items(compat: list[tuple[str, str]], problems: list) -> list[tuple[str, str]]:
    """The GCS_BUCKET_NAME_<X> variables (by suffix) -> (variable, destination as written)."""
    items = []
    for suffix, value in compat:
        variable = f"GCS_BUCKET_NAME_{suffix}"
        if not value:
            problems.append(Problem(variable, "empty",
                                    f"set {variable} to a bucket name (e.g. {variable}=my-bucket) "
                                    "or remove the variable"))
            continue
        items.append((variable, _compat_destination(value)))
    for variable, text in items:
        if _split_options(text)[1] is not None:
            problems.append(Problem(
                variable, f"{text!r} has destination options, which only GCS_DESTINATIONS takes",
                "move the destinations to GCS_DESTINATIONS, with their options: set GCS_DESTINATIONS to "
                + ",".join(t for _, t in items) + " and remove the GCS_BUCKET_NAME_* variables"))
    return [(variable, text) for variable, text in items if _split_options(text)[1] is None]


def _compat_destination(value: str) -> str:
    """A GCS_BUCKET_NAME_<X> value (a bucket name, or a destination) as a destination."""
    value = value.strip("\"'") if value[0] in "\"'" and len(value) > 1 else value
    written = value.lower().startswith(("gs://", "gs:", "s3://", "http")) or "=" in _split_options(value)[0]
    return value if written else GS_SCHEME + value


def _credentials_path(
    env: Mapping[str, str], code_dir: str | None, relative_to: str | None
) -> tuple[str | None, str | None, str | None]:
    """(resolved path, the value as written, what a relative value was resolved against)."""
    path = env.get("GOOGLE_APPLICATION_CREDENTIALS", "").strip()
    if not path:
        return None, None, None
    path = os.path.expanduser(path)
    if os.path.isabs(path):
        return path, path, None
    if relative_to:
        base, words = relative_to, f"the current directory ({relative_to})"
    elif env.get("LAMBDA_TASK_ROOT"):
        base = env["LAMBDA_TASK_ROOT"]
        words = f"the function's code directory ({base}, LAMBDA_TASK_ROOT)"
    elif code_dir:
        base, words = code_dir, f"the function's code directory ({code_dir})"
    else:
        base = os.getcwd()
        words = f"the current directory ({base})"
    return os.path.normpath(os.path.join(base, path)), path, words


def _flag(env: Mapping[str, str], name: str, problems: list) -> bool:
    raw = env.get(name, "").strip()
    value = raw.strip("\"'").lower()
    if value in _TRUE:
        return True
    if value not in _FALSE:
        problems.append(Problem(name, f"{raw!r} is not true or false",
                                f"set {name}=true to turn it on, or {name}=false (or remove the "
                                "variable) to leave it off"))
    return False


def _int(env: Mapping[str, str], name: str, default: int, problems: list, *, minimum: int,
         example: int, unit: str | None = None) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        problems.append(Problem(name, f"{raw!r} is not a whole number", _int_fix(name, raw, minimum, example, unit)))
        return default
    if value < minimum:
        problems.append(Problem(
            name, f"{value} is below the minimum of {minimum}",
            f"set {name} to {minimum} or more, e.g. {name}={max(example, minimum)}, or remove it "
            f"for the default ({default})"))
        return default
    return value


def _int_fix(name: str, raw: str, minimum: int, example: int, unit: str | None) -> str:
    text = raw.strip("\"'").strip()
    with_unit = re.fullmatch(r"(\d+)\s*([A-Za-z]+)", text)
    if with_unit:
        return (f"write the number alone: {name}={with_unit.group(1)}"
                + (f" (the unit, {unit}, is in the name)" if unit else ""))
    if text.lower() in _NUMBER_WORDS:
        return f"write it in digits: {name}={max(minimum, _NUMBER_WORDS[text.lower()])}"
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None and number == number and abs(number) != float("inf"):
        return f"write a whole number: {name}={max(minimum, round(number))}"
    return (f"set {name} to a whole number of at least {minimum}, e.g. {name}={max(example, minimum)}, "
            "or remove it for the default")


def _valid_s3_bucket(name: str) -> bool:
    return bool(re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", name))


def _s3_names_problem(variable: str, names: list[str], bad: list[str]) -> Problem:
    """One problem for every malformed S3 bucket name in ``variable``, with the corrected value."""
    reasons, fixed = [], []
    for name in names:
        if name not in bad:
            fixed.append(name)
            continue
        reason, suggestion = _s3_name_suggestion(name)
        reasons.append(f"{name!r} ({reason})")
        fixed.append(suggestion or name)
    wrong = ("not S3 bucket names: " if variable == "SOURCE_BUCKETS" else "not an S3 bucket name: ") \
        + ", ".join(reasons)
    fixable = [n for n in bad if _s3_name_suggestion(n)[1]]
    if fixable:
        fix = f"write bucket names only: {variable}={','.join(dict.fromkeys(fixed))}"
        if len(fixable) < len(bad) or not all(_valid_s3_bucket(_s3_name_suggestion(n)[1]) for n in fixable):
            fix += (" (and make each a valid S3 bucket name: 3-63 lowercase letters, digits, '.' "
                    "and '-', as the S3 console shows it)")
    else:
        fix = ("write each bucket's name exactly as the S3 console shows it: 3-63 lowercase letters, "
               "digits, '.' and '-', without s3:// or a key")
    if any(n.lower().startswith("gs://") for n in bad):
        fix += "; Cloud Storage buckets go in GCS_DESTINATIONS, not here"
    return Problem(variable, wrong, fix)


def _s3_name_suggestion(name: str) -> tuple[str, str | None]:
    """Why ``name`` is not an S3 bucket name, and the name probably meant (or None)."""
    text = name.strip("\"'")
    if text != name:
        return "in quotes, which become part of the value", text
    if name.lower().startswith("s3://"):
        return "an s3:// URL, not a name", name[5:].split("/", 1)[0]
    if name.lower().startswith("arn:aws:s3:::"):
        return "an ARN, not a name", name[13:].split("/", 1)[0]
    if name.lower().startswith("gs://"):
        return "a Cloud Storage URL, not an S3 bucket", None
    if "/" in name:
        return "a bucket and a key path; INCLUDE filters keys", name.split("/", 1)[0]
    if name != name.lower() and _valid_s3_bucket(name.lower()):
        return "S3 bucket names are lowercase", name.lower()
    return "3-63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit", None


def _endpoint_problem(endpoint: str) -> Problem | None:
    if re.match(r"^https?://[^/\s]+", endpoint):
        path = re.sub(r"^https?://[^/]+", "", endpoint).rstrip("/")
        root = endpoint.rstrip("/")[: -len("/storage/v1")] if path.endswith("/storage/v1") else endpoint
        if endpoint.startswith("http://") and not is_loopback(_host(endpoint)):
            return Problem(
                "GCS_API_ENDPOINT",
                f"{endpoint!r} is plain http:// to {_host(endpoint) or 'a host'} that is not this machine: the "
                "Google bearer token sent with every request would travel in clear text",
                f"use https://: GCS_API_ENDPOINT=https://{root.rstrip('/')[len('http://'):]}; plain http:// is "
                "accepted only for a local emulator on a loopback host (localhost, 127.0.0.1, [::1])")
        if path.endswith("/storage/v1"):
            return Problem("GCS_API_ENDPOINT", f"{endpoint!r} ends in /storage/v1, which the client adds itself",
                           f"give the API's root: GCS_API_ENDPOINT={root}")
        return None
    bare = endpoint.split("://", 1)[-1].lstrip("/")
    local = re.match(r"^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?(/|$)", bare, re.IGNORECASE)
    if not bare:
        fix = "give a root URL, e.g. GCS_API_ENDPOINT=https://storage.googleapis.com"
    elif "://" in endpoint and not endpoint.lower().startswith(("http://", "https://")):
        fix = f"use http:// or https://, e.g. GCS_API_ENDPOINT=https://{bare}"
    elif bare.startswith("0.0.0.0"):  # where an emulator listens; it is reached on 127.0.0.1
        fix = f"write the scheme and a loopback host: GCS_API_ENDPOINT=http://127.0.0.1{bare[len('0.0.0.0'):]}"
    else:
        fix = f"write the scheme too: GCS_API_ENDPOINT={'http' if local else 'https'}://{bare}"
    return Problem("GCS_API_ENDPOINT", f"{endpoint!r} is not an http(s) URL", fix)


def _host(url: str) -> str | None:
    try:
        return urllib.parse.urlsplit(url).hostname
    except ValueError:
        return None


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is this machine: localhost, 127.0.0.0/8 or ::1."""
    if not host:
        return False
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

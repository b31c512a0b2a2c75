"""Settings: the only reader of the environment.

Everything is parsed and validated once, when the container starts. Every problem found is
collected and reported together in one ``ConfigError`` naming the variable, so a deployment is
fixed in one go. Tests build ``Settings`` directly.
"""

from __future__ import annotations

import fnmatch
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Mapping

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
        return f"{GS_SCHEME}{self.bucket}/{self.prefix}"

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

        destinations = _destinations(env, problems, warnings)
        credentials = cls.for_credentials(env, code_dir=code_dir, relative_to=relative_to)
        if credentials.credentials_path is None and credentials.in_lambda:
            problems.append(Problem(
                "GOOGLE_APPLICATION_CREDENTIALS", "not set; in Lambda it is required",
                "set GOOGLE_APPLICATION_CREDENTIALS=gcp-credentials.json, the name ./build.sh "
                "--credentials FILE gives the Workload Identity Federation credential configuration "
                "in the zip (see the README's setup section)"))

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

        endpoint = env.get("GCS_API_ENDPOINT", "").strip() or None
        if endpoint:
            problem = _endpoint_problem(endpoint)
            if problem:
                problems.append(problem)
            else:
                endpoint = endpoint.rstrip("/")

        mirror_deletes = _flag(env, "MIRROR_DELETES", problems)
        _flag(env, "ALLOW_SERVICE_ACCOUNT_KEY", problems)

        memory_mb = _int(env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", 1024, problems, minimum=128, example=1024)
        concurrency = _int(
            env, "OBJECT_CONCURRENCY", max(2, min(16, memory_mb // 256)), problems, minimum=1, example=4
        )

        stream_threshold = _int(env, "STREAM_THRESHOLD_MB", 8, problems, minimum=0, example=8, unit="MB")
        stream_chunk = _int(env, "STREAM_CHUNK_MB", 8, problems, minimum=1, example=8, unit="MB")
        s3_read_parts = _int(env, "S3_READ_PARTS", 1, problems, minimum=1, example=4)

        staging_dir = env.get("STAGING_DIR", "").strip() or tempfile.gettempdir()
        if not os.path.isdir(staging_dir):
            problems.append(Problem(
                "STAGING_DIR", f"{staging_dir!r} is not a directory",
                "in Lambda only /tmp is writable: remove STAGING_DIR (the default is /tmp) or name a "
                "directory under /tmp" if credentials.in_lambda else
                f"create {staging_dir}, or remove STAGING_DIR to stage under {tempfile.gettempdir()}"))

        log = LogSettings._parse(env, problems, warnings)
        fanout, primary = _fanout(env, destinations, problems)

        slice_queue_url, slice_mb, slice_threshold_mb = _slices(env, problems, warnings)

        key_filter = KeyFilter(
            include=tuple(t for t in _SPLIT.split(env.get("INCLUDE", "").strip()) if t),
            exclude=tuple(t for t in _SPLIT.split(env.get("EXCLUDE", "").strip()) if t),
        )

        if problems:
            if check_credential_file and credentials.credentials_path is not None:
                problems.extend(_credential_file_problems(credentials))
            raise ConfigError(problems)
        return cls(
            destinations=tuple(destinations),
            key_filter=key_filter,
            credentials_path=credentials.credentials_path,
            credentials_setting=credentials.credentials_setting,
            credentials_base=credentials.credentials_base,
            allow_service_account_key=credentials.allow_service_account_key,
            google_cloud_project=env.get("GOOGLE_CLOUD_PROJECT", "").strip() or None,
            gcs_api_endpoint=endpoint,
            source_buckets=source_buckets,
            default_source_bucket=default_source,
            mirror_deletes=mirror_deletes,
            staging_dir=staging_dir,
            object_concurrency=concurrency,
            stream_threshold=stream_threshold * MIB,
            stream_chunk=stream_chunk * MIB,
            s3_read_parts=s3_read_parts,
            memory_mb=memory_mb,
            log_level=log.level,
            log=log,
            fanout=fanout,
            primary_destination=primary,
            aws_region=credentials.aws_region,
            aws_keys_present=credentials.aws_keys_present,
            in_lambda=credentials.in_lambda,
            function_name=env.get("AWS_LAMBDA_FUNCTION_NAME") or "gcs-sync",
            slice_queue_url=slice_queue_url,
            slice_mb=slice_mb,
            slice_threshold_mb=slice_threshold_mb,
            warnings=tuple(warnings),
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


def _fanout(env: Mapping[str, str], destinations: list, problems: list) -> tuple[str, str | None]:
    """FANOUT (copy | upload) and PRIMARY_DESTINATION (one of GCS_DESTINATIONS, as written)."""
    fanout = env.get("FANOUT", "").strip().lower() or "copy"
    if fanout not in ("copy", "upload"):
        problems.append(Problem(
            "FANOUT", f"{env.get('FANOUT')!r} is neither copy nor upload",
            "set FANOUT=copy (upload once, copy inside Cloud Storage: the default) or FANOUT=upload "
            "(upload to every destination from the function)"))
        fanout = "copy"
    raw = env.get("PRIMARY_DESTINATION", "").strip()
    if not raw:
        return fanout, None
    urls = [d.url for d in destinations]
    try:
        wanted = parse_destination(raw).url
    except ValueError:
        wanted = None
    if wanted not in urls:
        problems.append(Problem(
            "PRIMARY_DESTINATION", f"{raw!r} is not one of GCS_DESTINATIONS",
            "set it to one destination exactly as written in GCS_DESTINATIONS, e.g. "
            f"PRIMARY_DESTINATION={urls[0] if urls else 'gs://my-bucket/backup/'}, or remove it (the first "
            "destination that needs the write is used)"))
        return fanout, None
    return fanout, wanted


SLICE_MB_MAX = 5 * 1024  # one slice is read and written by one invocation


def _slices(env: Mapping[str, str], problems: list, warnings: list[str]) -> tuple[str | None, int, int | None]:
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
    return url, slice_mb, threshold


class _DestinationProblem(ValueError):
    """What is wrong with one destination entry (``str``) and its fix (``fix``)."""

    def __init__(self, wrong: str, fix: str):
        super().__init__(wrong)
        self.wrong = wrong
        self.fix = fix


def parse_destination(text: str) -> Destination:
    """``gs://bucket``, ``gs://bucket/prefix`` or ``SRC_PREFIX=gs://bucket/prefix`` -> Destination.

    ValueError says what is wrong; its ``fix`` attribute says what to write instead.
    """
    written = text
    if len(text) >= 2 and (text[0] in "\"'" or text[-1] in "\"'"):
        bare = text.strip("\"'")
        raise _DestinationProblem(
            f"{written!r} is wrapped in quotes, which become part of the value",
            f"remove the quotes: {bare} (the Lambda console takes a value exactly as typed)")
    source_prefix = ""
    if "=" + GS_SCHEME in text:
        source_prefix, _, rest = text.partition("=")
        if not source_prefix:
            raise _DestinationProblem(
                f"{text!r}: nothing before '='",
                f"write SOURCE_PREFIX=gs://BUCKET/PREFIX (e.g. incoming/={rest}), or drop the '=' "
                f"to copy every key: {rest}")
        text = rest
    if not text.startswith(GS_SCHEME):
        raise _DestinationProblem(f"{text!r} does not start with gs://", _scheme_fix(text, source_prefix))
    bucket, _, prefix = text[len(GS_SCHEME):].partition("/")
    problem = bucket_name_problem(bucket)
    if problem:
        lowered = bucket.lower()
        if bucket != lowered and bucket_name_problem(lowered) is None:
            fix = f"bucket names are lowercase: write {GS_SCHEME}{lowered}/{prefix}"
        elif not bucket:
            fix = f"write the bucket's name after gs://, e.g. gs://my-bucket/{prefix}"
        else:
            fix = ("write the bucket's exact name, as `gcloud storage buckets list` shows it "
                   "(Cloud Storage accepts no other)")
        raise _DestinationProblem(f"{text!r}: {problem}", fix)
    if "\r" in prefix or "\n" in prefix:
        raise _DestinationProblem(f"{text!r}: the prefix contains a line break",
                                  "remove the line break from the prefix")
    if len(prefix.encode("utf-8")) >= 1024:
        raise _DestinationProblem(
            f"{text!r}: the prefix leaves no room for object names (1024 bytes max)",
            "shorten the prefix: prefix and key together must fit in 1024 bytes")
    return Destination(bucket=bucket, prefix=prefix, source_prefix=source_prefix)


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
        items = []
        for suffix, value in compat:
            variable = f"GCS_BUCKET_NAME_{suffix}"
            if not value:
                problems.append(Problem(variable, "empty",
                                        f"set {variable} to a bucket name (e.g. {variable}=my-bucket) "
                                        "or remove the variable"))
                continue
            value = value.strip("\"'") if value[0] in "\"'" and len(value) > 1 else value
            items.append((variable, value if value.lower().startswith(("gs://", "gs:", "s3://", "http"))
                          or "=" in value else GS_SCHEME + value))
    else:
        problems.append(Problem(
            "GCS_DESTINATIONS", "not set",
            "set GCS_DESTINATIONS to the Cloud Storage bucket (and optional prefix) to copy into, "
            "e.g. GCS_DESTINATIONS=gs://my-bucket/backup/; separate several with commas"))
        return []

    if not items:
        problems.append(Problem("GCS_DESTINATIONS", f"{raw!r} holds only separators",
                                "list at least one destination, e.g. GCS_DESTINATIONS=gs://my-bucket/"))
    seen: dict[Destination, str] = {}
    result: list[Destination] = []
    for variable, text in items:
        try:
            destination = parse_destination(text)
        except _DestinationProblem as exc:
            problems.append(Problem(variable, exc.wrong, exc.fix))
            continue
        if destination in seen:
            problems.append(Problem(variable, f"{destination.url} is listed twice", "list it once"))
            continue
        seen[destination] = variable
        if destination.prefix and not destination.prefix.endswith("/"):
            warnings.append(
                f"{variable}: prefix {destination.prefix!r} has no trailing '/', so it is joined "
                f"to keys as written ({destination.prefix}KEY); to put objects under "
                f"{destination.prefix}/, write {destination.url}/"
            )
        result.append(destination)
    return result


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


def _credential_file_problems(settings: "Settings") -> list[Problem]:
    try:
        from .auth import credential_file_problems
    except ImportError:  # google-auth not importable: the file is checked when credentials load
        return []
    return credential_file_problems(settings)


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
        if path.endswith("/storage/v1"):
            root = endpoint.rstrip("/")[: -len("/storage/v1")]
            return Problem("GCS_API_ENDPOINT", f"{endpoint!r} ends in /storage/v1, which the client adds itself",
                           f"give the API's root: GCS_API_ENDPOINT={root}")
        return None
    bare = endpoint.split("://", 1)[-1].lstrip("/")
    local = re.match(r"^(localhost|127\.|\[::1\]|0\.0\.0\.0)", bare)
    if not bare:
        fix = "give a root URL, e.g. GCS_API_ENDPOINT=https://storage.googleapis.com"
    elif "://" in endpoint and not endpoint.lower().startswith(("http://", "https://")):
        fix = f"use http:// or https://, e.g. GCS_API_ENDPOINT=https://{bare}"
    else:
        fix = f"write the scheme too: GCS_API_ENDPOINT={'http' if local else 'https'}://{bare}"
    return Problem("GCS_API_ENDPOINT", f"{endpoint!r} is not an http(s) URL", fix)

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

from .errors import ConfigError

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


@dataclass(frozen=True)
class Settings:
    destinations: tuple[Destination, ...]
    key_filter: KeyFilter = KeyFilter()
    credentials_path: str | None = None
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
    aws_region: str | None = None
    aws_keys_present: bool = False
    in_lambda: bool = False
    function_name: str = "gcs-sync"
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, *, code_dir: str | None = None
    ) -> "Settings":
        env = os.environ if environ is None else environ
        problems: list[str] = []
        warnings: list[str] = []

        destinations = _destinations(env, problems, warnings)
        credentials_path = _credentials_path(env, code_dir)
        in_lambda = bool(env.get("AWS_LAMBDA_FUNCTION_NAME"))
        if credentials_path is None and in_lambda:
            problems.append(
                "GOOGLE_APPLICATION_CREDENTIALS: not set. Set it to the path of the Workload "
                "Identity Federation credential configuration inside the zip (for example "
                "'gcp-credentials.json'); see the README's setup section."
            )

        source_buckets = None
        raw_sources = env.get("SOURCE_BUCKETS", "").strip()
        if raw_sources:
            names = [n for n in _SPLIT.split(raw_sources) if n]
            bad = [n for n in names if not _valid_s3_bucket(n)]
            if bad:
                problems.append(f"SOURCE_BUCKETS: not S3 bucket names: {', '.join(bad)}")
            source_buckets = frozenset(names)

        default_source = env.get("S3_BUCKET_NAME", "").strip() or None
        if default_source and not _valid_s3_bucket(default_source):
            problems.append(f"S3_BUCKET_NAME: {default_source!r} is not an S3 bucket name")

        endpoint = env.get("GCS_API_ENDPOINT", "").strip() or None
        if endpoint and not re.match(r"^https?://[^/\s]+", endpoint):
            problems.append(
                f"GCS_API_ENDPOINT: {endpoint!r} is not an http(s) URL "
                "(for example https://storage.googleapis.com)"
            )
        elif endpoint:
            endpoint = endpoint.rstrip("/")

        mirror_deletes = _flag(env, "MIRROR_DELETES", problems)
        allow_key = _flag(env, "ALLOW_SERVICE_ACCOUNT_KEY", problems)

        memory_mb = _int(env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", 1024, problems, minimum=128)
        concurrency = _int(
            env, "OBJECT_CONCURRENCY", max(2, min(16, memory_mb // 256)), problems, minimum=1
        )

        stream_threshold = _int(env, "STREAM_THRESHOLD_MB", 8, problems, minimum=0)
        stream_chunk = _int(env, "STREAM_CHUNK_MB", 8, problems, minimum=1)
        s3_read_parts = _int(env, "S3_READ_PARTS", 1, problems, minimum=1)

        staging_dir = env.get("STAGING_DIR", "").strip() or tempfile.gettempdir()
        if not os.path.isdir(staging_dir):
            problems.append(f"STAGING_DIR: {staging_dir!r} is not a directory")

        log_level = env.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            problems.append(f"LOG_LEVEL: {log_level!r} is not one of DEBUG, INFO, WARNING, ERROR")

        key_filter = KeyFilter(
            include=tuple(t for t in _SPLIT.split(env.get("INCLUDE", "").strip()) if t),
            exclude=tuple(t for t in _SPLIT.split(env.get("EXCLUDE", "").strip()) if t),
        )

        if problems:
            raise ConfigError(problems)
        return cls(
            destinations=tuple(destinations),
            key_filter=key_filter,
            credentials_path=credentials_path,
            allow_service_account_key=allow_key,
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
            log_level=log_level,
            aws_region=(env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None),
            aws_keys_present=bool(env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY")),
            in_lambda=in_lambda,
            function_name=env.get("AWS_LAMBDA_FUNCTION_NAME") or "gcs-sync",
            warnings=tuple(warnings),
        )


def parse_destination(text: str) -> Destination:
    """``gs://bucket``, ``gs://bucket/prefix`` or ``SRC_PREFIX=gs://bucket/prefix`` -> Destination.

    ValueError says what is wrong.
    """
    source_prefix = ""
    if "=" + GS_SCHEME in text:
        source_prefix, _, rest = text.partition("=")
        if not source_prefix:
            raise ValueError(f"{text!r}: nothing before '=' (write SOURCE_PREFIX=gs://BUCKET/PREFIX)")
        text = rest
    if not text.startswith(GS_SCHEME):
        raise ValueError(f"{text!r} does not start with gs://")
    bucket, _, prefix = text[len(GS_SCHEME):].partition("/")
    problem = bucket_name_problem(bucket)
    if problem:
        raise ValueError(f"{text!r}: {problem}")
    if "\r" in prefix or "\n" in prefix:
        raise ValueError(f"{text!r}: the prefix contains a line break")
    if len(prefix.encode("utf-8")) >= 1024:
        raise ValueError(f"{text!r}: the prefix leaves no room for object names (1024 bytes max)")
    return Destination(bucket=bucket, prefix=prefix, source_prefix=source_prefix)


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


def _destinations(env: Mapping[str, str], problems: list[str], warnings: list[str]) -> list[Destination]:
    raw = env.get("GCS_DESTINATIONS", "").strip()
    compat = sorted(
        (m.group(1), value.strip()) for name, value in env.items() if (m := _COMPAT_BUCKET.match(name))
    )
    if raw:
        if compat:
            warnings.append(
                "GCS_DESTINATIONS is set, so GCS_BUCKET_NAME_* variables are ignored: "
                + ", ".join(f"GCS_BUCKET_NAME_{suffix}" for suffix, _ in compat)
            )
        items = [("GCS_DESTINATIONS", t) for t in _SPLIT.split(raw) if t]
    elif compat:
        items = []
        for suffix, value in compat:
            variable = f"GCS_BUCKET_NAME_{suffix}"
            if not value:
                problems.append(f"{variable}: empty")
                continue
            items.append((variable, value if value.startswith(GS_SCHEME) else GS_SCHEME + value))
    else:
        problems.append(
            "GCS_DESTINATIONS: not set. Set it to one or more destinations such as "
            "'gs://my-bucket' or 'gs://my-bucket/some/prefix/', separated by commas."
        )
        return []

    if not items:
        problems.append("GCS_DESTINATIONS: holds only separators; list at least one gs://BUCKET")
    seen: dict[Destination, str] = {}
    result: list[Destination] = []
    for variable, text in items:
        try:
            destination = parse_destination(text)
        except ValueError as exc:
            problems.append(f"{variable}: {exc}")
            continue
        if destination in seen:
            problems.append(f"{variable}: {destination.url} is listed twice")
            continue
        seen[destination] = variable
        if destination.prefix and not destination.prefix.endswith("/"):
            warnings.append(
                f"{variable}: prefix {destination.prefix!r} has no trailing '/', so it is joined "
                f"to keys as written ({destination.prefix}KEY)"
            )
        result.append(destination)
    return result


def _credentials_path(env: Mapping[str, str], code_dir: str | None) -> str | None:
    path = env.get("GOOGLE_APPLICATION_CREDENTIALS", "").strip()
    if not path:
        return None
    if os.path.isabs(path):
        return path
    base = env.get("LAMBDA_TASK_ROOT") or code_dir or os.getcwd()
    return os.path.normpath(os.path.join(base, path))


def _flag(env: Mapping[str, str], name: str, problems: list[str]) -> bool:
    value = env.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value not in _FALSE:
        problems.append(f"{name}: {value!r} is not true or false")
    return False


def _int(env: Mapping[str, str], name: str, default: int, problems: list[str], *, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        problems.append(f"{name}: {raw!r} is not a whole number")
        return default
    if value < minimum:
        problems.append(f"{name}: {value} is below the minimum of {minimum}")
        return default
    return value


def _valid_s3_bucket(name: str) -> bool:
    return bool(re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", name))

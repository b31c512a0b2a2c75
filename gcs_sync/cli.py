"""The command line: the same settings (environment variables) as the function.

    python -m gcs_sync doctor [--write-probe] [--json]
    python -m gcs_sync sync s3://BUCKET[/PREFIX] [--dry-run]
    python -m gcs_sync copy s3://BUCKET/KEY [s3://BUCKET/KEY ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from . import logs
from .errors import CopyFailed, GcsSyncError

CODE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gcs_sync", description=(
        "Copy S3 objects to Google Cloud Storage with the function's configuration "
        "(GCS_DESTINATIONS, GOOGLE_APPLICATION_CREDENTIALS, ...)."))
    commands = parser.add_subparsers(dest="command", required=True)
    doctor = commands.add_parser("doctor", help="check configuration, credentials and permissions")
    doctor.add_argument("--write-probe", action="store_true",
                        help="also write, overwrite and delete a probe object in each destination")
    doctor.add_argument("--json", action="store_true", help="print the JSON report instead of a table")
    sync = commands.add_parser("sync", help="copy what is missing or different under an S3 prefix")
    sync.add_argument("source", help="s3://BUCKET or s3://BUCKET/PREFIX")
    sync.add_argument("--dry-run", action="store_true", help="list what would be copied; write nothing")
    copy = commands.add_parser("copy", help="copy named objects now")
    copy.add_argument("objects", nargs="+", help="s3://BUCKET/KEY")
    args = parser.parse_args(argv)

    if args.command == "doctor":
        from . import doctor as checks

        report = checks.run_checks(code_dir=CODE_DIR, write_probe=args.write_probe)
        print(json.dumps(report, indent=2) if args.json else checks.format_table(report))
        return 0 if report["ok"] else 1

    try:
        from .config import Settings
        from .handler import Runtime

        settings = Settings.from_environ(code_dir=CODE_DIR)
        logs.configure(settings.log_level)
        runtime = Runtime.build(settings)
        if args.command == "sync":
            return _sync(runtime, args.source, args.dry_run)
        return _copy(runtime, args.objects)
    except CopyFailed as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except GcsSyncError as exc:
        print(f"gcs-sync: {exc}", file=sys.stderr)
        return 2


def _sync(runtime, source: str, dry_run: bool) -> int:
    from .handler import handle

    bucket, prefix = _split_s3_url(source)
    request = {"bucket": bucket, "prefix": prefix, "dry_run": dry_run}
    totals: dict[str, int] = {}
    while True:  # no deadline on a terminal: run the continuation chain to the end
        result = handle({"sync": request}, None, runtime)
        for name, value in result.items():
            if isinstance(value, int) and not isinstance(value, bool):
                totals[name] = totals.get(name, 0) + value
        if dry_run:
            for key in result.get("would_copy", []):
                print(f"would copy s3://{bucket}/{key}")
        if result.get("complete", True):
            break
        request = {**request, "continuation": result["continuation"]}
    print(json.dumps({"bucket": bucket, "prefix": prefix, "dry_run": dry_run, **totals}))
    return 0


def _copy(runtime, urls: Sequence[str]) -> int:
    from .events import ObjectRef
    from .handler import process, summarize

    refs = [ObjectRef(*_split_s3_url(url)) for url in urls]
    reports = process(refs, runtime)
    summary = summarize(reports)
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 1 if summary["failed"] else 0


def _split_s3_url(url: str) -> tuple[str, str]:
    if not url.startswith("s3://") or len(url) <= len("s3://"):
        raise SystemExit(f"gcs-sync: {url!r} is not an s3://BUCKET[/KEY] URL")
    bucket, _, rest = url[len("s3://"):].partition("/")
    return bucket, rest

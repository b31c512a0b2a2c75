"""The command line: the same settings (environment variables) as the function.

    python -m gcs_sync doctor [CHECK ...] [--list-checks] [--write-probe] [--json]
    python -m gcs_sync sync s3://BUCKET[/PREFIX] [--dry-run]
    python -m gcs_sync copy s3://BUCKET/KEY [s3://BUCKET/KEY ...]
    python -m gcs_sync check s3://BUCKET[/PREFIX] [--deep] [--json]
    python -m gcs_sync redrive FAILURE_QUEUE_URL [--dry-run] [--limit N]

One subparser per command (``_COMMANDS``): a new command adds its parser and its runner there.
On a terminal a relative GOOGLE_APPLICATION_CREDENTIALS means the current directory (in Lambda
it is the code directory), and no metrics are written (there is no CloudWatch to read them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Sequence

from . import logs
from .errors import CopyFailed, GcsSyncError

CODE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROG = "python -m gcs_sync"

DESCRIPTION = """\
Copy S3 objects to Google Cloud Storage from a terminal, with the function's configuration:
the same environment variables (GCS_DESTINATIONS, GOOGLE_APPLICATION_CREDENTIALS, SOURCE_BUCKETS,
...), read the same way, except that a relative GOOGLE_APPLICATION_CREDENTIALS is resolved
against the current directory. AWS credentials come from the usual places (AWS_PROFILE, the
AWS_* variables, `aws configure export-credentials`)."""

EPILOG = """\
examples:
  python -m gcs_sync doctor                          check configuration, credentials, buckets
  python -m gcs_sync sync s3://my-bucket/reports/ --dry-run
  python -m gcs_sync copy s3://my-bucket/reports/2026/summary.csv
  python -m gcs_sync check s3://my-bucket/reports/      audit: what each destination lacks or holds wrong
  python -m gcs_sync redrive https://sqs.us-east-1.amazonaws.com/123456789012/gcs-sync-failures --dry-run

local servers (./demo.sh --serve prints these lines for its own, and keeps them running):
  export AWS_ENDPOINT_URL_S3=http://127.0.0.1:PORT        the local S3
  export AWS_ENDPOINT_URL_STS=http://127.0.0.1:PORT       the local STS (moto: the S3 address), for doctor
  export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... AWS_SESSION_TOKEN=... AWS_REGION=us-east-1
                                                     the keys the local S3 and token server accept
  export GCS_API_ENDPOINT=http://127.0.0.1:PORT           the local Cloud Storage
  export GOOGLE_APPLICATION_CREDENTIALS=gcp-credentials.json
                                   a configuration whose token_url names the local token server
  export GCS_DESTINATIONS=gs://demo-primary

exit status: 0 done (doctor: every check passed; check: no drift), 1 an object failed (doctor: a
check failed; check: some destination drifted), 2 the command line or the configuration is wrong."""


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error that ends with a working example of the command."""

    example: str = ""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        fix = f"; for example: {self.example}" if self.example else f"; see {self.prog} --help"
        self.exit(2, f"{self.prog}: error: {message}{fix}\n")


def _doctor_parser(commands) -> None:
    parser = commands.add_parser(
        "doctor", help="check configuration, credentials and every bucket's permissions",
        description="Check the configuration, the credential configuration, the AWS identity, the "
        "token exchange, each destination's permissions and bucket settings, and each source's "
        "permissions; print each check with a fix for every failure. Writes nothing unless --write-probe.",
        epilog="examples:\n  python -m gcs_sync doctor --json\n  python -m gcs_sync doctor --list-checks\n"
               "  python -m gcs_sync doctor 'aws identity'        one check (and the checks it needs)\n"
               "  python -m gcs_sync doctor destination          every check of one kind",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.example = "python -m gcs_sync doctor"
    parser.add_argument("checks", nargs="*", metavar="CHECK",
                        help="run only these checks (a name from --list-checks, or a kind such as destination)")
    parser.add_argument("--list-checks", action="store_true",
                        help="list the checks this configuration has, in order, without running them")
    parser.add_argument("--write-probe", action="store_true",
                        help="also write, overwrite and delete a probe object in each destination")
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of a table")
    parser.set_defaults(run=_run_doctor)


def _sync_parser(commands) -> None:
    parser = commands.add_parser(
        "sync", help="copy what is missing or different under an S3 prefix",
        description="Copy every object under s3://BUCKET/PREFIX that is missing or different at a "
        "destination, to the end of the listing.",
        epilog="examples:\n  python -m gcs_sync sync s3://my-bucket --dry-run\n"
               "  python -m gcs_sync sync s3://my-bucket/reports/2026/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.example = "python -m gcs_sync sync s3://my-bucket/reports/"
    parser.add_argument("source", metavar="s3://BUCKET[/PREFIX]", help="the bucket, and optionally a key prefix")
    parser.add_argument("--dry-run", action="store_true", help="list what would be copied; write nothing")
    parser.set_defaults(run=_run_sync)


def _copy_parser(commands) -> None:
    parser = commands.add_parser(
        "copy", help="copy the named objects now, as an event naming them would",
        description="Copy each named object to every destination now, whatever the destinations "
        "hold (the ordering rule still keeps a newer copy). Prints the summary an S3 event gets.",
        epilog="examples:\n  python -m gcs_sync copy s3://my-bucket/reports/2026/summary.csv\n"
               "  python -m gcs_sync copy 's3://my-bucket/a b.txt' s3://my-bucket/c.txt",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.example = "python -m gcs_sync copy s3://my-bucket/path/to/file.csv"
    parser.add_argument("objects", nargs="+", metavar="s3://BUCKET/KEY",
                        help="objects to copy (keys as they are, not URL-encoded)")
    parser.set_defaults(run=_run_copy)


def _check_parser(commands) -> None:
    parser = commands.add_parser(
        "check", help="audit: compare an S3 prefix with every destination; writes nothing",
        description="Compare every object under s3://BUCKET/PREFIX with what each destination holds and "
        "report, per destination: ok, missing, stale (an older source state), mismatched (claims the "
        "current state, but size or checksums disagree), foreign (not written by gcs-sync) and extra (a "
        "copy whose source is gone), with up to 100 examples of each. Listings decide; --deep also reads "
        "each source object whose copy looks right and proves it against S3's record and the copy. "
        "A sync repairs what it finds (except extras).",
        epilog="examples:\n  python -m gcs_sync check s3://my-bucket/reports/\n"
               "  python -m gcs_sync check s3://my-bucket --deep --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.example = "python -m gcs_sync check s3://my-bucket/reports/"
    parser.add_argument("source", metavar="s3://BUCKET[/PREFIX]", help="the bucket, and optionally a key prefix")
    parser.add_argument("--deep", action="store_true", help="also read the source objects to prove their copies")
    parser.add_argument("--json", action="store_true", help="print the JSON result instead of a table")
    parser.set_defaults(run=_run_check)


def _redrive_parser(commands) -> None:
    parser = commands.add_parser(
        "redrive", help="process the failure queue's records again, once their cause is fixed",
        description="Read the function's failure queue (its on-failure destination) and process each "
        "failure record's original event again, as the function would; delete each message once nothing in "
        "it failed. A message whose copy fails again, or that holds no failure record, stays in the queue. "
        "Ends with a summary: messages read, redriven, failed (kept), not failure records (kept).",
        epilog="examples:\n"
               "  python -m gcs_sync redrive https://sqs.us-east-1.amazonaws.com/123456789012/gcs-sync-failures "
               "--dry-run\n"
               "  python -m gcs_sync redrive https://sqs.us-east-1.amazonaws.com/123456789012/gcs-sync-failures "
               "--limit 10\n"
               "the queue's URL: aws sqs get-queue-url --queue-name NAME",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.example = "python -m gcs_sync redrive https://sqs.us-east-1.amazonaws.com/123456789012/gcs-sync-failures"
    parser.add_argument("queue", metavar="FAILURE_QUEUE_URL", help="the SQS queue URL of the on-failure destination")
    parser.add_argument("--dry-run", action="store_true",
                        help="list what each message would redrive; copy nothing, delete nothing")
    parser.add_argument("--limit", type=_positive, metavar="N", help="read at most N messages (default: all)")
    parser.set_defaults(run=_run_redrive)


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number of messages")
    return number


# Each command: (its parser, added under the subcommands). Add new commands here.
_COMMANDS: tuple[Callable, ...] = (_doctor_parser, _sync_parser, _copy_parser, _check_parser, _redrive_parser)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.example = "python -m gcs_sync doctor"
    commands = parser.add_subparsers(dest="command", required=True, metavar="{doctor,sync,copy,check,redrive}",
                                     parser_class=_Parser)
    for add in _COMMANDS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


def _run_doctor(args) -> int:
    from . import doctor as checks

    if args.list_checks:
        listed = checks.list_checks(code_dir=CODE_DIR, relative_to=os.getcwd())
        print(json.dumps([{"check": c.name, "about": c.about, "needs": list(c.needs)} for c in listed], indent=2)
              if args.json else checks.format_list(listed))
        return 0
    try:
        report = checks.run_checks(code_dir=CODE_DIR, relative_to=os.getcwd(), write_probe=args.write_probe,
                                   where=checks.TERMINAL, only=args.checks)
    except checks.UnknownCheck as exc:
        print(f"gcs-sync: doctor: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else checks.format_table(report))
    return 0 if report["ok"] else 1


def _run_sync(args) -> int:
    try:
        bucket, prefix = _split_s3_url(args.source, "sync", key_required=False)
    except _UsageError as exc:
        return _usage(exc)
    return _with_runtime(lambda runtime: _sync(runtime, bucket, prefix, args.dry_run))


def _run_copy(args) -> int:
    try:
        refs = [_split_s3_url(url, "copy", key_required=True) for url in args.objects]
    except _UsageError as exc:
        return _usage(exc)
    return _with_runtime(lambda runtime: _copy(runtime, refs))


def _run_check(args) -> int:
    try:
        bucket, prefix = _split_s3_url(args.source, "check", key_required=False)
    except _UsageError as exc:
        return _usage(exc)
    return _with_runtime(lambda runtime: _check(runtime, bucket, prefix, args.deep, args.json))


def _run_redrive(args) -> int:
    queue = args.queue
    if queue.startswith("arn:aws:sqs:"):
        name = queue.rsplit(":", 1)[-1]
        return _usage(_UsageError(
            f"redrive: {queue!r} is the queue's ARN; redrive needs its URL. Fix: "
            f"aws sqs get-queue-url --queue-name {name} (or https://sqs.REGION.amazonaws.com/ACCOUNT/{name})"))
    if not queue.lower().startswith(("https://", "http://")):
        return _usage(_UsageError(
            f"redrive: {queue!r} is not an SQS queue URL. Fix: name the failure queue by its URL, "
            "https://sqs.REGION.amazonaws.com/ACCOUNT/NAME (aws sqs get-queue-url --queue-name NAME)"))
    return _with_runtime(lambda runtime: _redrive(runtime, queue, args.dry_run, args.limit))


def _redrive(runtime, queue: str, dry_run: bool, limit: int | None) -> int:
    from . import redrive
    from .handler import handle

    summary = redrive.run(queue, redrive.sqs_client(queue), lambda record: handle(record, None, runtime),
                          dry_run=dry_run, limit=limit, say=lambda line: print(line, flush=True))
    print(json.dumps(summary.as_dict()))
    return 1 if summary.failed else 0


def _check(runtime, bucket: str, prefix: str, deep: bool, as_json: bool) -> int:
    from .audit import KINDS
    from .handler import handle

    request: dict = {"bucket": bucket, "prefix": prefix, "deep": deep}
    results = []
    while True:  # no deadline on a terminal: run the continuation chain to the end
        result = handle({"check": request}, None, runtime)
        results.append(result)
        if "continuation" not in result:
            break
        request = {**request, "continuation": result["continuation"]}
    merged = {"ok": all(r["ok"] for r in results), "bucket": bucket, "prefix": prefix, "deep": deep,
              "listed": sum(r["listed"] for r in results), "destinations": []}
    for i, first in enumerate(results[0]["destinations"]):
        parts = [r["destinations"][i] for r in results]
        examples: dict[str, list] = {}
        for part in parts:
            for kind, names in part["examples"].items():
                examples.setdefault(kind, []).extend(names)
        merged["destinations"].append({
            "destination": first["destination"],
            "counts": {k: sum(p["counts"][k] for p in parts) for k in KINDS},
            "examples": {k: v[:100] for k, v in examples.items()},
            **({"errors": [p["error"] for p in parts if p.get("error")]} if any(p.get("error") for p in parts) else {}),
        })
    if as_json:
        print(json.dumps(merged, indent=2, ensure_ascii=False))
    else:
        print(f"s3://{bucket}/{prefix}: {merged['listed']} objects listed" + (" (deep)" if deep else ""))
        for entry in merged["destinations"]:
            counts = ", ".join(f"{n} {k}" for k, n in entry["counts"].items() if n)
            print(f"{entry['destination']}: {counts or 'nothing under the prefix'}")
            for kind, names in entry["examples"].items():
                for name in names:
                    print(f"  {kind:<10} {name}")
            for error in entry.get("errors", []):
                print(f"  error      {error}")
    return 0 if merged["ok"] else 1


def _with_runtime(work: Callable) -> int:
    try:
        from . import metrics
        from .config import Settings
        from .runtime import Runtime

        settings = Settings.from_environ(code_dir=CODE_DIR, relative_to=os.getcwd())
        logs.configure_from(settings.log)
        metrics.set_output(None)  # no CloudWatch on a terminal: the summary says it all
        for warning in settings.warnings:
            print(f"gcs-sync: warning: {warning}", file=sys.stderr)
        runtime = Runtime.build(settings)
        return work(runtime)
    except CopyFailed as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except GcsSyncError as exc:
        print(f"gcs-sync: {exc}", file=sys.stderr)
        return 2


def _sync(runtime, bucket: str, prefix: str, dry_run: bool) -> int:
    from .handler import handle

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


def _copy(runtime, refs: Sequence[tuple[str, str]]) -> int:
    from .events import ObjectRef
    from .handler import process, summarize

    reports = process([ObjectRef(bucket, key) for bucket, key in refs], runtime)
    summary = summarize(reports)
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 1 if summary["failed"] else 0


class _UsageError(Exception):
    pass


def _usage(exc: _UsageError) -> int:
    print(f"gcs-sync: {exc}", file=sys.stderr)
    return 2


def _split_s3_url(url: str, command: str, *, key_required: bool) -> tuple[str, str]:
    """``s3://BUCKET/KEY`` -> (bucket, key); a _UsageError names the argument, what is wrong and the fix."""
    form = "s3://BUCKET/KEY" if key_required else "s3://BUCKET[/PREFIX]"
    lower = url.lower()
    if lower.startswith("gs://"):
        raise _UsageError(
            f"{command}: {url!r} is a Cloud Storage URL, but {command} reads from S3. Fix: name the S3 "
            f"source, {form} (e.g. s3://{url[5:]}); destinations come from GCS_DESTINATIONS")
    if lower.startswith(("https://", "http://")) and ".amazonaws.com" in lower:
        raise _UsageError(f"{command}: {url!r} is an HTTP URL. Fix: write it as {form}")
    if lower.startswith("s3:") and not lower.startswith("s3://"):
        rest = url[3:].lstrip("/")
        raise _UsageError(f"{command}: {url!r} lacks the two slashes of s3://. Fix: write s3://{rest}")
    if not lower.startswith("s3://"):
        raise _UsageError(f"{command}: {url!r} is not an S3 URL. Fix: write s3://{url.lstrip('/')}")
    bucket, _, key = url[len("s3://"):].partition("/")
    if not bucket:
        raise _UsageError(f"{command}: {url!r} names no bucket. Fix: write {form}, e.g. s3://my-bucket/"
                          + ("path/to/file.csv" if key_required else "reports/"))
    if key_required and not key:
        raise _UsageError(
            f"{command}: {url!r} names a bucket but no object. Fix: name the object, s3://{bucket}/KEY; "
            f"to copy everything under a prefix use: {PROG} sync s3://{bucket}/")
    return bucket, key

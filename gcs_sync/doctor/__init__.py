"""Health check ("doctor"): is this function's setup able to copy, and if not, what to change.

Runs the same checks for the ``{"doctor": {}}`` event and for ``python -m gcs_sync doctor``, in
the style of ``brew doctor``: each check is one plain function, listed once in ``catalogue``
with the checks it needs; those of each destination are generated from the settings.

- ``runner``         ``Check`` / ``Outcome``, running a list: skips what a failed check blocks,
                     scrubs every detail, never raises
- ``context``        what the checks share (settings, what earlier checks learnt, clients from
                     ``runtime``), explicitly
- ``catalogue``      the list, in order: the checks of the setup, then per destination
- ``setup_checks``, ``aws_checks``, ``bucket_checks``, ``policy_checks``  the checks
- ``identity``, ``table``  pure helpers and the terminal table

The settings are parsed by the doctor itself, so it works when the configuration is broken (that
is when it is needed); the credential configuration is checked even when other variables are
wrong. A check that cannot run because one it needs failed is reported ``ok: false`` with detail
``not run: <check> failed`` (the report's shape has no third value); the table marks it SKIP.
Nothing is written anywhere unless ``write_probe=True``. The AWS clients (and google-auth's AWS
signer) read keys and endpoints from the process environment, as in Lambda; ``environ`` feeds
the settings.
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping

from .bucket_checks import PERMISSIONS, PROBE_DIR
from .catalogue import (AWS_IDENTITY, CONFIGURATION, CREDENTIAL_CONFIGURATION, DESTINATIONS, GCS_ENDPOINT,
                        SLICE_QUEUE, SOURCE_BUCKET, TOKEN_EXCHANGE, checks_for)
from .context import LAMBDA, TERMINAL, BucketFacts, Context
from .identity import aws_role_attribute, audience_parts, impersonated_email, principal_set
from .runner import NOT_RUN, Check, Outcome, UnknownCheck, failed, passed, run, select, warning
from .table import format_list, format_table, is_not_run

__all__ = [
    "AWS_IDENTITY", "CONFIGURATION", "CREDENTIAL_CONFIGURATION", "DESTINATIONS", "GCS_ENDPOINT", "LAMBDA",
    "NOT_RUN", "PERMISSIONS", "PROBE_DIR", "SLICE_QUEUE", "SOURCE_BUCKET", "TERMINAL", "TOKEN_EXCHANGE",
    "BucketFacts", "Check", "Context", "Outcome", "UnknownCheck", "audience_parts", "aws_role_attribute",
    "checks_for", "failed", "format_list", "format_table", "impersonated_email", "is_not_run", "list_checks",
    "passed", "principal_set", "report", "run_checks", "select", "warning",
]


def run_checks(
    environ: Mapping[str, str] | None = None,
    *,
    code_dir: str | None = None,
    relative_to: str | None = None,
    write_probe: bool = False,
    refused_server_copies: tuple[str, ...] = (),
    where: str | None = None,
    only: Iterable[str] = (),
) -> dict:
    """Run every check (or those named in ``only``, with what they need); return
    ``{"ok": bool, "checks": [{check, ok, detail, fix}, ...]}``.

    Never raises, except ``UnknownCheck`` when ``only`` names no check of this configuration.
    ``relative_to``: what a relative GOOGLE_APPLICATION_CREDENTIALS is resolved against (the
    command line passes the current directory); by default the function's code directory.
    ``refused_server_copies``: destinations whose server-side copies this container saw refused.
    ``where``: ``"lambda"`` or ``"terminal"``, whose advice fits (default: Lambda when
    AWS_LAMBDA_FUNCTION_NAME is set).
    """
    context = Context.from_environ(os.environ if environ is None else environ, code_dir=code_dir,
                                   relative_to=relative_to, where=where, write_probe=write_probe,
                                   refused_server_copies=refused_server_copies)
    only = tuple(only)
    try:
        checks = select(checks_for(context), only)
    except UnknownCheck:
        raise
    except Exception as exc:  # noqa: BLE001 - the doctor reports, it never raises
        return {"ok": False, "checks": [{"check": "doctor", "ok": False, "fix": None, "detail": context.scrub(
            f"the health check itself failed: {type(exc).__name__}: {exc}")}]}
    return report(context, checks)


def report(context: Context, checks: list[Check] | None = None) -> dict:
    """Run ``checks`` (default: every check of the context's configuration) with ``context``."""
    results = run(checks_for(context) if checks is None else checks, context, context.scrub)
    return {"ok": bool(results) and all(r["ok"] for r in results), "checks": results}


def list_checks(environ: Mapping[str, str] | None = None, *, code_dir: str | None = None,
                relative_to: str | None = None) -> list[Check]:
    """The checks this configuration has, in the order they run; nothing is called."""
    return checks_for(Context.from_environ(os.environ if environ is None else environ, code_dir=code_dir,
                                           relative_to=relative_to))

"""The doctor's report for a terminal: one line per check, fixes under failures, a final count."""

from __future__ import annotations

import textwrap
from typing import Sequence

from .runner import NOT_RUN, Check


def format_table(report: dict) -> str:
    """A terminal table: mark, check, detail; ``fix:`` lines under failures; a final count.

    Marks: PASS, FAIL, and SKIP for a check not run because an earlier one failed (counted
    apart: it did not fail, it waits for the failure it names).
    """
    checks = list(report.get("checks") or [])
    width = min(40, max((len(str(c.get("check", ""))) for c in checks), default=0))
    indent = " " * (4 + 2 + width + 2)
    lines: list[str] = []
    for check in checks:
        lines.extend(_check_lines(check, width, indent))
    lines.append(_count(checks))
    return "\n".join(lines)


def _check_lines(check: dict, width: int, indent: str) -> list[str]:
    name = str(check.get("check", ""))
    detail = str(check.get("detail") or "")
    mark = "PASS" if check.get("ok") else ("SKIP" if is_not_run(check) else "FAIL")
    wrapped = textwrap.wrap(detail, width=max(40, 110 - len(indent)),
                            break_long_words=False, break_on_hyphens=False) or [""]
    lines: list[str] = []
    if len(name) > width:
        lines.append(f"{mark}  {name}")
        lines.extend(indent + part for part in wrapped)
    else:
        lines.append(f"{mark}  {name.ljust(width)}  {wrapped[0]}".rstrip())
        lines.extend(indent + part for part in wrapped[1:])
    if check.get("fix"):
        # Not wrapped: a fix often holds a command meant to be copied whole. A passing
        # check may carry a suggestion too (shown as a hint).
        label = "hint: " if check.get("ok") else "fix: "
        fix_lines = str(check["fix"]).splitlines() or [""]
        lines.append(f"{indent}{label}{fix_lines[0]}")
        lines.extend(f"{indent}{' ' * len(label)}{line}" for line in fix_lines[1:])
    return lines


def _count(checks: list[dict]) -> str:
    total = len(checks)
    skipped = [c for c in checks if is_not_run(c)]
    failed = [c for c in checks if not c.get("ok") and not is_not_run(c)]
    if not total:
        return "no checks ran"
    if not failed and not skipped:
        return f"all {total} checks passed"
    passed = total - len(failed) - len(skipped)
    parts = [f"{len(failed)} failed"] + ([f"{len(skipped)} not run (each waits for a failed "
                                           "check it needs)"] if skipped else [])
    return f"{passed} of {total} checks passed; " + ", ".join(parts)


def is_not_run(check: dict) -> bool:
    """Whether a check was not run because a check it needs failed (not a failure of its own)."""
    return not check.get("ok") and str(check.get("detail") or "").startswith(NOT_RUN)


def format_list(checks: Sequence[Check]) -> str:
    """``--list-checks``: each check this configuration has, what it looks at and what it needs."""
    width = min(48, max((len(c.name) for c in checks), default=0))
    lines = []
    for check in checks:
        needs = f" (needs {', '.join(check.needs)})" if check.needs else ""
        lines.append(f"{check.name.ljust(width)}  {check.about}{needs}".rstrip())
    return "\n".join(lines)

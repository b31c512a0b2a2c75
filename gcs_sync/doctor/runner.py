"""The doctor's runner: a list of checks, each one function with what it needs declared.

A check is a ``Check``: its name, the function that runs it (given the ``Context``, it returns an
``Outcome``), the names of the checks it needs, and one line saying what it looks at. ``run``
goes down the list in order: a check whose need failed (or was itself not run) is not run and is
reported ``ok: false`` with detail ``not run: <the check that really failed> failed``; an
exception from a check becomes its failure; every detail and fix passes through ``scrub``. It
never raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

NOT_RUN = "not run: "
UNEXPECTED_FIX = ("the health check did not foresee this error: the detail names it (if it looks like a "
                  "gcs-sync bug, report it with this detail)")


@dataclass(frozen=True)
class Outcome:
    """What one check found: ``fix`` is the change to make (on a passing check: a hint)."""

    ok: bool
    detail: str
    fix: str | None = None


def passed(detail: str, hint: str | None = None) -> Outcome:
    return Outcome(True, detail, hint)


def failed(detail: str, fix: str | None) -> Outcome:
    return Outcome(False, detail, fix)


def warning(detail: str, fix: str) -> Outcome:
    """Nothing is broken, but something deserves a look: a passing check, shown with its hint."""
    return Outcome(True, "warning: " + detail, fix)


@dataclass(frozen=True)
class Check:
    """One check: ``run(context) -> Outcome``; ``needs`` names the checks that must pass first."""

    name: str
    run: Callable[[Any], Outcome]
    needs: tuple[str, ...] = ()
    about: str = ""
    family: str = ""  # what `doctor FAMILY` selects: every check of one kind ("destination")


class UnknownCheck(ValueError):
    """A name given to run one check names none of the checks this configuration has."""

    def __init__(self, names: Sequence[str], known: Sequence[Check]):
        self.names = tuple(names)
        families = sorted({c.family for c in known if c.family and c.family != c.name})
        listed = ", ".join(repr(c.name) for c in known)
        super().__init__(
            f"no check named {', '.join(repr(n) for n in names)}. Fix: name one of {listed}"
            + (f", or a kind of check ({', '.join(repr(f) for f in families)})" if families else "")
            + "; `python -m gcs_sync doctor --list-checks` lists them")


def select(checks: Sequence[Check], names: Iterable[str]) -> list[Check]:
    """The checks named (by full name or by family, any case) and every check they need, in order."""
    wanted = [n.strip().lower() for n in names if n.strip()]
    if not wanted:
        return list(checks)
    chosen = {c.name for c in checks if c.name.lower() in wanted or c.family.lower() in wanted}
    unknown = [n for n in wanted if not any(n in (c.name.lower(), c.family.lower()) for c in checks)]
    if unknown:
        raise UnknownCheck(unknown, checks)
    by_name = {c.name: c for c in checks}
    pending = list(chosen)
    while pending:
        for need in by_name[pending.pop()].needs:
            if need in by_name and need not in chosen:
                chosen.add(need)
                pending.append(need)
    return [c for c in checks if c.name in chosen]


def run(checks: Sequence[Check], context: Any, scrub: Callable[[str], str]) -> list[dict]:
    """Run ``checks`` in order; one ``{"check", "ok", "detail", "fix"}`` per check. Never raises."""
    results: list[dict] = []
    root: dict[str, str] = {}  # a check that failed or was not run -> the check that really failed
    for check in checks:
        try:
            outcome = _outcome(check, context, root)
            if not outcome.ok:
                root.setdefault(check.name, check.name)
            results.append(_recorded(check.name, outcome, scrub))
        except Exception as exc:  # noqa: BLE001 - the doctor reports, it never raises
            root.setdefault(check.name, check.name)
            results.append({"check": check.name, "ok": False, "fix": None,
                            "detail": f"the health check itself failed: {type(exc).__name__}"})
    return results


def _outcome(check: Check, context: Any, root: dict[str, str]) -> Outcome:
    for need in check.needs:
        if need in root:
            root[check.name] = root[need]
            return failed(f"{NOT_RUN}{root[need]} failed", None)
    try:
        outcome = check.run(context)
    except Exception as exc:  # noqa: BLE001 - becomes a failed check
        return failed(f"unexpected {type(exc).__name__}: {exc}", UNEXPECTED_FIX)
    if not isinstance(outcome, Outcome):
        return failed(f"the check returned {type(outcome).__name__}, not an Outcome", UNEXPECTED_FIX)
    return outcome


def _recorded(name: str, outcome: Outcome, scrub: Callable[[str], str]) -> dict:
    return {
        "check": name,
        "ok": bool(outcome.ok),
        "detail": scrub(str(outcome.detail)),
        "fix": scrub(str(outcome.fix)) if outcome.fix else None,
    }

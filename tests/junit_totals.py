"""The whole run's count from the JUnit XML files of several pytest processes (test.sh runs two).

    python -m tests.junit_totals RESULTS.xml [RESULTS.xml ...]

Prints one line, ``N passed, M failed, K skipped`` (``, E errors`` when a setup or teardown
failed), summed over every file; a file that is missing or unreadable (its pytest died before
writing it) is named on a line of its own before it, and the exit status is then 1.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Totals:
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0

    @property
    def passed(self) -> int:
        return self.tests - self.failures - self.errors - self.skipped

    def add(self, other: "Totals") -> None:
        self.tests += other.tests
        self.failures += other.failures
        self.errors += other.errors
        self.skipped += other.skipped

    def line(self) -> str:
        text = f"{self.passed} passed, {self.failures} failed, {self.skipped} skipped"
        return text + (f", {self.errors} errors" if self.errors else "")


def read(path: Path) -> Totals:
    """The counts of one JUnit XML file (pytest writes one ``testsuite`` under ``testsuites``)."""
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    totals = Totals()
    for suite in suites:
        totals.add(Totals(*(int(suite.get(name, 0)) for name in ("tests", "failures", "errors", "skipped"))))
    return totals


def main(argv: list[str]) -> int:
    totals, missing = Totals(), []
    for name in argv:
        try:
            totals.add(read(Path(name)))
        except (OSError, ElementTree.ParseError, ValueError) as exc:
            missing.append(f"{name}: no results ({type(exc).__name__}: {exc})")
    for line in missing:
        print(f"test.sh: {line}", file=sys.stderr)
    print(totals.line())
    return 1 if missing or not argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

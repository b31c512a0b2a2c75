"""test.sh's last line: the whole run's count, summed from two pytest processes' JUnit XML."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tests import junit_totals

ROOT = Path(__file__).resolve().parents[2]

FIRST = """
    import pytest

    def test_a(): pass
    def test_b(): pass
    def test_c(): assert 1 == 2
    @pytest.mark.skip(reason="not here")
    def test_d(): pass
"""
SECOND = """
    import pytest

    @pytest.fixture
    def broken():
        raise RuntimeError("setup fails")

    @pytest.mark.parametrize("n", range(4))
    def test_n(n): pass
    def test_fails(): raise ValueError("no")
    def test_setup(broken): pass
    def test_skipped(): pytest.skip("later")
"""


def pytest_run(tmp_path: Path, name: str, source: str) -> tuple[Path, str]:
    """One pytest process over one generated test file: its XML results and its own last line."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / f"test_{name}.py").write_text(textwrap.dedent(source))
    (folder / "pytest.ini").write_text("[pytest]\n")
    xml = folder / "results.xml"
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           "--rootdir", str(folder), f"--junitxml={xml}", str(folder)],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    return xml, done.stdout.strip().splitlines()[-1]


def counts(line: str) -> dict[str, int]:
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", line)}


def test_two_processes_are_summed_into_one_line(tmp_path, capsys):
    first, first_line = pytest_run(tmp_path, "first", FIRST)
    second, second_line = pytest_run(tmp_path, "second", SECOND)
    assert counts(first_line) == {"passed": 2, "failed": 1, "skipped": 1}, first_line
    assert counts(second_line) == {"passed": 4, "failed": 1, "skipped": 1, "error": 1}, second_line
    assert junit_totals.main([str(first), str(second)]) == 0
    out = capsys.readouterr().out
    assert out == "6 passed, 2 failed, 2 skipped, 1 errors\n"


def test_a_process_without_results_is_named_and_fails(tmp_path, capsys):
    first, _ = pytest_run(tmp_path, "first", FIRST)
    assert junit_totals.main([str(first), str(tmp_path / "gone.xml")]) == 1
    captured = capsys.readouterr()
    assert captured.out == "2 passed, 1 failed, 1 skipped\n"
    assert "gone.xml: no results" in captured.err


def test_test_sh_ends_with_the_summed_count():
    script = (ROOT / "test.sh").read_text()
    assert '--junitxml="$results/others.xml"' in script and '--junitxml="$results/e2e.xml"' in script
    last = [line for line in script.splitlines() if line.strip()][-2:]
    assert last == ['.venv/bin/python -m tests.junit_totals "$results/e2e.xml" "$results/others.xml" || failed=1',
                    'exit "$failed"']

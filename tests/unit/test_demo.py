"""The demo's pieces that need no servers: column alignment by display width, and --help."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools.demo import columns, display_width, main, pad

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("text, width", [
    ("", 0),
    ("reports/2026/summary.csv", 24),
    ("日本語", 6),  # wide: two columns each
    ("日本語 フォルダ/レポート 1.txt", 30),
    ("ＡＢ", 4),  # full-width Latin
    ("ｶﾀｶﾅ", 4),  # half-width katakana: one column each
    ("e\u0301", 1),  # a combining accent takes no column
])
def test_display_width(text, width):
    assert display_width(text) == width


def test_pad_fills_to_the_display_width():
    assert pad("日本", 6) == "日本  "
    assert pad("ab", 6) == "ab    "
    assert pad("toolong", 3) == "toolong"


def _column_starts(line: str, marker: str) -> int:
    """The display column where ``marker`` starts in ``line``."""
    return display_width(line[: line.rindex(marker)])


def test_columns_line_up_on_a_terminal_with_japanese_names():
    rows = [["gs://demo-primary/images/logo.png", "copied", "crc32"],
            ["gs://demo-primary/日本語 フォルダ/レポート 1.txt", "copied", "crc32"],
            ["gs://demo-primary/empty-folder/", "superseded", "-"]]
    def starts(lines: list[str], column: int) -> set[int]:
        return {_column_starts(line, rows[i][column]) for i, line in enumerate(lines)}

    lines = columns(rows)
    assert len(starts(lines, 1)) == 1 and len(starts(lines, 2)) == 1
    # The check, broken once: padded by character count, the Japanese row's columns move.
    widest = max(len(row[0]) for row in rows)
    by_characters = ["  " + row[0].ljust(widest) + "  " + row[1] + "  " + row[2] for row in rows]
    assert len(starts(by_characters, 1)) == 2


def test_help_prints_usage_and_runs_nothing(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ./demo.sh [--serve]")
    assert "--serve" in out and "export" in out


def test_an_unknown_argument_is_refused_with_the_usage(capsys):
    assert main(["--bogus"]) == 2
    err = capsys.readouterr().err
    assert "--bogus" in err and "usage: ./demo.sh" in err


@pytest.mark.skipif(shutil.which("bash") is None, reason="demo.sh is a bash script")
def test_demo_sh_help_starts_no_server_and_needs_no_setup():
    """./demo.sh --help answers before the virtual environment is checked or a server started."""
    result = subprocess.run(["bash", str(ROOT / "demo.sh"), "--help"], capture_output=True, text=True,
                            timeout=60, env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ./demo.sh")
    assert "Starting the local servers" not in result.stdout
    assert "Installing" not in result.stderr


def test_server_side_copies_are_told_from_the_front_s_requests():
    from tools.demo import _rewrites

    requests = [
        ("POST", "/upload/storage/v1/b/demo-primary/o"),
        ("POST", "/storage/v1/b/demo-primary/o/%E6%97%A5%E6%9C%AC%2Fa.txt/rewriteTo/b/demo-archive/o/"
                 "from-s3%2F%E6%97%A5%E6%9C%AC%2Fa.txt"),
        ("GET", "/storage/v1/b/demo-archive/o/from-s3%2Fb.txt"),
    ]
    assert _rewrites(requests) == {("demo-archive", "from-s3/日本/a.txt"): "demo-primary/日本/a.txt"}


def test_replication_latency_is_read_from_the_metric_documents():
    from tools.demo import _replication_latency

    def document(destination, values, unit):
        return {"_aws": {"CloudWatchMetrics": [{"Namespace": "GcsSync", "Dimensions": [["FunctionName"],
                ["FunctionName", "Destination"]], "Metrics": [{"Name": "ReplicationLatency", "Unit": unit}]}]},
                "FunctionName": "f", "Destination": destination, "ReplicationLatency": values}

    documents = [document("gs://a/", [120.5, 480.0], "Milliseconds"), document("gs://b/", 2.5, "Seconds"),
                 {"_aws": {"CloudWatchMetrics": []}, "FunctionName": "f", "ObjectsCopied": 2}]
    assert _replication_latency(documents) == {"gs://a/": [120.5, 480.0], "gs://b/": [2500.0]}

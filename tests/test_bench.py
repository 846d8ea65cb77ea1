"""``tdxsim bench``: every suite runs (``--quick``), one table, rows scripts can read, a report with plots.

Only that the benchmarks run and what they write is checked here; their targets live in the benchmark
itself, never in a timed test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tdxsim.bench.report import write_report
from tdxsim.bench.rows import LOWER_IS_BETTER, row, unmeasured

ROOT = Path(__file__).resolve().parent.parent
ROW_KEYS = {"name", "value", "unit", "limit", "limit_name", "ratio", "target", "met"}
PNG = b"\x89PNG\r\n\x1a\n"
QUICK_ROWS = {
    "engine_encrypt",
    "convert_64gib_vs_2mib",
    "verify_warm",
    "private_write_1mib",
    "small_read_p50",
    "guests_4_vs_best",
    "sparse_64gib_rss",
    "launch_64gib_pages",
    "teardown_64gib_pages",
    "attest_e2e_per_s",
    "replicas_2_vs_1",
    "demo_wall",
}


def tdxsim(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tdxsim.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def check_row(entry: dict[str, object]) -> None:
    assert set(entry) == ROW_KEYS
    if entry["value"] is None:  # not measurable here: never counted as met
        assert entry["ratio"] is None and entry["met"] in (False, None)
        return
    value, limit, ratio = entry["value"], entry["limit"], entry["ratio"]
    assert (
        isinstance(value, int | float) and isinstance(limit, int | float) and isinstance(ratio, int | float)
    )
    assert ratio == pytest.approx(value / limit, rel=0.01, abs=0.002)
    target = entry["target"]
    if target is None:
        assert entry["met"] is None
    else:
        assert isinstance(target, int | float)
        expected = ratio <= target if entry["name"] in LOWER_IS_BETTER else ratio >= target
        assert entry["met"] is expected


def test_quick_runs_every_suite_and_writes_the_report(tmp_path: Path) -> None:
    report, rows_file = tmp_path / "report", tmp_path / "rows.json"
    result = tdxsim("bench", "--quick", "--json", str(rows_file), "--report", str(report), timeout=900)
    assert result.returncode in (0, 1), result.stderr[-2000:]
    rows = json.loads(rows_file.read_text())
    assert isinstance(rows, list)
    assert {r["name"] for r in rows} >= QUICK_ROWS
    for entry in rows:
        check_row(entry)
    missed = [r for r in rows if r["met"] is False]
    assert result.returncode == (1 if missed else 0)
    for name in QUICK_ROWS:
        assert name in result.stdout

    full = json.loads((report / "bench.json").read_text())
    assert full["rows"] == rows and full["quick"] is True
    assert full["machine"]["cores"] >= 1
    for entry in missed:  # every row not met says what was measured around it, in the report too
        assert full["notes"].get(entry["name"])
    assert [x for x, _ in full["series"]["aggregate_vs_guests"]] == [1, 2, 4]
    assert all(y > 0 for _, y in full["series"]["aggregate_vs_guests"])

    text = (report / "BENCHMARKS.md").read_text()
    for name in QUICK_ROWS:
        assert f"`{name}`" in text
    for plot in ("throughput_vs_guests.png", "attestations_vs_replicas.png"):
        assert (report / plot).read_bytes().startswith(PNG)
        assert f"]({plot})" in text


def test_the_report_names_each_missed_rows_measured_reason(tmp_path: Path) -> None:
    rows = [
        row("guests_32_vs_best", 70.0, "MB/s", 100.0, "best aggregate", target=0.8),
        row("sparse_64gib_rss", 30.0, "MiB", 16.0, "touched", target=4.0, higher_is_better=False),
        unmeasured("replicas_2_vs_1", "attestations/s", "1 replica on the same database", target=1.3),
    ]
    notes = {"guests_32_vs_best": "2.00 of 2 cores busy", "replicas_2_vs_1": "PostgreSQL backend unavailable"}
    series = {"aggregate_vs_guests": [(1.0, 50.0), (2.0, 100.0), (32.0, 70.0)]}
    files = write_report(tmp_path, rows, series, notes, quick=False, seconds=12.0)
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| `guests_32_vs_best` | 70.0 MB/s | 100.0 MB/s | 0.7 | ≥ 0.8 | **no** | best aggregate |" in text
    assert "| `sparse_64gib_rss` | 30.0 MiB | 16.0 MiB | 1.875 | ≤ 4.0 | yes | touched |" in text
    assert "- `guests_32_vs_best`: ratio 0.7, target ≥ 0.8. 2.00 of 2 cores busy." in text
    assert "- `replicas_2_vs_1` could not be measured. PostgreSQL backend unavailable." in text
    # No replica curve: the plot still exists and says why.
    names = {"BENCHMARKS.md", "bench.json", "throughput_vs_guests.png", "attestations_vs_replicas.png"}
    assert {f.name for f in files} == names


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["nope"], "no suite 'nope'"),
        (["memory", "--report", "{file}"], "--report"),
        (["memory", "--json", "{dir}"], "--json"),
    ],
)
def test_unusable_arguments_are_one_line_and_exit_2(tmp_path: Path, args: list[str], says: str) -> None:
    (tmp_path / "file").write_text("x")
    args = [a.format(file=tmp_path / "file", dir=tmp_path) for a in args]
    result = tdxsim("bench", *args)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tdxsim bench: ") and says in lines[0]


def test_a_suite_that_breaks_is_a_row_not_met_and_the_others_still_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from tdxsim.bench import cli
    from tdxsim.bench.rows import SuiteResult

    def broken(quick: bool) -> SuiteResult:
        raise RuntimeError("tdxsim host did not start (exit 2)")

    def fine(quick: bool) -> SuiteResult:
        return SuiteResult([row("fine_row", 2.0, "x", 1.0, "one", target=1.0)])

    monkeypatch.setattr(cli, "SUITES", {"broken": broken, "fine": fine})
    args = argparse.Namespace(
        suite=[], quick=True, json=str(tmp_path / "rows.json"), report=str(tmp_path / "r")
    )
    assert cli.run(args) == 1
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [(r["name"], r["met"]) for r in rows] == [("broken_suite", False), ("fine_row", True)]
    out = capsys.readouterr().out
    assert "broken_suite: the suite did not finish: RuntimeError: tdxsim host did not start (exit 2)" in out
    assert "could not be measured. The suite did not finish" in (tmp_path / "r" / "BENCHMARKS.md").read_text()

"""The tdxsim command line: help that teaches, benchmark rows scripts can read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROW_KEYS = {"name", "value", "unit", "limit", "limit_name", "ratio", "target", "met"}


def tdxsim(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tdxsim.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_help_lists_commands_and_host_options() -> None:
    top = tdxsim("--help")
    assert top.returncode == 0
    assert "tdxsim host --listen 127.0.0.1:0" in top.stdout
    host = tdxsim("host", "--help")
    for option in ("--listen", "--memory-mode", "--no-integrity", "--phys-mem", "--keyids"):
        assert option in host.stdout


def test_bad_arguments_exit_2_with_a_message() -> None:
    result = tdxsim("host", "--memory-mode", "nope")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_bench_memory_writes_json_rows(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    result = tdxsim("bench", "memory", "--json", str(out))
    rows = json.loads(out.read_text())
    names = {row["name"] for row in rows}
    assert {"engine_encrypt", "convert_64gib_vs_2mib"} <= names
    for row in rows:
        assert set(row) == ROW_KEYS
        assert row["ratio"] == pytest.approx(row["value"] / row["limit"], rel=0.01, abs=0.002)
        if row["target"] is not None:
            ratio_ok = (
                row["ratio"] >= row["target"] if row["unit"] == "MB/s" else row["ratio"] <= row["target"]
            )
            assert row["met"] is ratio_ok
    assert result.returncode == (0 if all(row["met"] is not False for row in rows) else 1)
    assert "engine_encrypt" in result.stdout

"""`make demo` runs the whole multi-process story and every act of it says what it should."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_demo_runs_every_act_and_stops_every_process() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tdxsim.demo"], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    out = done.stdout
    assert done.returncode == 0, done.stderr
    assert re.search(r"pccs +pid \d+ +127\.0\.0\.1:\d+ +\(public, read-only\)", out)
    assert "the verifier fetches collateral per FMSPC from http://127.0.0.1:" in out
    assert out.count("secret prod/key/disk released: 'disk key 7c1f-payments-prod'") == 2
    assert "[PERMISSION_DENIED/MRTD_MISMATCH]" in out
    assert "host reads GPA 0x0: b'\\x00" in out
    assert "the TD reads GPA 0x0: DATA_LOSS" in out
    assert "host process exited with status 3" in out
    pids = [int(pid) for pid in re.findall(r"pid (\d+)", out)]
    assert len(pids) >= 4  # pccs, host, verifier, legacy host (and guests)
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert alive == [], "the demo left its processes running"

"""``tdxsim soak`` end to end, briefly: it starts its stack, loads it, reports every field, stops everything
it started (also on Ctrl-C), and refuses unusable arguments. The real run (``--minutes 5``) is for people."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

SOAK = [sys.executable, "-m", "tdxsim.cli", "soak"]


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid``."""
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        parent = frontier.pop()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            child = int(stat.parent.name)
            if int(fields[1]) == parent and child not in found:
                found.add(child)
                frontier.add(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def test_a_short_soak_reports_every_field() -> None:
    done = subprocess.run(
        [*SOAK, "--seconds", "12", "--seed", "7", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    assert done.returncode == (0 if report["ok"] else 1)
    assert report["seed"] == 7
    assert report["requests"] > 100
    assert set(report["requests_by_mode"]) == {"message", "raw", "stall"}
    assert set(report["requests_by_service"]) == {"HostService", "TdGuestService", "VerifierService"}
    assert sum(report["statuses"].values()) == report["requests"]
    assert report["internal_unknown"] == sum(
        report["statuses"].get(code, 0) for code in ("INTERNAL", "UNKNOWN")
    )
    # What the soak itself must never see, whatever the servers' state of repair:
    assert report["crashes"] == [], report["crashes"]
    assert report["violations"] == 0, report["violation_details"]
    assert report["client_errors"] == {}
    assert report["guests"]["started"] >= 1
    assert report["verifier_restarts"] >= 1
    assert report["end_state_ok"], report["end_state"]
    assert report["end_state"]["keyids_free"] == report["end_state"]["keyids_total"]
    assert report["end_state"]["phys_pages_free"] == report["end_state"]["phys_pages_total"]
    for role in ("host", "verifier"):
        rss = report["rss_kib"][role]
        assert rss["start"] > 0 and rss["warmup"] > 0 and rss["end"] > 0, rss
        assert isinstance(rss["bounded"], bool)
    assert "tdxsim soak: seed 7" in done.stderr  # progress goes to stderr, the report alone to stdout


def test_ctrl_c_stops_everything_and_prints_the_partial_report() -> None:
    proc = subprocess.Popen(
        [*SOAK, "--seconds", "300", "--seed", "3"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    try:
        line = proc.stderr.readline()  # "seed 3; …": the stack is up and loaded
        assert "seed 3" in line, line + proc.stderr.read()
        time.sleep(2)
        started = _children(proc.pid)
        assert len(started) >= 3  # host, verifier, guests
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "INTERRUPTED" in out and "requests" in out
    deadline = time.monotonic() + 10
    while _alive(started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(started), "processes the soak started outlived it"


@pytest.mark.parametrize(
    "args",
    [
        ["--minutes", "0"],
        ["--seconds", "-1"],
        ["--workers", "0"],
        ["--guests", "-1"],
        ["--minutes", "1", "--seconds", "1"],
        ["--minutes", "many"],
    ],
)
def test_unusable_arguments_exit_2(args: list[str]) -> None:
    done = subprocess.run([*SOAK, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    # One line naming the problem (after argparse's usage, for what argparse itself refuses).
    assert done.stderr.strip().splitlines()[-1].startswith("tdxsim soak: "), done.stderr


def test_help_teaches() -> None:
    done = subprocess.run([*SOAK, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for word in ("--minutes", "--json", "--seed", "INTERNAL", "SIGKILL", "1.5", "Exit status", "130"):
        assert word in done.stdout, word


def test_the_soak_is_on_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tdxsim.cli", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert "tdxsim soak" in done.stdout

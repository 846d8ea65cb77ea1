"""``tdxsim attack``: every row of the catalogue, run as a user runs it (a subprocess starting its own PCS,
hosts and verifier), asserted on what it observed, not only on its verdict; every process it started gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, HostProcess

ROWS = [
    "gmem-read",
    "gmem-write",
    "gmem-mmap",
    "gmem-resize",
    "legacy-read",
    "legacy-write",
    "legacy-host-read-poison",
    "kernel-write-shared-keyid",
    "dram-read",
    "dram-swap",
    "dram-replay",
    "unrequested-conversion",
    "page-removal",
    "forged-tdreport",
    "quote-replay",
    "quote-other-td",
]

#: What each attack must have observed (its ``outcome``), whatever its verdict says.
EXPECTED: dict[str, dict[str, Any]] = {
    "gmem-read": {"errno": "EINVAL", "host_mapping": "PRIVATE_MEMORY_NOT_ACCESSIBLE", "td_data_intact": True},
    "gmem-write": {
        "errno": "EINVAL",
        "host_mapping": "PRIVATE_MEMORY_NOT_ACCESSIBLE",
        "td_data_intact": True,
    },
    "gmem-mmap": {"errno": "ENODEV", "code": "PERMISSION_DENIED", "td_data_intact": True},
    "gmem-resize": {"errno": "EINVAL", "code": "INVALID_ARGUMENT", "td_data_intact": True},
    "legacy-read": {"data_is_zeros": True, "contains_secret": False},
    "legacy-write": {"host_write": "OK", "td_read": "TD_MACHINE_CHECK"},
    "legacy-host-read-poison": {"host_read": "HOST_MACHINE_CHECK", "host_exit": 3},
    "kernel-write-shared-keyid": {
        "kernel_write": "OK",
        "td_read": "TD_MACHINE_CHECK",
        "host_alive": True,
        "other_td_ok": True,
    },
    "dram-read": {
        "private_ciphertexts_differ": True,
        "plaintext_in_private_dram": False,
        "plaintext_in_shared_dram": True,
        "macs_per_line": 4,
    },
    "dram-swap": {"td_read": "TD_MACHINE_CHECK", "integrity": True, "moved_plaintext": False},
    "dram-replay": {"td_read": "OK", "td_sees_old_value": True},
    "unrequested-conversion": {
        "memory_fault_conversions": 1,
        "td_read": "VE_PENDING_PAGE",
        "after_accept": "zeros",
    },
    "page-removal": {"td_read": "VE_PENDING_PAGE", "stale_data": False, "after_accept": "zeros"},
    "forged-tdreport": {"genuine": "OK", "forged": "GET_QUOTE_ERROR"},
    "quote-replay": {"first": "OK", "replay": "NONCE_REPLAYED"},
    "quote-other-td": {"attest": "REPORT_DATA_MISMATCH"},
}


def _attack(*args: str, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    return subprocess.run(
        [sys.executable, "-m", "tdxsim.cli", "attack", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def _processes_of(tmpdir: Path) -> list[int]:
    """Live processes whose TMPDIR lies under ``tmpdir`` (each child of the attack has its work folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if any(item.startswith(b"TMPDIR=" + str(tmpdir).encode() + b"/") for item in environ.split(b"\0")):
            found.append(int(proc.name))
    return found


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmpdir = tmp_path_factory.mktemp("attack")
    done = _attack("--json", tmpdir=tmpdir)
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    return {
        "status": done.returncode,
        "stderr": done.stderr,
        "rows": {row["id"]: row for row in rows},
        "order": [row["id"] for row in rows],
        "survivors": _processes_of(tmpdir),
    }


def test_the_catalogue_runs_every_row_once_in_order_and_stops_everything_it_started(
    catalogue: dict[str, Any],
) -> None:
    assert catalogue["order"] == ROWS, catalogue["stderr"]
    assert catalogue["status"] == 0, catalogue["stderr"]
    assert catalogue["survivors"] == []
    for row in catalogue["rows"].values():
        assert {"attack", "tdx_guarantee", "source", "observed", "agrees"} <= set(row)
        assert row["tdx_guarantee"] and row["source"] and row["observed"]


@pytest.mark.parametrize("row_id", ROWS)
def test_each_attack_observes_what_tdx_guarantees(catalogue: dict[str, Any], row_id: str) -> None:
    row = catalogue["rows"][row_id]
    outcome = {key: row["outcome"].get(key) for key in EXPECTED[row_id]}
    assert outcome == EXPECTED[row_id], row["observed"]
    assert row["agrees"] is True


def test_the_replay_row_says_plainly_that_tdx_does_not_detect_it(catalogue: dict[str, Any]) -> None:
    row = catalogue["rows"]["dram-replay"]
    assert "NOT detected" in row["tdx_guarantee"] and "no replay protection" in row["tdx_guarantee"]
    assert "NOT detected" in row["observed"]


@pytest.mark.parametrize("integrity", [True, False])
def test_on_a_given_host_only_the_rows_its_mode_allows_run(
    host_factory: Callable[..., HostProcess], tmp_path: Path, integrity: bool
) -> None:
    host = host_factory() if integrity else host_factory("--no-integrity")
    done = _attack("--json", "--host", host.address, tmpdir=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {row["id"]: row for row in map(json.loads, done.stdout.splitlines())}
    assert list(rows) == ROWS
    skipped = {row_id for row_id, row in rows.items() if row["agrees"] is None}
    # No legacy host, no quoting enclave (started without --pki), no verifier.
    assert skipped == {
        "legacy-read",
        "legacy-write",
        "legacy-host-read-poison",
        "forged-tdreport",
        "quote-replay",
        "quote-other-td",
    }
    assert all(rows[row_id]["agrees"] for row_id in set(ROWS) - skipped)
    assert rows["gmem-mmap"]["outcome"]["errno"] == "ENODEV"
    # Without integrity (Li mode) nothing catches moved ciphertext, but the address tweak makes it garbage.
    swap = rows["dram-swap"]["outcome"]
    expected = (
        EXPECTED["dram-swap"]
        if integrity
        else {"td_read": "OK", "integrity": False, "moved_plaintext": False}
    )
    assert swap == expected
    assert rows["dram-read"]["outcome"]["macs_per_line"] == (4 if integrity else 0)
    assert host.proc.poll() is None, "the attacked gmem host survives every attack"


def test_usage_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    done = _attack("--verifier", "127.0.0.1:1", tmpdir=tmp_path)
    assert done.returncode == 2
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1


def test_one_row_that_differs_from_tdx_makes_the_exit_status_1() -> None:
    from tdxsim.attack import catalogue as rows_in_order
    from tdxsim.attack import verdict

    rows = rows_in_order()
    for row in rows[:-2]:
        row.agrees = True
    assert verdict(rows) == (f"{len(ROWS) - 2} attacks run, {len(ROWS) - 2} agree with TDX", 0)
    rows[3].agrees = False
    rows[5].agrees = False
    line, status = verdict(rows)
    assert status == 1
    assert line == (
        f"{len(ROWS) - 2} attacks run, {len(ROWS) - 4} agree with TDX, 2 differ: {ROWS[3]}, {ROWS[5]}"
    )

"""``tdxsim fleet`` end to end: up with 4 hosts (``--tcb-mix``: two UpToDate, one OutOfDate, one
SWHardeningNeeded) and 2 verifier replicas on a throwaway PostgreSQL, a guest on every host attests through
the replicas and only those on UpToDate platforms are accepted, status says every process is healthy, down
leaves no process and no PostgreSQL running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tdxsim.pgcluster import ClusterError, LocalCluster, find_binaries, missing_reason
from tests.conftest import ROOT

HOSTS = 4


def _tdxsim(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tdxsim.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Iterator[Path]:
    if find_binaries() is None:
        pytest.skip(missing_reason())
    directory = tmp_path / "fleet"
    try:
        yield directory
    finally:
        if (directory / "fleet.json").exists():
            _tdxsim("fleet", "down", "--dir", str(directory))


def test_fleet_up_attest_status_down(fleet_dir: Path, tmp_path: Path) -> None:
    up = _tdxsim(
        "fleet", "up", "--hosts", str(HOSTS), "--verifiers", "2", "--tcb-mix",
        "--dir", str(fleet_dir), "--json",
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    fleet = json.loads((fleet_dir / "fleet.json").read_text())
    assert json.loads(up.stdout) == fleet
    roles = [m["role"] for m in fleet["members"]]
    assert roles.count("host") == HOSTS and roles.count("verifier") == 2 and roles.count("pccs") == HOSTS
    hosts = [m for m in fleet["members"] if m["role"] == "host"]
    assert len({h["details"]["fmspc"] for h in hosts}) == HOSTS  # distinct platforms
    statuses = [h["details"]["tcb_status"] for h in hosts]
    assert sorted(set(statuses)) == ["OutOfDate", "SWHardeningNeeded", "UpToDate"]
    assert fleet["verifier_target"] == ",".join(
        m["address"] for m in fleet["members"] if m["role"] == "verifier"
    )

    workload = tmp_path / "attest.tdx"
    workload.write_text("attest -\n")

    def guest(host: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return _tdxsim(
            "guest", "--host", host["address"], "--admin-credential", fleet["admin_credential"],
            "--image", str(ROOT / "examples" / "image.json"), "--verifier", fleet["verifier_target"],
            "--json", "run", str(workload),
        )  # fmt: skip

    with ThreadPoolExecutor(max_workers=HOSTS) as pool:
        results = list(pool.map(guest, hosts))
    # The verifier's default policy accepts UpToDate only: a guest on a lower platform is refused for it.
    for status, result in zip(statuses, results, strict=True):
        [step] = json.loads(result.stdout)["steps"]
        if status == "UpToDate":
            assert result.returncode == 0, result.stderr
            assert step["ok"] and step["values"]["tcb_status"] == "UpToDate", step
        else:
            assert result.returncode == 1, result.stderr
            assert not step["ok"] and step["reason"] == "TCB_STATUS_NOT_ACCEPTED", step
            assert f"tcb status {status} not in" in step["detail"], step

    status = _tdxsim("fleet", "status", "--dir", str(fleet_dir), "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    rows = json.loads(status.stdout)
    assert len(rows) == len(fleet["members"]) + 1 and all(r["healthy"] for r in rows), rows
    assert [r["role"] for r in rows][-1] == "postgres"

    pids = [m["pid"] for m in fleet["members"]] + [fleet["database"]["pid"]]
    down = _tdxsim("fleet", "down", "--dir", str(fleet_dir))
    assert down.returncode == 0, down.stderr
    assert [pid for pid in pids if _running(pid)] == []
    assert not Path(fleet["database"]["cluster"]).exists()
    assert not (fleet_dir / "fleet.json").exists()
    again = _tdxsim("fleet", "status", "--dir", str(fleet_dir))
    assert again.returncode == 2 and again.stderr.startswith("tdxsim fleet: ")


def test_platform_models_are_distinct_and_tcb_mix_lowers_some(tmp_path: Path) -> None:
    from attest.formats.pck_extension import pck_extension_of
    from attest.intel.pcs_directory import load_pki
    from tdxsim.fleet import make_platforms

    models = make_platforms(tmp_path, 4, tcb_mix=True)
    assert [m.tcb_status for m in models] == ["UpToDate", "OutOfDate", "UpToDate", "SWHardeningNeeded"]
    leaves = [load_pki(m.pki).platform(m.index).certificate for m in models]
    assert len({leaf.serial_number for leaf in leaves}) == 4
    assert [pck_extension_of(leaf).fmspc.hex().upper() for leaf in leaves] == [m.fmspc for m in models]
    assert len({m.fmspc for m in models}) == 4


@pytest.mark.parametrize("name", ["precious", "tdxsim-pg-but-no-data"])
def test_down_deletes_only_a_cluster_folder_tdxsim_made(tmp_path: Path, name: str) -> None:
    """A fleet.json edited to name another folder as the cluster: destroy refuses and deletes nothing."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(ClusterError, match="not a cluster folder tdxsim made"):
        LocalCluster(folder, tmp_path).destroy()
    assert (folder / "keep.txt").read_text() == "mine"


def test_a_postgres_url_with_a_password_is_refused_before_anything_starts(tmp_path: Path) -> None:
    url = "postgresql://tdxsim:hunter2@127.0.0.1:5432/tdxsim"
    result = _tdxsim(
        "fleet", "up", "--hosts", "1", "--verifiers", "1", "--postgres", url, "--dir", str(tmp_path)
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "tdxsim fleet: --postgres: the url carries a password, which every verifier's command line would "
        "show to all local users: give it through PGPASSFILE or PGPASSWORD instead"
    ]
    assert "hunter2" not in result.stdout + result.stderr
    assert not (tmp_path / "fleet.json").exists()

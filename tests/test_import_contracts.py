"""The import contracts of pyproject.toml ([tool.importlinter]) hold on the tree and break when they should.

``lint-imports`` checks them in ``make lint``; here it runs on the real tree, then on a copy of the packages
with one forbidden import added per case: each case must break its contract (named in the output), which
proves that the contract follows ``from package import module`` and indirect imports. The real tree is
never written to.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("wire", "host", "guest", "attest", "tdxsim")
CONTRACTS: dict[str, str] = {
    c["id"]: c["name"]
    for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
}


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` of this venv, with pyproject.toml of ``cwd``, on the packages in ``cwd``."""
    script = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(script), "--no-cache", "--no-logo"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)},
    )


def broken(result: subprocess.CompletedProcess[str]) -> set[str]:
    """Ids of the contracts the output reports BROKEN (names may wrap across lines)."""
    out = " ".join(result.stdout.split())
    return {cid for cid, name in CONTRACTS.items() if f"{name} BROKEN" in out}


def test_every_contract_is_kept_on_the_tree() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in result.stdout


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packages and pyproject.toml, copied: probes go into the copy, never into the real tree."""
    root = tmp_path_factory.mktemp("tree")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.fixture
def probes(copy: Path) -> Iterator[dict[str, str]]:
    """Files to add to the copy, by path; removed again after the test."""
    added: dict[str, str] = {}
    yield added
    for path in added:
        (copy / path).unlink(missing_ok=True)


def test_the_copy_keeps_every_contract(copy: Path) -> None:
    assert lint_imports(copy).returncode == 0


def test_a_tdx_module_importing_kvm_and_a_guest_importing_host_break_their_contracts(
    copy: Path, probes: dict[str, str]
) -> None:
    probes["host/tdx/_probe.py"] = "from host.kvm import vm\n"
    probes["guest/_probe.py"] = "import host\n"
    for path, text in probes.items():
        (copy / path).write_text(text)
    result = lint_imports(copy)
    assert result.returncode != 0
    assert broken(result) == {"stack", "guest-not-host", "host-layers", "tdx-bottom"}, result.stdout
    assert "host.tdx._probe -> host.kvm.vm" in result.stdout
    assert "guest._probe -> host" in result.stdout


# One forbidden import per contract; indirect ones go through a second probe module.
CASES = [
    ("stack", {"wire/_probe.py": "from attest import errors\n"}),
    ("stack", {"attest/_probe.py": "import tdxsim.cli\n"}),
    ("guest-not-host", {"guest/_probe.py": "from guest import _relay\n", "guest/_relay.py": "import host\n"}),
    ("attest-shared", {"attest/formats/_probe.py": "from guest import td\n"}),
    ("host-layers", {"host/vmm/_probe.py": "from host.rpc import server\n"}),
    ("host-layers", {"host/rpc/_probe.py": "import host.platform\n"}),
    ("tdx-bottom", {"host/tdx/_probe.py": "import host.vmm.vmm\n"}),
    ("vmm-via-kvm", {"host/vmm/_probe.py": "from host.tdx import module\n"}),
    ("vmm-via-kvm", {"host/vmm/_probe.py": "from host.qe import _r\n", "host/qe/_r.py": "import host.tdx\n"}),
    ("rpc-gets-the-vmm", {"host/rpc/_probe.py": "from host.kvm import kvm\n"}),
    ("rpc-gets-the-vmm", {"host/rpc/_probe.py": "from host.tdx import hostbus\n"}),
    ("no-keys-in-untrusted-host", {"host/kvm/_probe.py": "from host.tdx import xts\n"}),
    ("no-keys-in-untrusted-host", {"host/vmm/_probe.py": "from host.tdx.memctl import MachineCheck\n"}),
    ("no-keys-in-untrusted-host", {"host/rpc/_probe.py": "from host.tdx.access import AccessRules\n"}),
    ("no-keys-in-untrusted-host", {"host/kvm/_probe.py": "from host.tdx import lanes\n"}),
    ("formats-below", {"attest/formats/_probe.py": "from attest.verifier import offline\n"}),
    ("intel-verifier-independent", {"attest/intel/_probe.py": "from attest.verifier import dcap\n"}),
    ("host-not-verifier", {"host/qe/_probe.py": "import attest.verifier.token\n"}),
    ("guest-not-intel", {"guest/_probe.py": "from attest.intel import identity\n"}),
]


def test_every_contract_has_a_case() -> None:
    assert {cid for cid, _ in CASES} == set(CONTRACTS)


@pytest.mark.parametrize(("contract", "files"), CASES, ids=[f"{c}:{next(iter(f))}" for c, f in CASES])
def test_a_forbidden_import_breaks_its_contract(
    copy: Path, probes: dict[str, str], contract: str, files: dict[str, str]
) -> None:
    probes.update(files)
    for path, text in files.items():
        (copy / path).write_text(text)
    result = lint_imports(copy)
    assert result.returncode != 0
    assert contract in broken(result), result.stdout

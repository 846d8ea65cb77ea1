"""``tdxsim quote inspect|verify`` as a user runs them (docs/cli.md): DEBUG gets dcap-qvl's verdict unless a
policy allows it, hex quote files work like binary ones, and simulated evidence says so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from attest_sim_evidence import NOW, Evidence, make_evidence

from attest.intel import QuotingEnclave, build_td_report
from attest.intel.td_report_builder import DEBUG, SEPT_VE_DISABLE

ROOT = Path(__file__).resolve().parents[2]


def tdxsim(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tdxsim.cli", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Evidence:
    return make_evidence(tmp_path_factory.mktemp("pki") / "pki")


@pytest.fixture(scope="module")
def debug_quote(evidence: Evidence, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pck = evidence.pki.platform(0)
    report = build_td_report(td_attributes=(SEPT_VE_DISABLE | DEBUG).to_bytes(8, "little"))
    path = tmp_path_factory.mktemp("quotes") / "debug.bin"
    path.write_bytes(QuotingEnclave(pck.key, pck.chain_pem).quote(report))
    return path


def verify(evidence: Evidence, quote: Path, *extra: str | Path) -> subprocess.CompletedProcess[str]:
    pki = evidence.pki.directory
    return tdxsim(
        "quote", "verify", quote, "--collateral", pki / "collateral.json", "--root", pki / "root_ca.pem",
        "--at", str(NOW), *extra,
    )  # fmt: skip


def test_debug_td_is_rejected_without_a_policy_as_dcap_qvl_does(
    evidence: Evidence, debug_quote: Path
) -> None:
    text = verify(evidence, debug_quote)
    assert text.returncode == 1
    assert "rejected" in text.stdout and "td_attributes: Debug mode is enabled" in text.stdout
    out = json.loads(verify(evidence, debug_quote, "--json").stdout)
    assert (out["verdict"], out["error"]) == ("rejected", "td_attributes: Debug mode is enabled")


@pytest.mark.parametrize(("allow", "code", "mismatches"), [(True, 0, []), (False, 1, ["DEBUG_TD"])])
def test_a_policy_decides_on_debug(
    evidence: Evidence, debug_quote: Path, tmp_path: Path, allow: bool, code: int, mismatches: list[str]
) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"allow_debug": allow}))
    result = verify(evidence, debug_quote, "--policy", policy, "--json")
    out = json.loads(result.stdout)
    assert (result.returncode, out["appraisal"]["mismatches"]) == (code, mismatches)


def test_hex_quote_file_verifies_and_inspects_like_the_binary_one(evidence: Evidence, tmp_path: Path) -> None:
    binary = tmp_path / "quote.bin"
    binary.write_bytes(evidence.quote)
    text = evidence.quote.hex()
    hex_file = tmp_path / "quote.hex"
    hex_file.write_text("0x" + "\n".join(text[i : i + 76] for i in range(0, len(text), 76)) + "\n")
    results = [verify(evidence, path, "--json") for path in (binary, hex_file)]
    assert [r.returncode for r in results] == [0, 0]
    assert json.loads(results[0].stdout) == json.loads(results[1].stdout)
    inspected = [tdxsim("quote", "inspect", path, "--json") for path in (binary, hex_file)]
    assert json.loads(inspected[0].stdout) == json.loads(inspected[1].stdout)


def test_inspect_and_verify_say_simulated(evidence: Evidence, tmp_path: Path) -> None:
    quote = tmp_path / "quote.bin"
    quote.write_bytes(evidence.quote)
    text = tdxsim("quote", "inspect", quote)
    assert text.returncode == 0
    assert "pck chain root   simulated: a tdxsim root, not Intel's" in text.stdout
    out = json.loads(tdxsim("quote", "inspect", quote, "--json").stdout)
    assert out["simulated"] is True and out["pck_chain_root"]["root"] == "tdxsim"
    verified = verify(evidence, quote)
    assert verified.returncode == 0 and "simulated evidence" in verified.stdout

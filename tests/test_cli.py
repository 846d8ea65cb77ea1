"""The tdxsim command line: help that teaches, benchmark rows scripts can read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import real_vectors

ROOT = Path(__file__).resolve().parent.parent
LOWER_IS_BETTER = {"convert_64gib_vs_2mib", "small_read_p50"}
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


@pytest.mark.parametrize(
    ("suite", "expected"),
    [("memory", {"engine_encrypt", "convert_64gib_vs_2mib"}), ("verify", {"verify_warm", "verify_cold"})],
)
def test_bench_writes_json_rows(tmp_path: Path, suite: str, expected: set[str]) -> None:
    out = tmp_path / "rows.json"
    result = tdxsim("bench", suite, "--json", str(out))
    rows = json.loads(out.read_text())
    names = {row["name"] for row in rows}
    assert expected <= names
    for row in rows:
        assert set(row) == ROW_KEYS
        assert row["ratio"] == pytest.approx(row["value"] / row["limit"], rel=0.01, abs=0.002)
        if row["target"] is not None:
            lower_is_better = row["name"] in LOWER_IS_BETTER
            ratio_ok = row["ratio"] <= row["target"] if lower_is_better else row["ratio"] >= row["target"]
            assert row["met"] is ratio_ok
    assert result.returncode == (0 if all(row["met"] is not False for row in rows) else 1)
    assert all(name in result.stdout for name in expected)


def vector(name: str) -> Path:
    """A file of the real TDX vectors (skips the test without them)."""
    return real_vectors() / name


def test_quote_verify_real_v4_is_accepted_with_intels_root_by_default() -> None:
    expected = json.loads(vector("expected.json").read_text())["tdx_v4_quote.bin"]
    result = tdxsim(
        "quote", "verify", str(vector("tdx_v4_quote.bin")),
        "--collateral", str(vector("tdx_v4_collateral.json")),
        "--at", str(expected["verify_at_unix"]), "--json",
    )  # fmt: skip
    out = json.loads(result.stdout)
    assert result.returncode == 0
    assert (out["verdict"], out["tcb_status"], out["advisory_ids"]) == ("accepted", "UpToDate", [])
    assert out["report"]["mr_td"] == expected["mr_td"]


def test_quote_verify_outdated_quote_is_rejected_naming_the_step() -> None:
    result = tdxsim(
        "quote", "verify", str(vector("tdx_v5_outdated_quote.bin")),
        "--collateral", str(vector("tdx_v5_collateral.json")), "--at", "1771419531", "--json",
    )  # fmt: skip
    out = json.loads(result.stdout)
    assert result.returncode == 1
    assert out["verdict"] == "rejected"
    assert out["error"].startswith("tcb_level")


def test_quote_verify_garbage_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a quote")
    result = tdxsim("quote", "verify", str(junk), "--collateral", str(vector("tdx_v4_collateral.json")))
    assert result.returncode == 2
    assert "truncated" in result.stderr and "Traceback" not in result.stderr


def _v4_with(tmp_path: Path, **members: str) -> Path:
    doc = json.loads(vector("tdx_v4_collateral.json").read_text())
    doc.update(members)
    path = tmp_path / "collateral.json"
    path.write_text(json.dumps(doc))
    return path


def _verify_v4(collateral: Path, at: int | None = None) -> subprocess.CompletedProcess[str]:
    expected = json.loads(vector("expected.json").read_text())["tdx_v4_quote.bin"]
    at_unix = expected["verify_at_unix"] if at is None else at
    return tdxsim(
        "quote", "verify", str(vector("tdx_v4_quote.bin")),
        "--collateral", str(collateral), "--at", str(at_unix), "--json",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("member", "value", "message"),
    [
        ("tcb_info", "not json", "tcb info is not json"),
        ("qe_identity", "not json", "qe identity is not json"),
        ("tcb_info", '{"id": "TDX", "version": 3}', "malformed tcb info"),
        ("pck_crl", "zz", "pck_crl is not hex"),
        ("root_ca_crl", "00", "root_ca_crl is not a der crl"),
        ("tcb_info_issuer_chain", "no pem here", "tcb_info_issuer_chain is not a pem certificate chain"),
    ],
    ids=["tcb-info-text", "qe-identity-text", "tcb-info-shape", "crl-hex", "crl-der", "issuer-chain"],
)
def test_quote_verify_unusable_collateral_exits_2(
    tmp_path: Path, member: str, value: str, message: str
) -> None:
    result = _verify_v4(_v4_with(tmp_path, **{member: value}))
    assert result.returncode == 2
    out = json.loads(result.stdout)
    assert out["verdict"] == "unusable" and message in out["error"]
    assert message in result.stderr and "Traceback" not in result.stderr


def test_quote_verify_well_formed_but_failing_collateral_exits_1(tmp_path: Path) -> None:
    doc = json.loads(vector("tdx_v4_collateral.json").read_text())
    resigned = doc["tcb_info"].replace('"tcbType":0', '"tcbType": 0')  # same JSON value, other bytes
    assert resigned != doc["tcb_info"]
    bad_signature = _verify_v4(_v4_with(tmp_path, tcb_info=resigned))
    assert bad_signature.returncode == 1
    out = json.loads(bad_signature.stdout)
    assert (out["verdict"], out["error"]) == ("rejected", "collateral: tcbinfo signature is invalid")
    expired = _verify_v4(vector("tdx_v4_collateral.json"), at=4_102_444_800)  # 2100-01-01
    assert expired.returncode == 1
    out = json.loads(expired.stdout)
    assert (out["verdict"], out["error"]) == ("rejected", "collateral: tcbinfo expired")


def test_verifier_requires_a_root_and_its_help_says_which(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    result = tdxsim("verifier", "--listen", "127.0.0.1:0", "--db", str(db), timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: tdxsim verifier")
    assert "error: the following arguments are required: --root" in result.stderr
    assert result.stdout == "" and not db.exists()
    usage = tdxsim("verifier", "--help", timeout=30)
    assert usage.returncode == 0
    assert " --root PEM|DER" in usage.stdout and "[--root" not in usage.stdout
    option = " ".join(usage.stdout.split("--root PEM|DER", 2)[2].split("--collateral")[0].split())
    assert option == (
        "trust anchor certificate file; required and repeatable: Intel's SGX Root CA for real quotes, "
        "DIR/root_ca.pem from 'tdxsim pki init DIR' for simulated ones, or both"
    )


def test_pcs_serve_help_names_the_health_endpoint() -> None:
    usage = tdxsim("pcs", "serve", "--help", timeout=30)
    assert usage.returncode == 0
    text = " ".join(usage.stdout.split())
    from attest.intel.pccs_server import HEALTH_BODY

    assert f"GET /healthz answers {HEALTH_BODY.decode()} for load balancers" in text


def test_builtin_intel_root_has_intels_fingerprint() -> None:
    import hashlib

    from cryptography import x509

    from attest.verifier.dcap.roots import INTEL_SGX_ROOT_CA_PEM, INTEL_SGX_ROOT_CA_SHA256

    cert = x509.load_pem_x509_certificate(INTEL_SGX_ROOT_CA_PEM)
    from cryptography.hazmat.primitives.serialization import Encoding

    assert hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest() == INTEL_SGX_ROOT_CA_SHA256


def test_builtin_intel_root_is_the_vectors_root() -> None:
    from attest.verifier.dcap.roots import INTEL_SGX_ROOT_CA_PEM

    assert vector("intel_sgx_root_ca.pem").read_bytes() == INTEL_SGX_ROOT_CA_PEM


@pytest.mark.parametrize(("mr_td_ok", "verdict", "code"), [(True, "accepted", 0), (False, "rejected", 1)])
def test_quote_verify_appraises_with_a_policy(
    tmp_path: Path, mr_td_ok: bool, verdict: str, code: int
) -> None:
    expected = json.loads(vector("expected.json").read_text())["tdx_v4_quote.bin"]
    mr_td = expected["mr_td"] if mr_td_ok else "00" * 48
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"reference_values": {"mr_td": [mr_td]}}))
    result = tdxsim(
        "quote", "verify", str(vector("tdx_v4_quote.bin")),
        "--collateral", str(vector("tdx_v4_collateral.json")),
        "--at", str(expected["verify_at_unix"]), "--policy", str(policy), "--json",
    )  # fmt: skip
    out = json.loads(result.stdout)
    assert (result.returncode, out["verdict"]) == (code, verdict)
    assert out["appraisal"]["mismatches"] == ([] if mr_td_ok else ["MRTD_MISMATCH"])


@pytest.mark.parametrize("address", ["127.0.0.1:99999", "127.0.0.1:-1", "localhost", ":50051", "127.0.0.1:x"])
def test_host_refuses_an_unusable_listen_address(address: str) -> None:
    result = tdxsim("host", "--listen", address, "--phys-mem", "64M", timeout=30)
    assert result.returncode == 2
    assert "--listen" in result.stderr and "Traceback" not in result.stderr
    assert "listening on" not in result.stdout


def test_verifier_refuses_an_unusable_listen_address(tmp_path: Path) -> None:
    from attest.verifier.dcap.roots import INTEL_SGX_ROOT_CA_PEM

    root = tmp_path / "intel_sgx_root_ca.pem"
    root.write_bytes(INTEL_SGX_ROOT_CA_PEM)
    result = tdxsim(
        "verifier", "--listen", "127.0.0.1:70000", "--db", str(tmp_path / "v.db"), "--root", str(root)
    )
    assert result.returncode == 2
    assert "--listen: port '70000'" in result.stderr
    assert not (tmp_path / "v.db").exists()


def _one_line(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2
    assert result.stderr.splitlines() == [message], result.stderr


@pytest.mark.parametrize("option", ["--collateral", "--policy"])
def test_quote_verify_deeply_nested_json_exits_2_with_one_line(tmp_path: Path, option: str) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 2000)
    expected = json.loads(vector("expected.json").read_text())["tdx_v4_quote.bin"]
    files = {"--collateral": str(vector("tdx_v4_collateral.json")), "--policy": None}
    files[option] = str(deep)
    args = [f"{k}={v}" for k, v in files.items() if v is not None]
    result = tdxsim(
        "quote", "verify", str(vector("tdx_v4_quote.bin")), *args, "--at", str(expected["verify_at_unix"])
    )
    what = "collateral" if option == "--collateral" else "policy"
    _one_line(result, f"tdxsim quote: {what} is not json: nested too deeply")


def test_guest_mrtd_of_a_deeply_nested_image_exits_2_with_one_line(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 2000)
    result = tdxsim("guest", "--image", str(deep), "mrtd")
    _one_line(result, f"tdxsim guest: {deep}: not JSON: nested too deeply")

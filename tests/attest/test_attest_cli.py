"""JSON-ready ``inspect`` / ``verify`` behind ``tdxsim quote`` (issue 4 CLI contract)."""

from __future__ import annotations

import json

import pytest
from attest_vectors import QUOTE_NAMES, VERIFIABLE, expected_for, intel_root_pem, read_collateral, read_quote

from attest.errors import CollateralError, QuoteFormatError
from attest.verifier import offline

REPORT_KEYS = {
    "mr_td",
    "rtmr0",
    "rtmr1",
    "rtmr2",
    "rtmr3",
    "report_data",
    "td_attributes",
    "xfam",
    "mr_config_id",
    "mr_owner",
    "mr_owner_config",
    "mr_seam",
    "mr_signer_seam",
    "seam_attributes",
    "tee_tcb_svn",
}


@pytest.mark.parametrize("name", QUOTE_NAMES)
def test_inspect_reports_hex_fields_and_platform(name: str) -> None:
    out = offline.inspect(read_quote(name))
    json.dumps(out)
    assert set(out["report"]) >= REPORT_KEYS
    assert out["report"]["mr_td"] == expected_for(name)["mr_td"]
    assert out["report"]["td_debug"] == (name == "tdx_v4_debug_td_quote.bin")
    assert out["header"]["version"] == expected_for(name)["version"]
    assert out["pck"]["fmspc"] == expected_for(name)["fmspc"]
    assert ("mr_service_td" in out["report"]) == (out["body_type"] == 3)


@pytest.mark.parametrize("name", VERIFIABLE)
def test_verify_json_verdict_matches_expected(name: str) -> None:
    e = expected_for(name)
    out = offline.verify(read_quote(name), read_collateral(name), e["verify_at_unix"], [intel_root_pem()])
    json.dumps(out)
    if "status" in e["dcap_qvl_0_7_0"]:
        assert out["verdict"] == "accepted"
        assert out["tcb_status"] == e["dcap_qvl_0_7_0"]["status"]
        assert out["advisory_ids"] == e["dcap_qvl_0_7_0"]["advisory_ids"]
        assert out["report"]["rtmr0"] == e["rtmr0"]
        assert out["fmspc"] == e["fmspc"]
        assert "error" not in out
    else:
        assert out["verdict"] == "rejected"
        assert out["error"] == "tcb_level: no tcb level matches the platform"
        assert out["error_type"] == "TcbLevelNotFound"
        assert out["tcb_status"] is None


def test_verify_json_names_the_expired_step() -> None:
    name = "tdx_v4_quote.bin"
    end = expected_for(name)["collateral_window_unix"][1]
    out = offline.verify(read_quote(name), read_collateral(name), end + 86400, [intel_root_pem()])
    assert (out["verdict"], out["error"], out["error_type"]) == (
        "rejected",
        "collateral: tcbinfo expired",
        "CollateralExpired",
    )


def test_verify_accepts_der_root_and_debug_is_only_reported() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    der = x509.load_pem_x509_certificate(intel_root_pem()).public_bytes(Encoding.DER)
    name = "tdx_v5_quote.bin"
    out = offline.verify(read_quote(name), read_collateral(name), expected_for(name)["verify_at_unix"], [der])
    assert out["verdict"] == "accepted" and out["report"]["td_debug"] is False


def test_unusable_inputs_raise_for_exit_code_2() -> None:
    name = "tdx_v4_quote.bin"
    with pytest.raises(QuoteFormatError):
        offline.verify(b"\x04\x00garbage", read_collateral(name), 0, [intel_root_pem()])
    with pytest.raises(QuoteFormatError):
        offline.inspect(read_quote(name)[:700])
    with pytest.raises(CollateralError):
        offline.verify(read_quote(name), "{not json", 0, [intel_root_pem()])

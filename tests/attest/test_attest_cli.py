"""JSON-ready ``inspect`` / ``verify`` behind ``tdxsim quote``: the CLI contract, hex input, dcap-qvl's DEBUG
verdict, and the simulation flag."""

from __future__ import annotations

import json
from pathlib import Path

import dcap_qvl
import pytest
from attest_sim_evidence import NOW, make_evidence
from attest_vectors import QUOTE_NAMES, VERIFIABLE, expected_for, intel_root_pem, read_collateral, read_quote

from attest.errors import CollateralError, QuoteFormatError
from attest.intel import QuotingEnclave, build_td_report
from attest.intel.td_report_builder import DEBUG, SEPT_VE_DISABLE
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


def test_verify_accepts_a_der_root() -> None:
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


def _hex_forms(quote: bytes) -> list[bytes]:
    """The hex texts people hand over for a quote: plain, 0x-prefixed upper case, wrapped in lines."""
    text = quote.hex()
    lines = "\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    return [
        text.encode(),
        ("0x" + text.upper()).encode(),
        ("0x" + lines + "\n").encode(),
        f"  {lines}\r\n".encode(),
    ]


@pytest.mark.parametrize("name", VERIFIABLE)
def test_hex_quotes_verify_and_inspect_like_their_binary_form(name: str) -> None:
    raw, collateral, at = read_quote(name), read_collateral(name), expected_for(name)["verify_at_unix"]
    binary = offline.verify(raw, collateral, at, [intel_root_pem()])
    for text in _hex_forms(raw):
        assert offline.verify(text, collateral, at, [intel_root_pem()]) == binary
        assert offline.inspect(text) == offline.inspect(raw)


@pytest.mark.parametrize(
    ("text", "message"),
    [(b"0x", "not hex"), (b"0x04zz", "not hex"), (b"0x040", "odd number"), (b"0400 020\n", "odd number")],
)
def test_malformed_hex_is_unusable_with_a_message_that_says_so(text: bytes, message: str) -> None:
    with pytest.raises(QuoteFormatError, match=message):
        offline.inspect(text)


def test_hex_no_longer_reads_as_a_quote_version() -> None:
    """Hex text of a quote used to decode as a binary quote of version 0x3430 ("04")."""
    with pytest.raises(QuoteFormatError, match="truncated") as err:
        offline.inspect(b"0400020081000000")
    assert "version" not in str(err.value)


def test_real_debug_quote_gets_dcap_qvls_verdict() -> None:
    """No collateral exists for the DEBUG vector's platform (FMSPC 50806F000000): dcap-qvl, given any
    collateral there is, rejects it at the FMSPC comparison, and so does this verifier (step 5), before DEBUG
    matters."""
    name, other = "tdx_v4_debug_td_quote.bin", "tdx_v4_quote.bin"
    raw, collateral, at = read_quote(name), read_collateral(other), expected_for(other)["verify_at_unix"]
    with pytest.raises(ValueError, match="Fmspc mismatch"):
        dcap_qvl.verify(raw, dcap_qvl.QuoteCollateralV3.from_json(collateral), at)
    out = offline.verify(raw, collateral, at, [intel_root_pem()])
    assert (out["verdict"], out["error_type"], out["report"]["td_debug"]) == (
        "rejected",
        "CollateralError",
        True,
    )
    assert out["error"].startswith("platform: fmspc mismatch")


@pytest.fixture(scope="module")
def debug_evidence(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, str, bytes]:
    """A simulated quote of a DEBUG TD that passes every step of docs/attestation.md §7."""
    ev = make_evidence(tmp_path_factory.mktemp("pki") / "pki")
    pck = ev.pki.platform(0)
    attributes = (SEPT_VE_DISABLE | DEBUG).to_bytes(8, "little")
    quote = QuotingEnclave(pck.key, pck.chain_pem).quote(build_td_report(td_attributes=attributes))
    return quote, ev.pki.collateral_json, ev.pki.root_der


def test_debug_td_is_rejected_as_dcap_qvl_rejects_it(debug_evidence: tuple[bytes, str, bytes]) -> None:
    quote, collateral, root = debug_evidence
    with pytest.raises(ValueError, match="Verification failed: Debug mode is enabled"):
        dcap_qvl.verify_with_root_ca(quote, dcap_qvl.QuoteCollateralV3.from_json(collateral), root, NOW)
    out = offline.verify(quote, collateral, NOW, [root])
    assert (out["verdict"], out["error"], out["error_type"]) == (
        "rejected",
        "td_attributes: Debug mode is enabled",
        "DebugTd",
    )
    assert (out["tcb_status"], out["report"]["td_debug"]) == ("UpToDate", True)  # it verified, then DEBUG


def test_debug_td_is_accepted_when_the_caller_allows_debug(debug_evidence: tuple[bytes, str, bytes]) -> None:
    quote, collateral, root = debug_evidence
    out = offline.verify(quote, collateral, NOW, [root], allow_debug=True)
    assert (out["verdict"], out["tcb_status"], "error" in out) == ("accepted", "UpToDate", False)


def test_debug_check_comes_after_verification_as_in_dcap_qvl(
    debug_evidence: tuple[bytes, str, bytes],
) -> None:
    quote, collateral, root = debug_evidence
    late = NOW + 40 * 86_400  # the collateral has expired: that failure is reported, not DEBUG
    with pytest.raises(ValueError, match="TCBInfo expired"):
        dcap_qvl.verify_with_root_ca(quote, dcap_qvl.QuoteCollateralV3.from_json(collateral), root, late)
    assert offline.verify(quote, collateral, late, [root])["error"] == "collateral: tcbinfo expired"


def test_simulated_chains_are_flagged_and_real_ones_are_not(tmp_path: Path) -> None:
    ev = make_evidence(tmp_path / "pki")
    inspected = offline.inspect(ev.quote)
    assert inspected["simulated"] is True
    assert inspected["pck_chain_root"]["root"] == "tdxsim"
    assert "tdxsim SIMULATED" in inspected["pck_chain_root"]["subject"]
    assert offline.verify(ev.quote, ev.pki.collateral_json, NOW, [ev.pki.root_der])["simulated"] is True
    name = "tdx_v5_quote.bin"
    real = offline.inspect(read_quote(name))
    assert (real["simulated"], real["pck_chain_root"]["root"]) == (False, "intel")
    e = expected_for(name)
    assert (
        offline.verify(read_quote(name), read_collateral(name), e["verify_at_unix"], [intel_root_pem()])[
            "simulated"
        ]
        is False
    )


def _attribute_cases() -> list[int]:
    """Every single bit beside SEPT_VE_DISABLE, every bit without it, and random mixes of the bits each rule
    reads (seeded): enough to pin dcap-qvl's order between its rules."""
    import random

    rng = random.Random(0x7D)
    cases = [SEPT_VE_DISABLE | 1 << bit for bit in range(64)] + [1 << bit for bit in range(64)] + [0]
    interesting = [0, 1, 4, 5, 6, 7, 8, 16, 17, 23, 28, 29, 30, 40, 62, 63]
    cases += [sum(1 << b for b in rng.sample(interesting, rng.randint(1, 4))) for _ in range(60)]
    return cases


def test_td_attributes_are_refused_as_dcap_qvl_refuses_them(tmp_path: Path) -> None:
    """Without a policy ``quote verify`` refuses a verified quote for its TD attributes with dcap-qvl's first
    reason (docs/attestation.md §14), and accepts exactly what dcap-qvl accepts; allowing DEBUG lifts only the
    DEBUG rule."""
    ev = make_evidence(tmp_path / "pki")
    pck = ev.pki.platform(0)
    qe = QuotingEnclave(pck.key, pck.chain_pem)
    collateral = dcap_qvl.QuoteCollateralV3.from_json(ev.pki.collateral_json)
    verifier = offline.Verifier([ev.pki.root_der], cache_size=16)
    for attributes in _attribute_cases():
        for version in (4, 5):
            quote = qe.quote(build_td_report(td_attributes=attributes.to_bytes(8, "little")), version=version)
            try:
                theirs = dcap_qvl.verify_with_root_ca(quote, collateral, ev.pki.root_der, NOW).status
            except ValueError as err:
                theirs = str(err).removeprefix("Verification failed: ")
            out = offline.verify(quote, ev.pki.collateral_json, NOW, [], verifier=verifier)
            ours = out["tcb_status"] if out["verdict"] == "accepted" else out["error"].split(": ", 1)[1]
            assert ours == theirs, hex(attributes)
            allowed = offline.verify(
                quote, ev.pki.collateral_json, NOW, [], verifier=verifier, allow_debug=True
            )
            if attributes & ~DEBUG == SEPT_VE_DISABLE:
                assert allowed["verdict"] == "accepted", hex(attributes)
            elif theirs != "Debug mode is enabled":
                assert allowed.get("error") == out.get("error"), hex(attributes)
    # a TD 1.5 body that names a service TD: dcap-qvl refuses it before looking at the attributes
    report = build_td_report(td_attributes=(DEBUG | 1 << 8).to_bytes(8, "little"), mr_service_td=b"\x01" * 48)
    quote = qe.quote(report, version=5)
    with pytest.raises(ValueError, match="Verification failed: Invalid MR service TD"):
        dcap_qvl.verify_with_root_ca(quote, collateral, ev.pki.root_der, NOW)
    out = offline.verify(quote, ev.pki.collateral_json, NOW, [], verifier=verifier, allow_debug=True)
    assert (out["verdict"], out["error"]) == ("rejected", "td_report: Invalid MR service TD")

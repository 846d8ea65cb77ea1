"""The quoting enclave (attest.intel): simulated quotes verify with dcap-qvl 0.7.0 and attest.verifier.dcap
against the
simulated root, carry the TDREPORT's fields, round-trip through the codec, and every PkiOptions knob gives the
expected verdict in both verifiers (attestation.md §7, §8, §15)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dcap_qvl
import pytest
from attest_sim_evidence import MR_TD, NOW, REPORT_DATA, make_evidence
from attest_vectors import expected_for, read_collateral, read_quote
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from attest.errors import (
    AttestError,
    CertificateChainError,
    CertificateRevoked,
    CollateralExpired,
    QuoteFormatError,
    TcbRevoked,
)
from attest.formats import decode_quote, decode_tdreport
from attest.formats import layout as L
from attest.intel import PkiOptions, QuotingEnclave, QuotingEnclaveError, build_td_report, init_pki
from attest.intel import identity as P
from attest.verifier.dcap import Verifier
from attest.verifier.dcap.roots import INTEL_SGX_ROOT_CA_PEM

SHAPES = [(4, None, L.BODY_TYPE_TD10), (5, None, L.BODY_TYPE_TD15), (5, L.BODY_TYPE_TD10, L.BODY_TYPE_TD10)]


@pytest.mark.parametrize(("version", "body_type", "expected_type"), SHAPES)
def test_simulated_quote_is_up_to_date_in_dcap_qvl_and_attest_verify(
    tmp_path: Path, version: int, body_type: int | None, expected_type: int
) -> None:
    ev = make_evidence(tmp_path, version=version, body_type=body_type)
    theirs = ev.dcap_qvl()
    assert (theirs.status, theirs.advisory_ids) == ("UpToDate", [])
    assert theirs.ppid == ev.pki.platform(0).ppid
    ours = ev.ours()
    assert (ours.status, ours.advisory_ids) == ("UpToDate", ())
    assert ours.quote.body_type == expected_type
    assert ours.report.report_data == REPORT_DATA and ours.report.mr_td == MR_TD
    assert ours.fmspc == P.FMSPC


def _dcap_qvl_policy_verdict(
    quote: bytes, collateral_json: str, root_der: bytes | None, now: int
) -> list[str]:
    """dcap-qvl's verdicts under ``QuotePolicy.strict`` and under strict allowing dynamic platforms, cached
    keys and SMT (the Configuration flags of Scalable platforms): "UpToDate" or the error's first line."""
    coll = dcap_qvl.QuoteCollateralV3.from_json(collateral_json)
    verifier = dcap_qvl.QuoteVerifier(root_der)
    strict = dcap_qvl.QuotePolicy.strict(now)
    relaxed = dcap_qvl.QuotePolicy.strict(now).allow_dynamic_platform(True).allow_cached_keys(True)
    verdicts = []
    for policy in (strict, relaxed.allow_smt(True)):
        try:
            claims = verifier.verify_with_policy(quote, coll, now, policy)
        except ValueError as err:
            verdicts.append(str(err).splitlines()[0])
        else:
            assert '"UpToDate"' in claims.to_json()
            verdicts.append("UpToDate")
    return verdicts


DYNAMIC_PLATFORM_REFUSED = "Verification failed: Dynamic platform is not allowed by policy"


def test_simulated_scalable_quote_meets_dcap_qvl_policies_as_real_tdx_quotes_do(tmp_path: Path) -> None:
    ev = make_evidence(tmp_path)  # SGX type 1, as real TDX platforms
    verdicts = _dcap_qvl_policy_verdict(ev.quote, ev.pki.collateral_json, ev.pki.root_der, NOW)
    assert verdicts == [DYNAMIC_PLATFORM_REFUSED, "UpToDate"]


def test_real_tdx_quote_meets_dcap_qvl_policies_as_simulated_ones_do() -> None:
    name = "tdx_v5_quote.bin"
    at = int(expected_for(name)["verify_at_unix"])
    verdicts = _dcap_qvl_policy_verdict(read_quote(name), read_collateral(name), None, at)
    assert verdicts == [DYNAMIC_PLATFORM_REFUSED, "UpToDate"]


def test_simulated_standard_quote_passes_dcap_qvl_strict_policy(tmp_path: Path) -> None:
    ev = make_evidence(tmp_path, PkiOptions(now=NOW, sgx_type=0))
    verdicts = _dcap_qvl_policy_verdict(ev.quote, ev.pki.collateral_json, ev.pki.root_der, NOW)
    assert verdicts == ["UpToDate", "UpToDate"]


def test_dcap_qvl_parses_platform_identity_of_simulated_quote(tmp_path: Path) -> None:
    ev = make_evidence(tmp_path)
    parsed = dcap_qvl.parse_quote(ev.quote)
    assert parsed.fmspc() == P.FMSPC.hex().upper()
    assert parsed.ca() == "platform"
    assert parsed.is_tdx()
    assert parsed.header.qe_vendor_id == P.QE_VENDOR_ID


@pytest.mark.parametrize(("version", "body_type", "expected_type"), SHAPES)
def test_quote_decodes_and_reencodes_byte_exact(
    tmp_path: Path, version: int, body_type: int | None, expected_type: int
) -> None:
    ev = make_evidence(tmp_path, version=version, body_type=body_type)
    quote = decode_quote(ev.quote)
    assert quote.encode() == ev.quote
    assert (quote.header.version, quote.body_type) == (version, expected_type)


@pytest.mark.parametrize("version", [4, 5])
def test_quote_body_is_the_tdreport_body(tmp_path: Path, version: int) -> None:
    ev = make_evidence(tmp_path, version=version)
    body = decode_quote(ev.quote).body
    report = decode_tdreport(ev.td_report).body
    for name, _ in L.TD_REPORT15_FIELDS if version == 5 else L.TD_REPORT10_FIELDS:
        assert getattr(body, name) == getattr(report, name), name
    assert body.tee_tcb_svn == P.TEE_TCB_SVN and body.mr_seam == P.MRSEAM
    assert body.mr_signer_seam == bytes(48) and body.seam_attributes == bytes(8)


def test_header_and_certification_data_follow_real_quotes(tmp_path: Path) -> None:
    ev = make_evidence(tmp_path)
    quote = decode_quote(ev.quote)
    h = quote.header
    assert (h.version, h.attestation_key_type, h.tee_type, h.qe_svn, h.pce_svn) == (4, 2, 0x81, 0, 0)
    assert h.qe_vendor_id == bytes.fromhex("939A7233F79C4CA9940A0DB3957F0607")
    assert h.user_data == ev.qe.qe_id + bytes(4)
    cd = quote.signature_data.certification_data
    assert cd.CERT_TYPE == 6 and cd.certification_data.cert_type == 5
    assert cd.qe_auth_data == bytes(range(32))
    assert cd.certification_data.data.endswith(b"-----END CERTIFICATE-----\n\x00")
    chain = [x509.load_pem_x509_certificate(pem) for pem in quote.pck_chain.pem_certificates()]
    pki = ev.pki
    assert [c.public_bytes(Encoding.DER) for c in chain] == [
        pki.platform(0).certificate.public_bytes(Encoding.DER),
        pki.pck_ca.der,
        pki.root_der,
    ]


def test_qe_report_carries_platform_qe_identity_and_binds_attestation_key(tmp_path: Path) -> None:
    ev = make_evidence(tmp_path)
    sd = decode_quote(ev.quote).signature_data
    report = sd.certification_data.qe_report
    assert sd.attestation_key == ev.qe.attestation_public_key
    expected = hashlib.sha256(sd.attestation_key + sd.certification_data.qe_auth_data).digest()
    assert report.report_data == expected + bytes(32)
    assert (report.isv_prod_id, report.isv_svn) == (2, P.QE_ISVSVN)
    assert (report.mr_signer, report.mr_enclave) == (P.QE_MRSIGNER, P.QE_MRENCLAVE)
    assert (report.attributes, report.misc_select, report.cpu_svn) == (P.QE_ATTRIBUTES, bytes(4), P.CPUSVN)


def test_same_enclave_reuses_its_attestation_key_across_quotes(tmp_path: Path) -> None:
    ev = make_evidence(tmp_path)
    other = ev.qe.quote(build_td_report(report_data=b"\x01" * 64))
    a, b = decode_quote(ev.quote), decode_quote(other)
    assert a.signature_data.attestation_key == b.signature_data.attestation_key
    assert a.signature_data.certification_data == b.signature_data.certification_data
    assert a.body.report_data != b.body.report_data


def test_given_attestation_key_is_used(tmp_path: Path) -> None:
    pki = init_pki(tmp_path, PkiOptions(now=NOW))
    key = ec.generate_private_key(ec.SECP256R1())
    qe = QuotingEnclave(pki.platform(0).key, pki.platform(0).chain_pem, attestation_key=key)
    raw = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    assert qe.attestation_public_key == raw[1:]
    assert decode_quote(qe.quote(build_td_report())).signature_data.attestation_key == raw[1:]


# --- simulated evidence is unmistakable ---------------------------------------------------------------------


def test_simulated_quote_rejected_by_dcap_qvl_against_intel_root(tmp_path: Path) -> None:
    ev = make_evidence(tmp_path)
    intel_der = x509.load_pem_x509_certificate(INTEL_SGX_ROOT_CA_PEM).public_bytes(Encoding.DER)
    with pytest.raises(ValueError, match="InvalidCrlSignatureForPublicKey"):
        ev.dcap_qvl(root_der=intel_der)
    coll = dcap_qvl.QuoteCollateralV3.from_json(ev.pki.collateral_json)
    with pytest.raises(ValueError, match="Verification failed"):
        dcap_qvl.verify(ev.quote, coll, NOW)


def test_simulated_quote_rejected_by_attest_verify_against_intel_root(tmp_path: Path) -> None:
    ev = make_evidence(tmp_path)
    with pytest.raises(CertificateChainError, match="does not end at a trusted root") as err:
        Verifier([INTEL_SGX_ROOT_CA_PEM]).verify(ev.quote, ev.collateral, NOW)
    assert err.value.step == "collateral"


# --- PkiOptions knobs in both verifiers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "advisories"),
    [
        ("SWHardeningNeeded", ("TDXSIM-SA-00042",)),
        ("ConfigurationNeeded", ()),
        ("ConfigurationAndSWHardeningNeeded", ("TDXSIM-SA-00042", "TDXSIM-SA-00043")),
        ("OutOfDate", ("TDXSIM-SA-00042",)),
        ("OutOfDateConfigurationNeeded", ()),
    ],
)
def test_platform_tcb_status_knob_is_reported_by_both_verifiers(
    tmp_path: Path, status: str, advisories: tuple[str, ...]
) -> None:
    ev = make_evidence(tmp_path, PkiOptions(now=NOW, tcb_status=status, advisory_ids=advisories))
    theirs = ev.dcap_qvl()
    assert (theirs.status, tuple(theirs.advisory_ids)) == (status, advisories)
    ours = ev.ours()
    assert (ours.status, ours.advisory_ids) == (status, advisories)
    assert ours.platform_status.status == status and ours.qe_status.status == "UpToDate"


def test_out_of_date_qe_identity_makes_the_quote_out_of_date(tmp_path: Path) -> None:
    ev = make_evidence(tmp_path, PkiOptions(now=NOW, qe_tcb_status="OutOfDate"))
    assert ev.dcap_qvl().status == "OutOfDate"
    ours = ev.ours()
    assert (ours.status, ours.qe_status.status, ours.platform_status.status) == (
        "OutOfDate",
        "OutOfDate",
        "UpToDate",
    )


@pytest.mark.parametrize("options", [{"tcb_status": "Revoked"}, {"qe_tcb_status": "Revoked"}])
def test_revoked_tcb_level_is_rejected_by_both_verifiers(tmp_path: Path, options: dict[str, str]) -> None:
    ev = make_evidence(tmp_path, PkiOptions(now=NOW, **options))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="TCB status is invalid: Revoked"):
        ev.dcap_qvl()
    with pytest.raises(TcbRevoked) as err:
        ev.ours()
    assert err.value.step == "tcb_status"


def test_revoked_pck_is_rejected_by_both_verifiers(tmp_path: Path) -> None:
    ev = make_evidence(tmp_path, PkiOptions(now=NOW, platforms=2, revoked_platforms=(0,)))
    with pytest.raises(ValueError, match="CertRevoked"):
        ev.dcap_qvl()
    with pytest.raises(CertificateRevoked, match="SGX PCK Certificate") as err:
        ev.ours()
    assert err.value.step == "pck_chain"


def test_unrevoked_platform_of_the_same_pki_still_verifies(tmp_path: Path) -> None:
    pki = init_pki(tmp_path, PkiOptions(now=NOW, platforms=2, revoked_platforms=(0,)))
    pck = pki.platform(1)
    quote = QuotingEnclave(pck.key, pck.chain_pem).quote(build_td_report())
    coll = dcap_qvl.QuoteCollateralV3.from_json(pki.collateral_json)
    assert dcap_qvl.verify_with_root_ca(quote, coll, pki.root_der, NOW).status == "UpToDate"


def test_expired_collateral_is_rejected_by_both_verifiers(tmp_path: Path) -> None:
    ev = make_evidence(tmp_path, PkiOptions(now=NOW, collateral_expired=True))
    with pytest.raises(ValueError, match="Expired"):
        ev.dcap_qvl()
    with pytest.raises(CollateralExpired, match="expired") as err:
        ev.ours()
    assert err.value.step == "collateral"


def test_fresh_collateral_expires_after_its_window(tmp_path: Path) -> None:
    ev = make_evidence(tmp_path)
    later = NOW + 31 * 86_400
    with pytest.raises(ValueError, match="TCBInfo expired"):
        ev.dcap_qvl(now=later)
    with pytest.raises(CollateralExpired):
        ev.ours(now=later)


def test_wrong_issuer_collateral_fails_the_chain_in_both_verifiers(tmp_path: Path) -> None:
    ev = make_evidence(tmp_path, PkiOptions(now=NOW, wrong_issuer=True))
    with pytest.raises(ValueError, match="InvalidSignatureForPublicKey"):
        ev.dcap_qvl()
    with pytest.raises(CertificateChainError, match="tcb info issuer chain") as err:
        ev.ours()
    assert err.value.step == "collateral"


@pytest.mark.parametrize(("sgx_type", "ca"), [(0, "processor"), (1, "platform"), (2, "platform")])
def test_every_sgx_type_verifies_up_to_date_under_its_pck_ca(tmp_path: Path, sgx_type: int, ca: str) -> None:
    ev = make_evidence(tmp_path, PkiOptions(now=NOW, sgx_type=sgx_type))
    assert ev.dcap_qvl().status == "UpToDate"
    assert dcap_qvl.parse_quote(ev.quote).ca() == ca
    assert ev.ours().pck.sgx_type == sgx_type


# --- tampering ----------------------------------------------------------------------------------------------


def _regions(quote: bytes) -> list[int]:
    """Byte positions of the signed region, the attestation key, the QE report and its signature."""
    q = decode_quote(quote)
    sig_start = q.signed_region_size + L.SIGNATURE_DATA_LEN_SIZE
    key = range(sig_start + L.SIG_ATTESTATION_KEY_START, sig_start + L.SIG_ATTESTATION_KEY_END)
    qe = sig_start + L.SIG_CERT_DATA_START + L.CERT_DATA_HEADER_SIZE
    return [*range(q.signed_region_size), *key, *range(qe, qe + L.QE_CERT_REPORT_SIG_END)]


@pytest.mark.parametrize("version", [4, 5])
def test_every_single_bit_flip_of_signed_or_qe_bytes_is_rejected_by_both(
    tmp_path: Path, version: int
) -> None:
    ev = make_evidence(tmp_path, version=version)
    verifier = Verifier([ev.pki.root_der])
    coll = ev.collateral
    theirs = dcap_qvl.QuoteCollateralV3.from_json(ev.pki.collateral_json)
    positions = _regions(ev.quote)
    assert len(positions) == decode_quote(ev.quote).signed_region_size + 64 + 448
    for pos in positions:
        bad = bytearray(ev.quote)
        bad[pos] ^= 1 << (pos % 8)
        with pytest.raises(AttestError):
            verifier.verify(bytes(bad), coll, NOW)
        with pytest.raises(ValueError):
            dcap_qvl.verify_with_root_ca(bytes(bad), theirs, ev.pki.root_der, NOW)


# --- enclave input checks -----------------------------------------------------------------------------------


def test_tdreport_whose_tdinfo_does_not_match_its_hash_is_refused(tmp_path: Path) -> None:
    ev = make_evidence(tmp_path)
    bad = bytearray(ev.td_report)
    bad[L.TDREPORT_FIELD_OFFSETS["mr_td"]] ^= 1
    with pytest.raises(QuotingEnclaveError, match="do not match their hashes"):
        ev.qe.quote(bytes(bad))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": 3}, "unsupported quote version 3"),
        ({"version": 4, "body_type": 3}, "v4 carries body type 2"),
    ],
)
def test_unsupported_quote_shapes_are_refused(tmp_path: Path, kwargs: dict[str, int], message: str) -> None:
    ev = make_evidence(tmp_path)
    with pytest.raises(QuoteFormatError, match=message):
        ev.qe.quote(ev.td_report, **kwargs)


def test_truncated_tdreport_is_a_format_error(tmp_path: Path) -> None:
    ev = make_evidence(tmp_path)
    with pytest.raises(QuoteFormatError, match="1024 bytes"):
        ev.qe.quote(ev.td_report[:-1])


def test_pck_key_of_another_platform_is_refused(tmp_path: Path) -> None:
    pki = init_pki(tmp_path, PkiOptions(now=NOW, platforms=2))
    with pytest.raises(QuotingEnclaveError, match="does not belong"):
        QuotingEnclave(pki.platform(1).key, pki.platform(0).chain_pem)


def test_build_td_report_places_platform_seam_identity(tmp_path: Path) -> None:
    raw = build_td_report(report_data=REPORT_DATA, mr_td=MR_TD, rtmrs=[bytes([i]) * 48 for i in range(4)])
    report = decode_tdreport(raw)
    assert report.cpu_svn == P.CPUSVN
    assert report.tee_tcb_info_valid == P.TEE_TCB_INFO_VALID
    assert (report.body.tee_tcb_svn, report.body.tee_tcb_svn2) == (P.TEE_TCB_SVN, P.TEE_TCB_SVN2)
    assert report.body.mr_seam == P.MRSEAM
    assert report.body.rtmrs == tuple(bytes([i]) * 48 for i in range(4))
    assert report.mac == bytes(32)
    assert report.tee_tcb_info_hash == hashlib.sha384(report.tee_tcb_info).digest()
    assert report.tee_info_hash == hashlib.sha384(report.td_info).digest()


def test_seam_identity_fields_build_the_same_tdreport_as_the_builder() -> None:
    fields = P.seam_identity_fields()
    raw = build_td_report(
        cpu_svn=fields["cpu_svn"],
        tee_tcb_svn=fields["tee_tcb_svn"],
        tee_tcb_svn2=fields["tee_tcb_svn2"],
        mr_seam=fields["mr_seam"],
        mr_signer_seam=fields["mr_signer_seam"],
        seam_attributes=fields["seam_attributes"],
        tee_tcb_info_valid=fields["tee_tcb_info_valid"],
    )
    assert raw == build_td_report()
    assert set(fields) == {
        "cpu_svn",
        "tee_tcb_svn",
        "tee_tcb_svn2",
        "mr_seam",
        "mr_signer_seam",
        "seam_attributes",
        "tee_tcb_info_valid",
    }

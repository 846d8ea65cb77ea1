"""DCAP verification of the real vectors (attestation.md §7, §15): verdicts, windows, tampering, anchors."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from attest_vectors import VERIFIABLE, expected_for, intel_root_pem, read_collateral, read_quote
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from attest.errors import (
    AttestError,
    CertificateChainError,
    CollateralError,
    CollateralExpired,
    CollateralNotYetValid,
    QeReportBindingError,
    SignatureError,
    TcbLevelNotFound,
)
from attest.formats import decode_quote
from attest.verifier.dcap import Verifier, parse_collateral, verify, verify_signature_links

UP_TO_DATE = ["tdx_v4_quote.bin", "tdx_v5_quote.bin"]


@pytest.fixture(scope="module")
def warm() -> Verifier:
    return Verifier([intel_root_pem()])


def _at(name: str) -> int:
    return int(expected_for(name)["verify_at_unix"])


@pytest.mark.parametrize("name", UP_TO_DATE)
def test_real_quote_verifies_up_to_date_against_intel_root(name: str) -> None:
    result = verify(read_quote(name), parse_collateral(read_collateral(name)), _at(name), [intel_root_pem()])
    assert result.status == "UpToDate"
    assert result.advisory_ids == ()
    assert result.fmspc.hex().upper() == expected_for(name)["fmspc"]
    assert result.report.mr_td.hex() == expected_for(name)["mr_td"]
    assert result.td_attributes.hex() == expected_for(name)["td_attributes"]
    assert not result.is_debug
    assert (result.platform_status.status, result.qe_status.status, result.module_status.status) == (
        "UpToDate",
        "UpToDate",
        "UpToDate",
    )


def test_outdated_quote_rejected_no_tcb_level() -> None:
    name = "tdx_v5_outdated_quote.bin"
    with pytest.raises(TcbLevelNotFound) as err:
        verify(read_quote(name), parse_collateral(read_collateral(name)), _at(name), [intel_root_pem()])
    assert err.value.step == "tcb_level"
    assert str(err.value) == "no tcb level matches the platform"


@pytest.mark.parametrize("name", VERIFIABLE)
def test_verify_after_collateral_window_fails_with_expiry(name: str, warm: Verifier) -> None:
    raw, coll = read_quote(name), parse_collateral(read_collateral(name))
    end = expected_for(name)["collateral_window_unix"][1]
    with pytest.raises(CollateralExpired) as err:
        verify(raw, coll, end + 86400, [intel_root_pem()])
    assert (err.value.step, str(err.value)) == ("collateral", "tcbinfo expired")
    with pytest.raises(CollateralExpired):
        verify(raw, coll, end + 1, [intel_root_pem()])
    with pytest.raises(CollateralExpired):  # a warm cache must not outlive the window either
        warm.verify(raw, coll, end + 1)


@pytest.mark.parametrize("name", VERIFIABLE)
def test_verify_before_collateral_issue_fails_not_yet_valid(name: str) -> None:
    start = expected_for(name)["collateral_window_unix"][0]
    with pytest.raises(CollateralNotYetValid, match="issue date is in the future"):
        verify(read_quote(name), parse_collateral(read_collateral(name)), start - 1, [intel_root_pem()])


def test_pck_crl_expiry_ends_the_window_before_tcbinfo() -> None:
    """v4 collateral: the PCK CRL's nextUpdate (1752919235) is earlier than TCB Info's (1752920163)."""
    name = "tdx_v4_quote.bin"
    raw, coll = read_quote(name), parse_collateral(read_collateral(name))
    assert verify(raw, coll, 1752919235, [intel_root_pem()]).collateral_window == (1750329147, 1752919235)
    with pytest.raises(CollateralExpired) as err:
        verify(raw, coll, 1752919236, [intel_root_pem()])
    assert (err.value.step, str(err.value)) == ("crl", "pck crl expired")


def _flip_positions(name: str) -> list[int]:
    """Byte offsets of the signed region, attestation key, QE report and QE report signature."""
    raw = read_quote(name)
    q = decode_quote(raw)
    sig_start = q.signed_region_size + 4
    key = range(sig_start + 64, sig_start + 128)
    qe_start = sig_start + 128 + 6
    positions = [*range(q.signed_region_size), *range(sig_start, sig_start + 64), *key]
    positions += range(qe_start, qe_start + 384 + 64)
    return positions


@pytest.mark.parametrize("name", UP_TO_DATE)
def test_every_single_bit_flip_of_signed_or_qe_bytes_is_rejected(name: str, warm: Verifier) -> None:
    raw, coll, now = read_quote(name), parse_collateral(read_collateral(name)), _at(name)
    assert warm.verify(raw, coll, now).status == "UpToDate"  # warms the caches
    positions = _flip_positions(name)
    assert len(positions) == decode_quote(raw).signed_region_size + 64 + 64 + 384 + 64
    accepted = []
    for pos in positions:
        for bit in range(8):
            tampered = bytearray(raw)
            tampered[pos] ^= 1 << bit
            try:
                warm.verify(bytes(tampered), coll, now)
            except AttestError:
                continue
            accepted.append((pos, bit))
    assert accepted == []


def test_flipped_report_data_fails_the_quote_signature(warm: Verifier) -> None:
    name = "tdx_v4_quote.bin"
    raw = bytearray(read_quote(name))
    raw[568] ^= 0x80  # REPORTDATA[0]
    with pytest.raises(SignatureError) as err:
        warm.verify(bytes(raw), parse_collateral(read_collateral(name)), _at(name))
    assert (err.value.step, str(err.value)) == ("quote_signature", "quote signature is invalid")


def test_flipped_attestation_key_breaks_the_qe_binding(warm: Verifier) -> None:
    name = "tdx_v4_quote.bin"
    raw = bytearray(read_quote(name))
    raw[636 + 64] ^= 0x01
    with pytest.raises(QeReportBindingError, match="qe report hash mismatch"):
        warm.verify(bytes(raw), parse_collateral(read_collateral(name)), _at(name))


def test_flipped_qe_report_fails_its_pck_signature(warm: Verifier) -> None:
    name = "tdx_v4_quote.bin"
    raw = bytearray(read_quote(name))
    raw[636 + 134 + 256] ^= 0x01  # QE ISVPRODID
    with pytest.raises(SignatureError) as err:
        warm.verify(bytes(raw), parse_collateral(read_collateral(name)), _at(name))
    assert err.value.step == "qe_report_signature"


def _self_signed_root() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Intel SGX Root CA")])
    now = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=365 * 30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.PEM)


def test_real_quote_refused_under_a_foreign_root_with_intel_name() -> None:
    name = "tdx_v4_quote.bin"
    with pytest.raises(AttestError) as err:
        verify(read_quote(name), parse_collateral(read_collateral(name)), _at(name), [_self_signed_root()])
    assert isinstance(err.value, CertificateChainError | SignatureError)
    assert err.value.step in ("collateral", "crl")


def test_any_of_several_anchors_may_be_intels() -> None:
    name = "tdx_v5_quote.bin"
    roots = [_self_signed_root(), intel_root_pem()]
    assert verify(read_quote(name), parse_collateral(read_collateral(name)), _at(name), roots).status == (
        "UpToDate"
    )


def test_tampered_tcb_info_text_fails_its_signature() -> None:
    name = "tdx_v4_quote.bin"
    doc = json.loads(read_collateral(name))
    doc["tcb_info"] = doc["tcb_info"].replace('"tcbType":0', '"tcbType": 0')  # same JSON value, other bytes
    with pytest.raises(SignatureError) as err:
        verify(read_quote(name), parse_collateral(json.dumps(doc)), _at(name), [intel_root_pem()])
    assert (err.value.step, str(err.value)) == ("collateral", "tcbinfo signature is invalid")


COLLATERAL_MEMBERS = [
    "pck_crl_issuer_chain",
    "root_ca_crl",
    "pck_crl",
    "tcb_info_issuer_chain",
    "tcb_info",
    "tcb_info_signature",
    "qe_identity_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
]


@pytest.mark.parametrize("junk", ["", "zz", "00", "not json", "{}", '{"id": "TDX"}', 5, None, [], {}])
@pytest.mark.parametrize("member", COLLATERAL_MEMBERS)
def test_every_malformed_collateral_member_is_a_collateral_error_at_parse_time(
    member: str, junk: object
) -> None:
    """Unusable collateral is refused by ``parse_collateral`` itself, never later as a verification step."""
    doc = json.loads(read_collateral("tdx_v4_quote.bin"))
    doc[member] = junk
    with pytest.raises(CollateralError) as err:
        parse_collateral(json.dumps(doc))
    assert type(err.value) is CollateralError and err.value.step is None


def test_well_formed_tcb_info_of_the_wrong_kind_is_refused_at_parse_time() -> None:
    doc = json.loads(read_collateral("tdx_v4_quote.bin"))
    doc["tcb_info"] = doc["tcb_info"].replace('"id":"TDX"', '"id":"SGX"')
    with pytest.raises(CollateralError, match="tcb info is SGX v3, expected TDX v3"):
        parse_collateral(json.dumps(doc))


def test_collateral_embedded_as_objects_is_sliced_not_reserialised() -> None:
    """tcb_info / qe_identity given as JSON objects: the exact source text is cut out and verifies."""
    name = "tdx_v4_quote.bin"
    doc = json.loads(read_collateral(name))
    parts = [
        f"{json.dumps(k)}: {json.dumps(v)}" for k, v in doc.items() if k not in ("tcb_info", "qe_identity")
    ]
    text = "{\n  " + ",\n  ".join(parts)
    text += f',\n  "tcb_info": {doc["tcb_info"]},\n  "qe_identity" : {doc["qe_identity"]}\n}}'
    coll = parse_collateral(text)
    assert coll.tcb_info_text == doc["tcb_info"]
    assert verify(read_quote(name), coll, _at(name), [intel_root_pem()]).status == "UpToDate"


def test_collateral_of_another_platform_is_rejected_on_fmspc() -> None:
    v4 = "tdx_v4_quote.bin"
    with pytest.raises(CollateralError, match="fmspc mismatch") as err:
        verify(
            read_quote(v4),
            parse_collateral(read_collateral("tdx_v5_quote.bin")),
            _at("tdx_v5_quote.bin"),
            [intel_root_pem()],
        )
    assert err.value.step == "platform"


def test_debug_td_quote_signature_links_verify_and_debug_is_exposed() -> None:
    raw = read_quote("tdx_v4_debug_td_quote.bin")
    q = decode_quote(raw)
    leaf = x509.load_pem_x509_certificate(q.pck_chain.pem_certificates()[0])
    now = int(leaf.not_valid_before_utc.timestamp()) + 86400
    pck = verify_signature_links(raw, [intel_root_pem()], now)
    assert pck.extension.fmspc.hex().upper() == expected_for("tdx_v4_debug_td_quote.bin")["fmspc"]
    assert q.body.is_debug and q.body.td_attributes.hex() == "0100001000000000"
    tampered = bytearray(raw)
    tampered[100] ^= 1
    with pytest.raises(SignatureError):
        verify_signature_links(bytes(tampered), [intel_root_pem()], now)


@pytest.mark.parametrize("name", VERIFIABLE)
def test_same_verdict_as_dcap_qvl(name: str) -> None:
    dcap_qvl = pytest.importorskip("dcap_qvl")
    raw, text, now = read_quote(name), read_collateral(name), _at(name)
    try:
        theirs = dcap_qvl.verify(raw, dcap_qvl.QuoteCollateralV3.from_json(text), now)
        their_verdict = (theirs.status, list(theirs.advisory_ids))
    except ValueError:
        their_verdict = None
    try:
        ours = verify(raw, parse_collateral(text), now, [intel_root_pem()])
        our_verdict = (ours.status, list(ours.advisory_ids))
    except AttestError:
        our_verdict = None
    assert our_verdict == their_verdict
    expected = expected_for(name)["dcap_qvl_0_7_0"]
    assert their_verdict == ((expected["status"], expected["advisory_ids"]) if "status" in expected else None)


DEEP = "[" * 2000  # json.loads raises RecursionError, not ValueError


@pytest.mark.parametrize("member", [None, "tcb_info", "qe_identity"])
def test_deeply_nested_collateral_is_a_collateral_error(member: str | None) -> None:
    if member is None:
        text = DEEP
    else:
        doc = json.loads(read_collateral("tdx_v4_quote.bin"))
        doc[member] = DEEP
        text = json.dumps(doc)
    with pytest.raises(CollateralError, match=r"is not json: nested too deeply$") as err:
        parse_collateral(text)
    assert type(err.value) is CollateralError

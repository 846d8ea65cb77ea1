"""Quote codec on the real vectors: byte-exact round trips, fields, strict bounds (attestation.md §2–§5)."""

from __future__ import annotations

import random
import struct

import pytest
from attest_vectors import QUOTE_NAMES, expected_for, read_quote

from attest.errors import QuoteFormatError
from attest.formats import decode_quote, decode_tdreport, encode_quote
from attest.formats import layout as L


@pytest.fixture(scope="module")
def v4_quote() -> bytes:
    return read_quote("tdx_v4_quote.bin")


@pytest.mark.parametrize("name", QUOTE_NAMES)
def test_real_quote_roundtrips_byte_exact(name: str) -> None:
    raw = read_quote(name)
    assert encode_quote(decode_quote(raw)) == raw


def test_v4_real_quote_keeps_70_trailing_zero_bytes(v4_quote: bytes) -> None:
    q = decode_quote(v4_quote)
    assert len(v4_quote) == 5006
    assert q.trailing == bytes(70)
    assert len(q.encode()) - len(q.trailing) == 4936


@pytest.mark.parametrize("name", QUOTE_NAMES)
def test_real_quote_fields_match_expected(name: str) -> None:
    e = expected_for(name)
    q = decode_quote(read_quote(name))
    assert q.header.version == e["version"]
    assert q.header.tee_type == int(e["tee_type"], 16)
    assert q.header.qe_vendor_id == L.INTEL_QE_VENDOR_ID
    assert q.body.td_attributes.hex() == e["td_attributes"]
    assert q.body.mr_td.hex() == e["mr_td"]
    assert q.body.rtmr0.hex() == e["rtmr0"]
    assert q.body.rtmr3.hex() == e["rtmr3"]
    assert q.body.report_data.hex() == e["report_data"]
    assert q.body_type == (2 if e["version"] == 4 else 3)
    assert q.body.is_debug == (name == "tdx_v4_debug_td_quote.bin")


def test_v4_signature_data_sizes_match_reference(v4_quote: bytes) -> None:
    q = decode_quote(v4_quote)
    sd = q.signature_data
    assert len(sd.encode()) == 4300
    assert len(sd.certification_data.encode_data()) == 4166
    assert sd.certification_data.qe_auth_data == bytes(range(32))
    assert q.pck_chain.cert_type == 5
    assert len(q.pck_chain.data) == 3678 and q.pck_chain.data.endswith(b"\x00")
    assert len(q.pck_chain.pem_certificates()) == 3
    assert q.signed_region_size == 632
    assert sd.certification_data.qe_report.isv_prod_id == 2
    assert sd.certification_data.qe_report.mr_signer.hex() == (
        "dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5"
    )


def test_v5_signed_region_covers_body_type_and_size() -> None:
    q = decode_quote(read_quote("tdx_v5_quote.bin"))
    assert q.signed_region_size == 702
    assert q.encode_signed_region() == read_quote("tdx_v5_quote.bin")[:702]
    assert len(q.body.encode()) == 648


@pytest.mark.parametrize("name", QUOTE_NAMES)
def test_every_prefix_of_header_and_body_is_a_format_error(name: str) -> None:
    raw = read_quote(name)
    signed = decode_quote(raw).signed_region_size
    for n in range(signed + L.SIGNATURE_DATA_LEN_SIZE):
        with pytest.raises(QuoteFormatError):
            decode_quote(raw[:n])


def test_sampled_truncations_of_signature_data_are_format_errors(v4_quote: bytes) -> None:
    end = 4936  # the v4 vector without its padding: any shorter prefix cuts the signature data
    rng = random.Random(4)
    for n in [*rng.sample(range(636, end), 300), end - 1, 636, 4935]:
        with pytest.raises(QuoteFormatError):
            decode_quote(v4_quote[:n])


@pytest.mark.parametrize("seed", range(50))
def test_garbage_is_a_format_error(seed: int) -> None:
    rng = random.Random(seed)
    with pytest.raises(QuoteFormatError):
        decode_quote(rng.randbytes(rng.randrange(0, 6000)))


def _patch(raw: bytes, offset: int, fmt: str, value: int) -> bytes:
    b = bytearray(raw)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "reason"),
    [
        (L.HEADER_VERSION_START, "<H", 3, "unsupported quote version 3"),
        (L.HEADER_VERSION_START, "<H", 6, "unsupported quote version 6"),
        (L.HEADER_ATT_KEY_TYPE_START, "<H", 3, "unsupported attestation key type 3"),
        (L.HEADER_TEE_TYPE_START, "<I", 0, "unsupported tee type 0x0"),
        (632, "<I", 4301, "1 stray bytes after certification data"),
        (632, "<I", 0xFFFFFFFF, "truncated signature data"),
        (632, "<I", 4299, "truncated certification data"),
        (636 + 128, "<H", 5, "unsupported certification data type 5, expected 6"),
        (636 + 128, "<H", 9, "unknown certification data type 9"),
        (636 + 130, "<I", 5000, "truncated certification data"),
        (636 + 134 + 448, "<H", 0xFFFF, "truncated"),
        (636 + 134 + 450 + 32, "<H", 6, "nested qe report certification data"),
        (636 + 134 + 450 + 32 + 2, "<I", 3679, "truncated certification data"),
    ],
)
def test_v4_bad_declared_field_is_a_format_error(
    v4_quote: bytes, offset: int, fmt: str, value: int, reason: str
) -> None:
    with pytest.raises(QuoteFormatError, match=reason):
        decode_quote(_patch(v4_quote, offset, fmt, value))


@pytest.mark.parametrize(
    ("offset", "value", "reason"),
    [
        (L.V5_BODY_TYPE_START, 1, "unsupported body type 1"),
        (L.V5_BODY_TYPE_START, 4, "unsupported body type 4"),
        (L.V5_BODY_SIZE_START, 584, "body size 584 does not match body type 3"),
    ],
)
def test_v5_bad_body_framing_is_a_format_error(offset: int, value: int, reason: str) -> None:
    raw = read_quote("tdx_v5_quote.bin")
    fmt = "<H" if offset == L.V5_BODY_TYPE_START else "<I"
    with pytest.raises(QuoteFormatError, match=reason):
        decode_quote(_patch(raw, offset, fmt, value))


def test_v5_type2_body_decodes_as_td10() -> None:
    """A v5 quote with body type 2 (TD 1.0, 584 B): built from the v4 vector's parts, it round-trips."""
    q4 = decode_quote(read_quote("tdx_v4_quote.bin"))
    header = q4.header.encode()
    sig = q4.signature_data.encode()
    raw = (
        _patch(header, 0, "<H", 5)
        + struct.pack("<HI", 2, 584)
        + q4.body.encode()
        + struct.pack("<I", len(sig))
        + sig
    )
    q = decode_quote(raw)
    assert (q.header.version, q.body_type, q.signed_region_size) == (5, 2, 638)
    assert q.body == q4.body
    assert q.encode() == raw


def test_tdreport_fields_land_in_the_quote_body() -> None:
    """A TDREPORT built from the v5 body at memory-model.md §8 offsets parses back to that body."""
    body = decode_quote(read_quote("tdx_v5_quote.bin")).body
    raw = bytearray(L.TDREPORT_SIZE)
    raw[0] = 0x81
    for name, size in L.TD_REPORT15_FIELDS:
        off = L.TDREPORT_FIELD_OFFSETS[name]
        raw[off : off + size] = getattr(body, name)
    rep = decode_tdreport(bytes(raw))
    assert rep.body == body
    assert rep.to_body(2).encode() == body.encode()[:584]
    assert bytes(raw[528:576]) == body.mr_td and bytes(raw[128:192]) == body.report_data


def test_tdreport_wrong_size_or_type_is_a_format_error() -> None:
    with pytest.raises(QuoteFormatError, match="tdreport must be 1024 bytes"):
        decode_tdreport(bytes(1023))
    with pytest.raises(QuoteFormatError, match="unsupported tdreport type 0x0"):
        decode_tdreport(bytes(1024))

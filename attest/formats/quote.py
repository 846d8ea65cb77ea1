"""Byte-exact decode and encode of TDX DCAP quotes v4 and v5 (docs/attestation.md §2–§5).

One frozen dataclass per wire structure. ``decode_quote`` checks shape only (go-tdx-guest ``abi.CheckQuote``
style): supported version / key type / TEE type / body type / certification data types, and every declared
length against the buffer. Signatures, chains and collateral are ``attest.verifier.dcap``'s business.

Byte-exactness: ``encode_quote(decode_quote(b)) == b`` for every accepted ``b``. The declared lengths are
re-derived on encode from the contents, so decoding demands that each declared length equals the length of the
structure it frames; bytes after the signature data (real v4 quotes carry 70 zero bytes of buffer padding) are
kept verbatim in ``Quote.trailing`` and ignored by verification, like every verifier of §14 does.

Input: ``quote_bytes`` turns what people hand over (the binary quote, or its hex text, ``0x`` and line breaks
allowed) into the binary quote ``decode_quote`` takes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from typing import ClassVar

from attest.errors import QuoteFormatError
from attest.formats import layout as L


class _Reader:
    """Bounds-checked cursor over a byte buffer; every overrun becomes a ``QuoteFormatError``."""

    __slots__ = ("_buf", "pos")

    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self._buf = buf
        self.pos = pos

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self._buf):
            raise QuoteFormatError(
                f"truncated {what}: need {n} bytes at offset {self.pos}, have {len(self._buf) - self.pos}"
            )
        out = self._buf[self.pos : end]
        self.pos = end
        return out

    def u16(self, what: str) -> int:
        return int(struct.unpack("<H", self.take(2, what))[0])

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])

    def rest(self) -> bytes:
        out = self._buf[self.pos :]
        self.pos = len(self._buf)
        return out


def _check_size(name: str, value: bytes, size: int) -> None:
    if len(value) != size:
        raise QuoteFormatError(f"{name} must be {size} bytes, got {len(value)}")


@dataclass(frozen=True)
class QuoteHeader:
    """§2: the 48-byte quote header."""

    version: int
    attestation_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes

    def __post_init__(self) -> None:
        _check_size("qe_vendor_id", self.qe_vendor_id, L.QE_VENDOR_ID_SIZE)
        _check_size("user_data", self.user_data, L.USER_DATA_SIZE)

    def encode(self) -> bytes:
        return (
            struct.pack(
                "<HHIHH", self.version, self.attestation_key_type, self.tee_type, self.qe_svn, self.pce_svn
            )
            + self.qe_vendor_id
            + self.user_data
        )


def decode_header(buf: bytes) -> QuoteHeader:
    """Decode and shape-check the header: version 4/5, key type 2 (P-256), TEE type 0x81 (TDX)."""
    r = _Reader(buf)
    raw = r.take(L.HEADER_SIZE, "header")
    version, key_type, tee_type, qe_svn, pce_svn = struct.unpack_from("<HHIHH", raw)
    if version not in L.SUPPORTED_QUOTE_VERSIONS:
        raise QuoteFormatError(f"unsupported quote version {version}")
    if key_type != L.ATT_KEY_TYPE_ECDSA_P256:
        raise QuoteFormatError(f"unsupported attestation key type {key_type}")
    if tee_type != L.TEE_TYPE_TDX:
        raise QuoteFormatError(f"unsupported tee type {tee_type:#x}")
    return QuoteHeader(
        version=version,
        attestation_key_type=key_type,
        tee_type=tee_type,
        qe_svn=qe_svn,
        pce_svn=pce_svn,
        qe_vendor_id=raw[L.HEADER_QE_VENDOR_ID_START : L.HEADER_QE_VENDOR_ID_END],
        user_data=raw[L.HEADER_USER_DATA_START : L.HEADER_USER_DATA_END],
    )


@dataclass(frozen=True)
class TdReport10:
    """§3: TD report body of TDX 1.0 (584 bytes), field list ``layout.TD_REPORT10_FIELDS``."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    report_data: bytes

    BODY_TYPE: ClassVar[int] = L.BODY_TYPE_TD10
    SIZE: ClassVar[int] = L.TD_REPORT10_SIZE

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_size(f.name, getattr(self, f.name), L.FIELD_SIZES[f.name])

    def encode(self) -> bytes:
        return b"".join(getattr(self, f.name) for f in fields(self))

    @property
    def rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]:
        return (self.rtmr0, self.rtmr1, self.rtmr2, self.rtmr3)

    @property
    def is_debug(self) -> bool:
        """TDATTRIBUTES bit 0 (DEBUG, §3.1). Verification exposes it; appraisal decides."""
        return bool(self.td_attributes[0] & 0x01)


@dataclass(frozen=True)
class TdReport15(TdReport10):
    """§3: TD report body of TDX 1.5 (648 bytes) = TD 1.0 body + TEE_TCB_SVN2 + MRSERVICETD."""

    tee_tcb_svn2: bytes
    mr_service_td: bytes

    BODY_TYPE: ClassVar[int] = L.BODY_TYPE_TD15
    SIZE: ClassVar[int] = L.TD_REPORT15_SIZE


TdReport = TdReport10 | TdReport15


def decode_td_report(raw: bytes, body_type: int) -> TdReport:
    """Decode a TD report body of the given body type from exactly its bytes."""
    if body_type == L.BODY_TYPE_TD10:
        names = L.TD_REPORT10_FIELDS
    elif body_type == L.BODY_TYPE_TD15:
        names = L.TD_REPORT15_FIELDS
    else:
        raise QuoteFormatError(f"unsupported body type {body_type}")
    r = _Reader(raw)
    values = {name: r.take(size, name) for name, size in names}
    if r.pos != len(raw):
        raise QuoteFormatError(f"body size {len(raw)} does not match body type {body_type}")
    if body_type == L.BODY_TYPE_TD15:
        return TdReport15(**values)
    return TdReport10(**values)


@dataclass(frozen=True)
class EnclaveReport:
    """§5: SGX REPORTBODY (384 bytes), here the QE report. Reserved ranges are kept for byte-exactness."""

    cpu_svn: bytes
    misc_select: bytes  # 4 raw bytes (u32 LE on the wire); compared bytewise with QE Identity masks
    reserved1: bytes
    attributes: bytes
    mr_enclave: bytes
    reserved2: bytes
    mr_signer: bytes
    reserved3: bytes
    isv_prod_id: int
    isv_svn: int
    reserved4: bytes
    report_data: bytes

    def __post_init__(self) -> None:
        sizes = {
            "cpu_svn": 16,
            "misc_select": 4,
            "reserved1": 28,
            "attributes": 16,
            "mr_enclave": 32,
            "reserved2": 32,
            "mr_signer": 32,
            "reserved3": 96,
            "reserved4": 60,
            "report_data": 64,
        }
        for name, size in sizes.items():
            _check_size(name, getattr(self, name), size)

    def encode(self) -> bytes:
        return (
            self.cpu_svn
            + self.misc_select
            + self.reserved1
            + self.attributes
            + self.mr_enclave
            + self.reserved2
            + self.mr_signer
            + self.reserved3
            + struct.pack("<HH", self.isv_prod_id, self.isv_svn)
            + self.reserved4
            + self.report_data
        )


def decode_enclave_report(raw: bytes) -> EnclaveReport:
    """Decode exactly 384 bytes of SGX REPORTBODY."""
    if len(raw) != L.QE_REPORT_SIZE:
        raise QuoteFormatError(f"qe report must be {L.QE_REPORT_SIZE} bytes, got {len(raw)}")
    prod, svn = struct.unpack_from("<HH", raw, L.QE_REPORT_ISVPRODID_START)
    return EnclaveReport(
        cpu_svn=raw[L.QE_REPORT_CPUSVN_START : L.QE_REPORT_CPUSVN_END],
        misc_select=raw[L.QE_REPORT_MISCSELECT_START : L.QE_REPORT_MISCSELECT_END],
        reserved1=raw[L.QE_REPORT_RESERVED1_START : L.QE_REPORT_RESERVED1_END],
        attributes=raw[L.QE_REPORT_ATTRIBUTES_START : L.QE_REPORT_ATTRIBUTES_END],
        mr_enclave=raw[L.QE_REPORT_MRENCLAVE_START : L.QE_REPORT_MRENCLAVE_END],
        reserved2=raw[L.QE_REPORT_RESERVED2_START : L.QE_REPORT_RESERVED2_END],
        mr_signer=raw[L.QE_REPORT_MRSIGNER_START : L.QE_REPORT_MRSIGNER_END],
        reserved3=raw[L.QE_REPORT_RESERVED3_START : L.QE_REPORT_RESERVED3_END],
        isv_prod_id=int(prod),
        isv_svn=int(svn),
        reserved4=raw[L.QE_REPORT_RESERVED4_START : L.QE_REPORT_RESERVED4_END],
        report_data=raw[L.QE_REPORT_REPORTDATA_START : L.QE_REPORT_REPORTDATA_END],
    )


@dataclass(frozen=True)
class CertificationData:
    """§4: certification data of types 1–5 and 7, kept as raw bytes (type 5 = PEM PCK chain)."""

    cert_type: int
    data: bytes

    def encode(self) -> bytes:
        return struct.pack("<HI", self.cert_type, len(self.data)) + self.data

    def pem_certificates(self) -> list[bytes]:
        """Type 5: the PEM blocks (leaf first) without the trailing NUL some QEs append."""
        if self.cert_type != L.CERT_TYPE_PCK_CHAIN:
            raise QuoteFormatError(f"certification data type {self.cert_type} is not a pck chain")
        end_marker = b"-----END CERTIFICATE-----"
        out: list[bytes] = []
        for part in self.data.split(end_marker)[:-1]:
            start = part.find(b"-----BEGIN CERTIFICATE-----")
            if start < 0:
                raise QuoteFormatError("malformed pck chain pem")
            out.append(part[start:] + end_marker + b"\n")
        return out


@dataclass(frozen=True)
class QeReportCertificationData:
    """§4 type 6: QE report, its signature by the PCK leaf key, QE auth data and nested certification data."""

    qe_report: EnclaveReport
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification_data: CertificationData

    CERT_TYPE: ClassVar[int] = L.CERT_TYPE_QE_REPORT

    def __post_init__(self) -> None:
        _check_size("qe_report_signature", self.qe_report_signature, L.ECDSA_P256_SIGNATURE_SIZE)

    def encode_data(self) -> bytes:
        return (
            self.qe_report.encode()
            + self.qe_report_signature
            + struct.pack("<H", len(self.qe_auth_data))
            + self.qe_auth_data
            + self.certification_data.encode()
        )

    def encode(self) -> bytes:
        data = self.encode_data()
        return struct.pack("<HI", self.CERT_TYPE, len(data)) + data


def _decode_cert_data_header(r: _Reader, what: str) -> tuple[int, bytes]:
    cert_type = r.u16(f"{what} type")
    size = r.u32(f"{what} size")
    if cert_type not in L.KNOWN_CERT_TYPES:
        raise QuoteFormatError(f"unknown {what} type {cert_type}")
    return cert_type, r.take(size, what)


def decode_qe_report_certification_data(data: bytes) -> QeReportCertificationData:
    """Decode the data of a type-6 certification data item; the nested item must fill it exactly."""
    r = _Reader(data)
    qe_report = decode_enclave_report(r.take(L.QE_REPORT_SIZE, "qe report"))
    qe_sig = r.take(L.ECDSA_P256_SIGNATURE_SIZE, "qe report signature")
    auth_size = r.u16("qe auth data size")
    auth = r.take(auth_size, "qe auth data")
    inner_type, inner = _decode_cert_data_header(r, "certification data")
    if inner_type == L.CERT_TYPE_QE_REPORT:
        raise QuoteFormatError("nested qe report certification data")
    if r.pos != len(data):
        raise QuoteFormatError(f"{len(data) - r.pos} stray bytes after nested certification data")
    return QeReportCertificationData(qe_report, qe_sig, auth, CertificationData(inner_type, inner))


@dataclass(frozen=True)
class SignatureData:
    """§4: quote signature, attestation public key, and type-6 certification data."""

    signature: bytes
    attestation_key: bytes
    certification_data: QeReportCertificationData

    def __post_init__(self) -> None:
        _check_size("signature", self.signature, L.ECDSA_P256_SIGNATURE_SIZE)
        _check_size("attestation_key", self.attestation_key, L.ECDSA_P256_PUBLIC_KEY_SIZE)

    def encode(self) -> bytes:
        return self.signature + self.attestation_key + self.certification_data.encode()


def decode_signature_data(data: bytes) -> SignatureData:
    """Decode exactly the declared signature data; outer certification data type must be 6 (§4)."""
    r = _Reader(data)
    sig = r.take(L.ECDSA_P256_SIGNATURE_SIZE, "quote signature")
    key = r.take(L.ECDSA_P256_PUBLIC_KEY_SIZE, "attestation key")
    cert_type, cert = _decode_cert_data_header(r, "certification data")
    if cert_type != L.CERT_TYPE_QE_REPORT:
        raise QuoteFormatError(f"unsupported certification data type {cert_type}, expected 6")
    if r.pos != len(data):
        raise QuoteFormatError(f"{len(data) - r.pos} stray bytes after certification data")
    return SignatureData(sig, key, decode_qe_report_certification_data(cert))


@dataclass(frozen=True)
class Quote:
    """A TDX DCAP quote v4 or v5 (§2–§4). ``body_type`` is 2 for v4 (implicit on the wire)."""

    header: QuoteHeader
    body_type: int
    body: TdReport
    signature_data: SignatureData
    trailing: bytes = b""

    @property
    def signed_region_size(self) -> int:
        """Length of the prefix the attestation key signs: header (+ v5 type/size) + body (§3)."""
        if self.header.version == L.QUOTE_VERSION_4:
            return L.V4_BODY_START + self.body.SIZE
        return L.V5_BODY_START + self.body.SIZE

    def encode_signed_region(self) -> bytes:
        out = self.header.encode()
        if self.header.version == L.QUOTE_VERSION_5:
            out += struct.pack("<HI", self.body_type, self.body.SIZE)
        return out + self.body.encode()

    def encode(self) -> bytes:
        sig = self.signature_data.encode()
        return self.encode_signed_region() + struct.pack("<I", len(sig)) + sig + self.trailing

    @property
    def pck_chain(self) -> CertificationData:
        return self.signature_data.certification_data.certification_data


_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
_ASCII_WHITESPACE = b" \t\n\r\v\f"


def quote_bytes(data: bytes) -> bytes:
    """The binary quote in ``data``, which holds it either as is (as GetQuote returns it) or as hex text:
    optionally ``0x``-prefixed, any ASCII whitespace (line breaks included) anywhere, either case.

    The two cannot be confused: a binary quote's second byte is the zero high byte of its version, and zero
    is not a hex digit. Text that starts with ``0x`` but is not hex of whole bytes raises
    ``QuoteFormatError``; anything else that is not hex is returned unchanged, for ``decode_quote`` to judge.
    """
    raw = bytes(data)
    text = raw.translate(None, _ASCII_WHITESPACE)
    prefixed = text[:2] in (b"0x", b"0X")
    digits = text[2:] if prefixed else text
    if not prefixed and (not digits or not _HEX_DIGITS.issuperset(digits)):
        return raw
    if not digits or not _HEX_DIGITS.issuperset(digits):
        raise QuoteFormatError("quote text after 0x is not hex")
    if len(digits) % 2:
        raise QuoteFormatError(f"hex quote has an odd number of digits ({len(digits)})")
    return bytes.fromhex(digits.decode("ascii"))


def decode_quote(buf: bytes) -> Quote:
    """Decode a TDX DCAP quote v4/v5; any shape problem raises ``QuoteFormatError``, nothing else."""
    buf = bytes(buf)
    header = decode_header(buf)
    r = _Reader(buf, L.HEADER_SIZE)
    if header.version == L.QUOTE_VERSION_4:
        body_type = L.BODY_TYPE_TD10
        body_size = L.TD_REPORT10_SIZE
    else:
        body_type = r.u16("body type")
        body_size = r.u32("body size")
        expected = L.BODY_SIZES.get(body_type)
        if expected is None:
            raise QuoteFormatError(f"unsupported body type {body_type}")
        if body_size != expected:
            raise QuoteFormatError(f"body size {body_size} does not match body type {body_type} ({expected})")
    body = decode_td_report(r.take(body_size, "td report body"), body_type)
    sig_len = r.u32("signature data length")
    sig = decode_signature_data(r.take(sig_len, "signature data"))
    return Quote(header=header, body_type=body_type, body=body, signature_data=sig, trailing=r.rest())


def encode_quote(quote: Quote) -> bytes:
    """Encode a quote; lengths are derived from the contents."""
    return quote.encode()

"""Parser of the guest-side TDREPORT_STRUCT (1024 bytes, docs/memory-model.md §8).

The TDREPORT carries the same measurement fields as the quote's TD report body (docs/attestation.md §3) at
other offsets; both views are derived from the single field list in ``layout`` (``TDREPORT_FIELD_OFFSETS``),
and ``TdReportStruct.to_body()`` yields exactly the body a quoting enclave puts into a quote.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from attest.errors import QuoteFormatError
from attest.formats import layout as L
from attest.formats.quote import TdReport10, TdReport15

REPORT_TYPE_TDX = 0x81


@dataclass(frozen=True)
class TdReportStruct:
    """TDREPORT_STRUCT = REPORTMACSTRUCT (256) + TEE_TCB_INFO (256) + TDINFO (512)."""

    report_type: bytes  # type, subtype, version, reserved
    cpu_svn: bytes
    tee_tcb_info_hash: bytes
    tee_info_hash: bytes
    mac: bytes
    tee_tcb_info_valid: bytes
    body: TdReport15  # every body field, TEE_TCB_SVN2 and SERVTD_HASH included
    raw: bytes

    @property
    def report_mac_struct(self) -> bytes:
        """REPORTMACSTRUCT, the 256 bytes the MAC protects (MAC field included; the checker slices)."""
        return self.raw[: L.REPORTMACSTRUCT_SIZE]

    @property
    def tee_tcb_info(self) -> bytes:
        return self.raw[L.TEE_TCB_INFO_START : L.TDINFO_START]

    @property
    def td_info(self) -> bytes:
        return self.raw[L.TDINFO_START : L.TDREPORT_SIZE]

    def to_body(self, body_type: int = L.BODY_TYPE_TD10) -> TdReport10:
        """The quote body a QE builds from this TDREPORT (TD 1.0 or TD 1.5)."""
        if body_type == L.BODY_TYPE_TD15:
            return self.body
        if body_type != L.BODY_TYPE_TD10:
            raise QuoteFormatError(f"unsupported body type {body_type}")
        values = {name: getattr(self.body, name) for name, _ in L.TD_REPORT10_FIELDS}
        return TdReport10(**values)


def decode_tdreport(raw: bytes) -> TdReportStruct:
    """Decode a 1024-byte TDREPORT; the report type must be TDX (0x81)."""
    raw = bytes(raw)
    if len(raw) != L.TDREPORT_SIZE:
        raise QuoteFormatError(f"tdreport must be {L.TDREPORT_SIZE} bytes, got {len(raw)}")
    if raw[L.TDREPORT_REPORTTYPE_START] != REPORT_TYPE_TDX:
        raise QuoteFormatError(f"unsupported tdreport type {raw[L.TDREPORT_REPORTTYPE_START]:#x}")
    values = {
        name: raw[L.TDREPORT_FIELD_OFFSETS[name] : L.TDREPORT_FIELD_OFFSETS[name] + size]
        for name, size in L.TD_REPORT15_FIELDS
    }
    return TdReportStruct(
        report_type=raw[L.TDREPORT_REPORTTYPE_START : L.TDREPORT_REPORTTYPE_END],
        cpu_svn=raw[L.TDREPORT_CPUSVN_START : L.TDREPORT_CPUSVN_END],
        tee_tcb_info_hash=raw[L.TDREPORT_TEE_TCB_INFO_HASH_START : L.TDREPORT_TEE_TCB_INFO_HASH_END],
        tee_info_hash=raw[L.TDREPORT_TEE_INFO_HASH_START : L.TDREPORT_TEE_INFO_HASH_END],
        mac=raw[L.TDREPORT_MAC_START : L.TDREPORT_MAC_END],
        tee_tcb_info_valid=raw[L.TEE_TCB_INFO_VALID_START : L.TEE_TCB_INFO_VALID_END],
        body=TdReport15(**values),
        raw=raw,
    )


def encode_tdreport(
    body: TdReport15, *, cpu_svn: bytes, tee_tcb_info_valid: bytes, mac: bytes = bytes(32)
) -> bytes:
    """Build a TDREPORT_STRUCT from the body fields: TEE_TCB_INFO and TDINFO are laid out at their
    offsets, then TEE_TCB_INFO_HASH and TEE_INFO_HASH (SHA-384 of each) are filled in. ``mac`` goes into
    REPORTMACSTRUCT as given: the TDX module computes it over :func:`tdreport_mac_input` with its key."""
    if len(cpu_svn) != 16 or len(tee_tcb_info_valid) != 8 or len(mac) != 32:
        raise QuoteFormatError("cpu_svn, tee_tcb_info_valid and mac must be 16, 8 and 32 bytes")
    raw = bytearray(L.TDREPORT_SIZE)
    raw[L.TDREPORT_REPORTTYPE_START : L.TDREPORT_REPORTTYPE_END] = bytes([REPORT_TYPE_TDX, 0, 0, 0])
    raw[L.TDREPORT_CPUSVN_START : L.TDREPORT_CPUSVN_END] = cpu_svn
    raw[L.TEE_TCB_INFO_VALID_START : L.TEE_TCB_INFO_VALID_END] = tee_tcb_info_valid
    for name, size in L.TD_REPORT15_FIELDS:
        value = getattr(body, name)
        if len(value) != size:
            raise QuoteFormatError(f"{name} must be {size} bytes, got {len(value)}")
        start = L.TDREPORT_FIELD_OFFSETS[name]
        raw[start : start + size] = value
    tee_tcb_info = bytes(raw[L.TEE_TCB_INFO_START : L.TDINFO_START])
    td_info = bytes(raw[L.TDINFO_START : L.TDREPORT_SIZE])
    raw[L.TDREPORT_TEE_TCB_INFO_HASH_START : L.TDREPORT_TEE_TCB_INFO_HASH_END] = hashlib.sha384(
        tee_tcb_info
    ).digest()
    raw[L.TDREPORT_TEE_INFO_HASH_START : L.TDREPORT_TEE_INFO_HASH_END] = hashlib.sha384(td_info).digest()
    raw[L.TDREPORT_MAC_START : L.TDREPORT_MAC_END] = mac
    return bytes(raw)


def tdreport_mac_input(raw: bytes) -> bytes:
    """The bytes the REPORTMACSTRUCT MAC covers: everything before the MAC field. TEE_TCB_INFO and TDINFO
    are bound through their hashes, so a changed bit anywhere in the report changes what is MAC'd or
    breaks a hash (see :func:`tdreport_hashes_match`)."""
    return bytes(raw[: L.TDREPORT_MAC_START])


def tdreport_hashes_match(raw: bytes) -> bool:
    """TEE_TCB_INFO_HASH and TEE_INFO_HASH agree with the TEE_TCB_INFO and TDINFO they stand for."""
    return (
        hashlib.sha384(raw[L.TEE_TCB_INFO_START : L.TDINFO_START]).digest()
        == raw[L.TDREPORT_TEE_TCB_INFO_HASH_START : L.TDREPORT_TEE_TCB_INFO_HASH_END]
        and hashlib.sha384(raw[L.TDINFO_START : L.TDREPORT_SIZE]).digest()
        == raw[L.TDREPORT_TEE_INFO_HASH_START : L.TDREPORT_TEE_INFO_HASH_END]
    )

"""Wire layout of TDX DCAP quotes v4/v5 and the TDREPORT: every offset a named constant, sizes as sums.

Sources: docs/attestation.md §1 (encoding), §2 (header), §3 (TD report bodies, v5 framing), §4 (signature data
and certification data), §5 (QE report); docs/memory-model.md §8 (TDREPORT_STRUCT). Offsets inside a structure
are relative to its start; ``…_START``/``…_END`` pairs bound each field (go-tdx-guest ``abi`` style).

The TD report body field list is defined once (``TD_REPORT10_FIELDS`` + ``TD_REPORT15_EXTRA_FIELDS``); the
quote body offsets and the TDREPORT offsets are both derived from it, so the two views cannot drift apart.
"""

from __future__ import annotations

from typing import Final

# --- §1 encoding --------------------------------------------------------------------------------------------
ECDSA_P256_SIGNATURE_SIZE: Final = 64  # r || s, 32 + 32 bytes big-endian
ECDSA_P256_PUBLIC_KEY_SIZE: Final = 64  # x || y, 32 + 32 bytes big-endian, no 0x04 prefix

# --- §2 header (48 bytes) -----------------------------------------------------------------------------------
HEADER_VERSION_START: Final = 0x00
HEADER_VERSION_END: Final = 0x02
HEADER_ATT_KEY_TYPE_START: Final = 0x02
HEADER_ATT_KEY_TYPE_END: Final = 0x04
HEADER_TEE_TYPE_START: Final = 0x04
HEADER_TEE_TYPE_END: Final = 0x08
HEADER_QE_SVN_START: Final = 0x08  # QVL/dcap-qvl name; zero in real TDX quotes
HEADER_QE_SVN_END: Final = 0x0A
HEADER_PCE_SVN_START: Final = 0x0A
HEADER_PCE_SVN_END: Final = 0x0C
HEADER_QE_VENDOR_ID_START: Final = 0x0C
HEADER_QE_VENDOR_ID_END: Final = 0x1C
HEADER_USER_DATA_START: Final = 0x1C
HEADER_USER_DATA_END: Final = 0x30
HEADER_SIZE: Final = HEADER_USER_DATA_END
assert HEADER_SIZE == 48

QUOTE_VERSION_4: Final = 4
QUOTE_VERSION_5: Final = 5
SUPPORTED_QUOTE_VERSIONS: Final = (QUOTE_VERSION_4, QUOTE_VERSION_5)
ATT_KEY_TYPE_ECDSA_P256: Final = 2
ATT_KEY_TYPE_ECDSA_P384: Final = 3  # defined by Intel, accepted by no verifier
TEE_TYPE_SGX: Final = 0x00000000
TEE_TYPE_TDX: Final = 0x00000081
INTEL_QE_VENDOR_ID: Final = bytes.fromhex("939A7233F79C4CA9940A0DB3957F0607")
QE_VENDOR_ID_SIZE: Final = HEADER_QE_VENDOR_ID_END - HEADER_QE_VENDOR_ID_START
USER_DATA_SIZE: Final = HEADER_USER_DATA_END - HEADER_USER_DATA_START

# --- §3 TD report body: the one field list ------------------------------------------------------------------
TD_REPORT10_FIELDS: Final[tuple[tuple[str, int], ...]] = (
    ("tee_tcb_svn", 16),
    ("mr_seam", 48),
    ("mr_signer_seam", 48),
    ("seam_attributes", 8),
    ("td_attributes", 8),
    ("xfam", 8),
    ("mr_td", 48),
    ("mr_config_id", 48),
    ("mr_owner", 48),
    ("mr_owner_config", 48),
    ("rtmr0", 48),
    ("rtmr1", 48),
    ("rtmr2", 48),
    ("rtmr3", 48),
    ("report_data", 64),
)
TD_REPORT15_EXTRA_FIELDS: Final[tuple[tuple[str, int], ...]] = (
    ("tee_tcb_svn2", 16),
    ("mr_service_td", 48),
)
TD_REPORT15_FIELDS: Final = TD_REPORT10_FIELDS + TD_REPORT15_EXTRA_FIELDS
FIELD_SIZES: Final[dict[str, int]] = dict(TD_REPORT15_FIELDS)


def _offsets(fields: tuple[tuple[str, int], ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    pos = 0
    for name, size in fields:
        out[name] = pos
        pos += size
    return out


TD_REPORT_BODY_OFFSETS: Final = _offsets(TD_REPORT15_FIELDS)  # relative to the body start
TD_REPORT10_SIZE: Final = sum(size for _, size in TD_REPORT10_FIELDS)
TD_REPORT15_SIZE: Final = sum(size for _, size in TD_REPORT15_FIELDS)
assert TD_REPORT10_SIZE == 584
assert TD_REPORT15_SIZE == 648

# v4: body right after the header.
V4_BODY_START: Final = HEADER_SIZE
V4_BODY_END: Final = V4_BODY_START + TD_REPORT10_SIZE
V4_SIGNED_SIZE: Final = V4_BODY_END  # the signed region is quote[0:632]
assert V4_SIGNED_SIZE == 632

# v5: u16 body type, u32 body size, then the body.
V5_BODY_TYPE_START: Final = HEADER_SIZE
V5_BODY_TYPE_END: Final = V5_BODY_TYPE_START + 2
V5_BODY_SIZE_START: Final = V5_BODY_TYPE_END
V5_BODY_SIZE_END: Final = V5_BODY_SIZE_START + 4
V5_BODY_START: Final = V5_BODY_SIZE_END
assert V5_BODY_START == 54

BODY_TYPE_SGX: Final = 1
BODY_TYPE_TD10: Final = 2
BODY_TYPE_TD15: Final = 3
BODY_SIZES: Final[dict[int, int]] = {BODY_TYPE_TD10: TD_REPORT10_SIZE, BODY_TYPE_TD15: TD_REPORT15_SIZE}

SIGNATURE_DATA_LEN_SIZE: Final = 4  # u32 after the body (v4 @632, v5 @638/@702)

# --- §4 signature data (sgx_ecdsa_sig_data_v4_t) ------------------------------------------------------------
SIG_QUOTE_SIGNATURE_START: Final = 0
SIG_QUOTE_SIGNATURE_END: Final = SIG_QUOTE_SIGNATURE_START + ECDSA_P256_SIGNATURE_SIZE
SIG_ATTESTATION_KEY_START: Final = SIG_QUOTE_SIGNATURE_END
SIG_ATTESTATION_KEY_END: Final = SIG_ATTESTATION_KEY_START + ECDSA_P256_PUBLIC_KEY_SIZE
SIG_CERT_DATA_START: Final = SIG_ATTESTATION_KEY_END  # certification data: u16 type, u32 size, data
assert SIG_CERT_DATA_START == 128

CERT_DATA_TYPE_SIZE: Final = 2
CERT_DATA_LEN_SIZE: Final = 4
CERT_DATA_HEADER_SIZE: Final = CERT_DATA_TYPE_SIZE + CERT_DATA_LEN_SIZE

CERT_TYPE_PPID_CLEARTEXT: Final = 1
CERT_TYPE_PPID_RSA2048_OAEP: Final = 2
CERT_TYPE_PPID_RSA3072_OAEP: Final = 3
CERT_TYPE_PCK_LEAF: Final = 4
CERT_TYPE_PCK_CHAIN: Final = 5
CERT_TYPE_QE_REPORT: Final = 6
CERT_TYPE_PLATFORM_MANIFEST: Final = 7
KNOWN_CERT_TYPES: Final = frozenset(range(CERT_TYPE_PPID_CLEARTEXT, CERT_TYPE_PLATFORM_MANIFEST + 1))

# --- §5 QE report (SGX REPORTBODY, 384 bytes) ---------------------------------------------------------------
QE_REPORT_CPUSVN_START: Final = 0
QE_REPORT_CPUSVN_END: Final = 16
QE_REPORT_MISCSELECT_START: Final = QE_REPORT_CPUSVN_END
QE_REPORT_MISCSELECT_END: Final = QE_REPORT_MISCSELECT_START + 4
QE_REPORT_RESERVED1_START: Final = QE_REPORT_MISCSELECT_END
QE_REPORT_RESERVED1_END: Final = QE_REPORT_RESERVED1_START + 28
QE_REPORT_ATTRIBUTES_START: Final = QE_REPORT_RESERVED1_END
QE_REPORT_ATTRIBUTES_END: Final = QE_REPORT_ATTRIBUTES_START + 16
QE_REPORT_MRENCLAVE_START: Final = QE_REPORT_ATTRIBUTES_END
QE_REPORT_MRENCLAVE_END: Final = QE_REPORT_MRENCLAVE_START + 32
QE_REPORT_RESERVED2_START: Final = QE_REPORT_MRENCLAVE_END
QE_REPORT_RESERVED2_END: Final = QE_REPORT_RESERVED2_START + 32
QE_REPORT_MRSIGNER_START: Final = QE_REPORT_RESERVED2_END
QE_REPORT_MRSIGNER_END: Final = QE_REPORT_MRSIGNER_START + 32
QE_REPORT_RESERVED3_START: Final = QE_REPORT_MRSIGNER_END
QE_REPORT_RESERVED3_END: Final = QE_REPORT_RESERVED3_START + 96
QE_REPORT_ISVPRODID_START: Final = QE_REPORT_RESERVED3_END
QE_REPORT_ISVPRODID_END: Final = QE_REPORT_ISVPRODID_START + 2
QE_REPORT_ISVSVN_START: Final = QE_REPORT_ISVPRODID_END
QE_REPORT_ISVSVN_END: Final = QE_REPORT_ISVSVN_START + 2
QE_REPORT_RESERVED4_START: Final = QE_REPORT_ISVSVN_END
QE_REPORT_RESERVED4_END: Final = QE_REPORT_RESERVED4_START + 60
QE_REPORT_REPORTDATA_START: Final = QE_REPORT_RESERVED4_END
QE_REPORT_REPORTDATA_END: Final = QE_REPORT_REPORTDATA_START + 64
QE_REPORT_SIZE: Final = QE_REPORT_REPORTDATA_END
assert QE_REPORT_SIZE == 384
assert QE_REPORT_ISVPRODID_START == 256

# Type 6 (QE report certification data), relative to its data start.
QE_CERT_REPORT_START: Final = 0
QE_CERT_REPORT_END: Final = QE_CERT_REPORT_START + QE_REPORT_SIZE
QE_CERT_REPORT_SIG_START: Final = QE_CERT_REPORT_END
QE_CERT_REPORT_SIG_END: Final = QE_CERT_REPORT_SIG_START + ECDSA_P256_SIGNATURE_SIZE
QE_CERT_AUTH_SIZE_START: Final = QE_CERT_REPORT_SIG_END
QE_CERT_AUTH_SIZE_END: Final = QE_CERT_AUTH_SIZE_START + 2
QE_CERT_AUTH_DATA_START: Final = QE_CERT_AUTH_SIZE_END  # then A bytes, then nested certification data
assert QE_CERT_AUTH_DATA_START == 450

# --- docs/memory-model.md §8: TDREPORT_STRUCT (1024 bytes) --------------------------------------------------
TDREPORT_SIZE: Final = 1024
TDREPORT_REPORTTYPE_START: Final = 0
TDREPORT_REPORTTYPE_END: Final = 4
TDREPORT_CPUSVN_START: Final = 16
TDREPORT_CPUSVN_END: Final = TDREPORT_CPUSVN_START + 16
TDREPORT_TEE_TCB_INFO_HASH_START: Final = TDREPORT_CPUSVN_END
TDREPORT_TEE_TCB_INFO_HASH_END: Final = TDREPORT_TEE_TCB_INFO_HASH_START + 48
TDREPORT_TEE_INFO_HASH_START: Final = TDREPORT_TEE_TCB_INFO_HASH_END
TDREPORT_TEE_INFO_HASH_END: Final = TDREPORT_TEE_INFO_HASH_START + 48
TDREPORT_REPORTDATA_START: Final = TDREPORT_TEE_INFO_HASH_END
TDREPORT_REPORTDATA_END: Final = TDREPORT_REPORTDATA_START + 64
TDREPORT_MAC_START: Final = 224
TDREPORT_MAC_END: Final = TDREPORT_MAC_START + 32
REPORTMACSTRUCT_SIZE: Final = TDREPORT_MAC_END
assert REPORTMACSTRUCT_SIZE == 256
TEE_TCB_INFO_START: Final = REPORTMACSTRUCT_SIZE
TEE_TCB_INFO_VALID_START: Final = TEE_TCB_INFO_START
TEE_TCB_INFO_VALID_END: Final = TEE_TCB_INFO_VALID_START + 8
TEE_TCB_INFO_SIZE: Final = 256
TDINFO_START: Final = TEE_TCB_INFO_START + TEE_TCB_INFO_SIZE
TDINFO_SIZE: Final = 512
assert TDINFO_START + TDINFO_SIZE == TDREPORT_SIZE


def _tdreport_offsets() -> dict[str, int]:
    """Absolute TDREPORT offset of each body field: TEE_TCB_INFO then TDINFO hold the body fields in the same
    order as the quote body, with REPORTDATA taken from REPORTMACSTRUCT and SERVTD_HASH at TDINFO+400."""
    tcb_info = _offsets(TD_REPORT10_FIELDS[:4])  # tee_tcb_svn, mr_seam, mr_signer_seam, seam_attributes
    tdinfo = _offsets(TD_REPORT10_FIELDS[4:14])  # td_attributes .. rtmr3
    out = {name: TEE_TCB_INFO_VALID_END + off for name, off in tcb_info.items()}
    out.update({name: TDINFO_START + off for name, off in tdinfo.items()})
    out["report_data"] = TDREPORT_REPORTDATA_START
    out["tee_tcb_svn2"] = TEE_TCB_INFO_START + 128  # DCAP tdx_attest.h 1.5 view: TEE_TCB_SVN2 at 384
    out["mr_service_td"] = TDINFO_START + 400  # SERVTD_HASH at 912
    return out


TDREPORT_FIELD_OFFSETS: Final = _tdreport_offsets()
assert TDREPORT_FIELD_OFFSETS["mr_td"] == 528
assert TDREPORT_FIELD_OFFSETS["rtmr0"] == 720
assert TDREPORT_FIELD_OFFSETS["seam_attributes"] == 376
assert TDREPORT_FIELD_OFFSETS["mr_service_td"] == 912
assert TDREPORT_FIELD_OFFSETS["tee_tcb_svn2"] == 384

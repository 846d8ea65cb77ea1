"""A TDREPORT builder with the simulated platform's TEE_TCB_INFO (docs/memory-model.md §8,
docs/attestation.md §3).

The byte layout has one definition, ``attest.formats.tdreport.encode_tdreport`` (which the host's TDX module
uses for TDG.MR.REPORT); this module only supplies ``attest.intel.identity``'s SEAM identity and CPUSVN as
defaults,
so tests and tools can make a TDREPORT that the simulated PCS's TCB Info matches. The MAC is a placeholder
(zeros unless given): only the host's TDX module holds the platform key that computes it.
"""

from __future__ import annotations

from collections.abc import Sequence

from attest.errors import QuoteFormatError
from attest.formats import layout as L
from attest.formats.quote import TdReport15
from attest.formats.tdreport import encode_tdreport
from attest.intel import identity as P

SEPT_VE_DISABLE = 1 << 28  # TDATTRIBUTES bit 28 (docs/attestation.md §3.1); production TDs set it
DEBUG = 1 << 0
DEFAULT_TD_ATTRIBUTES = SEPT_VE_DISABLE.to_bytes(8, "little")  # 00 00 00 10 00 00 00 00
DEFAULT_XFAM = bytes.fromhex("e702060000000000")  # a typical XFAM of real TDs


def build_td_report(
    *,
    report_data: bytes = bytes(64),
    mr_td: bytes = bytes(48),
    rtmrs: Sequence[bytes] = (bytes(48),) * 4,
    td_attributes: bytes = DEFAULT_TD_ATTRIBUTES,
    xfam: bytes = DEFAULT_XFAM,
    mr_config_id: bytes = bytes(48),
    mr_owner: bytes = bytes(48),
    mr_owner_config: bytes = bytes(48),
    mr_service_td: bytes = bytes(48),
    tee_tcb_svn: bytes = P.TEE_TCB_SVN,
    tee_tcb_svn2: bytes = P.TEE_TCB_SVN2,
    mr_seam: bytes = P.MRSEAM,
    mr_signer_seam: bytes = P.MRSIGNERSEAM,
    seam_attributes: bytes = P.SEAM_ATTRIBUTES,
    cpu_svn: bytes = P.CPUSVN,
    tee_tcb_info_valid: bytes = P.TEE_TCB_INFO_VALID,
    mac: bytes = bytes(32),
) -> bytes:
    """A 1024-byte TDREPORT_STRUCT: TD fields as given, SEAM fields from ``attest.intel.identity`` unless
    overridden, TEE_TCB_INFO_HASH / TEE_INFO_HASH computed, ``mac`` stored as given. Wrong sizes raise
    ``QuoteFormatError``."""
    if len(rtmrs) != 4:
        raise QuoteFormatError(f"need 4 rtmrs, got {len(rtmrs)}")
    body = TdReport15(
        tee_tcb_svn=tee_tcb_svn,
        mr_seam=mr_seam,
        mr_signer_seam=mr_signer_seam,
        seam_attributes=seam_attributes,
        td_attributes=td_attributes,
        xfam=xfam,
        mr_td=mr_td,
        mr_config_id=mr_config_id,
        mr_owner=mr_owner,
        mr_owner_config=mr_owner_config,
        rtmr0=rtmrs[0],
        rtmr1=rtmrs[1],
        rtmr2=rtmrs[2],
        rtmr3=rtmrs[3],
        report_data=report_data,
        tee_tcb_svn2=tee_tcb_svn2,
        mr_service_td=mr_service_td,
    )
    raw = encode_tdreport(body, cpu_svn=cpu_svn, tee_tcb_info_valid=tee_tcb_info_valid, mac=mac)
    assert len(raw) == L.TDREPORT_SIZE
    return raw

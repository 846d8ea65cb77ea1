"""The TDX ABI between a TD guest and its host, written once for both sides (docs/memory-model.md §2,
§4.3, §4.4, §8; the TDX module ABI specification, the GHCI specification, Linux
``arch/x86/include/asm/shared/tdx.h`` and ``arch/x86/coco/tdx/tdx.c``).

The guest library builds its TDCALLs and reads their completion statuses with these numbers; the host's TDX
module and KVM produce them. Nothing here does anything: leaves, statuses, sizes and the GHCI GetQuote buffer
header.
"""

from __future__ import annotations

import enum
import struct
from typing import Final

PAGE_SIZE: Final = 4096
PAGE_SIZE_2M: Final = 2 << 20


class TdVmCall(enum.IntEnum):
    """TDG.VP.VMCALL sub-functions (R11) the host serves (GHCI ``MapGPA`` and ``GetQuote``)."""

    MAP_GPA = 0x10001
    GET_QUOTE = 0x10002


class TdVmCallStatus(enum.IntEnum):
    """TDG.VP.VMCALL completion status in R10 (GHCI; docs/memory-model.md §2)."""

    SUCCESS = 0
    RETRY = 1
    INVALID_OPERAND = 0x8000000000000000
    ALIGN_ERROR = 0x8000000000000002
    SUBFUNC_UNSUPPORTED = 0x8000000000000003


class AcceptLevel(enum.IntEnum):
    """The page level of TDG.MEM.PAGE.ACCEPT (RCX bits 2:0)."""

    PAGE_4K = 0
    PAGE_2M = 1
    PAGE_1G = 2


class TdxStatus(enum.IntEnum):
    """TDX module completion status classes (RAX bits 63:32; intel/tdx-module ``tdx_error_codes_defs.h``).

    Bit 63 marks an error, bit 62 a non-recoverable one; a status with bit 63 clear and a non-zero class is a
    warning (PAGE_ALREADY_ACCEPTED). Bits 31:0 name an operand (:class:`OperandId`) or, for ACCEPT, the level.
    """

    SUCCESS = 0
    NON_RECOVERABLE_VCPU = 0x4000000100000000
    NON_RECOVERABLE_TD = 0x6000000200000000
    INTERRUPTED_RESUMABLE = 0x8000000300000000
    NON_RECOVERABLE_TD_NON_ACCESSIBLE = 0x6000000500000000
    OPERAND_INVALID = 0xC000010000000000
    OPERAND_ADDR_RANGE_ERROR = 0xC000010100000000
    OPERAND_BUSY = 0x8000020000000000
    PREVIOUS_TLB_EPOCH_BUSY = 0x8000020100000000
    RND_NO_ENTROPY = 0x8000020300000000
    PAGE_METADATA_INCORRECT = 0xC000030000000000
    PAGE_ALREADY_FREE = 0x0000030100000000
    LIFECYCLE_STATE_INCORRECT = 0xC000060700000000
    OP_STATE_INCORRECT = 0xC000060800000000
    KEY_GENERATION_FAILED = 0x8000080000000000
    KEY_STATE_INCORRECT = 0xC000081100000000
    KEY_CONFIGURED = 0x0000081500000000
    NO_HKID_READY_TO_WBCACHE = 0x0000082100000000
    FLUSHVP_NOT_DONE = 0x8000082400000000
    EPT_WALK_FAILED = 0xC0000B0000000000
    EPT_ENTRY_FREE = 0xC0000B0100000000
    EPT_ENTRY_NOT_FREE = 0xC0000B0200000000
    EPT_ENTRY_NOT_PRESENT = 0xC0000B0300000000
    GPA_RANGE_NOT_BLOCKED = 0xC0000B0600000000
    GPA_RANGE_ALREADY_BLOCKED = 0x00000B0700000000
    TLB_TRACKING_NOT_DONE = 0xC0000B0800000000
    PAGE_ALREADY_ACCEPTED = 0x00000B0A00000000
    PAGE_SIZE_MISMATCH = 0xC0000B0B00000000
    GPA_RANGE_BLOCKED = 0xC0000B0C00000000
    EPT_ENTRY_STATE_INCORRECT = 0xC0000B0D00000000


class OperandId(enum.IntEnum):
    """Operand ids in status bits 31:0 (registers and TDX module structures)."""

    RCX = 0x1
    RDX = 0x2
    R8 = 0x8
    TDR = 0x80
    SEPT = 0x92
    TD_EPOCH = 0xA9
    KOT = 0xBA


ERROR_BIT: Final = 1 << 63
CLASS_MASK: Final = 0xFFFFFFFF00000000
DETAIL_MASK: Final = 0xFFFFFFFF


def is_error(status: int) -> bool:
    """Bit 63: an error. With bit 63 clear a non-zero status is a warning (PAGE_ALREADY_ACCEPTED)."""
    return bool(status & ERROR_BIT)


def status_name(status: int, *, detail_is_level: bool = False) -> str:
    """``EPT_ENTRY_STATE_INCORRECT|RCX``-style name of a 64-bit status; hex when the class is unknown.

    TDG.MEM.PAGE.ACCEPT puts the page level, not an operand id, in bits 31:0: ``detail_is_level`` names it
    as a number (``PAGE_ALREADY_ACCEPTED|1``).
    """
    try:
        name = TdxStatus(status & CLASS_MASK).name
    except ValueError:
        return f"0x{status:016X}"
    detail = status & DETAIL_MASK
    if detail_is_level:
        return f"{name}|{detail}"
    if not detail:
        return name
    try:
        return f"{name}|{OperandId(detail).name}"
    except ValueError:
        return f"{name}|0x{detail:X}"


# The GHCI TDG.VP.VMCALL<GetQuote> buffer in shared memory: a header, then the TDREPORT in and the quote out.
GET_QUOTE_HEADER: Final = struct.Struct("<QQII")
"""u64 version, u64 status, u32 in_len (TDREPORT bytes), u32 out_len (quote bytes)."""
GET_QUOTE_VERSION: Final = 1


class GetQuoteStatus(enum.IntEnum):
    """The status field of the GetQuote buffer header (GHCI; Linux ``GET_QUOTE_*``)."""

    SUCCESS = 0
    IN_FLIGHT = 0xFFFF_FFFF_FFFF_FFFF
    ERROR = 0x8000_0000_0000_0000
    QGS_UNAVAILABLE = 0x8000_0000_0000_0001


TDREPORT_SIZE: Final = 1024
REPORTDATA_SIZE: Final = 64
MR_SIZE: Final = 48
"""MRTD, RTMRs, MRCONFIGID, MROWNER and MROWNERCONFIG are SHA-384 sized; TDG.MR.RTMR.EXTEND reads one
48-byte digest at a 64-byte aligned private GPA."""

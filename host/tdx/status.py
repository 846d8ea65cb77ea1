"""TDX module completion status codes (memory-model.md §4.4, from intel/tdx-module
``include/auto_gen/tdx_error_codes_defs.h``) and the TDVMCALL status codes (§2).

A status is a 64-bit value: bits 63:32 the class (bit 63 error, bit 62 non-recoverable),
bits 31:0 an operand id (RCX 1, TDR 0x80, SEPT 0x92, ...). Warnings have bit 63 clear.
"""

from __future__ import annotations

import enum


class TdxStatus(enum.IntEnum):
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
    RCX = 0x1
    RDX = 0x2
    R8 = 0x8
    TDR = 0x80
    SEPT = 0x92
    TD_EPOCH = 0xA9
    KOT = 0xBA


ERROR_BIT = 1 << 63
NON_RECOVERABLE_BIT = 1 << 62
CLASS_MASK = 0xFFFFFFFF00000000


def is_error(status: int) -> bool:
    """True for errors; warnings such as PAGE_ALREADY_ACCEPTED have bit 63 clear."""
    return bool(status & ERROR_BIT)


def status_name(status: int) -> str:
    """``EPT_ENTRY_STATE_INCORRECT|RCX``-style name of a 64-bit status value."""
    try:
        name = TdxStatus(status & CLASS_MASK).name
    except ValueError:
        return f"0x{status:016X}"
    operand = status & 0xFFFFFFFF
    if not operand:
        return name
    try:
        return f"{name}|{OperandId(operand).name}"
    except ValueError:
        return f"{name}|0x{operand:X}"


class TdxError(Exception):
    """A SEAMCALL/TDCALL leaf completed with an error status (bit 63 set)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status_name(status)} (0x{status:016X}): {message}")
        self.status = status
        self.message = message


class TdVmCallStatus(enum.IntEnum):
    """TDG.VP.VMCALL completion status in R10 (memory-model.md §2)."""

    SUCCESS = 0
    RETRY = 1
    INVALID_OPERAND = 0x8000000000000000
    TDREPORT_FAILED = 0x8000000000000001
    ALIGN_ERROR = 0x8000000000000002
    SUBFUNC_UNSUPPORTED = 0x8000000000000003

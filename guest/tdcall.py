"""TDCALL and TDVMCALL as the guest issues them: leaf numbers, status codes and one builder per instruction
(memory-model.md §2, §4.3, §4.4, §8; Linux ``arch/x86/coco/tdx/tdx.c``,
``arch/x86/include/asm/shared/tdx.h``).

This is the hazardous-materials layer of the guest library: each function returns one
``tdxsim.v1.Instruction`` for :meth:`guest.td.Td.run` and does nothing else, so a caller can put many in
one batch. The recipes (accept a range with the 2M→4K fallback, MapGPA with RETRY, quote 64 bytes) are in
:mod:`guest.td`; use those unless you are testing the platform itself.
"""

from __future__ import annotations

from typing import Final

from wire.v1 import guest_pb2

PAGE: Final = 4096
PAGE_2M: Final = 2 << 20

# TDCALL leaves (RAX) the guest issues through Run.
TDG_VP_VMCALL: Final = 0
TDG_VP_INFO: Final = 1
TDG_MR_RTMR_EXTEND: Final = 2
TDG_MR_REPORT: Final = 4
TDG_MEM_PAGE_ACCEPT: Final = 6

# TDG.VP.VMCALL sub-functions (R11).
TDVMCALL_MAP_GPA: Final = 0x10001
TDVMCALL_GET_QUOTE: Final = 0x10002

# TDVMCALL status (R10).
TDVMCALL_SUCCESS: Final = 0
TDVMCALL_RETRY: Final = 1
TDVMCALL_INVALID_OPERAND: Final = 0x8000000000000000
TDVMCALL_ALIGN_ERROR: Final = 0x8000000000000002
TDVMCALL_SUBFUNC_UNSUPPORTED: Final = 0x8000000000000003

# TDX module status classes (RAX high 32 bits; the low 32 bits name the operand or, for ACCEPT, the level).
TDX_SUCCESS: Final = 0
TDX_ERROR_BIT: Final = 1 << 63
CLASS_MASK: Final = 0xFFFFFFFF00000000
TDX_OPERAND_INVALID: Final = 0xC000010000000000
TDX_PAGE_ALREADY_ACCEPTED: Final = 0x00000B0A00000000
TDX_PAGE_SIZE_MISMATCH: Final = 0xC0000B0B00000000
TDX_EPT_ENTRY_STATE_INCORRECT: Final = 0xC0000B0D00000000

# TDG.MEM.PAGE.ACCEPT levels (RCX bits 2:0).
LEVEL_4K: Final = 0
LEVEL_2M: Final = 1

# GHCI TDG.VP.VMCALL<GetQuote> buffer (shared memory): u64 version, u64 status, u32 in_len, u32 out_len, data.
GET_QUOTE_VERSION: Final = 1
GET_QUOTE_SUCCESS: Final = 0
GET_QUOTE_IN_FLIGHT: Final = 0xFFFF_FFFF_FFFF_FFFF
GET_QUOTE_ERROR: Final = 0x8000_0000_0000_0000
GET_QUOTE_QGS_UNAVAILABLE: Final = 0x8000_0000_0000_0001

TDREPORT_SIZE: Final = 1024
REPORTDATA_SIZE: Final = 64
RTMR_DATA_SIZE: Final = 48

_STATUS_NAMES: Final = {
    TDX_OPERAND_INVALID: "OPERAND_INVALID",
    TDX_PAGE_ALREADY_ACCEPTED: "PAGE_ALREADY_ACCEPTED",
    TDX_PAGE_SIZE_MISMATCH: "PAGE_SIZE_MISMATCH",
    TDX_EPT_ENTRY_STATE_INCORRECT: "EPT_ENTRY_STATE_INCORRECT",
}


def tdx_status_name(status: int) -> str:
    """``NAME|low`` for the TDX module status classes the guest meets, else the hex value."""
    name = _STATUS_NAMES.get(status & CLASS_MASK)
    if status == TDX_SUCCESS:
        return "SUCCESS"
    return f"{name}|{status & 0xFFFFFFFF}" if name else f"0x{status:016X}"


def is_error(status: int) -> bool:
    """Bit 63: an error; with bit 63 clear a non-zero status is a warning (PAGE_ALREADY_ACCEPTED)."""
    return bool(status & TDX_ERROR_BIT)


def read(gpa: int, length: int) -> guest_pb2.Instruction:
    """A memory read; ``gpa`` with the shared bit reads through the shared EPT."""
    return guest_pb2.Instruction(read=guest_pb2.GpaRange(gpa=gpa, length=length))


def write(gpa: int, data: bytes) -> guest_pb2.Instruction:
    """A memory write (private or shared by the GPA's shared bit)."""
    return guest_pb2.Instruction(write=guest_pb2.GpaData(gpa=gpa, data=data))


def accept(gpa: int, length: int, level: int = LEVEL_4K) -> guest_pb2.Instruction:
    """TDG.MEM.PAGE.ACCEPT (TDCALL 6) of every ``level``-sized page in [gpa, gpa + length)."""
    return guest_pb2.Instruction(accept=guest_pb2.AcceptRange(gpa=gpa, length=length, level=level))


def map_gpa(gpa: int, size: int) -> guest_pb2.Instruction:
    """TDG.VP.VMCALL<MapGPA> (R11 0x10001, R12 gpa, R13 size): shared bit set → shared, clear → private."""
    return guest_pb2.Instruction(map_gpa=guest_pb2.GpaRange(gpa=gpa, length=size))


def rtmr_extend(gpa: int, index: int) -> guest_pb2.Instruction:
    """TDG.MR.RTMR.EXTEND (TDCALL 2): RTMR[index] = SHA-384(RTMR[index] || 48 bytes at private ``gpa``)."""
    return guest_pb2.Instruction(rtmr_extend=guest_pb2.RtmrExtend(gpa=gpa, index=index))


def report(report_gpa: int, reportdata_gpa: int) -> guest_pb2.Instruction:
    """TDG.MR.REPORT (TDCALL 4): TDREPORT_STRUCT to ``report_gpa`` (1024-aligned) for the REPORTDATA at
    ``reportdata_gpa`` (64-aligned), both private."""
    return guest_pb2.Instruction(
        report=guest_pb2.Report(report_gpa=report_gpa, reportdata_gpa=reportdata_gpa)
    )


def get_quote(gpa: int, size: int) -> guest_pb2.Instruction:
    """TDG.VP.VMCALL<GetQuote> (R11 0x10002) on the shared GHCI buffer [gpa, gpa + size)."""
    return guest_pb2.Instruction(get_quote=guest_pb2.GpaRange(gpa=gpa, length=size))

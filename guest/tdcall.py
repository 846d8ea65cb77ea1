"""TDCALL and TDVMCALL as the guest issues them: one builder per instruction
(docs/memory-model.md §2, §4.3, §4.4, §8; Linux ``arch/x86/coco/tdx/tdx.c``,
``arch/x86/include/asm/shared/tdx.h``).

This is the hazardous-materials layer of the guest library: each function returns one
``tdxsim.v1.Instruction`` for :meth:`guest.td.Td.run` and does nothing else, so a caller can put many in
one batch. The recipes (accept a range with the 2M→4K fallback, MapGPA with RETRY, quote 64 bytes) are in
:mod:`guest.td`; use those unless you are testing the platform itself. The numbers (leaves, statuses,
the GetQuote buffer header) are the ABI the host shares: :mod:`wire.tdx_abi`.
"""

from __future__ import annotations

from wire.tdx_abi import AcceptLevel
from wire.v1 import guest_pb2


def read(gpa: int, length: int) -> guest_pb2.Instruction:
    """A memory read; ``gpa`` with the shared bit reads through the shared EPT."""
    return guest_pb2.Instruction(read=guest_pb2.GpaRange(gpa=gpa, length=length))


def write(gpa: int, data: bytes) -> guest_pb2.Instruction:
    """A memory write (private or shared by the GPA's shared bit)."""
    return guest_pb2.Instruction(write=guest_pb2.GpaData(gpa=gpa, data=data))


def accept(gpa: int, length: int, level: int = AcceptLevel.PAGE_4K) -> guest_pb2.Instruction:
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

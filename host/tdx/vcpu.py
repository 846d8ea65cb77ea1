"""What a TD vCPU executes and why it stops: guest instructions, TD exits and the vCPU state
that survives an exit (docs/memory-model.md §2, §5; TDX module ``td_ept_violation.c``,
``tdg_mem_page_accept.c``).

A guest request arrives as a list of :data:`GuestOp` (memory accesses, TDG.MEM.PAGE.ACCEPT,
TDG.VP.VMCALL<MapGPA>) held in a :class:`VcpuRun`, the simulator's TDVPS: the module executes
them in order and returns a :class:`TdExit` when the host must act (EPT violation, TDVMCALL,
machine check), when its timer takes the CPU back (:attr:`ExitReason.EXTERNAL_INTERRUPT`) or
:attr:`ExitReason.DONE`. Untrusted code passes a :class:`VcpuRun` through
without reading it; only the module and the guest-facing RPC see its data.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class MemRead:
    gpa: int
    length: int


@dataclass(frozen=True, slots=True)
class MemWrite:
    gpa: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Accept:
    """TDG.MEM.PAGE.ACCEPT for every page of [gpa, gpa + size) at ``level`` (0 = 4K, 1 = 2M, 2 = 1G)."""

    gpa: int
    size: int
    level: int = 0


@dataclass(frozen=True, slots=True)
class MapGpa:
    """TDG.VP.VMCALL<MapGPA> (R11 = 0x10001): shared bit set → to shared, clear → to private."""

    gpa: int
    size: int


@dataclass(frozen=True, slots=True)
class RtmrExtend:
    """TDG.MR.RTMR.EXTEND: RTMR[index] = SHA-384(RTMR[index] || 48 bytes at private ``gpa``)."""

    gpa: int
    index: int


@dataclass(frozen=True, slots=True)
class Report:
    """TDG.MR.REPORT: the TDREPORT for the REPORTDATA at ``reportdata_gpa`` goes to ``report_gpa``."""

    report_gpa: int
    reportdata_gpa: int


@dataclass(frozen=True, slots=True)
class GetQuote:
    """TDG.VP.VMCALL<GetQuote> (R11 = 0x10002) on the shared GHCI quote buffer at ``gpa``."""

    gpa: int
    size: int


GuestOp = MemRead | MemWrite | Accept | MapGpa | RtmrExtend | Report | GetQuote


@dataclass(slots=True)
class AcceptResult:
    accepted: int = 0
    already_accepted: int = 0
    #: Last non-success status (a warning such as PAGE_ALREADY_ACCEPTED|level, or an error).
    status: int = 0


@dataclass(frozen=True, slots=True)
class TdCallResult:
    status: int = 0


@dataclass(frozen=True, slots=True)
class TdVmCallResult:
    status: int
    failed_gpa: int = 0
    chunks: int = 0


class ExitReason(enum.Enum):
    DONE = "done"
    #: Private or shared GPA with no present leaf; ``size`` covers the run of consecutive
    #: missing pages inside the current instruction (at most 2 MiB).
    EPT_VIOLATION = "ept_violation"
    #: Access to a PENDING page with SEPT_VE_DISABLE=1: KVM kills the TD.
    PENDING_EPT_VIOLATION = "pending_ept_violation"
    TDVMCALL = "tdvmcall"
    #: A #VE was delivered to the guest (SEPT_VE_DISABLE=0, PENDING page touched).
    VE = "ve"
    #: The TD consumed poison (#MC): it is FATAL; VP.ENTER now fails.
    FATAL = "fatal"
    #: A TDCALL leaf completed with an error status the guest must see.
    TDCALL_ERROR = "tdcall_error"
    #: The host's timer interrupt took the CPU back between bounded chunks of guest work; nothing
    #: for the host to do but re-enter (unless it has something else to do first, such as a signal).
    EXTERNAL_INTERRUPT = "external_interrupt"


@dataclass(frozen=True, slots=True)
class TdExit:
    reason: ExitReason
    gpa: int = 0
    size: int = 0
    private: bool = False
    #: The faulting instruction was TDG.MEM.PAGE.ACCEPT.
    accept: bool = False
    status: int = 0
    subfunction: int = 0
    detail: str = ""
    #: FATAL: the physical address of the poisoned line the TD consumed (the machine check's MCi_ADDR).
    pa: int = -1


@dataclass
class VcpuRun:
    ops: list[GuestOp]
    index: int = 0
    #: Bytes (or pages, for ACCEPT) of ``ops[index]`` already done.
    offset: int = 0
    results: list[object] = field(default_factory=list)
    #: Read data of the current MemRead, filled as pages complete.
    buffer: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        self.results = [None] * len(self.ops)

"""What host userspace sees of KVM's TDX support: the types that cross the ioctl boundary
(docs/memory-model.md §6; Linux ``arch/x86/include/uapi/asm/kvm.h``,
``Documentation/virt/kvm/x86/intel-tdx.rst``).

- :class:`TdParams`: the TD's configuration that ``KVM_TDX_INIT_VM`` (``struct kvm_tdx_init_vm``) carries to
  TDH.MNG.INIT;
- :class:`VcpuRun` and :data:`GuestOp` (``MemRead`` … ``GetQuote``) with their results: the vCPU run
  area ``KVM_RUN`` executes (the simulator's guest instructions ride in it; userspace passes it through);
- :class:`TdxError`: a SEAMCALL error KVM surfaces to userspace; :class:`MachineCheck`: the #MC a host access
  to poisoned memory raises.

The VMM and the servicers import these from here and never from ``host.tdx``: host userspace reaches the
TDX module only through KVM.
"""

from __future__ import annotations

from host.tdx.memctl import MachineCheck
from host.tdx.status import TdxError
from host.tdx.tdcs import TdParams
from host.tdx.vcpu import (
    Accept,
    AcceptResult,
    GetQuote,
    GuestOp,
    MapGpa,
    MemRead,
    MemWrite,
    Report,
    RtmrExtend,
    TdCallResult,
    TdVmCallResult,
    VcpuRun,
)

__all__ = [
    "Accept",
    "AcceptResult",
    "GetQuote",
    "GuestOp",
    "MachineCheck",
    "MapGpa",
    "MemRead",
    "MemWrite",
    "Report",
    "RtmrExtend",
    "TdCallResult",
    "TdParams",
    "TdVmCallResult",
    "TdxError",
    "VcpuRun",
]

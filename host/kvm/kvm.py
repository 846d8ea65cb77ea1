"""/dev/kvm: VM creation and the TDX KeyID allocator (docs/memory-model.md §6.1, §6.6).

KVM allocates a TD's HKID from the module's private KeyID range (an IDA in Linux; exhausted
→ ENOSPC, the misc cgroup capacity is the number of TDX KeyIDs) and frees it after
TDH.MNG.KEY.FREEID.

The HKID pool and the VM numbering are shared by every VM and have their own lock, held for the
list operation only; everything else a VM does is its own (host/kvm/vm.py).
"""

from __future__ import annotations

import threading

from host.kvm.errors import KvmError, einval
from host.kvm.pagealloc import PageAllocator
from host.kvm.usermem import AddressSpace
from host.kvm.vm import KVM_X86_TDX_VM, KvmVm
from host.tdx.hostbus import HostMemoryBus
from host.tdx.module import TdxModule
from host.tdx.tdcs import TdParams


class Kvm:
    def __init__(
        self,
        module: TdxModule,
        bus: HostMemoryBus,
        pages: PageAllocator,
        mm: AddressSpace,
        *,
        legacy: bool = False,
        map_gpa_retry_every: int = 0,
    ) -> None:
        self._module = module
        self._bus = bus
        self.pages = pages
        self._mm = mm
        self.legacy = legacy
        self.map_gpa_retry_every = map_gpa_retry_every
        info = module.tdh_sys_info()
        self.integrity = info.integrity
        self.keyids_total = info.keyid_count
        self._free_hkids = list(range(info.keyid_first + info.keyid_count - 1, info.keyid_first - 1, -1))
        self._next_vm = 1
        self._lock = threading.Lock()

    @property
    def keyids_free(self) -> int:
        with self._lock:
            return len(self._free_hkids)

    def poisoned_lines(self) -> int:
        """Lines the memory controller reports poisoned (machine-check records, as the kernel logs them)."""
        return self._module.poisoned_lines

    @property
    def phys_bytes(self) -> int:
        return self._bus.phys_bytes

    def kernel_read(self, pa: int, length: int) -> bytes:
        """The host kernel's own load from physical memory (its direct map, ``/dev/mem``), KeyID 0: TD-owned
        lines read as zeros; a poisoned line raises :class:`~host.kvm.uapi.MachineCheck` (a host #MC)."""
        return self._bus.read([(pa, length)])[0]

    def kernel_write(self, pa: int, data: bytes) -> None:
        """The host kernel's own store to physical memory, KeyID 0: clears the TD-owner bit of every line it
        touches, so the TD's next read of them is a machine check (docs/memory-model.md §7)."""
        self._bus.write([(pa, data)])

    def create_vm(self, vm_type: int) -> KvmVm:
        if vm_type != KVM_X86_TDX_VM:
            raise einval(f"VM type {vm_type} is not KVM_X86_TDX_VM ({KVM_X86_TDX_VM})")
        with self._lock:
            vm_id = self._next_vm
            self._next_vm += 1
        return KvmVm(
            vm_id,
            self._module,
            self.pages,
            self._mm,
            self._bus,
            self._release_hkid,
            legacy=self.legacy,
            map_gpa_retry_every=self.map_gpa_retry_every,
        )

    def tdx_init_vm(self, vm: KvmVm, params: TdParams) -> None:
        """KVM_TDX_INIT_VM: allocate an HKID, then MNG.CREATE / KEY.CONFIG / ADDCX / MNG.INIT."""
        with self._lock:
            if not self._free_hkids:
                raise KvmError("ENOSPC", f"all {self.keyids_total} TDX KeyIDs are in use")
            hkid = self._free_hkids.pop()
        try:
            vm.tdx_init_vm(params, hkid)
        except BaseException:
            self._release_hkid(hkid)
            raise

    def _release_hkid(self, hkid: int) -> None:
        with self._lock:
            self._free_hkids.append(hkid)

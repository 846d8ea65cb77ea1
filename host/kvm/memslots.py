"""KVM memslots, KVM_SET_USER_MEMORY_REGION2 (docs/memory-model.md §1.4; Linux ``kvm_main.c``
``kvm_set_memory_region``, ``guest_memfd.c`` ``kvm_gmem_bind``).

A memslot maps [guest_phys_addr, +memory_size) to host userspace memory (the shared side)
and, with KVM_MEM_GUEST_MEMFD, to a range of a guest_memfd (the private side).
"""

from __future__ import annotations

from dataclasses import dataclass

KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1
KVM_MEM_GUEST_MEMFD = 1 << 2
VALID_FLAGS = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD
KVM_USER_MEM_SLOTS = 32764


@dataclass(frozen=True)
class Memslot:
    slot: int
    flags: int
    base_gfn: int
    npages: int
    userspace_addr: int
    guest_memfd: int = -1
    gmem_first: int = 0  # page index in the guest_memfd

    @property
    def end_gfn(self) -> int:
        return self.base_gfn + self.npages

    def hva(self, gfn: int) -> int:
        return self.userspace_addr + ((gfn - self.base_gfn) << 12)

    def gmem_index(self, gfn: int) -> int:
        return self.gmem_first + gfn - self.base_gfn


class MemslotTable:
    def __init__(self) -> None:
        self.slots: dict[int, Memslot] = {}

    def find(self, gfn: int) -> Memslot | None:
        for slot in self.slots.values():
            if slot.base_gfn <= gfn < slot.end_gfn:
                return slot
        return None

    def overlaps(self, base_gfn: int, npages: int, ignore: int) -> Memslot | None:
        for slot in self.slots.values():
            if slot.slot != ignore and base_gfn < slot.end_gfn and slot.base_gfn < base_gfn + npages:
                return slot
        return None

"""guest_memfd files: KVM_CREATE_GUEST_MEMFD and fallocate (docs/memory-model.md §1.1–§1.3; Linux
``virt/kvm/guest_memfd.c``).

A guest_memfd is bound to its VM, cannot be read, written, mapped or resized by host
userspace, and supports fallocate ALLOCATE and PUNCH_HOLE. Its pages are physical frames the
host never maps; a punched page's contents are gone and the next use gets a zeroed page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from host.kvm.errors import KvmError
from host.kvm.pagealloc import PAGE, PageAllocator

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
GUEST_MEMFD_FLAG_MMAP = 1 << 0
GUEST_MEMFD_FLAG_INIT_SHARED = 1 << 1
#: Flags a TDX VM accepts: 6.8–6.17 none; MMAP on 6.18+ is for shared-only use, not TDX.
SUPPORTED_FLAGS = 0


@dataclass
class GuestMemfd:
    fd: int
    vm_id: int
    size: int
    flags: int
    pages: dict[int, int] = field(default_factory=dict)  # page index → pa
    #: (first index, end index, slot id) of the memslots bound to this file.
    bindings: list[tuple[int, int, int]] = field(default_factory=list)
    closed: bool = False

    @staticmethod
    def check_create(size: int, flags: int) -> None:
        if flags & ~SUPPORTED_FLAGS:
            raise KvmError("EINVAL", f"unsupported guest_memfd flags 0x{flags:x}")
        if size <= 0 or size % PAGE or size >= 1 << 63:  # loff_t: a size that is negative as s64
            raise KvmError("EINVAL", f"size {size} is not a positive multiple of the page size")

    def read(self) -> None:
        raise KvmError(
            "EINVAL", "guest_memfd has no read/write: private memory is never readable by the host"
        )

    def mmap(self) -> None:
        raise KvmError("ENODEV", "guest_memfd cannot be mapped into host userspace")

    def truncate(self) -> None:
        raise KvmError("EINVAL", "guest_memfd cannot be resized")

    def page(self, index: int, pages: PageAllocator) -> int:
        """The page at ``index``, allocated on first use (kvm_gmem_get_pfn)."""
        pa = self.pages.get(index)
        if pa is None:
            pa = self.pages[index] = pages.alloc()
        return pa

    def fallocate(
        self,
        mode: int,
        offset: int,
        length: int,
        pages: PageAllocator,
        punch: Callable[[list[int]], None],
    ) -> None:
        """fallocate(2). ``punch`` gets the page indices to zap from every binding and free."""
        if not mode & FALLOC_FL_KEEP_SIZE or mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE):
            raise KvmError("EOPNOTSUPP", f"fallocate mode 0x{mode:x} is not supported (need KEEP_SIZE)")
        if length <= 0 or offset < 0 or offset % PAGE or length % PAGE:
            raise KvmError("EINVAL", f"offset {offset} / length {length} are not page-aligned")
        first, count = offset // PAGE, length // PAGE
        if mode & FALLOC_FL_PUNCH_HOLE:
            # Always succeeds, even beyond i_size: only allocated pages are touched.
            if count > len(self.pages):
                indices = sorted(i for i in self.pages if first <= i < first + count)
            else:
                indices = [i for i in range(first, first + count) if i in self.pages]
            if indices:
                punch(indices)
            return
        if offset + length > self.size:
            raise KvmError("EINVAL", f"allocation beyond the file size ({offset + length} > {self.size})")
        missing = [i for i in range(first, first + count) if i not in self.pages]
        for index, pa in zip(missing, pages.alloc_many(len(missing)), strict=True):
            self.pages[index] = pa

    def is_bound(self, first: int, end: int) -> bool:
        return any(first < b_end and b_first < end for b_first, b_end, _ in self.bindings)

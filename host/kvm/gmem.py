"""guest_memfd files: KVM_CREATE_GUEST_MEMFD and fallocate (docs/memory-model.md §1.1–§1.3; Linux
``virt/kvm/guest_memfd.c``).

A guest_memfd is bound to its VM, cannot be read, written, mapped or resized by host
userspace, and supports fallocate ALLOCATE and PUNCH_HOLE. Its pages are physical frames the
host never maps; a punched page's contents are gone and the next use gets a zeroed page.

Both fallocate modes cost what they touch, never the length asked for: the pages are a
:class:`~host.kvm.pagemap.PageMap`, so a hole punch visits only allocated pages, and an allocation
counts what is missing before it takes anything, refuses at once what free memory cannot hold, and
then allocates folio by folio (:data:`~host.kvm.pagealloc.CHUNK` pages at a time), stopping with
EINTR when a signal is pending, as ``kvm_gmem_allocate`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from host.kvm.errors import KvmError
from host.kvm.pagealloc import CHUNK, PAGE, PageAllocator
from host.kvm.pagemap import PageMap

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
    pages: PageMap = field(default_factory=PageMap)  # page index → pa
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
        """read(2), pread(2): the file has no read operation (``kvm_gmem_fops``): the VFS says EINVAL."""
        raise KvmError(
            "EINVAL", "guest_memfd has no read/write: private memory is never readable by the host"
        )

    def write(self) -> None:
        """write(2)/pwrite(2): no write operation either: EINVAL."""
        raise KvmError(
            "EINVAL", "guest_memfd has no read/write: private memory is never writable by the host"
        )

    def mmap(self) -> None:
        """mmap(2): ``kvm_gmem_mmap`` refuses a file made without GUEST_MEMFD_FLAG_MMAP (before 6.18 there
        is no mmap operation at all): ENODEV."""
        raise KvmError("ENODEV", "guest_memfd cannot be mapped into host userspace")

    def truncate(self) -> None:
        """ftruncate(2): ``kvm_gmem_setattr`` answers EINVAL, the size is fixed at creation."""
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
        signal_pending: Callable[[], bool] = lambda: False,
    ) -> None:
        """fallocate(2). ``punch`` gets the page indices to zap from every binding and free.

        ALLOCATE (``kvm_gmem_allocate``): the pages already there are counted first, and a request for
        more than the free memory fails with ENOMEM before anything is allocated (Linux finds out folio
        by folio and fails with the same errno, after taking what there was); otherwise the missing
        pages are allocated in chunks, each chunk kept, and a pending signal between chunks ends the
        call with EINTR (the pages allocated so far stay, as in Linux)."""
        if not mode & FALLOC_FL_KEEP_SIZE or mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE):
            raise KvmError("EOPNOTSUPP", f"fallocate mode 0x{mode:x} is not supported (need KEEP_SIZE)")
        if length <= 0 or offset < 0 or offset % PAGE or length % PAGE:
            raise KvmError("EINVAL", f"offset {offset} / length {length} are not page-aligned")
        first, count = offset // PAGE, length // PAGE
        if mode & FALLOC_FL_PUNCH_HOLE:
            # Always succeeds, even beyond i_size: only allocated pages are touched.
            indices = self.pages.keys_in(first, first + count)
            if indices:
                punch(indices)
            return
        if offset + length > self.size:
            raise KvmError("EINVAL", f"allocation beyond the file size ({offset + length} > {self.size})")
        missing = count - self.pages.count_in(first, first + count)
        free = pages.free_pages
        if missing > free:
            raise KvmError("ENOMEM", f"fallocate needs {missing} more pages, {free} are free")
        index, end = first, first + count
        while missing and index < end:
            if signal_pending():
                raise KvmError("EINTR", f"fallocate interrupted at offset {index * PAGE}")
            stop = min(end, index + CHUNK)
            holes = [i for i in range(index, stop) if i not in self.pages]
            for hole, pa in zip(holes, pages.alloc_many(len(holes)), strict=True):
                self.pages[hole] = pa
            missing -= len(holes)
            index = stop

    def is_bound(self, first: int, end: int) -> bool:
        return any(first < b_end and b_first < end for b_first, b_end, _ in self.bindings)

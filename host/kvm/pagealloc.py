"""The host kernel's page allocator over simulated physical memory.

Frames are handed out from a free list, lowest address first when the pool is fresh, so
consecutive allocations are physically contiguous (as a buddy allocator behaves on an idle
machine); that keeps guest_memfd-backed runs contiguous for the memory controller's batch
path. Freed frames are reused last-in first-out.

Shared by every VM, so it has its own lock, held only for the list operations of one call: a large
allocation is made by its caller in bounded chunks (:data:`CHUNK` pages), never in one call, so no
request keeps the others waiting in proportion to its size (docs/memory-model.md §1.3).
"""

from __future__ import annotations

import threading

from host.kvm.errors import KvmError

PAGE = 4096
#: Pages one allocation or free call handles at most (one 2 MiB folio's worth).
CHUNK = 512


class PageAllocator:
    def __init__(self, phys_bytes: int, *, reserved_bytes: int = 1 << 20) -> None:
        self.total = (phys_bytes - reserved_bytes) // PAGE
        self._next = reserved_bytes  # never-used frames start here
        self._end = phys_bytes
        self._free: list[int] = []
        self._lock = threading.Lock()

    @property
    def free_pages(self) -> int:
        with self._lock:
            return self._free_pages()

    def _free_pages(self) -> int:
        return len(self._free) + (self._end - self._next) // PAGE

    def _take(self) -> int:
        if self._free:
            return self._free.pop()
        if self._next >= self._end:
            raise KvmError("ENOMEM", "out of physical memory")
        pa = self._next
        self._next += PAGE
        return pa

    def alloc(self) -> int:
        with self._lock:
            return self._take()

    def alloc_many(self, count: int) -> list[int]:
        """``count`` frames, all or none (ENOMEM when fewer are free)."""
        with self._lock:
            free = self._free_pages()
            if count > free:
                raise KvmError("ENOMEM", f"out of physical memory ({count} pages asked, {free} free)")
            return [self._take() for _ in range(count)]

    def free(self, pa: int) -> None:
        with self._lock:
            self._free.append(pa)

    def free_many(self, pas: list[int]) -> None:
        with self._lock:
            self._free.extend(pas)

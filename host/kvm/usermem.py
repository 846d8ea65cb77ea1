"""Host userspace memory: the VMM process's anonymous mappings (mmap/munmap/madvise).

Each mapping is a range of host virtual addresses whose pages get a physical frame on first
touch (demand paging) and lose it on MADV_DONTNEED (reads as zeros afterwards). All accesses
go through the KeyID-0 host bus: this is how host userspace touches memory. In legacy memory
mode the TD's private memory is such a mapping too, which is exactly what the 2021 RFC removed
(docs/memory-model.md §3).

The mapping table is shared by every TD's memslots and has its own lock (held for a lookup or a
change of the table only); the frames of one mapping belong to the memslot that made it and are
changed only under that TD's lock. Frames are a :class:`~host.kvm.pagemap.PageMap`, so MADV_DONTNEED
of a large range costs the frames it finds, not the range's length.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from host.kvm.errors import KvmError
from host.kvm.pagealloc import PAGE, PageAllocator
from host.kvm.pagemap import PageMap
from host.tdx.hostbus import HostMemoryBus

USER_BASE = 0x7F00_0000_0000


@dataclass
class Mapping:
    start: int
    size: int
    frames: PageMap = field(default_factory=PageMap)  # page index → pa


class AddressSpace:
    def __init__(self, bus: HostMemoryBus, pages: PageAllocator) -> None:
        self._bus = bus
        self._pages = pages
        self._maps: dict[int, Mapping] = {}
        self._next = USER_BASE
        self._lock = threading.Lock()

    def mmap(self, size: int) -> int:
        if size <= 0 or size % PAGE:
            raise KvmError("EINVAL", "mmap length must be a positive multiple of the page size")
        with self._lock:
            start = self._next
            self._next += size + (2 << 20)  # a guard gap between mappings
            self._maps[start] = Mapping(start, size)
        return start

    def munmap(self, start: int) -> None:
        with self._lock:
            mapping = self._maps.pop(start, None)
        if mapping is None:
            raise KvmError("EINVAL", f"no mapping at 0x{start:x}")
        self._release(mapping, list(mapping.frames))

    def _find(self, hva: int, length: int) -> Mapping:
        with self._lock:
            for mapping in self._maps.values():
                if mapping.start <= hva and hva + length <= mapping.start + mapping.size:
                    return mapping
        raise KvmError("EFAULT", f"0x{hva:x}+{length} is not mapped in host userspace")

    def contains(self, hva: int, length: int) -> bool:
        try:
            self._find(hva, length)
        except KvmError:
            return False
        return True

    def frame(self, hva: int, *, populate: bool = True) -> int | None:
        """Physical frame behind the page at ``hva`` (faulted in when ``populate``)."""
        mapping = self._find(hva, 1)
        index = (hva - mapping.start) // PAGE
        pa = mapping.frames.get(index)
        if pa is None and populate:
            pa = self._pages.alloc()
            self._bus.movdir64b_zero([(pa, PAGE)])
            mapping.frames[index] = pa
        return pa

    def frames_in(self, hva: int, length: int, limit: int | None = None) -> list[tuple[int, int]]:
        """(page index from ``hva``, frame) of the pages of [hva, hva + length) that have a frame, ascending
        (about ``limit`` at most, :meth:`PageMap.keys_in`); costs the frames there, not the length. Empty when
        nothing is mapped at ``hva``."""
        with self._lock:
            mapping = next((m for m in self._maps.values() if m.start <= hva < m.start + m.size), None)
        if mapping is None:
            return []
        first = (hva - mapping.start) // PAGE
        last = min(first + -(-length // PAGE), mapping.size // PAGE)
        indices = mapping.frames.keys_in(first, last, limit)
        return [(index - first, mapping.frames[index]) for index in indices]

    def _runs(self, hva: int, length: int) -> list[tuple[int, int, int]]:
        runs: list[tuple[int, int, int]] = []  # (pa, offset, n)
        pos = 0
        while pos < length:
            addr = hva + pos
            n = min(length - pos, PAGE - addr % PAGE)
            pa = self.frame(addr)
            assert pa is not None
            pa += addr % PAGE
            if runs and runs[-1][0] + runs[-1][2] == pa:
                runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + n)
            else:
                runs.append((pa, pos, n))
            pos += n
        return runs

    def read(self, hva: int, length: int) -> bytes:
        self._find(hva, length)
        return b"".join(self._bus.read([(pa, n) for pa, _, n in self._runs(hva, length)]))

    def write(self, hva: int, data: bytes) -> None:
        self._find(hva, len(data))
        view = memoryview(data)
        self._bus.write([(pa, view[off : off + n]) for pa, off, n in self._runs(hva, len(data))])

    def madvise_dontneed(self, hva: int, length: int) -> int:
        """Drop the frames of [hva, hva + length); returns how many were freed."""
        mapping = self._find(hva, length)
        first = (hva - mapping.start) // PAGE
        indices = mapping.frames.keys_in(first, first + length // PAGE)
        self._release(mapping, indices)
        return len(indices)

    def _release(self, mapping: Mapping, indices: list[int]) -> None:
        self._pages.free_many([mapping.frames.pop(index) for index in indices])

    @property
    def resident_pages(self) -> int:
        with self._lock:
            maps = list(self._maps.values())
        return sum(len(m.frames) for m in maps)

"""Guest-physical memory bookkeeping of a TD: which private pages are accepted, a private page allocator and a
shared bounce-buffer pool. No I/O: :class:`guest.td.Td` calls these and issues the TDCALLs.

What is modelled (docs/memory-model.md §2, §5):

- **Accepted set.** After finalize, only the pages the host ADDed at launch (the measured payload) are MAPPED;
  every other private page must be TDG.MEM.PAGE.ACCEPTed before the guest touches it (touching a PENDING page
  kills the TD with SEPT_VE_DISABLE=1, or raises #VE). Linux keeps this in the unaccepted-memory bitmap and
  accepts lazily on allocation (``accept_memory()`` from the page allocator); :class:`PrivateAllocator` does
  the same: ``alloc`` returns the sub-ranges still to accept, the caller accepts them in one batch.
- **Conversion is destructive.** A range converted to shared leaves the accepted set (its private pages are
  removed); converting back gives zeroed PENDING pages that must be accepted again.
- **Bounce buffers.** Like swiotlb in a TDX guest (``swiotlb_update_mem_attributes()`` →
  ``set_memory_decrypted()`` once at boot), :class:`BouncePool` is one region converted to shared once and
  then carved into buffers for I/O with the host (the GHCI GetQuote buffer, device DMA).

Ranges are half-open ``[start, end)`` byte ranges, page-aligned.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

from wire.tdx_abi import PAGE_SIZE as PAGE


def _page_up(n: int) -> int:
    return -(-n // PAGE) * PAGE


class RangeSet:
    """A set of disjoint, coalesced half-open ranges."""

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges:
            self.add(start, end)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self._starts, self._ends, strict=True))

    def __len__(self) -> int:
        return len(self._starts)

    def total(self) -> int:
        return sum(e - s for s, e in self)

    def add(self, start: int, end: int) -> None:
        if start >= end:
            return
        i = bisect.bisect_left(self._ends, start)
        j = bisect.bisect_right(self._starts, end)
        if i < j:
            start = min(start, self._starts[i])
            end = max(end, self._ends[j - 1])
        self._starts[i:j] = [start]
        self._ends[i:j] = [end]

    def remove(self, start: int, end: int) -> None:
        if start >= end:
            return
        i = bisect.bisect_right(self._ends, start)
        j = bisect.bisect_left(self._starts, end)
        keep_s: list[int] = []
        keep_e: list[int] = []
        for s, e in zip(self._starts[i:j], self._ends[i:j], strict=True):
            if s < start:
                keep_s.append(s)
                keep_e.append(start)
            if e > end:
                keep_s.append(end)
                keep_e.append(e)
        self._starts[i:j] = keep_s
        self._ends[i:j] = keep_e

    def contains(self, start: int, end: int) -> bool:
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def overlaps(self, start: int, end: int) -> bool:
        i = bisect.bisect_right(self._ends, start)
        return i < len(self._starts) and self._starts[i] < end

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of [start, end) not in the set."""
        gaps: list[tuple[int, int]] = []
        pos = start
        i = bisect.bisect_right(self._ends, start)
        while pos < end:
            if i >= len(self._starts) or self._starts[i] >= end:
                gaps.append((pos, end))
                break
            if self._starts[i] > pos:
                gaps.append((pos, self._starts[i]))
            pos = max(pos, self._ends[i])
            i += 1
        return gaps


class OutOfMemory(Exception):
    """No free range of the requested size."""


class _FirstFit:
    """First-fit allocation over a free RangeSet with per-allocation sizes."""

    def __init__(self, free: RangeSet) -> None:
        self.free = free
        self.used: dict[int, int] = {}

    def alloc(self, size: int, align: int) -> int:
        size = _page_up(max(size, 1))
        for start, end in self.free:
            gpa = -(-start // align) * align
            if gpa + size <= end:
                self.free.remove(gpa, gpa + size)
                self.used[gpa] = size
                return gpa
        raise OutOfMemory(f"no free range of {size} bytes (aligned to {align})")

    def free_at(self, gpa: int) -> int:
        size = self.used.pop(gpa, None)
        if size is None:
            raise ValueError(f"0x{gpa:x} is not an allocation")
        self.free.add(gpa, gpa + size)
        return size


class PrivateAllocator:
    """Private pages of a TD of ``memory_bytes`` (GPA 0 up), minus ``reserved`` ranges (payload, bounce pool).

    ``accepted`` starts as the ``preaccepted`` ranges (pages the host ADDed at launch are MAPPED)."""

    def __init__(
        self,
        memory_bytes: int,
        reserved: Iterable[tuple[int, int]] = (),
        preaccepted: Iterable[tuple[int, int]] = (),
    ) -> None:
        free = RangeSet([(0, memory_bytes)])
        for start, end in reserved:
            free.remove(start - start % PAGE, _page_up(end))
        self.memory_bytes = memory_bytes
        self._fit = _FirstFit(free)
        self.accepted = RangeSet((s - s % PAGE, _page_up(e)) for s, e in preaccepted)

    def alloc(self, size: int, align: int = PAGE) -> tuple[int, list[tuple[int, int]]]:
        """Reserve ``size`` bytes (rounded up to pages); returns the GPA and the sub-ranges the caller must
        accept before use (mark them with :meth:`mark_accepted` once accepted)."""
        gpa = self._fit.alloc(size, max(align, PAGE))
        return gpa, self.accepted.missing(gpa, gpa + self._fit.used[gpa])

    def free(self, gpa: int) -> None:
        """Give an allocation back; its pages stay private and accepted (no reason to convert)."""
        self._fit.free_at(gpa)

    def size_of(self, gpa: int) -> int:
        return self._fit.used[gpa]

    def free_bytes(self) -> int:
        return self._fit.free.total()

    def mark_accepted(self, start: int, end: int) -> None:
        self.accepted.add(start, end)

    def mark_converted_to_shared(self, start: int, end: int) -> None:
        """The private pages of [start, end) were removed: accept again after converting back."""
        self.accepted.remove(start, end)


class BouncePool:
    """Shared buffers carved from one region [base, base + size) of private GPAs (without the shared bit)."""

    def __init__(self, base: int, size: int) -> None:
        self.base = base
        self.size = size
        self._fit = _FirstFit(RangeSet([(base, base + size)]))
        #: The region has been converted to shared (done once, on first use).
        self.shared = False

    def alloc(self, size: int) -> int:
        return self._fit.alloc(size, PAGE)

    def free(self, gpa: int) -> None:
        self._fit.free_at(gpa)

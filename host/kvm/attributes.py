"""Per-VM memory attributes, KVM_SET_MEMORY_ATTRIBUTES (docs/memory-model.md §1.5).

Stored as ranges (sorted boundaries; a gfn's value is that of the last boundary at or below
it), so converting a 64 GiB range costs about as much as converting 2 MiB. Default: all
memory shared ("At VM creation time, all memory is shared"). Only
KVM_MEMORY_ATTRIBUTE_PRIVATE exists; there is no "get" uAPI (``get`` is for KVM itself).
"""

from __future__ import annotations

import bisect

KVM_MEMORY_ATTRIBUTE_PRIVATE = 1 << 3


class AttributeMap:
    def __init__(self) -> None:
        # Boundaries: gfn where a run of equal attributes starts, with that value. gfn 0 → 0.
        self._starts: list[int] = [0]
        self._values: list[int] = [0]

    def get(self, gfn: int) -> int:
        return self._values[bisect.bisect_right(self._starts, gfn) - 1]

    def runs(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """(first gfn, end gfn, value) runs covering [start, end)."""
        i = bisect.bisect_right(self._starts, start) - 1
        out = []
        pos = start
        while pos < end:
            nxt = self._starts[i + 1] if i + 1 < len(self._starts) else end
            stop = min(nxt, end)
            out.append((pos, stop, self._values[i]))
            pos = stop
            i += 1
        return out

    def uniform(self, start: int, end: int, value: int) -> bool:
        return all(v == value for _, _, v in self.runs(start, end))

    def set(self, start: int, end: int, value: int) -> None:
        """Give [start, end) the value ``value``; merges equal neighbours."""
        after = self.get(end)
        lo = bisect.bisect_left(self._starts, start)
        hi = bisect.bisect_right(self._starts, end)
        self._starts[lo:hi] = [start, end]
        self._values[lo:hi] = [value, after]
        self._coalesce(max(lo - 1, 0), lo + 3)

    def _coalesce(self, lo: int, hi: int) -> None:
        i = max(lo, 1)
        while i < min(hi, len(self._starts)):
            if self._values[i] == self._values[i - 1]:
                del self._starts[i]
                del self._values[i]
                hi -= 1
            else:
                i += 1

    def __len__(self) -> int:
        return len(self._starts)

"""A sparse map from page index to physical address whose range queries cost what is populated
(docs/memory-model.md §1.3, §1.5, §6.4).

KVM and the page cache keep such maps in radix trees (the guest_memfd's ``address_space`` xarray, the TDP
MMU's page tables): finding the pages of ``[start, end)`` walks only the populated parts of the tree, so
punching a hole in, zapping or converting a 32 TiB range that holds ten pages costs ten pages, not eight
billion. :class:`PageMap` is a dict (lookups at dict speed, on the fault paths) that also groups its indices
in blocks of 512 (one 2 MiB leaf table) with a sorted list of the populated blocks:
:meth:`PageMap.keys_in` and :meth:`PageMap.count_in` cost O(log blocks + populated blocks in the range +
entries), never the range's length.

Not locked: each map belongs to one VM, guest_memfd or mapping, which its owner's lock serialises.
"""

from __future__ import annotations

import bisect
from typing import Any, NoReturn

BLOCK_SHIFT = 9
BLOCK = 1 << BLOCK_SHIFT


class PageMap(dict[int, int]):
    """index → pa. Change it with ``m[i] = pa``, ``del m[i]``, :meth:`pop` and :meth:`clear` only (the
    other dict mutators would bypass the block index and are refused)."""

    __slots__ = ("_blocks", "_order")

    def __init__(self) -> None:
        super().__init__()
        #: block number → the indices present in it.
        self._blocks: dict[int, set[int]] = {}
        #: The populated block numbers, sorted.
        self._order: list[int] = []

    def __setitem__(self, index: int, pa: int) -> None:
        number = index >> BLOCK_SHIFT
        block = self._blocks.get(number)
        if block is None:
            block = self._blocks[number] = set()
            bisect.insort(self._order, number)
        block.add(index)
        dict.__setitem__(self, index, pa)

    def __delitem__(self, index: int) -> None:
        dict.__delitem__(self, index)
        number = index >> BLOCK_SHIFT
        block = self._blocks[number]
        block.discard(index)
        if not block:
            del self._blocks[number]
            del self._order[bisect.bisect_left(self._order, number)]

    def pop(self, index: int, *default: int) -> int:  # type: ignore[override]
        if index in self:
            pa = dict.__getitem__(self, index)
            del self[index]
            return pa
        if default:
            return default[0]
        raise KeyError(index)

    def clear(self) -> None:
        dict.clear(self)
        self._blocks.clear()
        self._order.clear()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("PageMap changes only through m[i] = pa, del m[i], pop() and clear()")

    update = setdefault = popitem = __ior__ = _refuse

    def _blocks_in(self, start: int, end: int) -> list[int]:
        """The populated block numbers that meet [start, end), ascending."""
        if end <= start:
            return []
        lo = bisect.bisect_left(self._order, start >> BLOCK_SHIFT)
        hi = bisect.bisect_right(self._order, (end - 1) >> BLOCK_SHIFT)
        return self._order[lo:hi]

    def keys_in(self, start: int, end: int, limit: int | None = None) -> list[int]:
        """The indices in [start, end) that are present, ascending; at most about ``limit`` of them (whole
        blocks: the first ``limit`` are exact, a few more may follow) when it is given."""
        out: list[int] = []
        for number in self._blocks_in(start, end):
            if limit is not None and len(out) >= limit:
                break
            block = self._blocks[number]
            first = number << BLOCK_SHIFT
            if start <= first and first + BLOCK <= end:
                out.extend(sorted(block))
            else:
                out.extend(sorted(i for i in block if start <= i < end))
        return out

    def count_in(self, start: int, end: int) -> int:
        """How many indices in [start, end) are present."""
        count = 0
        for number in self._blocks_in(start, end):
            block = self._blocks[number]
            first = number << BLOCK_SHIFT
            if start <= first and first + BLOCK <= end:
                count += len(block)
            else:
                count += sum(1 for i in block if start <= i < end)
        return count

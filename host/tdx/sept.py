"""Secure-EPT leaf entries and their state machine (docs/memory-model.md §4.2, from intel/tdx-module
``include/auto_gen/sept_state_lookup.h`` and the leaf handlers).

One :class:`SecureEpt` per TD maps a private guest frame number to the host physical page that
backs it and the entry's state. Transitions are a table (leaf → allowed source states → target
state); an illegal transition raises :class:`TdxError` with ``EPT_ENTRY_STATE_INCORRECT``. An
absent gfn is FREE. Mappings are 4 KiB, as mainline KVM maps TD memory (TDH.MEM.PAGE.AUG 4K).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from host.tdx.status import TdxError
from wire.tdx_abi import OperandId, TdxStatus


class SeptState(enum.IntEnum):
    """S-EPT entry states with their architectural encodings (live-migration states omitted
    from transitions but kept for naming)."""

    NL_MAPPED = 0x0
    NL_BLOCKED = 0x8
    REMOVED = 0xC
    FREE = 0xE
    MAPPED = 0x60
    EXPORTED_DIRTY = 0x63
    BLOCKEDW = 0x64
    EXPORTED_BLOCKEDW = 0x66
    EXPORTED_DIRTY_BLOCKEDW = 0x67
    BLOCKED = 0x68
    PENDING = 0x70
    PENDING_EXPORTED_DIRTY = 0x73
    PENDING_BLOCKEDW = 0x74
    PENDING_EXPORTED_BLOCKEDW = 0x76
    PENDING_EXPORTED_DIRTY_BLOCKEDW = 0x77
    PENDING_BLOCKED = 0x78


class Leaf(enum.Enum):
    PAGE_ADD = "TDH.MEM.PAGE.ADD"
    PAGE_AUG = "TDH.MEM.PAGE.AUG"
    RANGE_BLOCK = "TDH.MEM.RANGE.BLOCK"
    RANGE_UNBLOCK = "TDH.MEM.RANGE.UNBLOCK"
    PAGE_REMOVE = "TDH.MEM.PAGE.REMOVE"
    MR_EXTEND = "TDH.MR.EXTEND"
    PAGE_ACCEPT = "TDG.MEM.PAGE.ACCEPT"


S = SeptState
#: leaf → {source state: target state}. FREE and REMOVED mean "no page mapped".
TRANSITIONS: dict[Leaf, dict[SeptState, SeptState]] = {
    Leaf.PAGE_ADD: {S.FREE: S.MAPPED},
    Leaf.PAGE_AUG: {S.FREE: S.PENDING, S.REMOVED: S.PENDING},
    Leaf.RANGE_BLOCK: {
        S.MAPPED: S.BLOCKED,
        S.BLOCKEDW: S.BLOCKED,
        S.PENDING: S.PENDING_BLOCKED,
        S.PENDING_BLOCKEDW: S.PENDING_BLOCKED,
    },
    Leaf.RANGE_UNBLOCK: {S.BLOCKED: S.MAPPED, S.PENDING_BLOCKED: S.PENDING},
    Leaf.PAGE_REMOVE: {
        S.MAPPED: S.FREE,
        S.BLOCKED: S.FREE,
        S.BLOCKEDW: S.FREE,
        S.PENDING: S.FREE,
        S.PENDING_BLOCKED: S.FREE,
        S.PENDING_BLOCKEDW: S.FREE,
    },
    Leaf.MR_EXTEND: {S.MAPPED: S.MAPPED},
    Leaf.PAGE_ACCEPT: {S.PENDING: S.MAPPED, S.PENDING_EXPORTED_DIRTY: S.MAPPED},
}
BLOCKED_STATES = frozenset({S.BLOCKED, S.PENDING_BLOCKED, S.NL_BLOCKED})
PENDING_STATES = frozenset({S.PENDING, S.PENDING_BLOCKED, S.PENDING_BLOCKEDW, S.PENDING_EXPORTED_DIRTY})


@dataclass(slots=True)
class SeptEntry:
    state: SeptState
    pa: int
    #: TD epoch recorded by TDH.MEM.RANGE.BLOCK (TLB tracking for TDH.MEM.PAGE.REMOVE).
    block_epoch: int = -1


class SecureEpt:
    """The Secure-EPT of one TD: private gfn → :class:`SeptEntry` (absent = FREE)."""

    def __init__(self) -> None:
        self._entries: dict[int, SeptEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, gfn: int) -> SeptEntry | None:
        return self._entries.get(gfn)

    def state(self, gfn: int) -> SeptState:
        entry = self._entries.get(gfn)
        return entry.state if entry else SeptState.FREE

    def items(self) -> Iterator[tuple[int, SeptEntry]]:
        return iter(list(self._entries.items()))

    def transition(self, leaf: Leaf, gfn: int, pa: int | None = None) -> SeptEntry:
        """Apply ``leaf`` to ``gfn``; raises EPT_ENTRY_STATE_INCORRECT on an illegal source state.

        PAGE.ADD/AUG take the backing ``pa``; PAGE.REMOVE drops the entry (FREE)."""
        entry = self._entries.get(gfn)
        current = entry.state if entry else SeptState.FREE
        target = TRANSITIONS[leaf].get(current)
        if target is None:
            raise TdxError(
                TdxStatus.EPT_ENTRY_STATE_INCORRECT | OperandId.RCX,
                f"{leaf.value} on gpa 0x{gfn << 12:x} in state {current.name}",
            )
        if target is SeptState.FREE:
            del self._entries[gfn]
            assert entry is not None
            return entry
        if entry is None:
            assert pa is not None, "PAGE.ADD/AUG need the backing page"
            entry = SeptEntry(target, pa)
            self._entries[gfn] = entry
        else:
            entry.state = target
        return entry

"""The KeyID Ownership Table (KOT) of the TDX module (docs/memory-model.md §6.5, §6.6).

The private (TDX) KeyID range comes from IA32_MKTME_KEYID_PARTITIONING: KeyIDs
[first, first + count), by default [16, 64) = 48 concurrent TDs. A KeyID goes
HKID_FREE → HKID_ASSIGNED (TDH.MNG.CREATE) → HKID_FLUSHED (TDH.PHYMEM.CACHE.WB) → HKID_FREE
(TDH.MNG.KEY.FREEID). Allocation itself is the host kernel's job (KVM's IDA); the module only
checks that a KeyID it is given is private and free.
"""

from __future__ import annotations

import enum

from host.tdx.status import TdxError
from wire.tdx_abi import OperandId, TdxStatus


class KotState(enum.IntEnum):
    HKID_FREE = 0
    HKID_ASSIGNED = 1
    HKID_FLUSHED = 2


class KeyOwnerTable:
    def __init__(self, first: int = 16, count: int = 48) -> None:
        if first < 1 or count < 1:
            raise ValueError("the private KeyID range must start above KeyID 0 and be non-empty")
        self.first = first
        self.count = count
        self._state = {keyid: KotState.HKID_FREE for keyid in range(first, first + count)}

    def state(self, keyid: int) -> KotState:
        return self._state[keyid]

    def assign(self, keyid: int) -> None:
        if keyid not in self._state:
            raise TdxError(TdxStatus.OPERAND_INVALID | OperandId.RDX, f"KeyID {keyid} is not a private KeyID")
        if self._state[keyid] is not KotState.HKID_FREE:
            raise TdxError(
                TdxStatus.OPERAND_BUSY | OperandId.KOT, f"KeyID {keyid} is {self._state[keyid].name}"
            )
        self._state[keyid] = KotState.HKID_ASSIGNED

    def flush(self, keyid: int) -> None:
        self._state[keyid] = KotState.HKID_FLUSHED

    def free(self, keyid: int) -> None:
        if self._state[keyid] is not KotState.HKID_FLUSHED:
            raise TdxError(
                TdxStatus.KEY_STATE_INCORRECT, f"KeyID {keyid} is {self._state[keyid].name}, not flushed"
            )
        self._state[keyid] = KotState.HKID_FREE

    @property
    def free_count(self) -> int:
        return sum(1 for s in self._state.values() if s is KotState.HKID_FREE)

"""The CPU's ordinary memory path outside SEAM: every access carries the host's shared KeyID 0
(docs/memory-model.md §7 "read from outside SEAM with a shared HKID", "write with a shared KeyID").

This is all the untrusted host (kernel and userspace) gets of the memory controller: it cannot
name a private KeyID, so it never sees TD plaintext. A read of a TD-owned line returns zeros;
a write clears the line's TD-owner bit (a TD's next read of it is poisoned); consuming a
poisoned line raises :class:`~host.tdx.memctl.MachineCheck` with ``in_td=False``.
"""

from __future__ import annotations

from collections.abc import Sequence

from host.tdx.memctl import MemoryController

SHARED_KEYID = 0


class HostMemoryBus:
    def __init__(self, mc: MemoryController) -> None:
        self._mc = mc

    @property
    def phys_bytes(self) -> int:
        return len(self._mc.phys)

    def read(self, runs: Sequence[tuple[int, int]]) -> list[bytes]:
        return self._mc.read(SHARED_KEYID, runs)

    def write(self, runs: Sequence[tuple[int, bytes | memoryview]]) -> None:
        self._mc.write(SHARED_KEYID, runs)

    def movdir64b_zero(self, runs: Sequence[tuple[int, int]]) -> None:
        """Full-line zeroing with KeyID 0: clears contents, TD-owner bits and poison."""
        self._mc.zero(SHARED_KEYID, runs)

"""The CPU's ordinary memory path outside SEAM: every access carries the host's shared KeyID 0
(docs/memory-model.md §7 "read from outside SEAM with a shared HKID", "write with a shared KeyID").

This is all the untrusted host (kernel and userspace) gets of the memory controller: it cannot
name a private KeyID, so it never sees TD plaintext. A read of a TD-owned line returns zeros;
a write clears the line's TD-owner bit (a TD's next read of it is poisoned); consuming a
poisoned line raises :class:`~host.tdx.memctl.MachineCheck` with ``in_td=False``.

The memory controller runs one batch at a time; the bus takes the machine's memory lock (the one the TDX
module holds for its own accesses, host/tdx/module.py) around each call, and MOVDIR64B zeroing of many pages
in batches of at most :data:`ZERO_BATCH` bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from host.tdx.memctl import MemoryController

SHARED_KEYID = 0
#: Bytes one hold of the memory lock zeroes at most.
ZERO_BATCH = 2 << 20


class HostMemoryBus:
    def __init__(self, mc: MemoryController, memory_lock: threading.Lock | None = None) -> None:
        self._mc = mc
        self._lock = memory_lock or threading.Lock()

    @property
    def phys_bytes(self) -> int:
        return len(self._mc.phys)

    def read(self, runs: Sequence[tuple[int, int]]) -> list[bytes]:
        with self._lock:
            return self._mc.read(SHARED_KEYID, runs)

    def write(self, runs: Sequence[tuple[int, bytes | memoryview]]) -> None:
        with self._lock:
            self._mc.write(SHARED_KEYID, runs)

    def movdir64b_zero(self, runs: Sequence[tuple[int, int]]) -> None:
        """Full-line zeroing with KeyID 0: clears contents, TD-owner bits and poison."""
        batch: list[tuple[int, int]] = []
        size = 0
        for pa, n in runs:
            for off in range(0, n, ZERO_BATCH):
                piece = min(ZERO_BATCH, n - off)
                if size + piece > ZERO_BATCH and batch:
                    with self._lock:
                        self._mc.zero(SHARED_KEYID, batch)
                    batch, size = [], 0
                batch.append((pa + off, piece))
                size += piece
        if batch:
            with self._lock:
                self._mc.zero(SHARED_KEYID, batch)

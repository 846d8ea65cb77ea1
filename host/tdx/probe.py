"""A physical attacker's probe on the machine's DRAM: cold boot, a bus interposer (docs/memory-model.md §7.2).

Not part of the platform's software and not reachable by the untrusted host's code paths: the platform
(host/platform.py) hands it to the VMM only so that the attack surfaces of host/vmm/physical.py can be tried.
It reads and writes below the memory controller, so no rule applies at that moment: reads return what is
stored (ciphertext for TD-private lines), writes change stored bytes and MACs; the controller judges them at
the TD's next read. Each call holds the machine's memory lock for one bounded access.
"""

from __future__ import annotations

import threading

from host.tdx.memctl import MemoryController


class DramProbe:
    def __init__(self, mc: MemoryController, memory_lock: threading.Lock) -> None:
        self._mc = mc
        self._lock = memory_lock

    @property
    def integrity(self) -> bool:
        return self._mc.integrity

    def read(self, pa: int, length: int) -> tuple[bytes, bytes]:
        with self._lock:
            return self._mc.dram_read(pa, length)

    def write(self, pa: int, data: bytes, macs: bytes) -> None:
        with self._lock:
            self._mc.dram_write(pa, data, macs)

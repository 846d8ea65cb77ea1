"""Attack surfaces, not VMM features: what a physical attacker sees of memory, and the paths it uses
(docs/memory-model.md §7.2).

Two ways to reach a physical address from outside a TD:

- :attr:`PhysicalPath.DRAM`: the DIMMs themselves, below the memory controller: a cold-boot image, a bus
  interposer. Reads return the bytes stored: ciphertext under a TD's key for private lines (with, in Ci mode,
  each line's 28-bit MAC), plaintext for shared ones (KeyID 0 is modelled as TME bypass). Writes store bytes
  (and MACs) directly; the memory controller's rules then judge them at the TD's next read.
- :attr:`PhysicalPath.HOST_KEYID`: through the memory controller with the host's KeyID 0, as the host kernel's
  own loads and stores (its direct map, ``/dev/mem``) and device DMA go: TD-owned lines read as zeros, a store
  clears the lines' TD-owner bits, and consuming poison is a host machine check.

The address is a host physical address, or the frame that backs a TD's GPA when the request runs (the host
kernel knows every frame it handed out). The VMM serves both only to let tests and ``tdxsim attack`` try what
such an attacker can; nothing in a real VMM does this.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

#: DRAM is read and written in whole 64-byte lines (one burst; the MAC and TD-owner bit are per line).
LINE = 64
#: Bytes one physical access moves at most.
MAX_PHYSICAL_ACCESS = 1 << 20
#: Bytes of MAC stored per line (28 significant bits, little-endian).
MAC_BYTES = 4


class PhysicalPath(enum.Enum):
    DRAM = "dram"
    HOST_KEYID = "host KeyID 0"


class Dram(Protocol):
    """The machine's DRAM as a physical attacker reaches it (host/tdx/probe.py)."""

    @property
    def integrity(self) -> bool: ...

    def read(self, pa: int, length: int) -> tuple[bytes, bytes]:
        """(stored bytes, stored MACs: 4 bytes per line, empty without integrity) of whole lines."""
        ...

    def write(self, pa: int, data: bytes, macs: bytes) -> None:
        """Store whole lines; ``macs`` empty keeps each line's MAC."""
        ...


@dataclass(frozen=True)
class PhysicalRead:
    pa: int
    data: bytes
    macs: bytes = b""
    #: For a TD GPA: whether it is private now.
    private: bool = False

"""Lazily reserved DRAM: address space for physical memory and its line metadata (docs/memory-model.md §7.1).

Real thing modelled: the DIMMs of a machine, which exist whether or not anything was ever stored in them.
The simulator cannot own that much memory, so a machine's DRAM (and the memory controller's metadata beside
it) is an anonymous private mapping made with ``MAP_NORESERVE``: the kernel charges nothing when it is
mapped, every page reads as zero until it is first written, and the process's resident memory grows only
with the pages a TD or the host touched. Without ``MAP_NORESERVE`` Linux's default heuristic overcommit
refuses one mapping larger than RAM plus swap (``ENOMEM``), however little of it is used.

The largest machine the simulated platform can describe is bounded by its physical-address width: TME-MK
takes the KeyID from the top bits of the 52-bit physical address (:func:`max_phys_bytes`).
"""

from __future__ import annotations

import mmap

__all__ = ["MAX_PHYS_ADDR_BITS", "DramUnavailable", "format_size", "max_phys_bytes", "reserve"]

#: MAXPHYADDR of the largest x86-64 platforms (CPUID.80000008H:EAX[7:0] is at most 52).
MAX_PHYS_ADDR_BITS = 52
#: Linux's MAP_NORESERVE (include/uapi/asm-generic/mman.h; x86-64 and arm64); Python exposes it from 3.13.
_MAP_NORESERVE: int = getattr(mmap, "MAP_NORESERVE", 0x4000)


class DramUnavailable(ValueError):
    """This process cannot map that much simulated memory (address-space limit, strict overcommit)."""


def max_phys_bytes(keyid_bits: int) -> int:
    """Bytes of DRAM a platform with ``keyid_bits`` KeyID bits can address: the KeyID takes the top
    ``keyid_bits`` of the 52 physical-address bits (docs/memory-model.md §7)."""
    return 1 << (MAX_PHYS_ADDR_BITS - keyid_bits)


def reserve(nbytes: int, what: str) -> mmap.mmap:
    """A zero-filled private mapping of ``nbytes`` that costs only the pages later written.

    Raises :class:`DramUnavailable` (one line naming ``what`` and the size) when the kernel refuses it."""
    try:
        return mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | _MAP_NORESERVE)
    except (OSError, OverflowError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        hint = ""
        if isinstance(err, OSError) and _strict_overcommit():
            hint = " (vm.overcommit_memory is 2, which ignores MAP_NORESERVE)"
        raise DramUnavailable(f"cannot map {format_size(nbytes)} of {what}: {reason}{hint}") from None


def format_size(nbytes: int) -> str:
    """``nbytes`` in the largest binary unit that keeps it whole when possible (``64 GiB``, ``1 TiB``)."""
    for unit, shift in (("PiB", 50), ("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift:
            value = nbytes / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{nbytes} bytes"


def _strict_overcommit() -> bool:
    try:
        with open("/proc/sys/vm/overcommit_memory", encoding="ascii") as f:
            return f.read().strip() == "2"
    except OSError:
        return False

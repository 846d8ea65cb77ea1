"""TD measurement registers (docs/memory-model.md §8, intel/tdx-module ``tdh_mem_page_add.c``,
``tdh_mr_extend.c``, ``tdg_mr_rtmr_extend.c``).

MRTD is one SHA-384 over 128-byte blocks: TDH.MEM.PAGE.ADD contributes
``"MEM.PAGE.ADD"`` zero-padded to 16 bytes ‖ GPA (u64 LE) ‖ 104 zero bytes; TDH.MR.EXTEND
contributes ``"MR.EXTEND"`` padded ‖ GPA ‖ zeros, then the 256 measured bytes; TDH.MR.FINALIZE
closes the hash. RTMR[i] = SHA-384(RTMR[i] ‖ data48).
"""

from __future__ import annotations

import hashlib

from wire.tdx_abi import MR_SIZE

MR_EXTEND_CHUNK = 256


def _block(api_name: bytes, gpa: int) -> bytes:
    return api_name.ljust(16, b"\0") + gpa.to_bytes(8, "little") + bytes(104)


class Mrtd:
    """The build-time measurement of a TD, open until :meth:`finalize`."""

    def __init__(self) -> None:
        self._hash = hashlib.sha384()
        self._value: bytes | None = None

    def page_add(self, gpa: int) -> None:
        self._hash.update(_block(b"MEM.PAGE.ADD", gpa))

    def extend(self, gpa: int, chunk: bytes) -> None:
        assert len(chunk) == MR_EXTEND_CHUNK
        self._hash.update(_block(b"MR.EXTEND", gpa))
        self._hash.update(chunk)

    def finalize(self) -> bytes:
        self._value = self._hash.digest()
        return self._value

    @property
    def value(self) -> bytes:
        """The finalized MRTD (zeros before TDH.MR.FINALIZE)."""
        return self._value if self._value is not None else bytes(MR_SIZE)


def rtmr_extend(current: bytes, data48: bytes) -> bytes:
    assert len(current) == MR_SIZE and len(data48) == MR_SIZE
    return hashlib.sha384(current + data48).digest()

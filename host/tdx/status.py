"""The error a SEAMCALL or TDCALL leaf of the simulated TDX module completes with (docs/memory-model.md §4.4).

The status codes themselves are the TDX ABI both sides share (:mod:`wire.tdx_abi`).
"""

from __future__ import annotations

from wire.tdx_abi import status_name


class TdxError(Exception):
    """A SEAMCALL/TDCALL leaf completed with an error status (bit 63 set)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status_name(status)} (0x{status:016X}): {message}")
        self.status = status
        self.message = message

"""Errors the VMM reports to its callers, by meaning (docs/conventions.md §7)."""

from __future__ import annotations

import enum


class Refusal(enum.Enum):
    NOT_FOUND = "NOT_FOUND"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    DATA_LOSS = "DATA_LOSS"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    #: The caller's deadline passed while the request ran; what was done before it stays done.
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    #: The caller cancelled the request while it ran; what was done before it stays done.
    CANCELLED = "CANCELLED"


class VmmError(Exception):
    """A request the VMM refuses. ``reason`` is a stable UPPER_SNAKE identifier for clients."""

    def __init__(
        self,
        refusal: Refusal,
        reason: str,
        message: str,
        *,
        errno: str | None = None,
        tdx_status: int | None = None,
        gpa: int | None = None,
    ) -> None:
        super().__init__(message)
        self.refusal = refusal
        self.reason = reason
        self.message = message
        self.errno = errno
        self.tdx_status = tdx_status
        self.gpa = gpa


class HostCrashed(Exception):
    """The host consumed poison (#MC outside SEAM): every TD is dead and the host must exit."""

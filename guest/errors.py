"""What can go wrong for a TD guest, as a short flat list of exceptions named for what happened.

Every failure the guest library raises is a :class:`GuestError`. Those that come from the host carry the gRPC
status code name (``code``) and the ``google.rpc.ErrorInfo`` the host attached (``reason`` and
``metadata``: ``errno``, ``tdx_status``, ``gpa``; docs/conventions.md §7), so callers branch on ``reason``,
never on message text.
Those that the guest itself detects (a TDCALL/TDVMCALL that returned a failure status in R10/RAX, a quote the
quoting service refused) carry the real status value.

Translation happens once, at the RPC boundary (:func:`from_rpc_error`); nothing above it sees
``grpc.RpcError``.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from wire.rpc_status import error_info


class GuestError(Exception):
    """Base class. ``reason`` is the ErrorInfo reason (or the guest's own reason), ``code`` the gRPC code name
    (empty when the guest detected the failure itself)."""

    def __init__(
        self, message: str, reason: str, code: str = "", metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.code = code
        self.metadata: dict[str, str] = dict(metadata or {})

    def __str__(self) -> str:
        where = f"{self.code}/{self.reason}" if self.code else self.reason
        return f"{self.message} [{where}]"


class AccessDenied(GuestError):
    """The credential does not speak for this TD: UNAUTHENTICATED (missing, forged, or its TD is gone) or
    PERMISSION_DENIED (the credential of another TD)."""


class TdGone(GuestError):
    """The TD cannot run any more: destroyed (NOT_FOUND), killed by the host (KVM_RUN -EIO after an access to
    an unaccepted page with SEPT_VE_DISABLE=1), FATAL after a machine check (DATA_LOSS), the host is down
    (UNAVAILABLE), or its lifeline ended (reason ``LIFELINE_LOST``, :meth:`guest.td.Td.lifeline_gone`)."""


class GuestFault(GuestError):
    """An access the platform refused without killing the TD (FAILED_PRECONDITION): a #VE for an unaccepted
    page (SEPT_VE_DISABLE=0, reason ``VE_PENDING_PAGE``) or a memory-fault exit the VMM would not resolve."""


class BadRequest(GuestError):
    """A malformed or out-of-range operation (INVALID_ARGUMENT, OUT_OF_RANGE, ...), refused by the host or
    caught by the library before sending; also TDCALL operand errors the host reports as errors."""


class TdxStatusError(GuestError):
    """A TDCALL or TDVMCALL completed with a status the guest treats as failure (docs/memory-model.md §2,
    §4.4).
    ``status`` is the value of RAX (TDCALL) or R10 (TDVMCALL); ``gpa`` where it happened."""

    def __init__(self, message: str, reason: str, status: int, gpa: int) -> None:
        super().__init__(message, reason, metadata={"tdx_status": f"0x{status:016X}", "gpa": f"0x{gpa:x}"})
        self.status = status
        self.gpa = gpa


class QuoteFailed(GuestError):
    """GetQuote completed but the buffer's status field is not SUCCESS: ``QGS_UNAVAILABLE`` (no quoting
    service / PCK on the host) or ``GET_QUOTE_ERROR`` (the quoting enclave refused the TDREPORT)."""

    def __init__(self, message: str, reason: str, status: int) -> None:
        super().__init__(message, reason, metadata={"status": f"0x{status:016X}"})
        self.status = status


class AttestationRefused(GuestError):
    """The verifier refused this TD's evidence or its token (``guest.attestation``): the reason names why
    (``MRTD_MISMATCH``, ``DEBUG_TD``, ``NONCE_EXPIRED``, ``VERIFY_TCB_LEVEL``, ``TOKEN_EXPIRED`` …)."""

    #: The DCAP quote and CC event log of the refused ``Attest`` request (empty when no request was refused).
    quote: bytes = b""
    event_log: bytes = b""


def malformed_response(what: str) -> GuestError:
    """The host answered with something no TDX platform would (a result missing, data of the wrong length, an
    impossible GPAW): the guest refuses it rather than index past it (reason ``HOST_RESPONSE_MALFORMED``)."""
    return GuestError(f"the host sent a malformed response: {what}", "HOST_RESPONSE_MALFORMED")


_BAD_REQUEST_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNIMPLEMENTED,
}
_GONE_REASONS = {"TD_NOT_FOUND", "EIO", "TD_MACHINE_CHECK", "HOST_MACHINE_CHECK"}


def from_rpc_error(err: grpc.RpcError, *, verifier: bool = False) -> GuestError:
    """The named exception for a failed RPC, with the server's ErrorInfo when it sent one. A refusal by a
    verifier (``verifier=True``) is :class:`AttestationRefused` unless the verifier could not be reached."""
    code: grpc.StatusCode = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
    message = (err.details() if isinstance(err, grpc.Call) else "") or code.name.lower()
    reason, metadata = code.name, {}
    info = error_info(err) if isinstance(err, grpc.Call) else None
    if info is not None:
        reason, metadata = info.reason, dict(info.metadata)
    cls: type[GuestError]
    if verifier and code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        cls = AttestationRefused
    elif code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        cls = AccessDenied
    elif (
        code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS, grpc.StatusCode.CANCELLED)
        or reason in _GONE_REASONS
    ):
        cls = TdGone
    elif code is grpc.StatusCode.FAILED_PRECONDITION:
        cls = GuestFault
    elif code in _BAD_REQUEST_CODES:
        cls = BadRequest
    else:
        cls = GuestError
    return cls(message, reason, code.name, metadata)

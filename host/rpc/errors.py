"""One table from simulated errors to gRPC statuses (docs/conventions.md §7).

The real-platform code travels in a ``google.rpc.ErrorInfo`` detail (domain ``tdxsim.v1``):
``reason`` is the errno name, the TDX status name or the VMM's reason; ``metadata`` holds
``errno``, ``tdx_status`` (hex) and ``gpa`` (hex) when known. Clients assert on those, not on
message text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import grpc

from host.kvm.errors import KvmError
from host.kvm.uapi import TdxError
from host.vmm.errors import HostCrashed, VmmError
from wire.rpc_status import abort, guard
from wire.tdx_abi import CLASS_MASK, TdxStatus, status_name

ERRNO_CODES: dict[str, grpc.StatusCode] = {
    "EINVAL": grpc.StatusCode.INVALID_ARGUMENT,
    "EEXIST": grpc.StatusCode.ALREADY_EXISTS,
    "EBADF": grpc.StatusCode.NOT_FOUND,
    "ENOSPC": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "ENOMEM": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "EOPNOTSUPP": grpc.StatusCode.UNIMPLEMENTED,
    "ENOTTY": grpc.StatusCode.UNIMPLEMENTED,
    "ENODEV": grpc.StatusCode.PERMISSION_DENIED,
    "EFAULT": grpc.StatusCode.FAILED_PRECONDITION,
    "EIO": grpc.StatusCode.FAILED_PRECONDITION,
    "EBUSY": grpc.StatusCode.ABORTED,
    "EAGAIN": grpc.StatusCode.ABORTED,
    "EHWPOISON": grpc.StatusCode.DATA_LOSS,
    "EINTR": grpc.StatusCode.CANCELLED,
}

TDX_CODES: dict[int, grpc.StatusCode] = {
    TdxStatus.OPERAND_INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    TdxStatus.OPERAND_ADDR_RANGE_ERROR: grpc.StatusCode.OUT_OF_RANGE,
    TdxStatus.OPERAND_BUSY: grpc.StatusCode.ABORTED,
    TdxStatus.PREVIOUS_TLB_EPOCH_BUSY: grpc.StatusCode.ABORTED,
    TdxStatus.NON_RECOVERABLE_TD: grpc.StatusCode.DATA_LOSS,
    TdxStatus.NON_RECOVERABLE_TD_NON_ACCESSIBLE: grpc.StatusCode.DATA_LOSS,
    TdxStatus.NON_RECOVERABLE_VCPU: grpc.StatusCode.DATA_LOSS,
}


class InvalidRequest(Exception):
    """A request the servicer refuses before anything below it runs (a field out of its range)."""


def _abort(
    context: grpc.ServicerContext, code: grpc.StatusCode, message: str, reason: str, **meta: str
) -> NoReturn:
    abort(context, code, message, reason, meta)


def abort_for(context: grpc.ServicerContext, err: Exception) -> NoReturn:
    """Abort the RPC with the status that ``err`` means."""
    if isinstance(err, VmmError):
        meta: dict[str, str] = {}
        if err.errno:
            meta["errno"] = err.errno
        if err.tdx_status is not None:
            meta["tdx_status"] = f"0x{err.tdx_status:016X}"
        if err.gpa is not None:
            meta["gpa"] = f"0x{err.gpa:x}"
        _abort(context, grpc.StatusCode[err.refusal.value], err.message, err.reason, **meta)
    if isinstance(err, KvmError):
        meta = {"errno": err.errno}
        if err.tdx_status is not None:
            meta["tdx_status"] = f"0x{err.tdx_status:016X}"
        code = ERRNO_CODES.get(err.errno, grpc.StatusCode.FAILED_PRECONDITION)
        _abort(context, code, str(err), err.errno, **meta)
    if isinstance(err, TdxError):
        code = TDX_CODES.get(err.status & CLASS_MASK, grpc.StatusCode.FAILED_PRECONDITION)
        _abort(
            context, code, str(err), status_name(err.status).split("|")[0], tdx_status=f"0x{err.status:016X}"
        )
    if isinstance(err, HostCrashed):
        _abort(context, grpc.StatusCode.DATA_LOSS, str(err), "HOST_MACHINE_CHECK")
    if isinstance(err, InvalidRequest):
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(err), "INVALID_ARGUMENT")
    raise err


F = TypeVar("F", bound=Callable[..., Any])
TRANSLATED = (VmmError, KvmError, TdxError, HostCrashed, InvalidRequest)


def _refuse(servicer: Any, context: grpc.ServicerContext, err: Exception) -> bool:
    if not isinstance(err, TRANSLATED):
        return False
    if isinstance(err, HostCrashed):
        servicer.on_host_crash(str(err))
    abort_for(context, err)


translate: Callable[[F], F] = guard("tdxsim host", _refuse)
"""Servicer decorator: simulated errors become their statuses; anything else is a host fault (INTERNAL)."""

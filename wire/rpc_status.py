"""Rich gRPC errors: a ``google.rpc.Status`` with one ``ErrorInfo`` detail (docs/conventions.md §7).

Shared by every tdxsim server (host, verifier) and client: ``abort`` ends an RPC with code, message
and ``ErrorInfo(reason, domain, metadata)`` (grpcio-status ``rpc_status.to_status``), and
``error_info`` reads that detail back from a client-side ``grpc.RpcError`` so tests and clients
assert on ``reason``, never on message text. ``guard`` is the one servicer decorator of every server: the
server's own refusals become their statuses, and anything else is a fault of the server itself — INTERNAL,
written once to stderr with its traceback — never mistaken for bad input (docs/conventions.md §7).
``abort_async`` is ``abort`` for the coroutines of an asyncio server (``wire.rpc_server``).
"""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "tdxsim.v1"
INTERNAL_REASON = "INTERNAL"
F = TypeVar("F", bound=Callable[..., Any])


def rich_status(
    code: grpc.StatusCode,
    message: str,
    reason: str,
    metadata: Mapping[str, str] | None = None,
    *,
    domain: str = DOMAIN,
) -> grpc.Status:
    """The status ``code`` with ``message`` and one ``ErrorInfo(reason, domain, metadata)`` detail, as gRPC
    sends it (the ``google.rpc.Status`` travels in the trailing metadata)."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=dict(metadata or {}))
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return rpc_status.to_status(status)


def abort(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    reason: str,
    metadata: Mapping[str, str] | None = None,
    *,
    domain: str = DOMAIN,
) -> NoReturn:
    """Abort the RPC with ``code`` and an ``ErrorInfo`` detail; never returns."""
    context.abort_with_status(rich_status(code, message, reason, metadata, domain=domain))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


async def abort_async(
    context: Any,
    code: grpc.StatusCode,
    message: str,
    reason: str,
    metadata: Mapping[str, str] | None = None,
    *,
    domain: str = DOMAIN,
) -> NoReturn:
    """:func:`abort` for a ``grpc.aio.ServicerContext``: the status goes out from the event loop."""
    status = rich_status(code, message, reason, metadata, domain=domain)
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("abort returned")  # pragma: no cover


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ``ErrorInfo`` detail of a failed call, or ``None`` when it has none or when the peer's
    ``grpc-status-details-bin`` cannot be believed: bytes that do not decode (``DecodeError``) or a Status
    whose code or message differs from the call's own (grpcio-status raises ``ValueError``). The call's code
    still stands; a hostile or broken server cannot turn a refusal into an exception of the client."""
    try:
        status = rpc_status.from_call(err)
        if status is None:
            return None
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return info
    except (ValueError, DecodeError):
        return None
    return None


def abort_internal(context: grpc.ServicerContext, server: str, method: str, err: BaseException) -> NoReturn:
    """End an RPC that failed by a fault of the server (a bug, not the caller's input): INTERNAL, reason
    ``INTERNAL``, and the exception with its traceback on stderr, once."""
    print(f"{server}: {method}: internal error: {type(err).__name__}: {err}", file=sys.stderr)
    traceback.print_exception(err, file=sys.stderr)
    sys.stderr.flush()
    abort(context, grpc.StatusCode.INTERNAL, f"internal error in {method}", INTERNAL_REASON)


def guard(server: str, refuse: Callable[[Any, grpc.ServicerContext, Exception], bool]) -> Callable[[F], F]:
    """Servicer decorator: ``refuse(servicer, context, err)`` aborts the RPC with the status ``err`` means
    and returns True, or returns False for an exception it does not know, which is then a server fault
    (:func:`abort_internal`). A call its method already aborted is left as it is."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return method(self, request, context)
            except Exception as err:
                if context.code() is not None:  # aborted inside the method: gRPC's own unwinding
                    raise
                if not refuse(self, context, err):
                    abort_internal(context, server, method.__name__, err)

        return wrapper  # type: ignore[return-value]

    return decorate

"""Rich gRPC errors: a ``google.rpc.Status`` with one ``ErrorInfo`` detail (conventions.md §7).

Shared by every tdxsim server (host, verifier) and client: ``abort`` ends an RPC with code, message
and ``ErrorInfo(reason, domain, metadata)`` (grpcio-status ``rpc_status.to_status``), and
``error_info`` reads that detail back from a client-side ``grpc.RpcError`` so tests and clients
assert on ``reason``, never on message text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "tdxsim.v1"


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
    info = error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=dict(metadata or {}))
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ``ErrorInfo`` detail of a failed call, or ``None`` when it has none."""
    status = rpc_status.from_call(err)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None

"""The host operator's door: every ``HostService`` call needs the admin credential
(docs/grpc.md "Credentials").

On a real machine a TD can never reach the VMM's controls; here the VMM's API is a gRPC service on the same
port as the guests' ``TdGuestService``, so one interceptor checks each call before its request is even
decoded: no credential is UNAUTHENTICATED, a TD's credential is PERMISSION_DENIED (a TD may not launch,
destroy or convert anything), any other credential is UNAUTHENTICATED.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from wire.credentials import bearer_from_metadata, same
from wire.rpc_status import abort
from wire.v1 import host_pb2

HOST_SERVICE = host_pb2.DESCRIPTOR.services_by_name["HostService"].full_name


def _refusal(presented: str, is_td_credential: Callable[[str], bool]) -> tuple[grpc.StatusCode, str, str]:
    if not presented:
        return (
            grpc.StatusCode.UNAUTHENTICATED,
            "MISSING_CREDENTIAL",
            "HostService needs the host's admin credential (authorization: Bearer …)",
        )
    if is_td_credential(presented):
        return (
            grpc.StatusCode.PERMISSION_DENIED,
            "TD_CREDENTIAL_NOT_ADMIN",
            "a TD's credential does not authorize the host's admin API",
        )
    return grpc.StatusCode.UNAUTHENTICATED, "UNKNOWN_CREDENTIAL", "not the host's admin credential"


class AdminGate(grpc.ServerInterceptor):  # type: ignore[misc]
    """Lets a ``HostService`` call through only with the admin credential; other services pass."""

    def __init__(self, admin_credential: str, is_td_credential: Callable[[str], bool]) -> None:
        self._admin = admin_credential
        self._is_td_credential = is_td_credential

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        if not details.method.startswith(f"/{HOST_SERVICE}/"):
            return continuation(details)
        presented = bearer_from_metadata(details.invocation_metadata)
        if same(presented, self._admin):
            return continuation(details)
        handler = continuation(details)
        if handler is None:
            return None
        code, reason, message = _refusal(presented, self._is_td_credential)

        def refuse(request: Any, context: grpc.ServicerContext) -> Any:
            abort(context, code, message, reason)

        ignore = bytes  # the request of a refused call is never decoded
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(refuse, request_deserializer=ignore)
        return grpc.unary_unary_rpc_method_handler(refuse, request_deserializer=ignore)

"""The host operator's door: every ``HostService`` call needs the admin credential
(docs/grpc.md "Credentials").

On a real machine a TD can never reach the VMM's controls; here the VMM's API is a gRPC service on the same
port as the guests' ``TdGuestService``, so one interceptor checks each call before its request is even
read: no credential is UNAUTHENTICATED, a TD's credential is PERMISSION_DENIED (a TD may not launch,
destroy or convert anything), any other credential is UNAUTHENTICATED. It runs before the server's gate
(``wire.rpc_server``), so a refused call is neither counted nor decoded (docs/conventions.md §6).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc

from wire.credentials import bearer_from_metadata, same
from wire.rpc_server import refusal_handler
from wire.rpc_status import abort_async
from wire.v1 import host_pb2

HOST_SERVICE = host_pb2.DESCRIPTOR.services_by_name["HostService"].full_name


def _refusal(presented: str, is_td_credential: bool) -> tuple[grpc.StatusCode, str, str]:
    """(code, message, reason) of refusing ``presented``."""
    if not presented:
        return (
            grpc.StatusCode.UNAUTHENTICATED,
            "HostService needs the host's admin credential (authorization: Bearer …)",
            "MISSING_CREDENTIAL",
        )
    if is_td_credential:
        return (
            grpc.StatusCode.PERMISSION_DENIED,
            "a TD's credential does not authorize the host's admin API",
            "TD_CREDENTIAL_NOT_ADMIN",
        )
    return grpc.StatusCode.UNAUTHENTICATED, "not the host's admin credential", "UNKNOWN_CREDENTIAL"


class AdminGate(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Lets a ``HostService`` call through only with the admin credential; other services pass.

    ``is_td_credential`` asks the VMM, so it runs in the server's thread pool, never on the event loop."""

    def __init__(self, admin_credential: str, is_td_credential: Callable[[str], bool]) -> None:
        self._admin = admin_credential
        self._is_td_credential = is_td_credential

    async def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        if not details.method.startswith(f"/{HOST_SERVICE}/"):
            return await continuation(details)
        presented = bearer_from_metadata(details.invocation_metadata)
        if same(presented, self._admin):
            return await continuation(details)
        if not presented:
            return refusal_handler(*_refusal(presented, False))
        is_td_credential = self._is_td_credential

        async def refuse(requests: Any, context: Any) -> None:
            loop = asyncio.get_running_loop()
            is_td = await loop.run_in_executor(None, is_td_credential, presented)
            await abort_async(context, *_refusal(presented, is_td))

        return grpc.stream_stream_rpc_method_handler(refuse)

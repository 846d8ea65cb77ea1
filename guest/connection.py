"""The guest's connection to its host: a gRPC channel that presents the TD credential.

Every TdGuestService call carries ``authorization: Bearer <credential>``, the credential the
host returned when it launched this TD; it binds the guest to that one TD. The channel itself is plaintext
on loopback by default, or TLS / mTLS with a :class:`wire.tls.TlsConfig` (the credential then travels inside
the TLS session).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import grpc

from wire.tls import TlsConfig, channel_for

#: Messages up to 64 MiB: batched memory operations move many pages per call.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, credential: str) -> None:
        self._header = ("authorization", f"Bearer {credential}")

    def _with_token(self, details: Any) -> _CallDetails:
        metadata = [*(details.metadata or []), self._header]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)


def open_channel(address: str, tls: TlsConfig | None = None) -> grpc.Channel:
    """A channel to a host or verifier with the large-message options: TLS (mTLS if ``tls`` carries a
    client certificate) with ``tls``, plaintext without."""
    return channel_for(address, tls, CHANNEL_OPTIONS)


def td_channel(channel: grpc.Channel, credential: str) -> grpc.Channel:
    """``channel`` with the TD credential attached to every call."""
    return grpc.intercept_channel(channel, _Bearer(credential))

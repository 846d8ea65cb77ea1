"""The guest's connection to its host: a gRPC channel that presents the TD credential.

Every TdGuestService call carries ``authorization: Bearer <credential>``, the credential the
host returned when it launched this TD; it binds the guest to that one TD. The channel itself is plaintext
on loopback by default, or TLS / mTLS with a :class:`wire.tls.TlsConfig` (the credential then travels inside
the TLS session).
"""

from __future__ import annotations

import grpc

from wire.credentials import with_bearer
from wire.tls import TlsConfig, channel_for

#: Messages up to 64 MiB: batched memory operations move many pages per call.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]


def open_channel(address: str, tls: TlsConfig | None = None) -> grpc.Channel:
    """A channel to a host or verifier with the large-message options: TLS (mTLS if ``tls`` carries a
    client certificate) with ``tls``, plaintext without."""
    return channel_for(address, tls, CHANNEL_OPTIONS)


def td_channel(channel: grpc.Channel, credential: str) -> grpc.Channel:
    """``channel`` with the TD credential attached to every call."""
    return with_bearer(channel, credential)

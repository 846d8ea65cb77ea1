"""The guest's connections: to its host, a gRPC channel that presents the TD credential; to its verifier, a
channel balanced over every replica.

Every TdGuestService call carries ``authorization: Bearer <credential>``, the credential the
host returned when it launched this TD; it binds the guest to that one TD. The channel itself is plaintext
on loopback by default, or TLS / mTLS with a :class:`wire.tls.TlsConfig` (the credential then travels inside
the TLS session).

A verifier may run as several replicas sharing one database (docs/fleet.md): ``open_verifier_channel`` takes
several addresses (or a comma list, or one DNS name with several records) and spreads calls over them with
gRPC's round_robin (``wire.balancing``); the channel itself retries only ``VERIFIER_IDEMPOTENT`` methods.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from wire import balancing
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


VERIFIER_SERVICE = "tdxsim.v1.VerifierService"
#: Verifier methods a channel retries on UNAVAILABLE by itself: a retry changes nothing twice (a second
#: GetNonce issues a nonce that expires unused; GetResource only reads and audits). ``Attest`` consumes its
#: nonce and is never among them: ``guest.attestation.Verifier.attest`` starts over with a fresh nonce.
VERIFIER_IDEMPOTENT = ("GetNonce", "GetJwks", "GetPolicy", "GetResource", "GetAuditLog")


def open_verifier_channel(addresses: str | Sequence[str], tls: TlsConfig | None = None) -> grpc.Channel:
    """A channel to a verifier's replicas: ``addresses`` is one address, a comma list, several of them, or a
    DNS name (``wire.balancing.balanced_target``; ``TargetError`` when they make no target)."""
    listed = [addresses] if isinstance(addresses, str) else list(addresses)
    target = balancing.balanced_target(listed)
    options = [*CHANNEL_OPTIONS, *balancing.channel_options(VERIFIER_SERVICE, VERIFIER_IDEMPOTENT)]
    name = balancing.tls_name(listed)
    if tls is not None and name is not None:
        options.append(("grpc.ssl_target_name_override", name))
    return channel_for(target, tls, options)


def td_channel(channel: grpc.Channel, credential: str) -> grpc.Channel:
    """``channel`` with the TD credential attached to every call."""
    return with_bearer(channel, credential)

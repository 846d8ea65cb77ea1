"""The host process's gRPC server: services, limits, health, reflection and graceful shutdown
(docs/conventions.md §3, §4, §6)."""

from __future__ import annotations

from collections.abc import Callable

from host.rpc.auth import AdminGate
from host.rpc.guest_service import GuestServicer
from host.rpc.host_service import HostServicer
from host.vmm.events import MAX_WATCHERS
from host.vmm.vmm import Vmm
from wire.rpc_server import KIB, MIB, STANDARD_STREAMS, HealthControl, Limits, RpcServer, start_server
from wire.tls import TlsConfig
from wire.v1 import guest_pb2, guest_pb2_grpc, host_pb2, host_pb2_grpc

HOST_SERVICE = host_pb2.DESCRIPTOR.services_by_name["HostService"].full_name
GUEST_SERVICE = guest_pb2.DESCRIPTOR.services_by_name["TdGuestService"].full_name
ATTACH = f"/{GUEST_SERVICE}/Attach"
WATCH_EVENTS = f"/{HOST_SERVICE}/WatchEvents"
ECHO = f"/{GUEST_SERVICE}/Echo"
#: A request of either service: the guest library moves at most 16 MiB per request, which with the framing of
#: 65 536 instructions stays under 18 MiB; an image's payload or a HostWrite has the same room.
REQUEST_BYTES = 24 * MIB
#: ``Echo`` needs no credential: 1 MiB of payload (the guest benchmark's) and its framing.
ECHO_REQUEST_BYTES = MIB + 16
#: A ``TdGuestService`` response carries up to 32 MiB of reads (``MAX_BATCH_BYTES``) and their framing.
RESPONSE_BYTES = 64 * MIB
#: Streams beyond the ones the VMM allows (one lifeline per TD, ``MAX_WATCHERS`` feeds), so that the VMM's own
#: refusals (``LIFELINE_HELD``, ``TOO_MANY_WATCHERS``) are what a client normally sees.
STREAM_HEADROOM = 8


def host_limits(keyids: int) -> Limits:
    """The host's limits for a machine with ``keyids`` TDX KeyIDs (one TD, so one lifeline, each)."""
    return Limits(
        request_bytes={
            HOST_SERVICE: REQUEST_BYTES,
            GUEST_SERVICE: REQUEST_BYTES,
            ECHO: ECHO_REQUEST_BYTES,
            ATTACH: 64 * KIB,
            WATCH_EVENTS: 64 * KIB,
        },
        response_bytes=RESPONSE_BYTES,
        calls_per_peer=16,
        calls_total=64,
        streams={
            **STANDARD_STREAMS,
            ATTACH: keyids + STREAM_HEADROOM,
            WATCH_EVENTS: MAX_WATCHERS + STREAM_HEADROOM,
        },
    )


def create_server(
    address: str,
    vmm: Vmm,
    on_host_crash: Callable[[str], None],
    *,
    admin_credential: str,
    max_workers: int = 16,
    tls: TlsConfig | None = None,
) -> tuple[RpcServer, int, HealthControl]:
    """Build and start the server (TLS with ``tls``, plaintext without); returns it, the bound port and
    its health. ``HostService`` answers only callers presenting ``admin_credential``, checked before the
    request is read. Lifelines and event feeds are coroutines and hold none of the ``max_workers`` threads."""
    gate = AdminGate(admin_credential, lambda credential: vmm.td_of_credential(credential) is not None)

    def add_servicers(server: object) -> None:
        host_pb2_grpc.add_HostServiceServicer_to_server(HostServicer(vmm, on_host_crash), server)
        guest_pb2_grpc.add_TdGuestServiceServicer_to_server(GuestServicer(vmm, on_host_crash), server)

    server = start_server(
        address,
        name="tdxsim host",
        services=[HOST_SERVICE, GUEST_SERVICE],
        add_servicers=add_servicers,
        limits=host_limits(vmm.kvm.keyids_total),
        max_workers=max_workers,
        tls=tls,
        interceptors=[gate],
    )
    return server, server.port, server.health

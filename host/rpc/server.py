"""The host process's gRPC server: services, health, reflection and graceful shutdown
(docs/conventions.md §3, §4)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from host.rpc.auth import AdminGate
from host.rpc.guest_service import GuestServicer
from host.rpc.host_service import HostServicer
from host.vmm.events import MAX_WATCHERS
from host.vmm.vmm import Vmm
from wire.tls import TlsConfig, add_port
from wire.v1 import guest_pb2, guest_pb2_grpc, host_pb2, host_pb2_grpc

MAX_MESSAGE = 64 << 20
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
]


def create_server(
    address: str,
    vmm: Vmm,
    on_host_crash: Callable[[str], None],
    *,
    admin_credential: str,
    max_workers: int = 16,
    tls: TlsConfig | None = None,
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """Build and start the server (TLS with ``tls``, plaintext without); returns it, the bound port and
    its health servicer. ``HostService`` answers only callers presenting ``admin_credential``.

    Every attached guest's lifeline stream (``Attach``) holds one worker thread for the TD's life, so
    the pool has one per possible TD (one per TDX KeyID) on top of ``max_workers`` for requests."""
    workers = max_workers + vmm.kvm.keyids_total + MAX_WATCHERS
    gate = AdminGate(admin_credential, lambda credential: vmm.td_of_credential(credential) is not None)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers), options=CHANNEL_OPTIONS, interceptors=[gate]
    )
    host_pb2_grpc.add_HostServiceServicer_to_server(HostServicer(vmm, on_host_crash), server)
    guest_pb2_grpc.add_TdGuestServiceServicer_to_server(GuestServicer(vmm, on_host_crash), server)
    health_servicer = health.HealthServicer(
        experimental_non_blocking=True, experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=2)
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [
        host_pb2.DESCRIPTOR.services_by_name["HostService"].full_name,
        guest_pb2.DESCRIPTOR.services_by_name["TdGuestService"].full_name,
    ]
    for name in [*names, ""]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = add_port(server, address, tls)
    if port == 0:
        raise OSError(f"cannot bind {address}")
    server.start()
    return server, port, health_servicer

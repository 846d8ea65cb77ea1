"""The verifier's gRPC server: VerifierService, health and reflection (docs/conventions.md §3, §4)."""

from __future__ import annotations

from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from attest.verifier.service.core import VerifierCore
from attest.verifier.service.servicer import VerifierServicer
from wire.tls import TlsConfig, add_port
from wire.v1 import attestation_pb2, attestation_pb2_grpc

MAX_MESSAGE = 32 << 20  # quote + event log (log areas are 256 KiB–16 MiB)
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
]
SERVICE_NAME = attestation_pb2.DESCRIPTOR.services_by_name["VerifierService"].full_name


def create_server(
    address: str, core: VerifierCore, *, max_workers: int = 8, tls: TlsConfig | None = None
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """Build and start the server (TLS with ``tls``, plaintext without); returns it, the bound port and
    its health servicer."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=CHANNEL_OPTIONS)
    attestation_pb2_grpc.add_VerifierServiceServicer_to_server(VerifierServicer(core), server)
    health_servicer = health.HealthServicer(
        experimental_non_blocking=True, experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=2)
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in (SERVICE_NAME, ""):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection([SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = add_port(server, address, tls)
    if port == 0:
        raise OSError(f"cannot bind {address}")
    server.start()
    return server, port, health_servicer

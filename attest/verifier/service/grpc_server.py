"""The verifier's gRPC server: VerifierService, limits, health and reflection
(docs/conventions.md §3, §4, §6)."""

from __future__ import annotations

from attest.verifier.service.core import VerifierCore
from attest.verifier.service.servicer import VerifierServicer
from wire.rpc_server import MIB, HealthControl, Limits, RpcServer, start_server
from wire.tls import TlsConfig
from wire.v1 import attestation_pb2, attestation_pb2_grpc

SERVICE_NAME = attestation_pb2.DESCRIPTOR.services_by_name["VerifierService"].full_name
#: The largest request is an ``Attest``: a quote (at most 64 KiB) and an event log (at most 16 MiB).
REQUEST_BYTES = 24 * MIB
LIMITS = Limits(
    request_bytes={SERVICE_NAME: REQUEST_BYTES}, response_bytes=32 * MIB, calls_per_peer=16, calls_total=64
)


def create_server(
    address: str, core: VerifierCore, *, max_workers: int = 8, tls: TlsConfig | None = None
) -> tuple[RpcServer, int, HealthControl]:
    """Build and start the server (TLS with ``tls``, plaintext without); returns it, the bound port and
    its health."""

    def add_servicers(server: object) -> None:
        attestation_pb2_grpc.add_VerifierServiceServicer_to_server(VerifierServicer(core), server)

    server = start_server(
        address,
        name="tdxsim verifier",
        services=[SERVICE_NAME],
        add_servicers=add_servicers,
        limits=LIMITS,
        max_workers=max_workers,
        tls=tls,
    )
    return server, server.port, server.health

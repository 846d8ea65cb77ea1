"""A verifier served in process through a real channel: one ``VerifierCore`` (Intel's root, no collateral,
an admin credential) on 127.0.0.1:0, reached as anyone (``stub``) and as its operator (``admin``).

A uniquely named helper module (not conftest.py), like ``attest_vectors``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from attest.verifier.dcap.quote_verifier import load_anchors
from attest.verifier.dcap.roots import INTEL_SGX_ROOT_CA_PEM
from attest.verifier.service.core import CollateralIndex, ServiceConfig, VerifierCore
from attest.verifier.service.grpc_server import create_server
from attest.verifier.store import SqliteStore
from wire.credentials import with_bearer
from wire.v1 import attestation_pb2_grpc

ADMIN = "verifier-admin-credential"


@dataclass
class Served:
    core: VerifierCore
    stub: attestation_pb2_grpc.VerifierServiceStub
    #: The same server through a channel that presents the admin credential.
    admin: attestation_pb2_grpc.VerifierServiceStub


@contextmanager
def served_verifier(db: Path, max_workers: int = 2) -> Iterator[Served]:
    store = SqliteStore(db)
    config = ServiceConfig(admin_credential=ADMIN)
    core = VerifierCore(store, load_anchors([INTEL_SGX_ROOT_CA_PEM]), CollateralIndex(), config)
    server, port, _ = create_server("127.0.0.1:0", core, max_workers=max_workers)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        admin = attestation_pb2_grpc.VerifierServiceStub(with_bearer(channel, ADMIN))
        yield Served(core, attestation_pb2_grpc.VerifierServiceStub(channel), admin)
    finally:
        channel.close()
        server.stop(None).wait(5)
        store.close()

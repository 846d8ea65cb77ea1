"""A verifier that has no collateral file, only ``--pccs URL`` (docs/attestation.md §17): a guest attests and
gets its secret with collateral the verifier fetched from ``tdxsim pcs serve``; with the PCS stopped, cached
collateral keeps the verdicts, and a quote that needs collateral not in the cache is UNAVAILABLE with a
reason.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from attest.intel import load_pki
from guest.attestation import Verifier
from guest.td import Td
from tests.attest.attest_pcs_served import foreign_fmspc_quote, start_pcs
from tests.conftest import (
    ADMIN_CREDENTIAL,
    ADMIN_FILE,
    HostProcess,
    make_pki,
    start_server,
    stop_process,
)
from tests.guest.guest_helpers import KERNEL, MIB, image, independent_mrtd
from wire.credentials import with_bearer
from wire.rpc_status import error_info
from wire.v1 import attestation_pb2, attestation_pb2_grpc

SEPT_VE_DISABLE = 1 << 28
SECRET = b"volume key fetched with collateral by url"
PAYLOAD = [(MIB, KERNEL, True)]


def start_verifier(pki_dir: Path, db: Path, pccs: str) -> tuple[subprocess.Popen[str], str]:
    proc, address = start_server(
        "verifier", "--listen", "127.0.0.1:0", "--db", str(db),
        "--root", str(pki_dir / "root_ca.pem"), "--pccs", pccs, "--pccs-timeout", "3",
        "--admin-credential-file", str(ADMIN_FILE),
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.readline()  # admin credential: the session's
    return proc, address


def _attest_and_fetch(host: HostProcess, address: str) -> tuple[str, bytes]:
    td, _ = Td.launch(host.address, image(attributes=SEPT_VE_DISABLE, payload=PAYLOAD), timeout=60)
    with td, Verifier(address) as verifier:
        attestation = verifier.attest(td, policy="prod")
        return attestation.tcb_status, verifier.fetch_secret(attestation, "prod/key/volume")


def _refusal(
    stub: attestation_pb2_grpc.VerifierServiceStub, quote: bytes
) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Attest(attestation_pb2.AttestRequest(quote=quote), timeout=30)
    err = raised.value
    info = error_info(err)
    assert info is not None
    return err.code(), info.reason, err.details() or ""


def test_verifier_with_only_a_pccs_attests_and_survives_its_outage(
    host_factory: Callable[..., HostProcess], tmp_path: Path
) -> None:
    pki_dir = tmp_path / "pki"
    make_pki(pki_dir)
    host = host_factory("--pki", str(pki_dir))
    pcs = start_pcs(pki_dir)
    verifier: subprocess.Popen[str] | None = None
    channel: grpc.Channel | None = None
    try:
        verifier, address = start_verifier(pki_dir, tmp_path / "v.db", pcs.url)
        channel = grpc.insecure_channel(address)
        admin = attestation_pb2_grpc.VerifierServiceStub(with_bearer(channel, ADMIN_CREDENTIAL))
        stub = attestation_pb2_grpc.VerifierServiceStub(channel)
        mr_td = independent_mrtd(PAYLOAD).hex()
        policy = {"reference_values": {"mr_td": [mr_td]}}
        admin.SetPolicy(
            attestation_pb2.SetPolicyRequest(name="prod", policy_json=json.dumps(policy)), timeout=10
        )
        resource_policy = {"attestation_policies": ["prod"], "claims": {"mr_td": [mr_td]}}
        admin.PutResource(
            attestation_pb2.PutResourceRequest(
                path="prod/key/volume", secret=SECRET, policy_json=json.dumps(resource_policy)
            ),
            timeout=10,
        )
        assert _attest_and_fetch(host, address) == ("UpToDate", SECRET)
        foreign = foreign_fmspc_quote(load_pki(pki_dir))
        code, reason, _ = _refusal(stub, foreign)  # the PCS answers 404 for that family
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "COLLATERAL_NOT_FOUND")

        assert pcs.stop() == 0
        # within the cache window the verdicts stand without the PCS
        assert _attest_and_fetch(host, address) == ("UpToDate", SECRET)
        # a quote whose collateral is not cached needs the PCS: UNAVAILABLE with the reason, no verdict
        code, reason, message = _refusal(stub, foreign)
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "PCCS_UNAVAILABLE")
        assert pcs.url.removeprefix("http://") in message
    finally:
        if channel is not None:
            channel.close()
        if verifier is not None:
            stop_process(verifier)
        pcs.stop(signal.SIGKILL)

    # a fresh verifier during the outage has nothing cached: the good quote is UNAVAILABLE too
    fresh, fresh_address = start_verifier(pki_dir, tmp_path / "fresh.db", pcs.url)
    channel = grpc.insecure_channel(fresh_address)
    try:
        td, _ = Td.launch(host.address, image(attributes=SEPT_VE_DISABLE, payload=PAYLOAD), timeout=60)
        with td:
            quote = td.quote(bytes(64))
        code, reason, _ = _refusal(attestation_pb2_grpc.VerifierServiceStub(channel), quote)
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "PCCS_UNAVAILABLE")
        assert fresh.poll() is None
    finally:
        channel.close()
        stop_process(fresh)

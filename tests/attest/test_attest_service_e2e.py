"""The verifier as a real process (``python -m attest.verifier.service.main``) on 127.0.0.1:0 (issue 4,
verifier).

One process trusts Intel's root and the simulated root, holds the real v4 collateral (when the real vectors
are there) and the simulated PCS's collateral, and verifies at the v4 vector's time (``--at``; the simulated
PCS is anchored at the same time). Refusals are asserted on status code and ``ErrorInfo.reason``, never on
message text.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from attest_vectors import AVAILABLE, V4, collateral_path, expected_for, mixed_time, read_quote
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc

from attest.formats import binding
from attest.formats.eventlog import EventLog, SpecIdEvent, encode_event_log, measure, replay
from attest.formats.eventlog.ccel import EV_EFI_ACTION
from attest.formats.secret_jwe import open_secret
from attest.intel import Pki, PkiOptions, init_pki
from attest.intel.quoting_enclave import QuotingEnclave
from attest.intel.td_report_builder import DEBUG, SEPT_VE_DISABLE, build_td_report
from attest.verifier.dcap.roots import INTEL_SGX_ROOT_CA_PEM
from attest.verifier.token import tdx_claims, verify
from tests.conftest import ADMIN_CREDENTIAL, ADMIN_FILE
from wire.credentials import with_bearer
from wire.rpc_status import error_info
from wire.v1 import attestation_pb2 as pb
from wire.v1 import attestation_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
V4_AT = mixed_time()
MRTD = bytes.fromhex("5a" * 48)
LOG = EventLog(SpecIdEvent(), (measure(1, EV_EFI_ACTION, b"tdvf"), measure(3, EV_EFI_ACTION, b"kernel")))
SECRET = b"the disk encryption key"
PATH = "default/key/disk"


@dataclass
class VerifierProcess:
    proc: subprocess.Popen[str]
    channel: grpc.Channel
    stub: attestation_pb2_grpc.VerifierServiceStub
    #: The operator's calls (policy, resources, audit log) with the admin credential.
    admin: attestation_pb2_grpc.VerifierServiceStub

    def stop(self) -> int:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return init_pki(tmp_path_factory.mktemp("pki") / "pki", PkiOptions(now=V4_AT, seed=b"e2e"))


@pytest.fixture
def start_verifier(pki: Pki, tmp_path: Path) -> Iterator[Callable[[Path], VerifierProcess]]:
    started: list[VerifierProcess] = []
    intel_root = tmp_path / "intel_sgx_root_ca.pem"
    intel_root.write_bytes(INTEL_SGX_ROOT_CA_PEM)
    real = ["--collateral", str(collateral_path(V4))] if AVAILABLE else []

    def start(db: Path) -> VerifierProcess:
        cmd = [
            sys.executable,
            "-m",
            "attest.verifier.service.main",
            "--listen",
            "127.0.0.1:0",
            "--db",
            str(db),
            "--root",
            str(intel_root),
            "--root",
            str(pki.directory / "root_ca.pem"),
            *real,
            "--collateral",
            str(pki.directory / "collateral.json"),
            "--at",
            str(V4_AT),
            "--admin-credential-file",
            str(ADMIN_FILE),
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("listening on 127.0.0.1:"):
            proc.kill()
            raise RuntimeError(f"verifier did not start: {line!r} {proc.communicate(timeout=5)[1]}")
        proc.stdout.readline()  # admin credential: the session's
        channel = grpc.insecure_channel(line.removeprefix("listening on "))
        grpc.channel_ready_future(channel).result(timeout=20)
        admin = attestation_pb2_grpc.VerifierServiceStub(with_bearer(channel, ADMIN_CREDENTIAL))
        started.append(
            VerifierProcess(proc, channel, attestation_pb2_grpc.VerifierServiceStub(channel), admin)
        )
        return started[-1]

    yield start
    for v in started:
        if v.proc.poll() is None:
            v.proc.kill()
            v.proc.wait(5)
        v.channel.close()


def refusal(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    rpc_err = err.value
    info = error_info(rpc_err)
    assert info is not None and info.domain == "tdxsim.v1"
    return rpc_err.code(), info.reason  # type: ignore[attr-defined]


def sim_quote(pki: Pki, nonce: bytes, key: ec.EllipticCurvePrivateKey, *, debug: bool = False) -> bytes:
    platform = pki.platform(0)
    attributes = SEPT_VE_DISABLE | (DEBUG if debug else 0)
    report = build_td_report(
        report_data=binding.report_data(nonce, binding.spki_der(key.public_key())),
        mr_td=MRTD,
        td_attributes=attributes.to_bytes(8, "little"),
        rtmrs=replay(LOG),
    )
    return QuotingEnclave(platform.key, platform.chain_pem).quote(report)


def attest_td(
    stub: attestation_pb2_grpc.VerifierServiceStub, pki: Pki, *, debug: bool = False
) -> tuple[ec.EllipticCurvePrivateKey, bytes, pb.AttestRequest]:
    key = ec.generate_private_key(ec.SECP256R1())
    nonce = stub.GetNonce(pb.GetNonceRequest(), timeout=5).nonce
    request = pb.AttestRequest(
        quote=sim_quote(pki, nonce, key, debug=debug),
        event_log=encode_event_log(LOG),
        nonce=nonce,
        tee_public_key=binding.spki_der(key.public_key()),
    )
    return key, nonce, request


def open_response(resp: pb.GetResourceResponse, key: ec.EllipticCurvePrivateKey) -> bytes:
    return open_secret(resp.jwe_json, key)


def test_verifier_process_verifies_a_real_quote(
    start_verifier: Callable[[Path], VerifierProcess], tmp_path: Path
) -> None:
    # Real v4 quote, Intel's root, collateral time from expected.json; token verified from the JWKS alone.
    mr_td = expected_for(V4)["mr_td"]
    v = start_verifier(tmp_path / "verifier.db")
    stub = v.stub
    v.admin.SetPolicy(
        pb.SetPolicyRequest(
            name="real",
            policy_json=json.dumps({"require_nonce": False, "reference_values": {"mr_td": [mr_td]}}),
        ),
        timeout=5,
    )
    real = stub.Attest(pb.AttestRequest(quote=read_quote(V4), policy="real"), timeout=10)
    assert (real.tcb_status, real.ear_status) == ("UpToDate", "affirming")
    jwks = json.loads(stub.GetJwks(pb.GetJwksRequest(), timeout=5).jwks_json)
    claims = verify(real.token, jwks, time.time(), issuer="tdxsim-verifier").claims
    assert tdx_claims(claims)["mr_td"] == mr_td and jwks["keys"][0]["kid"] == real.kid
    # The same real quote under the default policy lacks a nonce; with a nonce its REPORTDATA cannot match.
    assert refusal(lambda: stub.Attest(pb.AttestRequest(quote=read_quote(V4)), timeout=10)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "NONCE_REQUIRED",
    )
    assert v.stop() == 0


def test_verifier_process_end_to_end(
    start_verifier: Callable[[Path], VerifierProcess], pki: Pki, tmp_path: Path
) -> None:
    v = start_verifier(tmp_path / "verifier.db")
    stub = v.stub
    health = health_pb2_grpc.HealthStub(v.channel).Check(
        health_pb2.HealthCheckRequest(service="tdxsim.v1.VerifierService"), timeout=5
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    default = stub.GetPolicy(pb.GetPolicyRequest(), timeout=5)
    assert default.built_in and json.loads(default.policy_json)["accepted_tcb_statuses"] == ["UpToDate"]

    # Simulated TD: fresh nonce bound with its ephemeral key, event log replayed; secret released sealed.
    v.admin.PutResource(
        pb.PutResourceRequest(
            path=PATH, secret=SECRET, policy_json=json.dumps({"claims": {"mr_td": [MRTD.hex()]}})
        ),
        timeout=5,
    )
    key, _, request = attest_td(stub, pki)
    good = stub.Attest(request, timeout=10)
    assert good.ear_status == "affirming"
    resp = stub.GetResource(
        pb.GetResourceRequest(path=PATH), metadata=[("authorization", f"Bearer {good.token}")], timeout=5
    )
    assert SECRET not in resp.SerializeToString()
    assert open_response(resp, key) == SECRET

    # Refusals with precise reasons.
    assert refusal(lambda: stub.Attest(request, timeout=10)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "NONCE_REPLAYED",
    )
    _, _, debug_request = attest_td(stub, pki, debug=True)
    assert refusal(lambda: stub.Attest(debug_request, timeout=10)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "DEBUG_TD",
    )
    _, _, bad = attest_td(stub, pki)
    tampered = bytearray(bad.quote)
    tampered[600] ^= 0x10
    bad.quote = bytes(tampered)
    assert refusal(lambda: stub.Attest(bad, timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "VERIFY_QUOTE_SIGNATURE",
    )
    _, _, unknown = attest_td(stub, pki)
    unknown.nonce = bytes(32)
    assert refusal(lambda: stub.Attest(unknown, timeout=10)) == (grpc.StatusCode.NOT_FOUND, "NONCE_NOT_FOUND")
    assert refusal(lambda: stub.GetResource(pb.GetResourceRequest(path=PATH), timeout=5)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_MISSING",
    )
    assert refusal(
        lambda: stub.GetResource(
            pb.GetResourceRequest(path="default/key/none"),
            metadata=[("authorization", f"Bearer {good.token}")],
            timeout=5,
        )
    ) == (grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND")
    assert refusal(lambda: stub.GetPolicy(pb.GetPolicyRequest(name="nope"), timeout=5)) == (
        grpc.StatusCode.NOT_FOUND,
        "POLICY_NOT_FOUND",
    )
    assert refusal(
        lambda: v.admin.SetPolicy(pb.SetPolicyRequest(name="x", policy_json='{"allow_debug": 1}'), timeout=5)
    ) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "POLICY_INVALID",
    )

    # Expired nonce: a one-second nonce presented after it expired.
    key, _, _ = attest_td(stub, pki)
    short = stub.GetNonce(pb.GetNonceRequest(ttl_seconds=1), timeout=5)
    late = pb.AttestRequest(
        quote=sim_quote(pki, short.nonce, key),
        nonce=short.nonce,
        tee_public_key=binding.spki_der(key.public_key()),
    )
    time.sleep(max(0.0, short.expires_at_unix + 1.05 - time.time()))
    assert refusal(lambda: stub.Attest(late, timeout=10)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "NONCE_EXPIRED",
    )

    entries = v.admin.GetAuditLog(pb.GetAuditLogRequest(), timeout=5).entries
    reasons = [(e.action, e.reason) for e in entries]
    assert ("Attest", "NONCE_REPLAYED") in reasons and ("GetResource", "OK") in reasons
    assert all(SECRET.decode() not in e.detail_json for e in entries)
    assert v.stop() == 0


def test_restart_keeps_used_nonces_policies_resources_and_signing_key(
    start_verifier: Callable[[Path], VerifierProcess], pki: Pki, tmp_path: Path
) -> None:
    db = tmp_path / "verifier.db"
    first = start_verifier(db)
    first.admin.SetPolicy(
        pb.SetPolicyRequest(
            name="default", policy_json=json.dumps({"reference_values": {"mr_td": [MRTD.hex()]}})
        ),
        timeout=5,
    )
    first.admin.PutResource(pb.PutResourceRequest(path=PATH, secret=SECRET, policy_json="{}"), timeout=5)
    key, _, request = attest_td(first.stub, pki)
    token = first.stub.Attest(request, timeout=10).token
    assert first.stop() == 0

    second = start_verifier(db)
    assert refusal(lambda: second.stub.Attest(request, timeout=10)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "NONCE_REPLAYED",
    )
    stored = second.stub.GetPolicy(pb.GetPolicyRequest(name="default"), timeout=5)
    assert not stored.built_in and MRTD.hex() in stored.policy_json
    resp = second.stub.GetResource(
        pb.GetResourceRequest(path=PATH), metadata=[("authorization", f"Bearer {token}")], timeout=5
    )
    assert open_response(resp, key) == SECRET
    assert second.stop() == 0

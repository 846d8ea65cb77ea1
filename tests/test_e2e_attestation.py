"""Issue 4's multi-process flow: a host with a simulated PCS, a verifier, and TD guests.

A guest with the expected MRTD gets a token and its secret; another image, a replayed nonce, an expired
nonce and a DEBUG TD are refused; the secret never leaves the verifier in clear.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk as jwcrypto_jwk

from attest.formats import binding
from attest.formats.quote import decode_quote
from guest.attestation import Verifier
from guest.errors import AttestationRefused, from_rpc_error
from guest.td import Td
from tests.conftest import ADMIN_CREDENTIAL, ADMIN_FILE, ROOT, HostProcess, start_host
from wire.credentials import with_bearer
from wire.v1 import attestation_pb2, attestation_pb2_grpc, host_pb2

PAGE = 4096
MIB = 1 << 20
KERNEL = b"tdxsim demo kernel\n" * 300
SECRET = b"disk-encryption-key: 6f1d...c0de"
SEPT_VE_DISABLE, DEBUG = 1 << 28, 1 << 0


def image(kernel: bytes = KERNEL, attributes: int = SEPT_VE_DISABLE) -> host_pb2.TdImage:
    return host_pb2.TdImage(
        memory_bytes=32 * MIB,
        attributes=attributes,
        payload=[host_pb2.Payload(gpa=MIB, data=kernel, measure=True)],
    )


def expected_mrtd(img: host_pb2.TdImage) -> str:
    """The relying party's reference value, computed from the image alone (memory-model.md §8)."""
    h = hashlib.sha384()
    for p in img.payload:
        data = p.data + bytes(-len(p.data) % PAGE)
        for off in range(0, len(data), PAGE):
            h.update(b"MEM.PAGE.ADD".ljust(16, b"\0") + (p.gpa + off).to_bytes(8, "little") + bytes(104))
            for chunk in range(off, off + PAGE, 256) if p.measure else ():
                h.update(b"MR.EXTEND".ljust(16, b"\0") + (p.gpa + chunk).to_bytes(8, "little") + bytes(104))
                h.update(data[chunk : chunk + 256])
    return h.hexdigest()


class VerifierProcess:
    def __init__(self, pki: Path, db: Path) -> None:
        cmd = [
            sys.executable, "-m", "tdxsim.cli", "verifier", "--listen", "127.0.0.1:0", "--db", str(db),
            "--root", str(pki / "root_ca.pem"), "--collateral", str(pki / "collateral.json"),
            "--admin-credential-file", str(ADMIN_FILE),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line.startswith("listening on "), line
        self.address = line.removeprefix("listening on ")
        self.proc.stdout.readline()  # admin credential: the session's
        self.channel = grpc.insecure_channel(self.address)
        self.stub = attestation_pb2_grpc.VerifierServiceStub(self.channel)
        #: The operator's calls: policy, reference values, resources, audit log.
        self.admin = attestation_pb2_grpc.VerifierServiceStub(with_bearer(self.channel, ADMIN_CREDENTIAL))

    def stop(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HostProcess, VerifierProcess]]:
    tmp = tmp_path_factory.mktemp("attestation")
    made = subprocess.run(
        [sys.executable, "-m", "tdxsim.cli", "pki", "init", str(tmp / "pki")],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    host = start_host("--pki", str(tmp / "pki"))
    verifier = VerifierProcess(tmp / "pki", tmp / "verifier.db")
    try:
        policy = {"reference_values": {"mr_td": [expected_mrtd(image())]}}
        verifier.admin.SetPolicy(
            attestation_pb2.SetPolicyRequest(name="prod", policy_json=json.dumps(policy)), timeout=10
        )
        resource_policy = {"attestation_policies": ["prod"], "claims": {"mr_td": [expected_mrtd(image())]}}
        verifier.admin.PutResource(
            attestation_pb2.PutResourceRequest(
                path="prod/key/disk", secret=SECRET, policy_json=json.dumps(resource_policy)
            ),
            timeout=10,
        )
        yield host, verifier
    finally:
        verifier.stop()
        host.stop()


def launch(host: HostProcess, img: host_pb2.TdImage) -> Td:
    td, _ = Td.launch(host.address, img)
    return td


def test_guest_with_the_expected_mrtd_gets_a_token_and_its_secret(
    world: tuple[HostProcess, VerifierProcess],
) -> None:
    host, verifier = world
    with launch(host, image()) as td, Verifier(verifier.address) as v:
        td.measure(2, b"app: started")  # an RTMR extend with its event-log entry
        attestation = v.attest(td, policy="prod")
        assert (attestation.tcb_status, attestation.ear_status) == ("UpToDate", "affirming")
        assert v.fetch_secret(attestation, "prod/key/disk") == SECRET


def test_secret_travels_sealed_and_is_never_logged(world: tuple[HostProcess, VerifierProcess]) -> None:
    host, verifier = world
    with launch(host, image()) as td, Verifier(verifier.address) as v:
        attestation = v.attest(td, policy="prod")
        raw = verifier.stub.GetResource(
            attestation_pb2.GetResourceRequest(path="prod/key/disk"),
            metadata=[("authorization", f"Bearer {attestation.token}")],
            timeout=10,
        )
    assert SECRET not in raw.SerializeToString()
    # An independent JOSE library opens the released JWE with the TD's private key alone.
    opened = jwcrypto_jwe.JWE()
    opened.deserialize(raw.jwe_json, key=jwcrypto_jwk.JWK.from_pyca(attestation.private_key))
    assert opened.payload == SECRET
    header = json.loads(opened.objects["protected"])
    assert (header["alg"], header["enc"], header["epk"]["crv"]) == ("ECDH-ES+A256KW", "A256GCM", "P-256")
    other = jwcrypto_jwk.JWK.from_pyca(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(jwcrypto_jwe.InvalidJWEData):
        jwcrypto_jwe.JWE().deserialize(raw.jwe_json, key=other)
    audit = verifier.admin.GetAuditLog(attestation_pb2.GetAuditLogRequest(limit=1000), timeout=10)
    assert SECRET not in audit.SerializeToString()
    assert SECRET.hex().encode() not in audit.SerializeToString()


@pytest.mark.parametrize(
    ("img", "reason"),
    [
        (image(kernel=KERNEL + b"evil"), "MRTD_MISMATCH"),
        (image(attributes=SEPT_VE_DISABLE | DEBUG), "DEBUG_TD"),
    ],
    ids=["another-image", "debug-td"],
)
def test_other_images_and_debug_tds_are_refused(
    world: tuple[HostProcess, VerifierProcess], img: host_pb2.TdImage, reason: str
) -> None:
    host, verifier = world
    with launch(host, img) as td, Verifier(verifier.address) as v:
        with pytest.raises(AttestationRefused) as refused:
            v.attest(td, policy="prod")
        log = td.event_log()
    assert (refused.value.code, refused.value.reason) == ("PERMISSION_DENIED", reason)
    # The refusal carries the evidence it refused, for a caller that keeps it (``tdxsim guest --evidence``).
    assert decode_quote(refused.value.quote).body.mr_td.hex() == expected_mrtd(img)
    assert refused.value.event_log == log


def _attest_with(verifier: VerifierProcess, td: Td, nonce: bytes) -> grpc.RpcError | None:
    spki = binding.spki_der(ec.generate_private_key(ec.SECP256R1()).public_key())
    request = attestation_pb2.AttestRequest(
        quote=td.quote(binding.report_data(nonce, spki)), nonce=nonce, tee_public_key=spki, policy="prod"
    )
    try:
        verifier.stub.Attest(request, timeout=20)
    except grpc.RpcError as err:
        return err
    return None


def test_replayed_and_expired_nonces_are_refused(world: tuple[HostProcess, VerifierProcess]) -> None:
    host, verifier = world
    with launch(host, image()) as td:
        nonce = verifier.stub.GetNonce(attestation_pb2.GetNonceRequest(), timeout=10).nonce
        assert _attest_with(verifier, td, nonce) is None
        replayed = _attest_with(verifier, td, nonce)
        assert replayed is not None
        assert (from_rpc_error(replayed).code, from_rpc_error(replayed).reason) == (
            "FAILED_PRECONDITION",
            "NONCE_REPLAYED",
        )
        short = verifier.stub.GetNonce(attestation_pb2.GetNonceRequest(ttl_seconds=1), timeout=10).nonce
        time.sleep(1.5)
        expired = _attest_with(verifier, td, short)
        assert expired is not None
        assert (from_rpc_error(expired).code, from_rpc_error(expired).reason) == (
            "FAILED_PRECONDITION",
            "NONCE_EXPIRED",
        )


def test_guest_processes_attest_and_fetch_the_secret_from_the_cli(
    world: tuple[HostProcess, VerifierProcess], tmp_path: Path
) -> None:
    """Two guest OS processes (`tdxsim guest ... run`) attest at once; the image's offline MRTD
    (`tdxsim guest ... mrtd`) is the policy's reference value."""
    host, verifier = world
    doc = {"memory": "32M", "payload": [{"gpa": "0x100000", "hex": KERNEL.hex(), "measure": True}]}
    (tmp_path / "image.json").write_text(json.dumps(doc))
    mrtd = subprocess.run(
        [sys.executable, "-m", "tdxsim.cli", "guest", "--image", str(tmp_path / "image.json"), "mrtd"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert mrtd.stdout.strip() == expected_mrtd(image())
    expect = f'"text:{SECRET.decode()}"'
    (tmp_path / "work.tdx").write_text(
        "extend 3 text:app-started\n"
        f"attest {verifier.address} policy prod secret prod/key/disk expect {expect}\n"
    )
    cmd = [
        sys.executable, "-m", "tdxsim.cli", "guest", "--host", host.address, "--image",
        str(tmp_path / "image.json"), "--json", "run", str(tmp_path / "work.tdx"),
    ]  # fmt: skip
    guests = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for proc in guests:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
        steps = json.loads(out)["steps"]
        assert steps[-1]["values"]["secret_sha256"] == hashlib.sha256(SECRET).hexdigest()
        assert SECRET.decode() in steps[-1]["detail"]

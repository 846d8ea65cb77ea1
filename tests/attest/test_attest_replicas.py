"""Verifier replicas sharing one PostgreSQL database, as processes (``tdxsim verifier --db postgresql://…``
started by ``tdxsim.fleet.start_verifiers``) on a server the test run starts from the machine's binaries.

- a nonce issued by one replica and presented to both at once is accepted exactly once (100 trials);
- a token issued by one replica is honoured by the other (same key set, JWKS alike); a key rotated at a
  replica started with ``--rotate-signing-key`` is published by all, and its tokens are honoured by all;
- SIGKILL of one replica under 8 concurrent attesting guests: every guest finishes through the other, and
  every token a guest got has its nonce used and its audit row in the database;
- PostgreSQL stopped: both replicas' health turns NOT_SERVING before any request fails, and they answer
  UNAVAILABLE ``STORE_UNAVAILABLE``; restarted: health SERVING again and both serve again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc

from attest.formats import binding
from attest.intel import PkiOptions, QuotingEnclave, build_td_report, init_pki
from attest.verifier.token import b64url_decode
from guest.attestation import Verifier
from tdxsim.fleet import Member, start_verifiers, stop_members
from tdxsim.pgcluster import LocalCluster
from tests.conftest import ADMIN_CREDENTIAL, ADMIN_FILE, ROOT, HostProcess, running_postgres, start_host
from wire.credentials import with_bearer
from wire.rpc_status import error_info
from wire.v1 import attestation_pb2, attestation_pb2_grpc

TRIALS = 100
GUESTS = 8
ATTESTS_PER_GUEST = 4
SECRET = b"replicated secret"


@dataclass
class Replicas:
    members: list[Member]
    pki: Path
    url: str
    qe: QuotingEnclave
    channels: list[grpc.Channel]

    def stub(self, index: int, admin: bool = False) -> attestation_pb2_grpc.VerifierServiceStub:
        channel = self.channels[index]
        return attestation_pb2_grpc.VerifierServiceStub(
            with_bearer(channel, ADMIN_CREDENTIAL) if admin else channel
        )

    @property
    def target(self) -> str:
        return ",".join(m.address for m in self.members)


def _start(tmp: Path, url: str, count: int = 2) -> Replicas:
    pki = init_pki(tmp / "pki", PkiOptions())
    members: list[Member] = []
    try:
        members += start_verifiers(
            count,
            db=url,
            roots=[tmp / "pki" / "root_ca.pem"],
            collaterals=[tmp / "pki" / "collateral.json"],
            logs=tmp / "logs",
            admin_credential_file=ADMIN_FILE,
        )
    except BaseException:
        stop_members(members)
        raise
    channels = [grpc.insecure_channel(m.address) for m in members]
    for channel in channels:
        grpc.channel_ready_future(channel).result(timeout=30)
    qe = QuotingEnclave(pki.platform(0).key, pki.platform(0).chain_pem)
    return Replicas(members, tmp / "pki", url, qe, channels)


def _stop(replicas: Replicas) -> None:
    for channel in replicas.channels:
        channel.close()
    stop_members(replicas.members)


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str) -> Iterator[Replicas]:
    started = _start(tmp_path, postgres_url)
    try:
        yield started
    finally:
        _stop(started)


def _evidence(qe: QuotingEnclave, nonce: bytes) -> tuple[bytes, bytes]:
    """(quote, SPKI) for a fresh key bound with ``nonce``: what a TD sends to Attest."""
    spki = binding.spki_der(ec.generate_private_key(ec.SECP256R1()).public_key())
    report = build_td_report(report_data=binding.report_data(nonce, spki))
    return qe.quote(report), spki


def test_a_nonce_is_accepted_exactly_once_across_replicas(replicas: Replicas) -> None:
    stubs = [replicas.stub(0), replicas.stub(1)]
    outcomes: list[list[str]] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for trial in range(TRIALS):
            nonce = stubs[trial % 2].GetNonce(attestation_pb2.GetNonceRequest(), timeout=10).nonce
            quote, spki = _evidence(replicas.qe, nonce)
            request = attestation_pb2.AttestRequest(quote=quote, nonce=nonce, tee_public_key=spki)
            barrier = threading.Barrier(2)

            def present(stub: attestation_pb2_grpc.VerifierServiceStub, barrier: threading.Barrier = barrier,
                        request: attestation_pb2.AttestRequest = request) -> str:  # fmt: skip
                barrier.wait()
                try:
                    return "token" if stub.Attest(request, timeout=30).token else "empty"
                except grpc.RpcError as err:
                    info = error_info(err)
                    return f"{err.code().name}:{info.reason if info else ''}"

            outcomes.append(sorted(pool.map(present, stubs)))
    double_spends = sum(o.count("token") > 1 for o in outcomes)
    assert double_spends == 0
    assert all(o == ["FAILED_PRECONDITION:NONCE_REPLAYED", "token"] for o in outcomes), outcomes


def test_a_token_from_one_replica_is_honoured_by_the_other(replicas: Replicas) -> None:
    policy = {"claims": {}, "attestation_policies": ["default"]}
    replicas.stub(0, admin=True).PutResource(
        attestation_pb2.PutResourceRequest(path="fleet/key", secret=SECRET, policy_json=json.dumps(policy)),
        timeout=10,
    )
    nonce = replicas.stub(0).GetNonce(attestation_pb2.GetNonceRequest(), timeout=10).nonce
    key = ec.generate_private_key(ec.SECP256R1())
    spki = binding.spki_der(key.public_key())
    quote = replicas.qe.quote(build_td_report(report_data=binding.report_data(nonce, spki)))
    reply = replicas.stub(0).Attest(
        attestation_pb2.AttestRequest(quote=quote, nonce=nonce, tee_public_key=spki), timeout=30
    )
    jwks = [replicas.stub(i).GetJwks(attestation_pb2.GetJwksRequest(), timeout=10).jwks_json for i in (0, 1)]
    assert json.loads(jwks[0]) == json.loads(jwks[1])
    assert reply.kid in jwks[1]
    released = replicas.stub(1).GetResource(
        attestation_pb2.GetResourceRequest(path="fleet/key"),
        metadata=[("authorization", f"Bearer {reply.token}")],
        timeout=10,
    )
    from attest.formats.secret_jwe import open_secret

    assert open_secret(released.jwe_json, key) == SECRET
    log = replicas.stub(1, admin=True).GetAuditLog(attestation_pb2.GetAuditLogRequest(), timeout=10)
    allowed = attestation_pb2.AUDIT_OUTCOME_ALLOWED
    assert [(e.action, e.outcome) for e in log.entries][-3:] == [
        ("PutResource", allowed),
        ("Attest", allowed),
        ("GetResource", allowed),
    ]


def test_a_key_rotated_at_one_replica_is_published_and_honoured_by_all(
    replicas: Replicas, tmp_path: Path
) -> None:
    before = json.loads(replicas.stub(0).GetJwks(attestation_pb2.GetJwksRequest(), timeout=10).jwks_json)
    [rotated] = start_verifiers(
        1,
        db=replicas.url,
        roots=[replicas.pki / "root_ca.pem"],
        collaterals=[replicas.pki / "collateral.json"],
        logs=tmp_path / "logs",
        admin_credential_file=ADMIN_FILE,
        first_index=2,
        extra=["--rotate-signing-key"],
    )
    try:
        with grpc.insecure_channel(rotated.address) as channel:
            stub = attestation_pb2_grpc.VerifierServiceStub(channel)
            nonce = stub.GetNonce(attestation_pb2.GetNonceRequest(), timeout=10).nonce
            quote, spki = _evidence(replicas.qe, nonce)
            reply = stub.Attest(
                attestation_pb2.AttestRequest(quote=quote, nonce=nonce, tee_public_key=spki), timeout=30
            )
    finally:
        stop_members([rotated])
    old_kids = [k["kid"] for k in before["keys"]]
    assert reply.kid not in old_kids
    policy = {"claims": {}, "attestation_policies": ["default"]}
    replicas.stub(1, admin=True).PutResource(
        attestation_pb2.PutResourceRequest(path="fleet/k2", secret=SECRET, policy_json=json.dumps(policy)),
        timeout=10,
    )
    released = replicas.stub(0).GetResource(  # the rotated key's token is honoured elsewhere
        attestation_pb2.GetResourceRequest(path="fleet/k2"),
        metadata=[("authorization", f"Bearer {reply.token}")],
        timeout=10,
    )
    assert released.jwe_json
    for index in (0, 1):  # the others publish current and previous keys, the rotated one included
        jwks_json = replicas.stub(index).GetJwks(attestation_pb2.GetJwksRequest(), timeout=10).jwks_json
        assert [k["kid"] for k in json.loads(jwks_json)["keys"]] == [*old_kids, reply.kid]


@pytest.fixture
def host(tmp_path: Path, replicas: Replicas) -> Iterator[HostProcess]:
    started = start_host("--pki", str(replicas.pki))
    try:
        yield started
    finally:
        started.stop()


def test_killing_a_replica_under_load_loses_nothing_committed(replicas: Replicas, host: HostProcess) -> None:
    from guest.td import Td
    from tests.test_e2e_attestation import image

    tokens: list[str] = []
    errors: list[BaseException] = []
    done = threading.Semaphore(0)
    lock = threading.Lock()

    def guest(index: int) -> None:
        try:
            td, _ = Td.launch(host.address, image(), f"g{index}", admin_credential=ADMIN_CREDENTIAL)
            try:
                with Verifier(replicas.target) as verifier:
                    for _ in range(ATTESTS_PER_GUEST):
                        got = verifier.attest(td).token
                        with lock:
                            tokens.append(got)
                        done.release()
            finally:
                td.close()
        except BaseException as err:  # reported below, with the others'
            errors.append(err)
            done.release()

    threads = [threading.Thread(target=guest, args=(i,)) for i in range(GUESTS)]
    for t in threads:
        t.start()
    for _ in range(GUESTS):  # a round of attestations is under way on both replicas
        assert done.acquire(timeout=120)
    victim = replicas.members[0]
    os.kill(victim.pid, signal.SIGKILL)
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert len(tokens) == GUESTS * ATTESTS_PER_GUEST

    nonces = [b64url_decode(_claims(t)["eat_nonce"]) for t in tokens]
    with psycopg.connect(replicas.url) as conn:
        used = {
            bytes(row[0])
            for row in conn.execute("SELECT nonce FROM nonces WHERE used_at IS NOT NULL").fetchall()
        }
        allowed = conn.execute(
            "SELECT COUNT(*) FROM audit WHERE action = 'Attest' AND outcome = 'ALLOWED'"
        ).fetchone()
    assert set(nonces) <= used  # every token's nonce is committed as used
    assert allowed is not None and allowed[0] >= len(tokens)  # and every token's audit row is there
    survivor = replicas.stub(1)
    jwks = survivor.GetJwks(attestation_pb2.GetJwksRequest(), timeout=10).jwks_json
    kids = {k["kid"] for k in json.loads(jwks)["keys"]}
    assert {_header(t)["kid"] for t in tokens} <= kids  # every token verifies at the survivor


def _claims(token: str) -> dict[str, object]:
    return json.loads(b64url_decode(token.split(".")[1]))  # type: ignore[no-any-return]


def _header(token: str) -> dict[str, object]:
    return json.loads(b64url_decode(token.split(".")[0]))  # type: ignore[no-any-return]


@pytest.fixture
def own_cluster() -> Iterator[LocalCluster]:
    """A server of its own: this test stops and restarts it."""
    with running_postgres() as cluster:
        yield cluster


def _nonce_outcome(stub: attestation_pb2_grpc.VerifierServiceStub) -> str:
    try:
        stub.GetNonce(attestation_pb2.GetNonceRequest(), timeout=20)
    except grpc.RpcError as err:
        info = error_info(err)
        return f"{err.code().name}:{info.reason if info else ''}"
    return "OK"


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _health(replicas: Replicas) -> list[int]:
    """Each replica's health for ``""`` and for VerifierService (one status when they agree)."""
    statuses = []
    for channel in replicas.channels:
        stub = health_pb2_grpc.HealthStub(channel)
        both = {
            stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
            for name in ("", "tdxsim.v1.VerifierService")
        }
        statuses.append(both.pop() if len(both) == 1 else -1)
    return statuses


def _health_within(replicas: Replicas, wanted: int, seconds: float = 15) -> list[int]:
    """The replicas' health once all are ``wanted``, or as it is after ``seconds``."""
    deadline = time.monotonic() + seconds
    statuses = _health(replicas)
    while statuses != [wanted] * len(statuses) and time.monotonic() < deadline:
        time.sleep(0.1)
        statuses = _health(replicas)
    return statuses


def test_replicas_without_their_database_are_unavailable_and_recover(
    tmp_path: Path, own_cluster: LocalCluster
) -> None:
    started = _start(tmp_path, own_cluster.create_database("verifier"))
    try:
        stubs = [started.stub(0), started.stub(1)]
        assert [_nonce_outcome(s) for s in stubs] == ["OK", "OK"]
        own_cluster.stop()
        # before any request fails: the replicas' own probes take them out of service
        assert _health_within(started, NOT_SERVING) == [NOT_SERVING] * 2
        assert [_nonce_outcome(s) for s in stubs] == ["UNAVAILABLE:STORE_UNAVAILABLE"] * 2
        own_cluster.start()
        assert _health_within(started, SERVING, seconds=60) == [SERVING] * 2
        deadline = time.monotonic() + 60
        outcomes = [_nonce_outcome(s) for s in stubs]
        while outcomes != ["OK", "OK"] and time.monotonic() < deadline:
            time.sleep(0.5)
            outcomes = [_nonce_outcome(s) for s in stubs]
        assert outcomes == ["OK", "OK"]
        assert all(_alive_pid(m.pid) for m in started.members)
    finally:
        _stop(started)


def _alive_pid(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_verifier_whose_database_cannot_be_reached_is_one_line_exit_2(tmp_path: Path) -> None:
    init_pki(tmp_path / "pki", PkiOptions())
    done = subprocess.run(
        [
            sys.executable, "-m", "tdxsim.cli", "verifier", "--listen", "127.0.0.1:0",
            "--db", f"postgresql://nobody@/none?host={tmp_path}",
            "--root", str(tmp_path / "pki" / "root_ca.pem"),
        ],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("tdxsim verifier: postgresql ") and str(tmp_path) in line

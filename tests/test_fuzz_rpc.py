"""Hostile requests against live processes: every method of HostService, TdGuestService and VerifierService,
with every kind of credential, as well-formed messages, as raw bytes and as stalled calls
(``tdxsim.hostile``; ``tdxsim soak`` runs the same generators for minutes).

One host (with a simulated PCS) and one verifier process serve the whole module, both with the session's
admin credential. Sentinel TDs hold unique markers in private memory (``tdxsim.arena``); a TD launched
through the guest library attests once, so mutated real quotes and a real token are among the inputs.

The contract (docs/conventions.md §7, docs/grpc.md "Credentials"): no call ever ends INTERNAL or UNKNOWN;
bytes that do not decode are INVALID_ARGUMENT (on HostService an authentication refusal is right as well
without the admin credential, since it is checked before decoding); no response carries a sentinel's marker
or the verifier's secret in clear; sentinels keep their data; both servers stay alive and healthy; and once
every TD is gone every KeyID and every frame is free. Hypothesis shrinks a failing example to one call,
printed with the bytes that reproduce it.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from conftest import ADMIN_CREDENTIAL, ADMIN_FILE, ROOT, HostProcess, make_pki, start_host
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guest.image import load_image
from tdxsim.arena import Arena, Probe
from tdxsim.hostile import CREDENTIAL_KINDS, METHODS, NEVER, Hostile, Method, Outcome, Stall, breach, draw
from wire.credentials import with_bearer
from wire.v1 import attestation_pb2, attestation_pb2_grpc, guest_pb2, guest_pb2_grpc

SECRET = b"fuzz-probe-secret-7d1e44c2a9"
SECRET_PATH = "probe/key/secret"
CALL_TIMEOUT = 5.0
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
METHOD_IDS = [m.label for m in METHODS]


@dataclass
class Stack:
    host: HostProcess
    verifier: subprocess.Popen[str]
    verifier_address: str
    arena: Arena
    probe: Probe
    host_log: list[str]
    verifier_log: Path

    def logs(self) -> str:
        return "".join(self.host_log)[-4000:] + self.verifier_log.read_text()[-4000:]


def _drain(stream: object, into: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.append(line)


def _start_verifier(folder: Path) -> tuple[subprocess.Popen[str], str, Path]:
    log = folder / "verifier.stderr"
    cmd = [
        sys.executable,
        "-m",
        "tdxsim.cli",
        "verifier",
        "--listen",
        "127.0.0.1:0",
        "--db",
        str(folder / "verifier.db"),
        "--root",
        str(folder / "pki" / "root_ca.pem"),
        "--collateral",
        str(folder / "pki" / "collateral.json"),
        "--admin-credential-file",
        str(ADMIN_FILE),
    ]
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("listening on "), (line, log.read_text())
    proc.stdout.readline()  # admin credential: the session's
    return proc, line.removeprefix("listening on "), log


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("fuzz")
    make_pki(folder / "pki")
    host = start_host("--pki", str(folder / "pki"))
    host_log: list[str] = []
    threading.Thread(target=_drain, args=(host.proc.stderr, host_log), daemon=True).start()
    verifier, address, log = _start_verifier(folder)
    arena = Arena(host.address, host.admin_credential, address, ADMIN_CREDENTIAL, protected={SECRET_PATH})
    probe = None
    try:
        arena.setup()
        probe = Probe(
            host.address, host.admin_credential, load_image(ROOT / "examples/image.json").image, "probe"
        )
        assert arena.verifier is not None
        evidence = probe.attest(arena.verifier, "")
        admin = attestation_pb2_grpc.VerifierServiceStub(with_bearer(arena.verifier, ADMIN_CREDENTIAL))
        resource = {"attestation_policies": ["default"]}
        admin.PutResource(
            attestation_pb2.PutResourceRequest(
                path=SECRET_PATH, secret=SECRET, policy_json=json.dumps(resource)
            ),
            timeout=10,
        )
        assert probe.fetch(arena.verifier, SECRET_PATH) == SECRET
        arena.secrets.append(SECRET)
        arena.tokens.append(evidence.token)
        arena.corpus.update(
            quote=[evidence.quote],
            event_log=[evidence.event_log],
            nonce=[evidence.nonce],
            tee_public_key=[evidence.tee_public_key],
        )
        arena.reconcile()  # the probe's TD is a guest's: looked at, never changed
        yield Stack(host, verifier, address, arena, probe, host_log, log)
    finally:
        if probe is not None:
            probe.close()
        arena.close()
        host.stop()
        verifier.terminate()
        try:
            verifier.wait(10)
        except subprocess.TimeoutExpired:
            verifier.kill()
            verifier.wait(5)


class Round:
    """Examples of one test share the stack; every few examples the fuzz TD pool is refilled."""

    count = 0


def _alive(stack: Stack) -> None:
    assert stack.host.proc.poll() is None, f"the host died ({stack.host.proc.returncode}): {stack.logs()}"
    assert stack.verifier.poll() is None, f"the verifier died ({stack.verifier.returncode}): {stack.logs()}"


def _prepare(stack: Stack) -> None:
    _alive(stack)
    Round.count += 1
    if Round.count % 8 == 0:
        stack.arena.reconcile()


def _explain(hostile: Hostile, outcome: Outcome, why: str) -> str:
    return f"{why}\n  call: {hostile.describe()}\n  reproducer: {json.dumps(hostile.reproducer())[:3000]}"


def _check(stack: Stack, hostile: Hostile, outcome: Outcome, findings_before: int) -> None:
    assert outcome.code not in NEVER, _explain(hostile, outcome, outcome.text())
    why = breach(hostile, outcome)
    assert why is None, _explain(hostile, outcome, why)
    leaks = [f.what for f in stack.arena.findings[findings_before:]]
    assert not leaks, _explain(hostile, outcome, f"leaked: {leaks}")
    _alive(stack)


@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
@settings(FUZZ, max_examples=20)
@given(rnd=st.randoms(use_true_random=False), kind=st.sampled_from(CREDENTIAL_KINDS))
def test_hostile_messages(stack: Stack, method: Method, rnd: random.Random, kind: str) -> None:
    """Well-formed requests with edge values, under every kind of credential: never INTERNAL or UNKNOWN,
    never a marker or the secret in a response."""
    _prepare(stack)
    hostile = draw(rnd, stack.arena.world(), method=method, mode="message", kind=kind)
    before = len(stack.arena.findings)
    outcome = stack.arena.run(hostile, CALL_TIMEOUT)
    _check(stack, hostile, outcome, before)


@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
@settings(FUZZ, max_examples=12)
@given(rnd=st.randoms(use_true_random=False), kind=st.sampled_from(CREDENTIAL_KINDS))
def test_raw_bytes(stack: Stack, method: Method, rnd: random.Random, kind: str) -> None:
    """Random, truncated, corrupted and malformed bytes: a request that does not decode is INVALID_ARGUMENT
    (or, on HostService without the admin credential, the credential's refusal); one that decodes is served
    like any other request."""
    _prepare(stack)
    hostile = draw(rnd, stack.arena.world(), method=method, mode="raw", kind=kind)
    before = len(stack.arena.findings)
    outcome = stack.arena.run(hostile, CALL_TIMEOUT)
    _check(stack, hostile, outcome, before)


def _echo(stack: Stack) -> grpc.StatusCode:
    stub = guest_pb2_grpc.TdGuestServiceStub(stack.arena.host)
    try:
        stub.Echo(guest_pb2.EchoRequest(payload=b"ping"), timeout=3)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


@settings(FUZZ, max_examples=8)
@given(rnd=st.randoms(use_true_random=False), stalls=st.integers(1, 3))
def test_stalled_calls(stack: Stack, rnd: random.Random, stalls: int) -> None:
    """Calls that send their headers and then nothing: while they hang, both servers still answer; each then
    ends (released, cancelled, half-closed without a message, or at its deadline) with a proper status."""
    _prepare(stack)
    world = stack.arena.world()
    before = len(stack.arena.findings)
    pending = []
    for _ in range(stalls):
        hostile = draw(rnd, world, mode="stall")
        channel = stack.arena.channel_for(hostile.method.service)
        assert channel is not None
        stall = Stall(hostile, channel, CALL_TIMEOUT)
        stall.start()
        pending.append(stall)
    assert stack.arena.healthy(timeout=3) == {"host": True, "verifier": True}
    assert _echo(stack) == grpc.StatusCode.OK
    for stall in pending:
        outcome = stall.finish()
        stack.arena.learn(stall.hostile, outcome)
        stack.arena.scan(stall.hostile, outcome)
        _check(stack, stall.hostile, outcome, before)


def test_after_the_fuzz_everything_holds(stack: Stack) -> None:
    """Afterwards: both servers alive and healthy, no call leaked a marker or the secret, every sentinel
    holds its data, the probe's secret still opens for it only, the counters agree with the TDs, and once
    every TD is gone every KeyID and every physical frame is free."""
    _alive(stack)
    arena = stack.arena
    assert arena.healthy() == {"host": True, "verifier": True}
    assert _echo(stack) == grpc.StatusCode.OK
    assert not arena.findings, [f.as_dict() for f in arena.findings]
    assert arena.check_sentinels() == []
    assert arena.verifier is not None
    assert stack.probe.fetch(arena.verifier, SECRET_PATH) == SECRET
    assert arena.accounting() == []
    stack.probe.close()
    arena.teardown()
    assert arena.wait_empty(10), [(t.td_id, t.name) for t in arena.list_tds()]
    assert arena.accounting(empty=True) == []
    _alive(stack)

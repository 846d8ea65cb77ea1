"""Who may call what: every method of every service against no credential, a TD's credential, another TD's
credential and the operator's admin credential (docs/grpc.md "Credentials"); admin credential files.

The host runs as a real process; the verifier is served in process through a real channel, with TD
credentials that are tokens its own keys signed (what ``Attest`` hands a TD).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import ROOT, HostProcess

from attest.verifier.dcap.quote_verifier import load_anchors
from attest.verifier.dcap.roots import INTEL_SGX_ROOT_CA_PEM
from attest.verifier.service.core import CollateralIndex, ServiceConfig, VerifierCore
from attest.verifier.service.grpc_server import create_server
from attest.verifier.store import SqliteStore
from attest.verifier.token import build_claims
from wire.credentials import generate_credential_file, read_credential_file
from wire.rpc_status import error_info
from wire.v1 import attestation_pb2, guest_pb2, host_pb2, host_pb2_grpc
from wire.v1 import attestation_pb2_grpc as verifier_grpc

MIB = 1 << 20
REFUSED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


def _status(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    """The status code and ErrorInfo reason a call ends with (OK, "" on success)."""
    try:
        result = call()
        if isinstance(result, Iterator):
            next(result)
            result.cancel()  # type: ignore[attr-defined]
    except grpc.RpcError as err:
        info = error_info(err)
        return err.code(), info.reason if info is not None else ""  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, ""


def _auth(credential: str | None) -> tuple[tuple[str, str], ...]:
    return () if credential is None else (("authorization", f"Bearer {credential}"),)


def _call(channel: grpc.Channel, service: Any, method: str, request: Any, credential: str | None) -> Any:
    descriptor = service.methods_by_name[method]
    path = f"/{service.full_name}/{method}"
    response_class = _message_class(descriptor.output_type)
    if descriptor.server_streaming:
        stream = channel.unary_stream(path, lambda m: m.SerializeToString(), response_class.FromString)
        return lambda: stream(request, metadata=_auth(credential), timeout=10)
    unary = channel.unary_unary(path, lambda m: m.SerializeToString(), response_class.FromString)
    return lambda: unary(request, metadata=_auth(credential), timeout=10)


def _message_class(descriptor: Any) -> Any:
    module = {"host.proto": host_pb2, "guest.proto": guest_pb2, "attestation.proto": attestation_pb2}
    return getattr(module[descriptor.file.name.rsplit("/", 1)[-1]], descriptor.name)


# ---- the host ------------------------------------------------------------------------------------------


def _create_td(host: HostProcess, name: str) -> host_pb2.CreateTdResponse:
    admin = host_pb2_grpc.HostServiceStub(host.admin_channel)
    td = admin.CreateTd(host_pb2.CreateTdRequest(memory_bytes=16 * MIB, name=name), timeout=10)
    admin.FinalizeTd(host_pb2.FinalizeTdRequest(td_id=td.td_id), timeout=10)
    return td


@contextmanager
def _two_tds(host: HostProcess, method: str) -> Iterator[tuple[host_pb2.CreateTdResponse, ...]]:
    """TDs ``a`` and ``b`` for one method's checks, destroyed afterwards: the host has 48 KeyIDs, and the
    services have more methods than that."""
    tds = (_create_td(host, f"{method}-a"), _create_td(host, f"{method}-b"))
    try:
        yield tds
    finally:
        admin = host_pb2_grpc.HostServiceStub(host.admin_channel)
        for td in tds:
            with suppress(grpc.RpcError):  # a method under test may have destroyed it already
                admin.DestroyTd(host_pb2.DestroyTdRequest(td_id=td.td_id), timeout=10)


HOST_SERVICE = host_pb2.DESCRIPTOR.services_by_name["HostService"]
GUEST_SERVICE = guest_pb2.DESCRIPTOR.services_by_name["TdGuestService"]
#: HostService methods that are attack surfaces (docs/memory-model.md §1.2, §7.2): for the host operator only.
ATTACK_SURFACES = {
    "GuestMemfdRead",
    "GuestMemfdWrite",
    "GuestMemfdMmap",
    "GuestMemfdFtruncate",
    "PhysicalRead",
    "PhysicalWrite",
    "GetGpaMap",
}


def test_the_attack_surfaces_are_host_service_methods_behind_the_admin_credential() -> None:
    assert set(HOST_SERVICE.methods_by_name) >= ATTACK_SURFACES


@pytest.mark.parametrize("method", list(HOST_SERVICE.methods_by_name))
def test_host_service_needs_the_admin_credential(module_host: HostProcess, method: str) -> None:
    with _two_tds(module_host, method) as (a, b):
        request_class = _message_class(HOST_SERVICE.methods_by_name[method].input_type)
        # Requests a TD could use to hurt another: they must be refused before they are even decoded.
        fields = request_class.DESCRIPTOR.fields_by_name
        request = request_class(td_id=b.td_id) if "td_id" in fields else request_class()
        expected = {
            None: (grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIAL"),
            a.credential: (grpc.StatusCode.PERMISSION_DENIED, "TD_CREDENTIAL_NOT_ADMIN"),
            b.credential: (grpc.StatusCode.PERMISSION_DENIED, "TD_CREDENTIAL_NOT_ADMIN"),
            "forged-credential": (grpc.StatusCode.UNAUTHENTICATED, "UNKNOWN_CREDENTIAL"),
        }
        for credential, status in expected.items():
            assert _status(_call(module_host.channel, HOST_SERVICE, method, request, credential)) == status, (
                credential
            )
        tds = host_pb2_grpc.HostServiceStub(module_host.admin_channel).ListTds(
            host_pb2.ListTdsRequest(), timeout=10
        )
        assert {a.td_id, b.td_id} <= {td.td_id for td in tds.tds if not td.dead}, (
            "a refused call changed a TD"
        )
        # The admin credential gets the method itself: whatever it answers, never an auth refusal or a bug.
        own = request_class(td_id=1 << 30) if "td_id" in fields else request
        code, reason = _status(
            _call(module_host.channel, HOST_SERVICE, method, own, module_host.admin_credential)
        )
        assert code not in REFUSED | NEVER, (code, reason)


@pytest.mark.parametrize("method", list(GUEST_SERVICE.methods_by_name))
def test_td_guest_service_speaks_for_one_td(module_host: HostProcess, method: str) -> None:
    with _two_tds(module_host, method) as (a, b):
        request_class = _message_class(GUEST_SERVICE.methods_by_name[method].input_type)
        fields = request_class.DESCRIPTOR.fields_by_name
        request = request_class(td_id=a.td_id) if "td_id" in fields else request_class()
        if method == "Echo":  # a liveness probe that touches no TD: anyone may call it
            for credential in (None, a.credential, b.credential, module_host.admin_credential):
                assert (
                    _status(_call(module_host.channel, GUEST_SERVICE, method, request, credential))[0]
                    == grpc.StatusCode.OK
                )
            return
        expected = {
            None: (grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIAL"),
            b.credential: (grpc.StatusCode.PERMISSION_DENIED, "CREDENTIAL_FOR_ANOTHER_TD"),
            module_host.admin_credential: (grpc.StatusCode.UNAUTHENTICATED, "UNKNOWN_CREDENTIAL"),
        }
        for credential, status in expected.items():
            assert _status(_call(module_host.channel, GUEST_SERVICE, method, request, credential)) == status
        code, reason = _status(_call(module_host.channel, GUEST_SERVICE, method, request, a.credential))
        assert code not in REFUSED | NEVER, (code, reason)


# ---- the verifier --------------------------------------------------------------------------------------

VERIFIER_SERVICE = attestation_pb2.DESCRIPTOR.services_by_name["VerifierService"]
ADMIN_METHODS = {"SetPolicy", "SetReferenceValues", "PutResource", "GetAuditLog"}
PUBLIC_METHODS = {"GetNonce", "Attest", "GetJwks", "GetPolicy"}
TOKEN_METHODS = {"GetResource"}


def test_the_method_lists_cover_the_service() -> None:
    assert set(VERIFIER_SERVICE.methods_by_name) == ADMIN_METHODS | PUBLIC_METHODS | TOKEN_METHODS


@pytest.fixture
def verifier(tmp_path: Path) -> Iterator[tuple[grpc.Channel, VerifierCore, str]]:
    admin = "verifier-admin-" + "x" * 20
    store = SqliteStore(tmp_path / "v.db")
    core = VerifierCore(
        store, load_anchors([INTEL_SGX_ROOT_CA_PEM]), CollateralIndex(), ServiceConfig(admin_credential=admin)
    )
    server, port, _ = create_server("127.0.0.1:0", core, max_workers=2)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel, core, admin
    finally:
        channel.close()
        server.stop(None).wait(5)
        store.close()


def _td_token(core: VerifierCore, mr_td: str) -> str:
    now = int(time.time())
    claims = build_claims(
        issuer=core.config.issuer,
        build="test",
        now=now,
        ttl=300,
        policy_name="default",
        tdx={"mr_td": mr_td},
        vector={},
        nonce=None,
        tee_public_key_spki=None,
    )
    return core.keys.sign(claims)


@pytest.mark.parametrize("method", sorted(VERIFIER_SERVICE.methods_by_name))
def test_verifier_methods_by_credential(
    verifier: tuple[grpc.Channel, VerifierCore, str], method: str
) -> None:
    channel, core, admin = verifier
    td_a, td_b = _td_token(core, "aa" * 48), _td_token(core, "bb" * 48)
    request_class = _message_class(VERIFIER_SERVICE.methods_by_name[method].input_type)
    samples: dict[str, dict[str, Any]] = {
        "SetPolicy": {"name": "p", "policy_json": "{}"},
        "SetReferenceValues": {"name": "p"},
        "PutResource": {"path": "default/key/x", "secret": b"s", "policy_json": "{}"},
        "GetResource": {"path": "default/key/none"},
        "GetPolicy": {"name": "default"},
    }
    request = request_class(**samples.get(method, {}))
    statuses = {
        name: _status(_call(channel, VERIFIER_SERVICE, method, request, credential))
        for name, credential in (("none", None), ("td_a", td_a), ("td_b", td_b), ("admin", admin))
    }
    assert not {code for code, _ in statuses.values()} & NEVER, statuses
    if method in ADMIN_METHODS:
        assert statuses["none"] == (grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIAL")
        assert statuses["td_a"] == (grpc.StatusCode.PERMISSION_DENIED, "TOKEN_NOT_ADMIN")
        assert statuses["td_b"] == (grpc.StatusCode.PERMISSION_DENIED, "TOKEN_NOT_ADMIN")
        assert statuses["admin"][0] == grpc.StatusCode.OK
    elif method in TOKEN_METHODS:  # a TD's token fetches secrets; the admin credential is not a token
        assert statuses["none"] == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
        assert statuses["td_a"] == statuses["td_b"] == (grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND")
        assert statuses["admin"][0] == grpc.StatusCode.UNAUTHENTICATED
    else:  # evidence authenticates an attestation: the public methods answer everyone alike
        assert len(set(statuses.values())) == 1, statuses


def test_an_anonymous_caller_cannot_rewrite_policy_or_secrets_of_a_default_verifier(
    verifier: tuple[grpc.Channel, VerifierCore, str],
) -> None:
    channel, core, _ = verifier
    stub = verifier_grpc.VerifierServiceStub(channel)
    before = core.get_policy("default")
    with pytest.raises(grpc.RpcError):
        stub.SetPolicy(attestation_pb2.SetPolicyRequest(name="default", policy_json="{}"), timeout=5)
    with pytest.raises(grpc.RpcError):
        stub.PutResource(
            attestation_pb2.PutResourceRequest(path="default/key/disk", secret=b"evil"), timeout=5
        )
    assert core.get_policy("default") == before
    assert core.store.get_resource("default/key/disk") is None


# ---- credential files ----------------------------------------------------------------------------------


def _server(kind: str, tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    if kind == "host":
        args = ["host", "--phys-mem", "64M"]
    else:
        root = tmp_path / "root.pem"
        root.write_bytes(INTEL_SGX_ROOT_CA_PEM)
        args = ["verifier", "--db", str(tmp_path / "v.db"), "--root", str(root)]
    cmd = [sys.executable, "-m", "tdxsim.cli", *args, "--listen", "127.0.0.1:0", *extra]
    env = {k: v for k, v in os.environ.items() if k != "TDXSIM_ADMIN_CREDENTIAL_FILE"}
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.parametrize("kind", ["host", "verifier"])
def test_a_server_without_a_credential_generates_one_and_names_it_second(kind: str, tmp_path: Path) -> None:
    proc = _server(kind, tmp_path)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("listening on 127.0.0.1:")
        second = proc.stdout.readline().strip()
        assert second.startswith("admin credential: ")
        path = Path(second.removeprefix("admin credential: "))
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        admin = read_credential_file(path)
        assert len(admin) >= 32
        # Started without options, the admin API is locked: anonymous callers change nothing.
        with grpc.insecure_channel(first.removeprefix("listening on ")) as channel:
            if kind == "verifier":
                stub = verifier_grpc.VerifierServiceStub(channel)
                calls: list[Callable[[tuple[tuple[str, str], ...]], Any]] = [
                    lambda md: stub.SetPolicy(
                        attestation_pb2.SetPolicyRequest(name="default", policy_json="{}"),
                        metadata=md,
                        timeout=10,
                    ),
                    lambda md: stub.PutResource(
                        attestation_pb2.PutResourceRequest(
                            path="default/key/disk", secret=b"x", policy_json="{}"
                        ),
                        metadata=md,
                        timeout=10,
                    ),
                ]
            else:
                host_stub = host_pb2_grpc.HostServiceStub(channel)
                calls = [
                    lambda md: host_stub.LaunchTd(host_pb2.LaunchTdRequest(), metadata=md, timeout=10),
                    lambda md: host_stub.DestroyTd(
                        host_pb2.DestroyTdRequest(td_id=1), metadata=md, timeout=10
                    ),
                ]
            for call in calls:
                assert _status(partial(call, ())) == (grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIAL")
                assert _status(partial(call, _auth(admin)))[0] not in REFUSED | NEVER
    finally:
        proc.terminate()
        proc.wait(10)
    assert not path.exists(), "a generated credential is removed at a clean exit"


@pytest.mark.parametrize("kind", ["host", "verifier"])
@pytest.mark.parametrize(
    ("content", "mode", "why"),
    [
        ("", 0o600, "empty"),
        (" \n\t\n", 0o600, "empty"),
        ("s3cret-credential\n", 0o644, "lets other users read it"),
        ("two words\n", 0o600, "one printable word"),
    ],
)
def test_unusable_credential_files_are_refused_at_start(
    tmp_path: Path, kind: str, content: str, mode: int, why: str
) -> None:
    path = tmp_path / "admin"
    path.write_text(content)
    path.chmod(mode)
    proc = _server(kind, tmp_path, "--admin-credential-file", str(path))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and why in lines[0] and str(path) in lines[0], err


def test_generated_credential_files_are_private(tmp_path: Path) -> None:
    path = generate_credential_file(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_credential_file(path) != read_credential_file(generate_credential_file(tmp_path, "other"))

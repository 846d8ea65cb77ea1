"""Hostile clients against real host and verifier processes (docs/conventions.md §3, §4, §6, §7): calls that
never send their message starve nobody, a second server on a used address exits 2, bytes that do not decode
are INVALID_ARGUMENT on every method of every service, and oversized messages are refused before they cost
the host memory. Loopback only."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import ADMIN_CREDENTIAL, ADMIN_FILE, ROOT, HostProcess
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from attest.verifier.dcap.roots import INTEL_SGX_ROOT_CA_PEM
from wire.rpc_status import error_info
from wire.v1 import attestation_pb2, attestation_pb2_grpc, guest_pb2, guest_pb2_grpc, host_pb2, host_pb2_grpc

MIB = 1 << 20
STALLED = 200
#: How soon a server must answer other calls while the stalled ones are open.
ANSWER_WITHIN = 2.0
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


@dataclass
class Server:
    """A started ``tdxsim host`` or ``tdxsim verifier``."""

    kind: str
    proc: subprocess.Popen[str]
    address: str

    def channel(self, **options: Any) -> grpc.Channel:
        """A channel with a connection of its own (gRPC shares one between channels of equal arguments)."""
        return grpc.insecure_channel(
            self.address, options=[("grpc.use_local_subchannel_pool", 1), *options.items()]
        )

    def healthy(self, channel: grpc.Channel, timeout: float = ANSWER_WITHIN) -> bool:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _tdxsim(*args: str) -> list[str]:
    return [sys.executable, "-m", "tdxsim.cli", *args]


def _host_command(listen: str) -> list[str]:
    return _tdxsim(
        "host", "--listen", listen, "--phys-mem", "256M", "--admin-credential-file", str(ADMIN_FILE)
    )


def _verifier_command(listen: str, folder: Path) -> list[str]:
    root = folder / "intel_sgx_root_ca.pem"
    root.write_bytes(INTEL_SGX_ROOT_CA_PEM)
    return _tdxsim(
        "verifier",
        "--listen",
        listen,
        "--db",
        str(folder / f"v{time.monotonic_ns()}.db"),
        "--root",
        str(root),
        "--admin-credential-file",
        str(ADMIN_FILE),
    )


def _command(kind: str, listen: str, folder: Path) -> list[str]:
    return _host_command(listen) if kind == "host" else _verifier_command(listen, folder)


def _start(kind: str, folder: Path) -> Server:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        _command(kind, "127.0.0.1:0", folder),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("listening on 127.0.0.1:"), line
    assert proc.stdout.readline().startswith("admin credential: ")
    server = Server(kind, proc, line.removeprefix("listening on "))
    grpc.channel_ready_future(server.channel()).result(timeout=30)
    return server


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[str], Server]]:
    started: list[Server] = []

    def starter(kind: str) -> Server:
        started.append(_start(kind, tmp_path))
        return started[-1]

    yield starter
    for server in started:
        if server.proc.poll() is None:
            server.proc.terminate()
            try:
                server.proc.wait(10)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait(5)


def _admin(metadata: bool) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {ADMIN_CREDENTIAL}")] if metadata else []


# ---- calls that never send their message ------------------------------------------------------------------


#: The unary methods the stalled calls aim at, and whether they carry the admin credential (HostService
#: refuses a call without it before reading anything, so a stalled admin call is the one that waits).
STALL_PATHS = {
    "host": [
        ("/tdxsim.v1.TdGuestService/Echo", False),
        ("/tdxsim.v1.TdGuestService/Run", False),
        ("/tdxsim.v1.HostService/ListTds", True),
        ("/grpc.health.v1.Health/Check", False),
    ],
    "verifier": [
        ("/tdxsim.v1.VerifierService/GetNonce", False),
        ("/tdxsim.v1.VerifierService/Attest", False),
        ("/tdxsim.v1.VerifierService/SetPolicy", True),
        ("/grpc.health.v1.Health/Check", False),
    ],
}


def _answers(server: Server, channel: grpc.Channel) -> None:
    """One real call of the server's own service, answered within ANSWER_WITHIN."""
    if server.kind == "host":
        admin = host_pb2_grpc.HostServiceStub(channel)
        admin.GetStats(host_pb2.GetStatsRequest(), timeout=ANSWER_WITHIN, metadata=_admin(True))
        echo = guest_pb2_grpc.TdGuestServiceStub(channel).Echo
        assert echo(guest_pb2.EchoRequest(payload=b"hi"), timeout=ANSWER_WITHIN).payload == b"hi"
    else:
        stub = attestation_pb2_grpc.VerifierServiceStub(channel)
        assert len(stub.GetNonce(attestation_pb2.GetNonceRequest(), timeout=ANSWER_WITHIN).nonce) == 32


@pytest.mark.parametrize("kind", ["host", "verifier"])
def test_calls_that_never_send_their_message_starve_nobody(start: Callable[[str], Server], kind: str) -> None:
    server = start(kind)
    release = threading.Event()

    def never() -> Iterator[bytes]:
        release.wait(60)
        return
        yield b""

    channels = [server.channel() for _ in range(4)]
    paths = STALL_PATHS[kind]
    stalled = []
    for i in range(STALLED):
        path, admin = paths[i % len(paths)]
        call = channels[i % len(channels)].stream_unary(path)
        stalled.append(call.future(never(), timeout=60, metadata=_admin(admin)))
    time.sleep(1.0)  # every stalled call has sent its headers
    assert not any(call.done() for call in stalled)
    fresh = server.channel()
    began = time.monotonic()
    assert server.healthy(fresh)
    _answers(server, fresh)
    # The stalled clients' own connections are not starved either: waiting calls are not in service.
    _answers(server, channels[0])
    assert time.monotonic() - began < ANSWER_WITHIN
    release.set()
    for call in stalled:
        call.cancel()
    assert server.healthy(server.channel())


# ---- a second server on a used address ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["host", "verifier"])
def test_a_second_server_on_a_used_address_exits_2_with_one_line(
    start: Callable[[str], Server], kind: str, tmp_path: Path
) -> None:
    first = start(kind)
    second = subprocess.run(
        _command(kind, first.address, tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert second.returncode == 2
    assert second.stdout == ""
    assert second.stderr.splitlines() == [
        f"tdxsim {kind}: cannot listen on {first.address}: address already in use"
    ]
    assert first.healthy(first.channel())


# ---- bytes that do not decode ------------------------------------------------------------------------------


def _services() -> list[tuple[str, Any]]:
    return [
        ("host", host_pb2.DESCRIPTOR.services_by_name["HostService"]),
        ("host", guest_pb2.DESCRIPTOR.services_by_name["TdGuestService"]),
        ("host", health_pb2.DESCRIPTOR.services_by_name["Health"]),
        ("host", reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]),
        ("verifier", attestation_pb2.DESCRIPTOR.services_by_name["VerifierService"]),
        ("verifier", health_pb2.DESCRIPTOR.services_by_name["Health"]),
        ("verifier", reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]),
    ]


def _populated(cls: type[Message], depth: int = 0) -> Message:
    """A request with every field set that can be (the last member of each oneof wins)."""
    message = cls()
    for fd in cls.DESCRIPTOR.fields:
        if fd.message_type is not None:
            if depth < 2 and not fd.message_type.GetOptions().map_entry:
                sub = _populated(message_factory.GetMessageClass(fd.message_type), depth + 1)
                if fd.is_repeated:
                    getattr(message, fd.name).add().CopyFrom(sub)
                else:
                    getattr(message, fd.name).CopyFrom(sub)
            continue
        if fd.type == FieldDescriptor.TYPE_STRING:
            value: Any = "abcd"
        elif fd.type == FieldDescriptor.TYPE_BYTES:
            value = b"abcd"
        elif fd.type == FieldDescriptor.TYPE_BOOL:
            value = True
        elif fd.type == FieldDescriptor.TYPE_ENUM:
            value = fd.enum_type.values[-1].number
        else:
            value = 300
        if fd.is_repeated:
            getattr(message, fd.name).append(value)
        else:
            setattr(message, fd.name, value)
    return message


def _decodes(cls: type[Message], data: bytes) -> bool:
    try:
        cls.FromString(data)
    except DecodeError:
        return False
    return True


def undecodable(cls: type[Message], seed: int) -> list[bytes]:
    """Random bytes (three seeds' worth) and a valid request cut short, none of which ``cls`` decodes."""
    rng = random.Random(seed)
    found: list[bytes] = []
    while len(found) < 3:
        candidate = rng.randbytes(rng.choice((1, 2, 7, 64, 1000)))
        if not _decodes(cls, candidate):
            found.append(candidate)
    valid = _populated(cls).SerializeToString() or b"\x7a\x03abc"  # an unknown field is valid
    truncated = valid[:-1]
    assert not _decodes(cls, truncated)
    return [*found, truncated]


def _call(
    channel: grpc.Channel, method: MethodDescriptor, data: bytes, metadata: list[tuple[str, str]]
) -> None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    if method.client_streaming:
        list(channel.stream_stream(path)(iter([data]), timeout=10, metadata=metadata))
    elif method.server_streaming:
        list(channel.unary_stream(path)(data, timeout=10, metadata=metadata))
    else:
        channel.unary_unary(path)(data, timeout=10, metadata=metadata)


def _td_credential(host: Server) -> str:
    admin = host_pb2_grpc.HostServiceStub(host.channel())
    return str(admin.CreateTd(host_pb2.CreateTdRequest(), timeout=10, metadata=_admin(True)).credential)


def test_bytes_that_do_not_decode_are_invalid_argument_on_every_method(
    start: Callable[[str], Server],
) -> None:
    servers = {"host": start("host"), "verifier": start("verifier")}
    td = [("authorization", f"Bearer {_td_credential(servers['host'])}")]
    seen: dict[tuple[str, grpc.StatusCode, str], int] = {}
    for kind, service in _services():
        channel = servers[kind].channel()
        for method in service.methods:
            cls = message_factory.GetMessageClass(method.input_type)
            for credential in ("none", "admin", "td"):
                if credential == "td" and service.name != "TdGuestService":
                    continue
                metadata = td if credential == "td" else _admin(credential == "admin")
                for data in undecodable(cls, seed=hash((service.name, method.name)) & 0xFFFF):
                    with pytest.raises(grpc.RpcError) as err:
                        _call(channel, method, data, metadata)
                    code = err.value.code()
                    info = error_info(err.value)
                    label = f"{service.name}.{method.name} ({credential}) {data[:16]!r}"
                    assert code not in NEVER, label
                    assert info is not None, label
                    expected = ("REQUEST_UNDECODABLE", grpc.StatusCode.INVALID_ARGUMENT)
                    if service.name == "HostService" and credential != "admin":
                        # authentication comes first: the request of a refused call is never read
                        expected = ("MISSING_CREDENTIAL", grpc.StatusCode.UNAUTHENTICATED)
                    assert (info.reason, code) == expected, label
                    key = (service.name, code, credential)
                    seen[key] = seen.get(key, 0) + 1
    assert ("VerifierService", grpc.StatusCode.INVALID_ARGUMENT, "admin") in seen
    assert ("TdGuestService", grpc.StatusCode.INVALID_ARGUMENT, "td") in seen
    for server in servers.values():  # both still serve
        assert server.healthy(server.channel())
        _answers(server, server.channel())


# ---- messages too large ------------------------------------------------------------------------------------


def _high_water_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read the host's memory")
def test_oversized_unauthenticated_echoes_are_refused_before_they_cost_memory(
    start: Callable[[str], Server],
) -> None:
    host = start("host")
    channel = host.channel(**{"grpc.max_send_message_length": 64 * MIB})
    echo = channel.unary_unary("/tdxsim.v1.TdGuestService/Echo")
    before = _high_water_mib(host.proc.pid)
    huge = guest_pb2.EchoRequest(payload=bytes(60 * MIB)).SerializeToString()
    outcomes: list[tuple[grpc.StatusCode, object]] = []

    def send() -> None:
        try:
            echo(huge, timeout=60)
        except grpc.RpcError as err:
            outcomes.append((err.code(), error_info(err)))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    # Over the host's largest limit: gRPC itself refuses, without an ErrorInfo.
    assert outcomes == [(grpc.StatusCode.RESOURCE_EXHAUSTED, None)] * 8
    # Unlimited, the 8 x 60 MiB were buffered whole (over 1 GiB of growth); refused at the transport, what is
    # left is gRPC's partial reads, which vary with scheduling on a loaded 2-core machine (up to ~200 MiB).
    assert _high_water_mib(host.proc.pid) - before < 256
    # Over Echo's own limit but under the host's: the gate refuses, with a reason.
    with pytest.raises(grpc.RpcError) as err:
        echo(guest_pb2.EchoRequest(payload=bytes(2 * MIB)).SerializeToString(), timeout=10)
    info = error_info(err.value)
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info is not None and info.reason == "MESSAGE_TOO_LARGE"
    assert info.metadata["limit"] == str(MIB + 16)
    assert host.healthy(host.channel())


def test_host_process_fixture_still_works(host_factory: Callable[..., HostProcess]) -> None:
    """The shared fixture's host answers through the gate like any client's."""
    host = host_factory()
    assert health_pb2_grpc.HealthStub(host.channel).Check(
        health_pb2.HealthCheckRequest(), timeout=5
    ).status == (health_pb2.HealthCheckResponse.SERVING)

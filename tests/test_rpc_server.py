"""The server model every tdxsim process shares (``wire.rpc_server``, docs/conventions.md §3, §6, §7), in
process with a small servicer whose methods block until the test lets them go: what counts as a call, what
each limit answers, and that calls without their message count nowhere."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from wire.rpc_server import Limits, RpcServer, SyncContext, peer_key, start_server
from wire.rpc_status import error_info
from wire.serving import address_in_use
from wire.v1 import guest_pb2, guest_pb2_grpc

SERVICE = "tdxsim.v1.TdGuestService"
ECHO = f"/{SERVICE}/Echo"
ECHO_LIMIT = 1024
LIMITS = Limits(
    request_bytes={SERVICE: 4096, ECHO: ECHO_LIMIT},
    calls_per_peer=2,
    calls_total=3,
    streams={f"/{SERVICE}/Attach": 2},
)


class Servicer(guest_pb2_grpc.TdGuestServiceServicer):
    """``Echo`` blocks until ``release`` is set (payload ``b"wait"``); ``VpInfo`` fails as a bug would;
    ``Attach`` is a long-lived stream that lasts until the client goes."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.saw_cancel = False

    def Echo(self, request: guest_pb2.EchoRequest, context: SyncContext) -> guest_pb2.EchoResponse:
        with self.lock:
            self.running += 1
        try:
            if request.payload == b"wait":
                assert self.release.wait(30)
            if request.payload == b"until cancelled":
                deadline = time.monotonic() + 30
                while context.is_active() and time.monotonic() < deadline:
                    time.sleep(0.01)
                self.saw_cancel = not context.is_active()
            return guest_pb2.EchoResponse(payload=request.payload)
        finally:
            with self.lock:
                self.running -= 1

    def VpInfo(self, request: guest_pb2.VpInfoRequest, context: SyncContext) -> guest_pb2.VpInfoResponse:
        raise KeyError("a bug below the servicer")

    async def Attach(
        self, request: guest_pb2.AttachRequest, context: Any
    ) -> AsyncIterator[guest_pb2.AttachEvent]:
        try:
            yield guest_pb2.AttachEvent(detail="attached")
            while True:
                await asyncio.sleep(0.05)
        finally:
            self.closed.set()


@dataclass
class Served:
    server: RpcServer
    servicer: Servicer
    address: str

    def channel(self) -> grpc.Channel:
        """A channel with a connection of its own (gRPC shares one between channels of equal arguments)."""
        return grpc.insecure_channel(self.address, options=[("grpc.use_local_subchannel_pool", 1)])

    def wait_running(self, count: int) -> None:
        deadline = time.monotonic() + 10
        while self.servicer.running != count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.servicer.running == count


@pytest.fixture
def served() -> Iterator[Served]:
    servicer = Servicer()
    server = start_server(
        "127.0.0.1:0",
        name="test server",
        services=[SERVICE],
        add_servicers=lambda s: guest_pb2_grpc.add_TdGuestServiceServicer_to_server(servicer, s),
        limits=LIMITS,
        max_workers=4,
    )
    try:
        yield Served(server, servicer, f"127.0.0.1:{server.port}")
    finally:
        servicer.release.set()
        assert server.stop(None).wait(10)


def refusal(call: Callable[[], object]) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    info = error_info(err.value)
    assert info is not None, err.value
    assert info.domain == "tdxsim.v1"
    return err.value.code(), info.reason, dict(info.metadata)


def echo(channel: grpc.Channel) -> Any:
    return guest_pb2_grpc.TdGuestServiceStub(channel).Echo


def test_calls_are_limited_per_client_connection_and_in_all(served: Served) -> None:
    first, second, third = served.channel(), served.channel(), served.channel()
    wait = guest_pb2.EchoRequest(payload=b"wait")
    held = [echo(first).future(wait, timeout=30) for _ in range(2)]
    served.wait_running(2)
    assert refusal(lambda: echo(first)(guest_pb2.EchoRequest(payload=b"x"), timeout=10)) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "TOO_MANY_CALLS_FROM_PEER",
        {"limit": "2"},
    )
    held.append(echo(second).future(wait, timeout=30))
    served.wait_running(3)
    assert refusal(lambda: echo(third)(guest_pb2.EchoRequest(payload=b"x"), timeout=10)) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "TOO_MANY_CALLS",
        {"limit": "3"},
    )
    served.servicer.release.set()
    assert all(call.result().payload == b"wait" for call in held)
    assert echo(first)(guest_pb2.EchoRequest(payload=b"again"), timeout=10).payload == b"again"
    assert served.server.gate.slots.in_service() == 0


def test_a_cancelled_call_keeps_its_slot_until_its_method_returns(served: Served) -> None:
    channel = served.channel()
    call = echo(channel).future(guest_pb2.EchoRequest(payload=b"wait"), timeout=30)
    served.wait_running(1)
    call.cancel()
    time.sleep(0.2)
    assert served.server.gate.slots.in_service() == 1  # its thread still works: cancelling frees nothing
    served.servicer.release.set()
    served.wait_running(0)
    deadline = time.monotonic() + 5
    while served.server.gate.slots.in_service() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert served.server.gate.slots.in_service() == 0


def test_a_method_sees_its_call_cancelled_by_the_client_or_its_deadline(served: Served) -> None:
    channel = served.channel()
    call = echo(channel).future(guest_pb2.EchoRequest(payload=b"until cancelled"), timeout=30)
    served.wait_running(1)
    call.cancel()
    served.wait_running(0)
    assert served.servicer.saw_cancel
    served.servicer.saw_cancel = False
    with pytest.raises(grpc.RpcError) as err:
        echo(channel)(guest_pb2.EchoRequest(payload=b"until cancelled"), timeout=0.5)
    assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    served.wait_running(0)
    assert served.servicer.saw_cancel


def test_calls_waiting_for_their_message_count_nowhere(served: Served) -> None:
    channel = served.channel()
    blocked = threading.Event()

    def never() -> Iterator[bytes]:
        blocked.wait(30)
        return
        yield b""

    stalled = [channel.stream_unary(ECHO).future(never(), timeout=30) for _ in range(20)]
    time.sleep(0.3)
    for _ in range(3):  # the same connection, far over its limit of 2 if the stalled calls counted
        assert echo(channel)(guest_pb2.EchoRequest(payload=b"x"), timeout=2).payload == b"x"
    blocked.set()
    for call in stalled:
        call.cancel()


def test_message_size_limits_and_what_grpc_refuses_itself(served: Served) -> None:
    channel = grpc.insecure_channel(served.address, options=[("grpc.max_send_message_length", 1 << 20)])
    code, reason, metadata = refusal(
        lambda: echo(channel)(guest_pb2.EchoRequest(payload=bytes(ECHO_LIMIT)), timeout=10)
    )
    assert (code, reason, metadata["limit"]) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "MESSAGE_TOO_LARGE",
        "1024",
    )
    assert int(metadata["size"]) > ECHO_LIMIT
    # Over the largest limit of the server, gRPC refuses the message before the gate sees it: no ErrorInfo.
    with pytest.raises(grpc.RpcError) as err:
        echo(channel)(guest_pb2.EchoRequest(payload=bytes(LIMITS.largest_request + 1)), timeout=10)
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(err.value) is None


def test_no_message_undecodable_bytes_unknown_methods_and_bugs_get_named_statuses(served: Served) -> None:
    channel = served.channel()
    assert refusal(lambda: channel.stream_unary(ECHO)(iter(()), timeout=10))[:2] == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "REQUEST_MISSING",
    )
    assert refusal(lambda: channel.unary_unary(ECHO)(b"\x0a\x05ab", timeout=10))[:2] == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "REQUEST_UNDECODABLE",
    )
    assert refusal(lambda: channel.unary_unary(f"/{SERVICE}/Nope")(b"", timeout=10))[:2] == (
        grpc.StatusCode.UNIMPLEMENTED,
        "UNKNOWN_METHOD",
    )
    stub = guest_pb2_grpc.TdGuestServiceStub(channel)
    assert refusal(lambda: stub.VpInfo(guest_pb2.VpInfoRequest(td_id=1), timeout=10))[:2] == (
        grpc.StatusCode.INTERNAL,
        "INTERNAL",
    )


def test_long_lived_streams_have_their_own_limit_and_are_not_calls(served: Served) -> None:
    channel = served.channel()
    stub = guest_pb2_grpc.TdGuestServiceStub(channel)
    streams = [stub.Attach(guest_pb2.AttachRequest(td_id=1), timeout=30) for _ in range(2)]
    for stream in streams:
        assert next(stream).detail == "attached"
    for _ in range(3):  # the connection's two call slots are free: streams are not calls
        assert echo(channel)(guest_pb2.EchoRequest(payload=b"x"), timeout=5).payload == b"x"
    assert refusal(lambda: next(stub.Attach(guest_pb2.AttachRequest(td_id=1), timeout=10))) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "TOO_MANY_STREAMS",
        {"limit": "2"},
    )
    streams[0].cancel()
    assert served.servicer.closed.wait(5)  # the stream's clean-up ran as soon as the client went
    deadline = time.monotonic() + 5
    while True:
        try:
            replacement = stub.Attach(guest_pb2.AttachRequest(td_id=1), timeout=30)
            assert next(replacement).detail == "attached"
            break
        except grpc.RpcError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    replacement.cancel()
    streams[1].cancel()


def test_peers_are_client_connections_and_unix_socket_clients_share_the_server_limit() -> None:
    assert peer_key("ipv4:127.0.0.1:50000") == "ipv4:127.0.0.1:50000"
    assert peer_key("ipv6:[::1]:50000") == "ipv6:[::1]:50000"
    assert peer_key("unix:") is None


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Limits(calls_per_peer=0)
    assert LIMITS.request_limit(ECHO) == ECHO_LIMIT
    assert LIMITS.request_limit(f"/{SERVICE}/Run") == 4096
    assert LIMITS.request_limit("/grpc.health.v1.Health/Check") == 64 << 10
    assert LIMITS.largest_request == 64 << 10


def _toy_server(address: str) -> RpcServer:
    return start_server(
        address,
        name="test server",
        services=[SERVICE],
        add_servicers=lambda s: guest_pb2_grpc.add_TdGuestServiceServicer_to_server(Servicer(), s),
        limits=LIMITS,
        max_workers=1,
    )


def test_grpc_itself_refuses_to_bind_an_address_a_server_listens_on() -> None:
    first = _toy_server("127.0.0.1:0")
    try:
        with pytest.raises(RuntimeError):  # with SO_REUSEPORT it would bind and share the connections
            _toy_server(f"127.0.0.1:{first.port}")
    finally:
        assert first.stop(None).wait(10)


def test_an_address_in_use_is_found_before_binding(tmp_path: Path) -> None:
    server = _toy_server("127.0.0.1:0")
    socket_path = tmp_path / "s.sock"
    unix = _toy_server(f"unix:{socket_path}")
    try:
        assert address_in_use(f"127.0.0.1:{server.port}")
        assert address_in_use(f"localhost:{server.port}")
        assert address_in_use(f"unix:{socket_path}")
        assert not address_in_use("127.0.0.1:0")
        assert not address_in_use(f"unix:{tmp_path / 'none.sock'}")
    finally:
        assert server.stop(None).wait(10)
        assert unix.stop(None).wait(10)
    assert not address_in_use(f"127.0.0.1:{server.port}")
    assert not address_in_use(f"unix:{socket_path}")  # a stale socket file nobody answers on

"""The host is untrusted: answers no TDX platform would give are a ``GuestError`` with reason
``HOST_RESPONSE_MALFORMED``, never an IndexError, struct.error or ValueError (docs/conventions.md §7).

A fake ``TdGuestService`` in this process answers the guest library's calls with missing results, data of
the wrong length, an impossible GPAW and a TDREPORT that does not decode, and refuses with status details
that do not decode or contradict the call's own status (which grpcio-status raises on).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2

from guest.errors import GuestError, from_rpc_error
from guest.td import Td
from guest.workload import Runner, parse_workload
from wire.rpc_status import error_info
from wire.v1 import guest_pb2, guest_pb2_grpc

MALFORMED = "HOST_RESPONSE_MALFORMED"


class HostileHost(guest_pb2_grpc.TdGuestServiceServicer):  # type: ignore[misc]
    """Answers as a host that lies: ``lie`` names what goes wrong."""

    def __init__(self) -> None:
        self.lie = ""
        self.status_details = b""

    def Echo(self, request: Any, context: Any) -> guest_pb2.EchoResponse:
        context.set_trailing_metadata((("grpc-status-details-bin", self.status_details),))
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

    def VpInfo(self, request: Any, context: Any) -> guest_pb2.VpInfoResponse:
        return guest_pb2.VpInfoResponse(gpa_width=0 if self.lie == "gpaw" else 48)

    def ReadMemory(self, request: Any, context: Any) -> guest_pb2.ReadMemoryResponse:
        lengths = [r.length for r in request.ranges]
        if self.lie == "short read":
            return guest_pb2.ReadMemoryResponse(data=[bytes(n - 1) for n in lengths])
        return guest_pb2.ReadMemoryResponse(data=[bytes(n) for n in lengths[:-1]])  # one missing

    def Run(self, request: Any, context: Any) -> guest_pb2.RunResponse:
        count = len(request.instructions)
        if self.lie == "missing result":
            return guest_pb2.RunResponse(results=[guest_pb2.InstructionResult()] * (count - 1))
        # Every instruction "succeeds"; reads come back as zeros: a TDREPORT of type 0, a GetQuote buffer
        # of 10 bytes.
        data = bytes(10) if self.lie == "short quote buffer" else bytes(1024)
        return guest_pb2.RunResponse(results=[guest_pb2.InstructionResult(data=data)] * count)


@pytest.fixture
def hostile() -> Iterator[tuple[HostileHost, grpc.Channel]]:
    servicer = HostileHost()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    guest_pb2_grpc.add_TdGuestServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield servicer, channel
    finally:
        channel.close()
        server.stop(None)


def _td(channel: grpc.Channel) -> Td:
    return Td(channel, 1, "credential", memory_bytes=16 << 20, lifeline=False, timeout=10)


def _reason(call: Any) -> str:
    with pytest.raises(GuestError) as err:
        call()
    return err.value.reason


def test_an_impossible_gpaw_is_refused(hostile: tuple[HostileHost, grpc.Channel]) -> None:
    servicer, channel = hostile
    servicer.lie = "gpaw"
    assert _reason(lambda: _td(channel)) == MALFORMED


@pytest.mark.parametrize("lie", ["short read", "missing data"])
def test_reads_of_the_wrong_shape_are_refused(hostile: tuple[HostileHost, grpc.Channel], lie: str) -> None:
    servicer, channel = hostile
    td = _td(channel)
    servicer.lie = lie
    assert _reason(lambda: td.read(0x1000, 16)) == MALFORMED
    assert _reason(lambda: td.read_many([(0x1000, 16), (0x2000, 16)])) == MALFORMED


def test_a_missing_result_is_refused(hostile: tuple[HostileHost, grpc.Channel]) -> None:
    servicer, channel = hostile
    td = _td(channel)
    servicer.lie = "missing result"
    assert _reason(lambda: td.report()) == MALFORMED


def test_a_tdreport_that_does_not_decode_fails_the_step(hostile: tuple[HostileHost, grpc.Channel]) -> None:
    _, channel = hostile
    (step,) = parse_workload("report\n")
    result = Runner(_td(channel)).run_step(step)
    assert (result.ok, result.reason) == (False, MALFORMED)


def test_a_short_get_quote_buffer_is_refused(hostile: tuple[HostileHost, grpc.Channel]) -> None:
    servicer, channel = hostile
    td = _td(channel)
    servicer.lie = "short quote buffer"
    assert _reason(lambda: td.quote_tdreport(bytes(1024))) == MALFORMED


@pytest.mark.parametrize(
    "details",
    [
        b"\xff\xff\xff",  # no Status at all
        status_pb2.Status(code=5, message="another message").SerializeToString(),
        status_pb2.Status(code=3, message="no such thing").SerializeToString(),  # another code
    ],
    ids=["undecodable", "message-mismatch", "code-mismatch"],
)
def test_status_details_that_cannot_be_believed_leave_the_code_standing(
    hostile: tuple[HostileHost, grpc.Channel], details: bytes
) -> None:
    servicer, channel = hostile
    servicer.status_details = details
    with pytest.raises(grpc.RpcError) as err:
        guest_pb2_grpc.TdGuestServiceStub(channel).Echo(guest_pb2.EchoRequest(), timeout=10)
    assert error_info(err.value) is None
    refused = from_rpc_error(err.value)
    assert (type(refused).__name__, refused.code, refused.reason) == ("BadRequest", "NOT_FOUND", "NOT_FOUND")

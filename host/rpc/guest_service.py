"""TdGuestService servicer: guest instructions → one VMM vCPU run per request (batched)."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from host.platform import Platform
from host.rpc.errors import translate
from host.tdx.vcpu import Accept, AcceptResult, GuestOp, MapGpa, MemRead, MemWrite, TdVmCallResult
from tdxsim.v1 import guest_pb2, guest_pb2_grpc

#: Bytes one read or write request may move (the channels allow 64 MiB messages).
MAX_BATCH_BYTES = 32 << 20


class GuestServicer(guest_pb2_grpc.TdGuestServiceServicer):
    def __init__(self, platform: Platform, on_host_crash: Callable[[str], None]) -> None:
        self._vmm = platform.vmm
        self.on_host_crash = on_host_crash

    def _run(self, td_id: int, ops: list[GuestOp]) -> list[object]:
        return self._vmm.run_vcpu(td_id, ops)

    @translate
    def VpInfo(
        self, request: guest_pb2.VpInfoRequest, context: grpc.ServicerContext
    ) -> guest_pb2.VpInfoResponse:
        with self._vmm.locked():
            vm = self._vmm.td(request.td_id).vm
            return guest_pb2.VpInfoResponse(
                gpa_width=vm.params.gpaw,
                attributes=vm.params.attributes,
                num_vcpus=1,
                shared_bit=vm.shared_bit,
            )

    @translate
    def ReadMemory(
        self, request: guest_pb2.ReadMemoryRequest, context: grpc.ServicerContext
    ) -> guest_pb2.ReadMemoryResponse:
        if sum(r.length for r in request.ranges) > MAX_BATCH_BYTES:
            raise ValueError(f"a read batch may move at most {MAX_BATCH_BYTES} bytes")
        results = self._run(request.td_id, [MemRead(r.gpa, r.length) for r in request.ranges])
        return guest_pb2.ReadMemoryResponse(data=[r for r in results if isinstance(r, bytes)])

    @translate
    def WriteMemory(
        self, request: guest_pb2.WriteMemoryRequest, context: grpc.ServicerContext
    ) -> guest_pb2.WriteMemoryResponse:
        self._run(request.td_id, [MemWrite(w.gpa, w.data) for w in request.writes])
        return guest_pb2.WriteMemoryResponse(bytes_written=sum(len(w.data) for w in request.writes))

    @translate
    def AcceptPages(
        self, request: guest_pb2.AcceptPagesRequest, context: grpc.ServicerContext
    ) -> guest_pb2.AcceptPagesResponse:
        results = self._run(request.td_id, [Accept(r.gpa, r.length, request.level) for r in request.ranges])
        response = guest_pb2.AcceptPagesResponse()
        for result in results:
            assert isinstance(result, AcceptResult)
            response.pages_accepted += result.accepted
            response.already_accepted += result.already_accepted
            response.last_status = result.status or response.last_status
        return response

    @translate
    def MapGpa(
        self, request: guest_pb2.MapGpaRequest, context: grpc.ServicerContext
    ) -> guest_pb2.MapGpaResponse:
        (result,) = self._run(request.td_id, [MapGpa(request.gpa, request.size)])
        assert isinstance(result, TdVmCallResult)
        return guest_pb2.MapGpaResponse(
            status=result.status, failed_gpa=result.failed_gpa, chunks=result.chunks
        )

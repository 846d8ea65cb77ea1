"""TdGuestService servicer: guest instructions → one VMM vCPU run per request (batched; docs/grpc.md
"TdGuestService").

Authentication is a boundary concern and lives here: the TD credential arrives as call
metadata ``authorization: Bearer <hex>`` and the VMM decides whether it speaks for the TD.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from host.kvm.uapi import (
    Accept,
    AcceptResult,
    GetQuote,
    GuestOp,
    MapGpa,
    MemRead,
    MemWrite,
    Report,
    RtmrExtend,
    TdCallResult,
    TdVmCallResult,
)
from host.rpc.deadline import cancellation
from host.rpc.errors import translate
from host.vmm.errors import Refusal, VmmError
from host.vmm.vmm import Vmm
from wire.credentials import bearer
from wire.rpc_server import run_sync
from wire.v1 import guest_pb2, guest_pb2_grpc

#: Bytes one request may move (the channels allow 64 MiB messages).
MAX_BATCH_BYTES = 32 << 20
#: Instructions one request may carry: bounds how long one request holds the vCPU (and the VMM).
MAX_BATCH_INSTRUCTIONS = 65536
#: How often a lifeline looks whether its TD was destroyed under it (the guest's going is noticed at once).
LIFELINE_POLL_SECONDS = 1.0


def instruction_op(ins: guest_pb2.Instruction) -> GuestOp:
    kind = ins.WhichOneof("op")
    if kind == "read":
        return MemRead(ins.read.gpa, ins.read.length)
    if kind == "write":
        return MemWrite(ins.write.gpa, ins.write.data)
    if kind == "accept":
        return Accept(ins.accept.gpa, ins.accept.length, ins.accept.level)
    if kind == "map_gpa":
        return MapGpa(ins.map_gpa.gpa, ins.map_gpa.length)
    if kind == "rtmr_extend":
        return RtmrExtend(ins.rtmr_extend.gpa, ins.rtmr_extend.index)
    if kind == "report":
        return Report(ins.report.report_gpa, ins.report.reportdata_gpa)
    if kind == "get_quote":
        return GetQuote(ins.get_quote.gpa, ins.get_quote.length)
    raise VmmError(Refusal.INVALID_ARGUMENT, "EMPTY_INSTRUCTION", "an instruction names no operation")


def result_message(result: object) -> guest_pb2.InstructionResult:
    if isinstance(result, bytes):
        return guest_pb2.InstructionResult(data=result)
    if isinstance(result, AcceptResult):
        return guest_pb2.InstructionResult(
            status=result.status, pages_accepted=result.accepted, already_accepted=result.already_accepted
        )
    if isinstance(result, TdVmCallResult):
        return guest_pb2.InstructionResult(
            status=result.status, failed_gpa=result.failed_gpa, chunks=result.chunks
        )
    if isinstance(result, TdCallResult):
        return guest_pb2.InstructionResult(status=result.status)
    return guest_pb2.InstructionResult()  # a write: nothing to report


def _batch_bytes(ops: list[GuestOp]) -> int:
    return sum(
        op.length if isinstance(op, MemRead) else len(op.data) if isinstance(op, MemWrite) else 0
        for op in ops
    )


class GuestServicer(guest_pb2_grpc.TdGuestServiceServicer):
    def __init__(self, vmm: Vmm, on_host_crash: Callable[[str], None]) -> None:
        self._vmm = vmm
        self.on_host_crash = on_host_crash

    def _run(self, context: grpc.ServicerContext, td_id: int, ops: list[GuestOp]) -> list[object]:
        self._vmm.authenticate(td_id, bearer(context))
        if len(ops) > MAX_BATCH_INSTRUCTIONS:
            raise VmmError(
                Refusal.INVALID_ARGUMENT,
                "BATCH_TOO_LARGE",
                f"a request may carry {MAX_BATCH_INSTRUCTIONS} instructions",
            )
        if _batch_bytes(ops) > MAX_BATCH_BYTES:
            raise VmmError(
                Refusal.INVALID_ARGUMENT, "BATCH_TOO_LARGE", f"a request may move {MAX_BATCH_BYTES} bytes"
            )
        return self._vmm.run_vcpu(td_id, ops, cancellation(context))

    @translate
    def VpInfo(
        self, request: guest_pb2.VpInfoRequest, context: grpc.ServicerContext
    ) -> guest_pb2.VpInfoResponse:
        self._vmm.authenticate(request.td_id, bearer(context))
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
        results = self._run(context, request.td_id, [MemRead(r.gpa, r.length) for r in request.ranges])
        return guest_pb2.ReadMemoryResponse(data=[r for r in results if isinstance(r, bytes)])

    @translate
    def WriteMemory(
        self, request: guest_pb2.WriteMemoryRequest, context: grpc.ServicerContext
    ) -> guest_pb2.WriteMemoryResponse:
        self._run(context, request.td_id, [MemWrite(w.gpa, w.data) for w in request.writes])
        return guest_pb2.WriteMemoryResponse(bytes_written=sum(len(w.data) for w in request.writes))

    @translate
    def AcceptPages(
        self, request: guest_pb2.AcceptPagesRequest, context: grpc.ServicerContext
    ) -> guest_pb2.AcceptPagesResponse:
        ops: list[GuestOp] = [Accept(r.gpa, r.length, request.level) for r in request.ranges]
        response = guest_pb2.AcceptPagesResponse()
        for result in self._run(context, request.td_id, ops):
            assert isinstance(result, AcceptResult)
            response.pages_accepted += result.accepted
            response.already_accepted += result.already_accepted
            response.last_status = result.status or response.last_status
        return response

    @translate
    def MapGpa(
        self, request: guest_pb2.MapGpaRequest, context: grpc.ServicerContext
    ) -> guest_pb2.MapGpaResponse:
        (result,) = self._run(context, request.td_id, [MapGpa(request.gpa, request.size)])
        assert isinstance(result, TdVmCallResult)
        return guest_pb2.MapGpaResponse(
            status=result.status, failed_gpa=result.failed_gpa, chunks=result.chunks
        )

    @translate
    def Run(self, request: guest_pb2.RunRequest, context: grpc.ServicerContext) -> guest_pb2.RunResponse:
        results = self._run(context, request.td_id, [instruction_op(i) for i in request.instructions])
        return guest_pb2.RunResponse(results=[result_message(r) for r in results])

    async def Attach(
        self, request: guest_pb2.AttachRequest, context: Any
    ) -> AsyncIterator[guest_pb2.AttachEvent]:
        """The TD's lifeline: a coroutine holding no thread while it lasts (docs/conventions.md §3). The
        server cancels it the moment the guest's stream ends; it ends by itself once the TD is gone."""
        await run_sync(context, self._attach_check, request, undo=lambda _: self._vmm.detach(request.td_id))
        try:  # however the stream ends (even closed at the first yield), the lifeline is let go
            yield guest_pb2.AttachEvent(detail=f"attached to TD {request.td_id}")
            while self._vmm.exists(request.td_id):
                await asyncio.sleep(LIFELINE_POLL_SECONDS)
        finally:
            detach = asyncio.get_running_loop().run_in_executor(None, self._vmm.detach, request.td_id)
            await asyncio.shield(detach)  # a second cancellation (the server stopping) must not skip it

    @translate
    def _attach_check(self, request: guest_pb2.AttachRequest, context: grpc.ServicerContext) -> None:
        self._vmm.attach(request.td_id, bearer(context))

    def Echo(self, request: guest_pb2.EchoRequest, context: grpc.ServicerContext) -> guest_pb2.EchoResponse:
        return guest_pb2.EchoResponse(payload=request.payload)

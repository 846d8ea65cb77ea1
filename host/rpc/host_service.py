"""HostService servicer: admin/VMM requests → :class:`~host.vmm.vmm.Vmm` calls (docs/grpc.md
"HostService")."""

from __future__ import annotations

import asyncio
import dataclasses
import queue
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from host.kvm.uapi import TdParams
from host.kvm.vm import GpaState
from host.rpc.deadline import cancellation
from host.rpc.errors import InvalidRequest, translate
from host.vmm.events import Event as VmmEvent
from host.vmm.physical import PhysicalPath
from host.vmm.vmm import Vmm
from wire.rpc_server import run_sync
from wire.tdx_abi import MR_SIZE
from wire.v1 import host_pb2, host_pb2_grpc

MAX_HOST_ACCESS = 16 << 20
#: GetGpaMap's default and largest number of runs per response.
MAX_GPA_RUNS = 4096
PATHS = {
    host_pb2.PHYSICAL_PATH_DRAM: PhysicalPath.DRAM,
    host_pb2.PHYSICAL_PATH_HOST_KEYID: PhysicalPath.HOST_KEYID,
}
GPA_STATES = {state: host_pb2.GpaState.Value(f"GPA_STATE_{state.name}") for state in GpaState}
#: How often an idle event feed looks at its queue (the VMM's threads fill it; the feed holds no thread).
EVENT_POLL_SECONDS = 0.05


def _mr(value: bytes, name: str) -> bytes:
    if not value:
        return bytes(MR_SIZE)
    if len(value) != MR_SIZE:
        raise InvalidRequest(f"{name} must be {MR_SIZE} bytes, got {len(value)}")
    return bytes(value)


def td_params(request: host_pb2.CreateTdRequest | host_pb2.TdImage) -> TdParams:
    defaults = TdParams()
    return TdParams(
        attributes=request.attributes if request.HasField("attributes") else defaults.attributes,
        xfam=request.xfam if request.HasField("xfam") else defaults.xfam,
        gpaw=request.gpaw or 48,
        mrconfigid=_mr(request.mrconfigid, "mrconfigid"),
        mrowner=_mr(request.mrowner, "mrowner"),
        mrownerconfig=_mr(request.mrownerconfig, "mrownerconfig"),
    )


class HostServicer(host_pb2_grpc.HostServiceServicer):
    def __init__(self, vmm: Vmm, on_host_crash: Callable[[str], None]) -> None:
        self._vmm = vmm
        self.on_host_crash = on_host_crash

    @translate
    def CreateTd(
        self, request: host_pb2.CreateTdRequest, context: grpc.ServicerContext
    ) -> host_pb2.CreateTdResponse:
        handle = self._vmm.create_td(td_params(request), request.memory_bytes, request.name)
        fds = list(handle.fds)
        return host_pb2.CreateTdResponse(
            td_id=handle.td_id,
            hkid=handle.vm.hkid,
            shared_bit=handle.vm.shared_bit,
            guest_memfd=fds[0] if fds else -1,
            credential=handle.credential,
        )

    @translate
    def LaunchTd(
        self, request: host_pb2.LaunchTdRequest, context: grpc.ServicerContext
    ) -> host_pb2.LaunchTdResponse:
        image = request.image
        payload = [(p.gpa, p.data, p.measure) for p in image.payload]
        handle, pages = self._vmm.launch_td(td_params(image), image.memory_bytes, payload, request.name)
        return host_pb2.LaunchTdResponse(
            td_id=handle.td_id,
            credential=handle.credential,
            hkid=handle.vm.hkid,
            shared_bit=handle.vm.shared_bit,
            pages_added=pages,
        )

    @translate
    def InitMemRegion(
        self, request: host_pb2.InitMemRegionRequest, context: grpc.ServicerContext
    ) -> host_pb2.InitMemRegionResponse:
        added = self._vmm.init_mem_region(request.td_id, request.gpa, request.source, request.measure)
        return host_pb2.InitMemRegionResponse(pages_added=added)

    @translate
    def FinalizeTd(
        self, request: host_pb2.FinalizeTdRequest, context: grpc.ServicerContext
    ) -> host_pb2.FinalizeTdResponse:
        self._vmm.finalize(request.td_id)
        return host_pb2.FinalizeTdResponse()

    @translate
    def DestroyTd(
        self, request: host_pb2.DestroyTdRequest, context: grpc.ServicerContext
    ) -> host_pb2.DestroyTdResponse:
        reclaimed, hkid = self._vmm.destroy_td(request.td_id, cancel=cancellation(context))
        return host_pb2.DestroyTdResponse(pages_reclaimed=reclaimed, hkid_freed=hkid)

    @translate
    def ListTds(
        self, request: host_pb2.ListTdsRequest, context: grpc.ServicerContext
    ) -> host_pb2.ListTdsResponse:
        tds = [
            host_pb2.TdInfo(
                td_id=td.td_id,
                name=td.name,
                hkid=td.hkid,
                lifecycle=td.lifecycle,
                op_state=td.op_state,
                dead=bool(td.dead),
                dead_reason=td.dead,
                private_pages=td.private_pages,
                attributes=td.attributes,
                conversions=td.conversions,
            )
            for td in self._vmm.td_statuses()
        ]
        return host_pb2.ListTdsResponse(tds=tds)

    @translate
    def CreateGuestMemfd(
        self, request: host_pb2.CreateGuestMemfdRequest, context: grpc.ServicerContext
    ) -> host_pb2.CreateGuestMemfdResponse:
        return host_pb2.CreateGuestMemfdResponse(
            fd=self._vmm.create_guest_memfd(request.td_id, request.size, request.flags)
        )

    @translate
    def CloseGuestMemfd(
        self, request: host_pb2.CloseGuestMemfdRequest, context: grpc.ServicerContext
    ) -> host_pb2.CloseGuestMemfdResponse:
        self._vmm.close_guest_memfd(request.td_id, request.fd)
        return host_pb2.CloseGuestMemfdResponse()

    @translate
    def SetUserMemoryRegion(
        self, request: host_pb2.SetUserMemoryRegionRequest, context: grpc.ServicerContext
    ) -> host_pb2.SetUserMemoryRegionResponse:
        hva = self._vmm.set_user_memory_region(
            request.td_id,
            request.slot,
            request.flags,
            request.guest_phys_addr,
            request.memory_size,
            request.userspace_addr,
            request.guest_memfd,
            request.guest_memfd_offset,
        )
        return host_pb2.SetUserMemoryRegionResponse(userspace_addr=hva)

    @translate
    def SetMemoryAttributes(
        self, request: host_pb2.SetMemoryAttributesRequest, context: grpc.ServicerContext
    ) -> host_pb2.SetMemoryAttributesResponse:
        self._vmm.set_memory_attributes(
            request.td_id,
            request.address,
            request.size,
            request.attributes,
            request.flags,
            cancellation(context),
        )
        return host_pb2.SetMemoryAttributesResponse()

    @translate
    def Fallocate(
        self, request: host_pb2.FallocateRequest, context: grpc.ServicerContext
    ) -> host_pb2.FallocateResponse:
        self._vmm.fallocate(
            request.td_id, request.fd, request.mode, request.offset, request.len, cancellation(context)
        )
        return host_pb2.FallocateResponse()

    @translate
    def HostRead(
        self, request: host_pb2.HostReadRequest, context: grpc.ServicerContext
    ) -> host_pb2.HostReadResponse:
        if request.length > MAX_HOST_ACCESS:
            raise InvalidRequest(f"length {request.length} exceeds {MAX_HOST_ACCESS} bytes per request")
        return host_pb2.HostReadResponse(data=self._vmm.host_read(request.td_id, request.gpa, request.length))

    @translate
    def HostWrite(
        self, request: host_pb2.HostWriteRequest, context: grpc.ServicerContext
    ) -> host_pb2.HostWriteResponse:
        self._vmm.host_write(request.td_id, request.gpa, request.data)
        return host_pb2.HostWriteResponse()

    # ---- attack surfaces, not VMM features (docs/memory-model.md §1.2, §7.2) --------------------------
    @translate
    def GuestMemfdRead(
        self, request: host_pb2.GuestMemfdReadRequest, context: grpc.ServicerContext
    ) -> host_pb2.GuestMemfdReadResponse:
        self._vmm.guest_memfd_file_op(request.td_id, request.fd, "read")
        return host_pb2.GuestMemfdReadResponse()  # pragma: no cover - Linux refuses every read

    @translate
    def GuestMemfdWrite(
        self, request: host_pb2.GuestMemfdWriteRequest, context: grpc.ServicerContext
    ) -> host_pb2.GuestMemfdWriteResponse:
        self._vmm.guest_memfd_file_op(request.td_id, request.fd, "write")
        return host_pb2.GuestMemfdWriteResponse()  # pragma: no cover

    @translate
    def GuestMemfdMmap(
        self, request: host_pb2.GuestMemfdMmapRequest, context: grpc.ServicerContext
    ) -> host_pb2.GuestMemfdMmapResponse:
        self._vmm.guest_memfd_file_op(request.td_id, request.fd, "mmap")
        return host_pb2.GuestMemfdMmapResponse()  # pragma: no cover

    @translate
    def GuestMemfdFtruncate(
        self, request: host_pb2.GuestMemfdFtruncateRequest, context: grpc.ServicerContext
    ) -> host_pb2.GuestMemfdFtruncateResponse:
        self._vmm.guest_memfd_file_op(request.td_id, request.fd, "ftruncate")
        return host_pb2.GuestMemfdFtruncateResponse()  # pragma: no cover

    @translate
    def PhysicalRead(
        self, request: host_pb2.PhysicalReadRequest, context: grpc.ServicerContext
    ) -> host_pb2.PhysicalReadResponse:
        path, pa, td_gpa = _physical_target(request)
        seen = self._vmm.physical_read(path, request.length, pa=pa, td_gpa=td_gpa)
        return host_pb2.PhysicalReadResponse(pa=seen.pa, data=seen.data, macs=seen.macs, private=seen.private)

    @translate
    def PhysicalWrite(
        self, request: host_pb2.PhysicalWriteRequest, context: grpc.ServicerContext
    ) -> host_pb2.PhysicalWriteResponse:
        path, pa, td_gpa = _physical_target(request)
        written = self._vmm.physical_write(path, request.data, request.macs, pa=pa, td_gpa=td_gpa)
        return host_pb2.PhysicalWriteResponse(pa=written)

    @translate
    def GetGpaMap(
        self, request: host_pb2.GetGpaMapRequest, context: grpc.ServicerContext
    ) -> host_pb2.GetGpaMapResponse:
        limit = min(request.max_runs or MAX_GPA_RUNS, MAX_GPA_RUNS)
        piece = self._vmm.gpa_map(request.td_id, request.start_gpa, limit)
        return host_pb2.GetGpaMapResponse(
            runs=[
                host_pb2.GpaRun(
                    gpa=run.gfn << 12,
                    size=run.npages << 12,
                    state=GPA_STATES[run.state],
                    private=run.private,
                    memslot=run.slot,
                    guest_memfd=run.guest_memfd,
                    guest_memfd_offset=run.gmem_index << 12,
                )
                for run in piece.runs
            ],
            memslots=[
                host_pb2.MemslotInfo(
                    slot=slot.slot,
                    flags=slot.flags,
                    guest_phys_addr=slot.base_gfn << 12,
                    memory_size=slot.npages << 12,
                    userspace_addr=slot.userspace_addr,
                    guest_memfd=slot.guest_memfd,
                    guest_memfd_offset=slot.gmem_first << 12,
                )
                for slot in piece.memslots
            ],
            complete=piece.next_gpa is None,
            next_gpa=piece.next_gpa or 0,
            shared_bit=piece.shared_bit,
            memory_mode="legacy" if self._vmm.legacy else "gmem",
        )

    @translate
    def GetStats(
        self, request: host_pb2.GetStatsRequest, context: grpc.ServicerContext
    ) -> host_pb2.GetStatsResponse:
        return host_pb2.GetStatsResponse(**dataclasses.asdict(self._vmm.stats()))

    async def WatchEvents(
        self, request: host_pb2.WatchEventsRequest, context: Any
    ) -> AsyncIterator[host_pb2.Event]:
        """An event feed: a coroutine holding no thread while it lasts (docs/conventions.md §3); the server
        cancels it the moment the watcher's stream ends."""
        events = self._vmm.events
        q = await run_sync(context, self._watch, request, undo=events.unwatch)
        try:  # the slot is given back however the stream ends, even closed at the first yield
            yield host_pb2.Event(kind=host_pb2.Event.KIND_WATCH_STARTED, td_id=request.td_id)
            while True:
                try:
                    event = q.get_nowait()
                except queue.Empty:
                    await asyncio.sleep(EVENT_POLL_SECONDS)
                    continue
                if event is None:
                    return
                if request.all_tds or not request.td_id or event.td_id in (0, request.td_id):
                    yield _event_message(event)
        finally:
            events.unwatch(q)

    @translate
    def _watch(
        self, request: host_pb2.WatchEventsRequest, context: grpc.ServicerContext
    ) -> queue.Queue[VmmEvent | None]:
        return self._vmm.events.watch()


def _physical_target(
    request: host_pb2.PhysicalReadRequest | host_pb2.PhysicalWriteRequest,
) -> tuple[PhysicalPath, int, tuple[int, int] | None]:
    """(path, pa, (td_id, gpa) or None) of a physical access; a request naming no address is refused."""
    path = PATHS.get(request.path)
    if path is None:
        raise InvalidRequest("path must be PHYSICAL_PATH_DRAM or PHYSICAL_PATH_HOST_KEYID")
    which = request.WhichOneof("address")
    if which is None:
        raise InvalidRequest("name an address: pa or td_gpa")
    if which == "td_gpa":
        return path, 0, (request.td_gpa.td_id, request.td_gpa.gpa)
    return path, request.pa, None


def _event_message(event: VmmEvent) -> host_pb2.Event:
    return host_pb2.Event(
        kind=int(event.kind),  # type: ignore[arg-type]
        td_id=event.td_id,
        gpa=event.gpa,
        size=event.size,
        flags=event.flags,
        detail=event.detail,
        time=event.time,
    )

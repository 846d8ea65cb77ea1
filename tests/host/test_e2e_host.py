"""End to end: the host as a real separate process, driven over gRPC (issue 2's scenario)."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from guest.connection import td_channel
from tests.conftest import HostProcess
from wire.rpc_status import error_info as rpc_error_info
from wire.v1 import guest_pb2, guest_pb2_grpc, host_pb2, host_pb2_grpc

MIB = 1 << 20
SECRET = b"TD-SECRET-" * 409 + b"!!!!!!"  # 4096 bytes


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    info = rpc_error_info(err)
    assert info is not None, "status carries no ErrorInfo"
    return info


def launch_td(
    host: HostProcess, memory: int = 16 * MIB
) -> tuple[int, int, guest_pb2_grpc.TdGuestServiceStub]:
    """Create, finalize, accept 1 MiB and write SECRET at GPA 0; returns the TD, its shared bit and
    a guest stub that carries the TD's credential."""
    admin = host_pb2_grpc.HostServiceStub(host.admin_channel)
    td = admin.CreateTd(host_pb2.CreateTdRequest(memory_bytes=memory, name="e2e"), timeout=10)
    guest = guest_pb2_grpc.TdGuestServiceStub(td_channel(host.channel, td.credential))
    admin.FinalizeTd(host_pb2.FinalizeTdRequest(td_id=td.td_id), timeout=10)
    accepted = guest.AcceptPages(
        guest_pb2.AcceptPagesRequest(td_id=td.td_id, ranges=[guest_pb2.GpaRange(gpa=0, length=MIB)]),
        timeout=10,
    )
    assert accepted.pages_accepted == 256
    guest.WriteMemory(
        guest_pb2.WriteMemoryRequest(td_id=td.td_id, writes=[guest_pb2.GpaData(gpa=0, data=SECRET)]),
        timeout=10,
    )
    return td.td_id, td.shared_bit, guest


def test_gmem_host_private_memory_is_refused_and_conversion_loses_contents(
    host_factory: Callable[..., HostProcess],
) -> None:
    host = host_factory()
    admin = host_pb2_grpc.HostServiceStub(host.admin_channel)
    td_id, shared_bit, guest = launch_td(host)

    read = guest.ReadMemory(
        guest_pb2.ReadMemoryRequest(td_id=td_id, ranges=[guest_pb2.GpaRange(gpa=0, length=len(SECRET))]),
        timeout=10,
    )
    assert read.data[0] == SECRET

    with pytest.raises(grpc.RpcError) as refused:
        admin.HostRead(host_pb2.HostReadRequest(td_id=td_id, gpa=0, length=64), timeout=10)
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    info = error_info(refused.value)
    assert info.reason == "PRIVATE_MEMORY_NOT_ACCESSIBLE"
    assert info.metadata["errno"] == "EINVAL"

    mapped = guest.MapGpa(guest_pb2.MapGpaRequest(td_id=td_id, gpa=shared_bit | 0, size=4096), timeout=10)
    assert (mapped.status, mapped.chunks) == (0, 1)
    shared = guest.ReadMemory(
        guest_pb2.ReadMemoryRequest(td_id=td_id, ranges=[guest_pb2.GpaRange(gpa=shared_bit, length=4096)]),
        timeout=10,
    )
    assert shared.data[0] == bytes(4096), "private contents must be gone after conversion"

    admin.HostWrite(host_pb2.HostWriteRequest(td_id=td_id, gpa=0, data=b"from the host"), timeout=10)
    shared = guest.ReadMemory(
        guest_pb2.ReadMemoryRequest(td_id=td_id, ranges=[guest_pb2.GpaRange(gpa=shared_bit, length=13)]),
        timeout=10,
    )
    assert shared.data[0] == b"from the host"
    stats = admin.GetStats(host_pb2.GetStatsRequest(), timeout=10)
    assert (stats.memory_mode, stats.tds, stats.poisoned_lines) == ("gmem", 1, 0)
    assert stats.keyids_free == stats.keyids_total - 1
    assert host.stop() == 0


def test_legacy_host_write_poisons_td_then_host_machine_check_crashes_host(
    host_factory: Callable[..., HostProcess],
) -> None:
    host = host_factory("--memory-mode", "legacy")
    admin = host_pb2_grpc.HostServiceStub(host.admin_channel)
    td_id, _, guest = launch_td(host)

    zeros = admin.HostRead(host_pb2.HostReadRequest(td_id=td_id, gpa=0, length=64), timeout=10)
    assert zeros.data == bytes(64), "a host read of a TD-owned line returns zeros"

    admin.HostWrite(host_pb2.HostWriteRequest(td_id=td_id, gpa=0, data=b"host scribble"), timeout=10)
    with pytest.raises(grpc.RpcError) as poisoned:
        guest.ReadMemory(
            guest_pb2.ReadMemoryRequest(td_id=td_id, ranges=[guest_pb2.GpaRange(gpa=0, length=64)]),
            timeout=10,
        )
    assert poisoned.value.code() is grpc.StatusCode.DATA_LOSS
    assert error_info(poisoned.value).reason == "TD_MACHINE_CHECK"
    tds = admin.ListTds(host_pb2.ListTdsRequest(), timeout=10).tds
    assert tds[0].dead and "machine check" in tds[0].dead_reason
    assert admin.GetStats(host_pb2.GetStatsRequest(), timeout=10).poisoned_lines >= 1

    with pytest.raises(grpc.RpcError) as crashed:
        admin.HostRead(host_pb2.HostReadRequest(td_id=td_id, gpa=0, length=64), timeout=10)
    assert crashed.value.code() is grpc.StatusCode.DATA_LOSS
    assert error_info(crashed.value).reason == "HOST_MACHINE_CHECK"
    assert host.proc.wait(15) == 3, "a host machine check takes the host process down"
    assert host.proc.stderr is not None
    assert "HOST CRASHED" in host.proc.stderr.read()


def test_bad_requests_get_precise_statuses_and_the_host_survives(
    host_factory: Callable[..., HostProcess],
) -> None:
    host = host_factory()
    admin = host_pb2_grpc.HostServiceStub(host.admin_channel)
    cases: list[tuple[Callable[[], object], grpc.StatusCode, str]] = [
        (
            lambda: admin.FinalizeTd(host_pb2.FinalizeTdRequest(td_id=99), timeout=5),
            grpc.StatusCode.NOT_FOUND,
            "TD_NOT_FOUND",
        ),
        (
            lambda: admin.CreateTd(host_pb2.CreateTdRequest(mrconfigid=b"short"), timeout=5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        ),
        (
            lambda: admin.CreateTd(host_pb2.CreateTdRequest(memory_bytes=4097), timeout=5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNALIGNED",
        ),
        (
            lambda: admin.CreateTd(host_pb2.CreateTdRequest(gpaw=50), timeout=5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "EINVAL",
        ),
    ]
    for call, code, reason in cases:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() is code, err.value.details()
        assert error_info(err.value).reason == reason
    td = admin.CreateTd(host_pb2.CreateTdRequest(), timeout=5)
    fd = admin.CreateGuestMemfd(host_pb2.CreateGuestMemfdRequest(td_id=td.td_id, size=2 * MIB), timeout=5).fd
    with pytest.raises(grpc.RpcError) as unaligned:
        admin.Fallocate(
            host_pb2.FallocateRequest(td_id=td.td_id, fd=fd, mode=1, offset=0, len=4095), timeout=5
        )
    assert error_info(unaligned.value).reason == "EINVAL"
    with pytest.raises(grpc.RpcError) as nomode:
        admin.Fallocate(
            host_pb2.FallocateRequest(td_id=td.td_id, fd=fd, mode=0, offset=0, len=4096), timeout=5
        )
    assert nomode.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert error_info(nomode.value).reason == "EOPNOTSUPP"
    region = host_pb2.SetUserMemoryRegionRequest(
        td_id=td.td_id, slot=0, flags=4, guest_phys_addr=0, memory_size=MIB, guest_memfd=fd
    )
    admin.SetUserMemoryRegion(region, timeout=5)
    overlap = host_pb2.SetUserMemoryRegionRequest(
        td_id=td.td_id,
        slot=1,
        flags=4,
        guest_phys_addr=0,
        memory_size=MIB,
        guest_memfd=fd,
        guest_memfd_offset=MIB,
    )
    with pytest.raises(grpc.RpcError) as exists:
        admin.SetUserMemoryRegion(overlap, timeout=5)
    assert exists.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert error_info(exists.value).reason == "EEXIST"
    assert host.proc.poll() is None
    assert admin.GetStats(host_pb2.GetStatsRequest(), timeout=5).tds == 1


def test_host_serves_health_and_stops_cleanly_on_sigterm(host_factory: Callable[..., HostProcess]) -> None:
    host = host_factory()
    health = health_pb2_grpc.HealthStub(host.channel)
    for service in ("", "tdxsim.v1.HostService", "tdxsim.v1.TdGuestService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert host.stop() == 0


def test_event_feed_streams_map_gpa_and_conversion_events(host_factory: Callable[..., HostProcess]) -> None:
    host = host_factory()
    admin = host_pb2_grpc.HostServiceStub(host.admin_channel)
    td_id, shared_bit, guest = launch_td(host)
    feed = admin.WatchEvents(host_pb2.WatchEventsRequest(td_id=td_id), timeout=20)
    assert next(feed).kind == host_pb2.Event.KIND_WATCH_STARTED
    mapped = guest.MapGpa(
        guest_pb2.MapGpaRequest(td_id=td_id, gpa=shared_bit | 2 * MIB, size=3 * MIB), timeout=10
    )
    assert mapped.chunks == 2
    seen = []
    for event in feed:
        seen.append(event)
        if event.kind == host_pb2.Event.KIND_CONVERSION and event.gpa == 4 * MIB:
            break
    feed.cancel()
    kinds = [(e.kind, e.gpa, e.size) for e in seen if e.td_id == td_id]
    assert (host_pb2.Event.KIND_MAP_GPA, 2 * MIB, 2 * MIB) in kinds
    assert (host_pb2.Event.KIND_CONVERSION, 4 * MIB, MIB) in kinds


def test_server_reflection_lists_the_services(host_factory: Callable[..., HostProcess]) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    host = host_factory()
    stub = reflection_pb2_grpc.ServerReflectionStub(host.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    names = {s.name for s in reply.list_services_response.service}
    assert {"tdxsim.v1.HostService", "tdxsim.v1.TdGuestService", "grpc.health.v1.Health"} <= names


def test_host_keeps_answering_with_a_lifeline_attached_for_every_keyid(
    host_factory: Callable[..., HostProcess],
) -> None:
    host = host_factory("--keyids", "24")
    admin = host_pb2_grpc.HostServiceStub(host.admin_channel)
    lifelines = []
    for _ in range(24):
        td = admin.CreateTd(host_pb2.CreateTdRequest(), timeout=10)
        guest = guest_pb2_grpc.TdGuestServiceStub(td_channel(host.channel, td.credential))
        stream = guest.Attach(guest_pb2.AttachRequest(td_id=td.td_id), timeout=60)
        assert next(stream).detail.startswith("attached")
        lifelines.append(stream)
    stats = admin.GetStats(host_pb2.GetStatsRequest(), timeout=5)
    assert (stats.tds, stats.keyids_free) == (24, 0)
    for stream in lifelines:
        stream.cancel()
    deadline = time.monotonic() + 10
    while admin.GetStats(host_pb2.GetStatsRequest(), timeout=5).tds and time.monotonic() < deadline:
        time.sleep(0.1)
    assert admin.GetStats(host_pb2.GetStatsRequest(), timeout=5).keyids_free == 24


def test_one_lifeline_per_td_and_a_bounded_number_of_event_feeds(
    host_factory: Callable[..., HostProcess],
) -> None:
    host = host_factory()
    admin = host_pb2_grpc.HostServiceStub(host.admin_channel)
    td = admin.CreateTd(host_pb2.CreateTdRequest(), timeout=10)
    guest = guest_pb2_grpc.TdGuestServiceStub(td_channel(host.channel, td.credential))
    first = guest.Attach(guest_pb2.AttachRequest(td_id=td.td_id), timeout=30)
    assert next(first).detail.startswith("attached")
    second = guest.Attach(guest_pb2.AttachRequest(td_id=td.td_id), timeout=30)
    with pytest.raises(grpc.RpcError) as held:
        next(second)
    assert held.value.code() is grpc.StatusCode.ALREADY_EXISTS
    feeds = [admin.WatchEvents(host_pb2.WatchEventsRequest(all_tds=True), timeout=30) for _ in range(8)]
    for feed in feeds:
        assert next(feed).kind == host_pb2.Event.KIND_WATCH_STARTED
    with pytest.raises(grpc.RpcError) as too_many:
        next(admin.WatchEvents(host_pb2.WatchEventsRequest(all_tds=True), timeout=30))
    assert too_many.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(too_many.value).reason == "TOO_MANY_WATCHERS"
    assert admin.GetStats(host_pb2.GetStatsRequest(), timeout=5).tds == 1  # still answering
    for feed in feeds:
        feed.cancel()
    first.cancel()


def test_streams_cancelled_at_once_give_back_their_td_and_their_feed_slot(
    host_factory: Callable[..., HostProcess],
) -> None:
    host = host_factory("--keyids", "8")
    admin = host_pb2_grpc.HostServiceStub(host.admin_channel)
    for _ in range(24):  # more cycles than KeyIDs: a leaked TD would exhaust them
        td = admin.CreateTd(host_pb2.CreateTdRequest(), timeout=10)
        guest = guest_pb2_grpc.TdGuestServiceStub(td_channel(host.channel, td.credential))
        stream = guest.Attach(guest_pb2.AttachRequest(td_id=td.td_id), timeout=30)
        next(stream)
        stream.cancel()
        feed = admin.WatchEvents(host_pb2.WatchEventsRequest(all_tds=True), timeout=30)
        next(feed)
        feed.cancel()
        deadline = time.monotonic() + 10
        while admin.GetStats(host_pb2.GetStatsRequest(), timeout=5).tds and time.monotonic() < deadline:
            time.sleep(0.02)
    stats = admin.GetStats(host_pb2.GetStatsRequest(), timeout=5)
    assert (stats.tds, stats.keyids_free) == (0, 8)
    feed = admin.WatchEvents(host_pb2.WatchEventsRequest(all_tds=True), timeout=30)
    assert next(feed).kind == host_pb2.Event.KIND_WATCH_STARTED
    feed.cancel()


def test_a_run_with_too_many_instructions_is_refused_before_it_runs(
    host_factory: Callable[..., HostProcess],
) -> None:
    host = host_factory()
    td_id, _, guest = launch_td(host)
    many = [guest_pb2.Instruction(read=guest_pb2.GpaRange(gpa=0, length=8))] * 65537
    with pytest.raises(grpc.RpcError) as err:
        guest.Run(guest_pb2.RunRequest(td_id=td_id, instructions=many), timeout=30)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(err.value).reason == "BATCH_TOO_LARGE"


def test_map_gpa_retry_from_a_host_with_pending_vcpu_events_is_resumed_by_the_guest(
    host_factory: Callable[..., HostProcess],
) -> None:
    from guest.td import Td

    host = host_factory("--map-gpa-retry-every", "2")
    image = host_pb2.TdImage(
        memory_bytes=32 * MIB, payload=[host_pb2.Payload(gpa=0, data=b"k", measure=True)]
    )
    td, _ = Td.launch(host.address, image)
    with td:
        before = td.rpc_counts["Run"]
        assert td.convert_to_shared(4 * MIB, 8 * MIB) == 4  # four 2 MiB chunks in all
        runs = td.rpc_counts["Run"] - before
        assert runs == 2  # RETRY after chunk 2, resumed from R11 with a second TDVMCALL
        assert td.read(td.shared(10 * MIB), 8) == bytes(8)

"""The host as a real process under requests sized to hurt: one TD's large request never delays another
TD, a request the machine cannot serve is refused at once, and a request whose caller has gone stops
(docs/memory-model.md §1.3, §2; docs/conventions.md §6).

Timings are loose on purpose (a loaded 2-core machine must pass); speed targets live in ``tdxsim bench``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from guest.connection import td_channel
from tests.conftest import HostProcess
from wire.rpc_status import error_info
from wire.v1 import guest_pb2, guest_pb2_grpc, host_pb2, host_pb2_grpc

MIB = 1 << 20
GIB = 1 << 30
TIB = 1 << 40
FALLOC_FL_KEEP_SIZE = 0x01


def vm_rss(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes (/proc/PID/status VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


def running_td(host: HostProcess, memory: int) -> tuple[int, int, guest_pb2_grpc.TdGuestServiceStub]:
    """A finalized TD of ``memory`` bytes: its id, its shared bit and a guest stub with its credential."""
    admin = host_pb2_grpc.HostServiceStub(host.admin_channel)
    td = admin.CreateTd(host_pb2.CreateTdRequest(memory_bytes=memory), timeout=10)
    admin.FinalizeTd(host_pb2.FinalizeTdRequest(td_id=td.td_id), timeout=10)
    return td.td_id, td.shared_bit, guest_pb2_grpc.TdGuestServiceStub(td_channel(host.channel, td.credential))


def conversions(shared_bit: int, count: int) -> list[guest_pb2.Instruction]:
    """One request converting 1 GiB back and forth ``count`` times: 512 MapGPA pieces each, answered one
    exit at a time, so that 2000 of them are half a minute of work."""
    return [
        guest_pb2.Instruction(
            map_gpa=guest_pb2.GpaRange(gpa=(shared_bit if i % 2 == 0 else 0) | GIB, length=GIB)
        )
        for i in range(count)
    ]


def read(guest: guest_pb2_grpc.TdGuestServiceStub, td_id: int, length: int = 8) -> bytes:
    reply = guest.ReadMemory(
        guest_pb2.ReadMemoryRequest(td_id=td_id, ranges=[guest_pb2.GpaRange(gpa=0, length=length)]),
        timeout=10,
    )
    data: bytes = reply.data[0]
    return data


def test_a_32_tib_map_gpa_on_one_td_never_delays_another_tds_reads(
    host_factory: Callable[..., HostProcess],
) -> None:
    host = host_factory()
    admin = host_pb2_grpc.HostServiceStub(host.admin_channel)
    big_id, big_shared, big = running_td(host, 64 * TIB)
    small_id, _, small = running_td(host, 16 * MIB)
    small.AcceptPages(
        guest_pb2.AcceptPagesRequest(td_id=small_id, ranges=[guest_pb2.GpaRange(gpa=0, length=MIB)]),
        timeout=10,
    )
    small.WriteMemory(
        guest_pb2.WriteMemoryRequest(td_id=small_id, writes=[guest_pb2.GpaData(gpa=0, data=b"steady!!")]),
        timeout=10,
    )
    outcome: list[object] = []

    def big_requests() -> None:
        try:
            for i in range(6):
                mapped = big.MapGpa(
                    guest_pb2.MapGpaRequest(
                        td_id=big_id, gpa=(big_shared if i % 2 == 0 else 0) | 0, size=32 * TIB
                    ),
                    timeout=60,
                )
                outcome.append((mapped.status, mapped.chunks))
            # And one request that keeps the big TD busy for its whole deadline.
            big.Run(guest_pb2.RunRequest(td_id=big_id, instructions=conversions(big_shared, 2000)), timeout=3)
        except grpc.RpcError as err:
            outcome.append(err.code())

    thread = threading.Thread(target=big_requests, daemon=True)
    thread.start()
    slowest, reads = 0.0, 0
    while thread.is_alive():
        started = time.monotonic()
        assert read(small, small_id) == b"steady!!"
        admin.GetStats(host_pb2.GetStatsRequest(), timeout=10)
        slowest = max(slowest, time.monotonic() - started)
        reads += 1
        time.sleep(0.01)
    thread.join()
    assert outcome == [(0, (32 * TIB) >> 21)] * 6 + [grpc.StatusCode.DEADLINE_EXCEEDED]
    assert reads > 10
    assert slowest < 1.0, f"a read of another TD took {slowest:.2f} s"


def test_a_64_tib_fallocate_is_refused_at_once_without_growing_the_host(
    host_factory: Callable[..., HostProcess],
) -> None:
    host = host_factory()
    admin = host_pb2_grpc.HostServiceStub(host.admin_channel)
    td = admin.CreateTd(host_pb2.CreateTdRequest(memory_bytes=64 * TIB), timeout=10)
    files = [td.guest_memfd]
    files.append(
        admin.CreateGuestMemfd(host_pb2.CreateGuestMemfdRequest(td_id=td.td_id, size=64 * TIB), timeout=10).fd
    )
    before = vm_rss(host.proc.pid)
    for fd in files:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            admin.Fallocate(
                host_pb2.FallocateRequest(
                    td_id=td.td_id, fd=fd, mode=FALLOC_FL_KEEP_SIZE, offset=0, len=64 * TIB
                ),
                timeout=10,
            )
        assert time.monotonic() - started < 1.0
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        info = error_info(refused.value)
        assert info is not None and info.reason == "ENOMEM"
    grown = vm_rss(host.proc.pid) - before
    assert grown < 16 * MIB, f"the host grew by {grown >> 20} MiB"
    stats = admin.GetStats(host_pb2.GetStatsRequest(), timeout=10)
    assert stats.phys_pages_free == stats.phys_pages_total - 3  # the TD's control pages only


def test_a_request_past_its_deadline_stops_and_its_td_answers_right_after(
    host_factory: Callable[..., HostProcess],
) -> None:
    host = host_factory()
    admin = host_pb2_grpc.HostServiceStub(host.admin_channel)
    td_id, shared_bit, guest = running_td(host, 4 * GIB)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as late:
        guest.Run(guest_pb2.RunRequest(td_id=td_id, instructions=conversions(shared_bit, 2000)), timeout=0.5)
    assert late.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    # The server stopped too: the TD (whose lock the request held) answers at once, not in half a minute.
    mapped = guest.MapGpa(guest_pb2.MapGpaRequest(td_id=td_id, gpa=shared_bit | 0, size=4096), timeout=5)
    assert mapped.status == 0
    assert time.monotonic() - started < 3.0
    done = admin.GetStats(host_pb2.GetStatsRequest(), timeout=5).conversions
    time.sleep(0.3)
    assert admin.GetStats(host_pb2.GetStatsRequest(), timeout=5).conversions == done
    assert host.proc.poll() is None

"""The attack surfaces HostService exposes on purpose (docs/memory-model.md §1.2, §7.2): host userspace's
file operations on a guest_memfd, what a physical attacker reads and writes; and the GPA map. A real host."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from guest.errors import GuestError
from guest.td import Td
from tests.conftest import HostProcess
from tests.guest.guest_helpers import image, launch
from wire.rpc_status import error_info
from wire.v1 import host_pb2, host_pb2_grpc

PAGE = 4096
MIB = 1 << 20
LINE = 64
DRAM = host_pb2.PHYSICAL_PATH_DRAM
HOST_KEYID = host_pb2.PHYSICAL_PATH_HOST_KEYID
#: A TD whose unaccepted pages raise #VE instead of killing it (SEPT_VE_DISABLE clear).
VE_TD = 0


def admin(host: HostProcess) -> Any:
    return host_pb2_grpc.HostServiceStub(host.admin_channel)


def refusal(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    info = error_info(caught.value)
    assert info is not None, caught.value
    return caught.value.code(), info.reason, dict(info.metadata)


def at(td: Td, gpa: int) -> host_pb2.TdGpa:
    return host_pb2.TdGpa(td_id=td.td_id, gpa=gpa)


def dram(host: HostProcess, td: Td, gpa: int, length: int = PAGE) -> host_pb2.PhysicalReadResponse:
    reply: host_pb2.PhysicalReadResponse = admin(host).PhysicalRead(
        host_pb2.PhysicalReadRequest(path=DRAM, td_gpa=at(td, gpa), length=length), timeout=10
    )
    return reply


def test_guest_memfd_file_operations_fail_with_the_kernels_errnos(module_host: HostProcess) -> None:
    stub = admin(module_host)
    td = stub.CreateTd(host_pb2.CreateTdRequest(memory_bytes=16 * MIB), timeout=10)
    fd = td.guest_memfd
    attempts = {
        "read": (
            lambda: stub.GuestMemfdRead(host_pb2.GuestMemfdReadRequest(td_id=td.td_id, fd=fd, length=64)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "EINVAL",
        ),
        "write": (
            lambda: stub.GuestMemfdWrite(host_pb2.GuestMemfdWriteRequest(td_id=td.td_id, fd=fd, data=b"x")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "EINVAL",
        ),
        "mmap": (
            lambda: stub.GuestMemfdMmap(host_pb2.GuestMemfdMmapRequest(td_id=td.td_id, fd=fd, length=PAGE)),
            grpc.StatusCode.PERMISSION_DENIED,
            "ENODEV",
        ),
        "ftruncate": (
            lambda: stub.GuestMemfdFtruncate(
                host_pb2.GuestMemfdFtruncateRequest(td_id=td.td_id, fd=fd, length=32 * MIB)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "EINVAL",
        ),
    }
    for op, (call, code, errno) in attempts.items():
        assert refusal(call) == (code, errno, {"errno": errno}), op
    # A descriptor the TD does not have is EBADF, whatever the operation.
    bad = host_pb2.GuestMemfdReadRequest(td_id=td.td_id, fd=fd + 100, length=64)
    assert refusal(lambda: stub.GuestMemfdRead(bad))[:2] == (grpc.StatusCode.NOT_FOUND, "EBADF")
    stub.DestroyTd(host_pb2.DestroyTdRequest(td_id=td.td_id), timeout=10)


def test_dram_holds_ciphertext_that_differs_by_address_and_shared_memory_in_clear(
    module_host: HostProcess,
) -> None:
    with launch(module_host, image(memory=16 * MIB)) as td:
        secret = b"the same 64 secret bytes, written at two private addresses ....."
        assert len(secret) == LINE
        td.accept(0, 2 * PAGE)
        td.write_many([(0, secret), (PAGE, secret)])
        first, second = dram(module_host, td, 0), dram(module_host, td, PAGE)
        assert first.private and second.private
        assert first.pa != second.pa
        assert first.data[:LINE] != second.data[:LINE]  # the address tweak
        assert secret not in first.data and secret not in second.data
        assert len(first.macs) == PAGE // LINE * 4
        # The same frame by host physical address: the same bytes.
        by_pa = admin(module_host).PhysicalRead(
            host_pb2.PhysicalReadRequest(path=DRAM, pa=first.pa, length=PAGE), timeout=10
        )
        assert by_pa.data == first.data
        # Through the memory controller with the host's KeyID 0: TD-owned lines read as zeros.
        host_view = admin(module_host).PhysicalRead(
            host_pb2.PhysicalReadRequest(path=HOST_KEYID, td_gpa=at(td, 0), length=PAGE), timeout=10
        )
        assert host_view.data == bytes(PAGE) and host_view.macs == b""
        # Shared memory is in clear in DRAM.
        td.convert_to_shared(2 * MIB, PAGE)
        td.write(td.shared(2 * MIB), secret)
        shared = dram(module_host, td, 2 * MIB)
        assert not shared.private and shared.data.startswith(secret)
        assert td.read(0, LINE) == secret  # the TD noticed nothing


def test_moved_ciphertext_is_detected_and_replayed_ciphertext_is_not(module_host: HostProcess) -> None:
    with launch(module_host, image(memory=16 * MIB)) as td:
        td.accept(0, 2 * PAGE)
        td.write_many([(0, b"old balance: 100".ljust(LINE)), (PAGE, b"other page".ljust(LINE))])
        old = dram(module_host, td, 0, LINE)
        td.write(0, b"new balance: 0".ljust(LINE))
        # Replay: the old ciphertext with its old MAC at the same address passes every check.
        admin(module_host).PhysicalWrite(
            host_pb2.PhysicalWriteRequest(path=DRAM, td_gpa=at(td, 0), data=old.data, macs=old.macs),
            timeout=10,
        )
        assert td.read(0, LINE) == b"old balance: 100".ljust(LINE)
        # Splice: another page's ciphertext and MAC moved here fail the MAC, which covers the address.
        other = dram(module_host, td, PAGE, LINE)
        admin(module_host).PhysicalWrite(
            host_pb2.PhysicalWriteRequest(path=DRAM, td_gpa=at(td, 0), data=other.data, macs=other.macs),
            timeout=10,
        )
        with pytest.raises(GuestError) as caught:
            td.read(0, LINE)
        assert caught.value.reason == "TD_MACHINE_CHECK"


def test_a_host_kernel_store_with_keyid_0_kills_the_td_at_its_next_read_and_the_host_lives(
    module_host: HostProcess,
) -> None:
    with (
        launch(module_host, image(memory=16 * MIB)) as victim,
        launch(module_host, image(memory=16 * MIB)) as bystander,
    ):
        victim.accept(0, PAGE)
        victim.write(0, b"private".ljust(LINE))
        written = admin(module_host).PhysicalWrite(
            host_pb2.PhysicalWriteRequest(path=HOST_KEYID, td_gpa=at(victim, 0), data=bytes(LINE)), timeout=10
        )
        assert written.pa % PAGE == 0
        with pytest.raises(GuestError) as caught:
            victim.read(0, LINE)
        assert caught.value.reason == "TD_MACHINE_CHECK"
        bystander.accept(0, PAGE)
        bystander.write(0, b"still fine")
        assert bystander.read(0, 10) == b"still fine"
        assert admin(module_host).GetStats(host_pb2.GetStatsRequest(), timeout=10).poisoned_lines >= 1


@pytest.mark.parametrize(
    ("request_", "code", "reason"),
    [
        (
            host_pb2.PhysicalReadRequest(path=DRAM, length=LINE),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        ),
        (
            host_pb2.PhysicalReadRequest(pa=0, length=LINE),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        ),
        (
            host_pb2.PhysicalReadRequest(path=DRAM, pa=1, length=LINE),
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNALIGNED",
        ),
        (
            host_pb2.PhysicalReadRequest(path=DRAM, pa=0, length=65),
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNALIGNED",
        ),
        (
            host_pb2.PhysicalReadRequest(path=DRAM, pa=0, length=0),
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNALIGNED",
        ),
        (
            host_pb2.PhysicalReadRequest(path=DRAM, pa=0, length=(1 << 20) + LINE),
            grpc.StatusCode.INVALID_ARGUMENT,
            "TOO_LARGE",
        ),
        (
            host_pb2.PhysicalReadRequest(path=DRAM, pa=1 << 62, length=LINE),
            grpc.StatusCode.OUT_OF_RANGE,
            "BEYOND_PHYSICAL_MEMORY",
        ),
        (
            host_pb2.PhysicalReadRequest(path=DRAM, length=1 << 40, td_gpa=host_pb2.TdGpa(td_id=1 << 40)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "TOO_LARGE",
        ),
        (
            host_pb2.PhysicalReadRequest(path=DRAM, length=LINE, td_gpa=host_pb2.TdGpa(td_id=1 << 40)),
            grpc.StatusCode.NOT_FOUND,
            "TD_NOT_FOUND",
        ),
    ],
)
def test_physical_requests_out_of_their_bounds_get_precise_statuses(
    module_host: HostProcess, request_: host_pb2.PhysicalReadRequest, code: grpc.StatusCode, reason: str
) -> None:
    assert refusal(lambda: admin(module_host).PhysicalRead(request_, timeout=10))[:2] == (code, reason)


def test_physical_targets_that_name_no_frame_or_cross_a_page_are_refused(module_host: HostProcess) -> None:
    with launch(module_host, image(memory=16 * MIB)) as td:
        stub = admin(module_host)
        untouched = host_pb2.PhysicalReadRequest(path=DRAM, td_gpa=at(td, 8 * MIB), length=LINE)
        assert refusal(lambda: stub.PhysicalRead(untouched))[:2] == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "NO_FRAME",
        )
        crossing = host_pb2.PhysicalReadRequest(path=DRAM, td_gpa=at(td, MIB + PAGE - LINE), length=2 * LINE)
        assert refusal(lambda: stub.PhysicalRead(crossing))[:2] == (
            grpc.StatusCode.OUT_OF_RANGE,
            "CROSSES_PAGE",
        )
        bad_macs = host_pb2.PhysicalWriteRequest(path=DRAM, td_gpa=at(td, MIB), data=bytes(LINE), macs=b"123")
        assert refusal(lambda: stub.PhysicalWrite(bad_macs))[:2] == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "MACS_LENGTH",
        )
        keyid_macs = host_pb2.PhysicalWriteRequest(
            path=HOST_KEYID, td_gpa=at(td, MIB), data=bytes(LINE), macs=bytes(4)
        )
        assert refusal(lambda: stub.PhysicalWrite(keyid_macs))[:2] == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "MACS_NEED_DRAM",
        )


def gpa_map(host: HostProcess, td_id: int, max_runs: int = 0) -> tuple[list[host_pb2.GpaRun], int]:
    runs: list[host_pb2.GpaRun] = []
    start, calls = 0, 0
    while True:
        piece = admin(host).GetGpaMap(
            host_pb2.GetGpaMapRequest(td_id=td_id, start_gpa=start, max_runs=max_runs), timeout=10
        )
        runs.extend(piece.runs)
        calls += 1
        if piece.complete:
            return runs, calls
        start = piece.next_gpa


def test_the_gpa_map_shows_every_state_in_runs_that_tile_the_memslots(module_host: HostProcess) -> None:
    memory = 16 * MIB
    ve_td, plain = image(memory=memory, attributes=VE_TD), image(memory=memory)
    with launch(module_host, ve_td) as td, launch(module_host, plain) as other:
        td.accept(0, 4 * PAGE)
        td.write(0, b"x")
        td.convert_to_shared(2 * MIB, 2 * PAGE)
        td.write(td.shared(2 * MIB), b"shared")
        with pytest.raises(GuestError):  # touching an unaccepted page augments it: PENDING, and a #VE
            td.read(4 * MIB, 1)
        runs, _ = gpa_map(module_host, td.td_id)
        states = {host_pb2.GpaState.Name(run.state) for run in runs}
        assert states == {
            "GPA_STATE_PRIVATE_ACCEPTED",
            "GPA_STATE_PRIVATE_PENDING",
            "GPA_STATE_SHARED",
            "GPA_STATE_UNBACKED",
        }
        assert runs[0].gpa == 0 and sum(run.size for run in runs) == memory
        assert all(a.gpa + a.size == b.gpa for a, b in itertools.pairwise(runs))
        accepted = [run for run in runs if run.state == host_pb2.GPA_STATE_PRIVATE_ACCEPTED]
        assert accepted[0].gpa == 0 and accepted[0].size == 4 * PAGE and accepted[0].guest_memfd >= 0
        shared = [run for run in runs if run.state == host_pb2.GPA_STATE_SHARED]
        assert [(r.gpa, r.size, r.private, r.guest_memfd) for r in shared] == [(2 * MIB, PAGE, False, -1)]
        # One run per response: the same map in pieces.
        pieces, calls = gpa_map(module_host, td.td_id, max_runs=1)
        assert calls > 1 and _merged(pieces) == _merged(runs)
        # Poison consumed in a page's frame marks it.
        other.accept(0, PAGE)
        admin(module_host).PhysicalWrite(
            host_pb2.PhysicalWriteRequest(path=HOST_KEYID, td_gpa=at(other, 0), data=bytes(LINE)), timeout=10
        )
        with pytest.raises(GuestError):
            other.read(0, LINE)
        poisoned = [r for r in gpa_map(module_host, other.td_id)[0] if r.state == host_pb2.GPA_STATE_POISONED]
        assert [(r.gpa, r.size) for r in poisoned] == [(0, PAGE)]


def _merged(runs: list[host_pb2.GpaRun]) -> list[tuple[int, int, int, bool]]:
    out: list[tuple[int, int, int, bool]] = []
    for run in runs:
        last = out[-1] if out else None
        if last and last[2:] == (run.state, run.private) and last[0] + last[1] == run.gpa:
            out[-1] = (last[0], last[1] + run.size, run.state, run.private)
        else:
            out.append((run.gpa, run.size, run.state, run.private))
    return out


def test_the_gpa_map_of_a_64_gib_td_costs_what_it_touched(host_factory: Any) -> None:
    big = host_factory("--phys-mem", "1T")
    gib = 1 << 30
    with launch(big, image(memory=64 * gib)) as td:
        td.accept_ranges([(0, PAGE), (17 * gib, PAGE), (63 * gib, 2 * PAGE)])
        runs, calls = gpa_map(big, td.td_id)
    assert calls == 1
    accepted = [(r.gpa, r.size) for r in runs if r.state == host_pb2.GPA_STATE_PRIVATE_ACCEPTED]
    assert accepted == [(0, PAGE), (MIB, 2 * PAGE), (17 * gib, PAGE), (63 * gib, 2 * PAGE)]  # + the kernel
    assert len(runs) == 2 * len(accepted) and sum(r.size for r in runs) == 64 * gib

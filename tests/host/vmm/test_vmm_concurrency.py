"""One TD's requests never hold what another TD needs; long requests cost ranges, not sizes, and stop when
their caller has gone (docs/memory-model.md §1.3, §1.5, §2, §6.5; docs/conventions.md §6).

Timings here are loose on purpose (a loaded 2-core machine must pass them); speed targets live in
``tdxsim bench``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from host.kvm.attributes import KVM_MEMORY_ATTRIBUTE_PRIVATE
from host.kvm.errors import KvmError
from host.kvm.gmem import FALLOC_FL_KEEP_SIZE
from host.kvm.vm import TDX_MAP_GPA_MAX_LEN
from host.platform import Platform, PlatformConfig, build_platform
from host.tdx.tdcs import TdParams
from host.tdx.vcpu import Accept, MapGpa, MemRead, MemWrite, TdVmCallResult
from host.vmm.cancel import Cancellation
from host.vmm.errors import Refusal, VmmError
from host.vmm.vmm import TdHandle, Vmm
from wire.tdx_abi import TdVmCallStatus

PAGE = 4096
MIB = 1 << 20
GIB = 1 << 30
TIB = 1 << 40
PRIVATE = KVM_MEMORY_ATTRIBUTE_PRIVATE


@pytest.fixture
def platform() -> Platform:
    return build_platform(PlatformConfig(phys_bytes=128 * MIB))


def running_td(vmm: Vmm, memory: int) -> TdHandle:
    handle = vmm.create_td(TdParams(), memory)
    vmm.finalize(handle.td_id)
    return handle


def many_conversions(handle: TdHandle, count: int) -> list[MapGpa]:
    """A request converting 1 GiB back and forth ``count`` times, answered piece by piece (512 exits each):
    seconds of work in one request."""
    shared = handle.vm.shared_bit
    return [MapGpa((shared if i % 2 == 0 else 0) | GIB, GIB) for i in range(count)]


def in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def body() -> None:
        try:
            outcome.append(target())
        except Exception as err:  # the test looks at it
            outcome.append(err)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, outcome


def test_a_td_whose_lock_is_held_does_not_delay_another_td(platform: Platform) -> None:
    vmm = platform.vmm
    busy, other = running_td(vmm, 8 * MIB), running_td(vmm, 8 * MIB)
    vmm.run_vcpu(other.td_id, [Accept(0, PAGE), MemWrite(0, b"other")])
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with vmm.locked_td(busy.td_id):  # as a long request on ``busy`` would
            held.set()
            release.wait(30)

    holder, _ = in_thread(hold)
    assert held.wait(10)
    try:
        started = time.monotonic()
        assert vmm.run_vcpu(other.td_id, [MemRead(0, 5)]) == [b"other"]
        with pytest.raises(VmmError) as private:  # the host's own calls on the other TD answer too
            vmm.host_read(other.td_id, 0, 5)
        assert private.value.reason == "PRIVATE_MEMORY_NOT_ACCESSIBLE"
        assert vmm.stats().tds == 2  # statistics never wait for a TD
        assert [s.td_id for s in vmm.td_statuses()] == [busy.td_id, other.td_id]
        assert time.monotonic() - started < 5
        # A request on the busy TD itself waits, and gives up with its own deadline.
        started = time.monotonic()
        with pytest.raises(VmmError) as waited:
            vmm.run_vcpu(busy.td_id, [MapGpa(busy.vm.shared_bit, PAGE)], Cancellation.within(0.2))
        assert waited.value.refusal is Refusal.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 5
    finally:
        release.set()
        holder.join(10)
    assert busy.conversions == 0


def test_a_32_tib_map_gpa_and_a_long_request_leave_another_tds_reads_prompt(platform: Platform) -> None:
    vmm = platform.vmm
    big = running_td(vmm, 64 * TIB)
    other = running_td(vmm, 8 * MIB)
    vmm.run_vcpu(other.td_id, [Accept(0, PAGE), MemWrite(0, b"steady")])
    shared = big.vm.shared_bit

    def big_requests() -> list[object]:
        results = []
        for i in range(4):
            results += vmm.run_vcpu(big.td_id, [MapGpa((shared if i % 2 == 0 else 0) | 0, 32 * TIB)])
        results += vmm.run_vcpu(big.td_id, many_conversions(big, 40), Cancellation.within(20))
        return results

    thread, outcome = in_thread(big_requests)
    slowest = 0.0
    while thread.is_alive():
        started = time.monotonic()
        assert vmm.run_vcpu(other.td_id, [MemRead(0, 6)]) == [b"steady"]
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.005)
    thread.join()
    assert slowest < 1.0
    (results,) = outcome
    assert isinstance(results, list), results
    assert results[:4] == [TdVmCallResult(TdVmCallStatus.SUCCESS, 0, (32 * TIB) // TDX_MAP_GPA_MAX_LEN)] * 4
    assert big.vm.attributes.uniform(0, (32 * TIB) >> 12, PRIVATE)


def test_a_map_gpa_answered_in_runs_reports_what_piece_by_piece_would(platform: Platform) -> None:
    vmm = platform.vmm
    handle = vmm.create_td(TdParams(), 3 * GIB + 3 * MIB)  # memory ends 1 MiB into a piece
    vmm.finalize(handle.td_id)
    shared = handle.vm.shared_bit
    # From 2 MiB to 5 GiB: the backed part is converted in runs, the piece reaching past memory fails.
    (result,) = vmm.run_vcpu(handle.td_id, [MapGpa(shared | 2 * MIB, 5 * GIB)])
    assert isinstance(result, TdVmCallResult)
    failed = 3 * GIB + 2 * MIB  # the first piece not wholly inside the memslot
    assert (result.status, result.failed_gpa) == (TdVmCallStatus.INVALID_OPERAND, shared | failed)
    assert result.chunks == (failed - 2 * MIB) // TDX_MAP_GPA_MAX_LEN + 1
    attributes = handle.vm.attributes
    assert attributes.uniform(2 * MIB >> 12, failed >> 12, 0)
    assert attributes.get(failed >> 12) == PRIVATE
    assert attributes.get((2 * MIB >> 12) - 1) == PRIVATE


def test_retry_points_are_kept_when_pieces_are_answered_in_runs() -> None:
    vmm = build_platform(PlatformConfig(phys_bytes=64 * MIB, map_gpa_retry_every=700)).vmm
    handle = running_td(vmm, 4 * GIB)
    shared = handle.vm.shared_bit
    (result,) = vmm.run_vcpu(handle.td_id, [MapGpa(shared, 4 * GIB)])
    assert result == TdVmCallResult(TdVmCallStatus.RETRY, shared | 700 * 2 * MIB, 700)
    (result,) = vmm.run_vcpu(handle.td_id, [MapGpa(shared | 700 * 2 * MIB, 4 * GIB - 700 * 2 * MIB)])
    assert result == TdVmCallResult(TdVmCallStatus.RETRY, shared | 1400 * 2 * MIB, 700)
    (result,) = vmm.run_vcpu(handle.td_id, [MapGpa(shared | 1400 * 2 * MIB, 4 * GIB - 1400 * 2 * MIB)])
    assert result == TdVmCallResult(TdVmCallStatus.SUCCESS, 0, 2048 - 1400)
    assert handle.vm.attributes.uniform(0, (4 * GIB) >> 12, 0)


def test_a_request_past_its_deadline_stops_and_leaves_the_td_consistent(platform: Platform) -> None:
    vmm = platform.vmm
    handle = running_td(vmm, 4 * GIB)
    vmm.run_vcpu(handle.td_id, [Accept(0, PAGE), MemWrite(0, b"kept")])
    started = time.monotonic()
    with pytest.raises(VmmError) as stopped:
        vmm.run_vcpu(handle.td_id, many_conversions(handle, 2000), Cancellation.within(0.3))
    elapsed = time.monotonic() - started
    assert (stopped.value.refusal, stopped.value.reason) == (Refusal.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED")
    assert elapsed < 5  # 2000 GiB-conversions would take far longer
    # The MapGPA in progress ended as with RETRY: everything below R11 converted, nothing above.
    resume = stopped.value.gpa
    assert resume is not None
    gpa = resume & ~handle.vm.shared_bit
    assert GIB <= gpa < 2 * GIB and gpa % TDX_MAP_GPA_MAX_LEN == 0
    wanted = 0 if resume & handle.vm.shared_bit else PRIVATE
    attributes = handle.vm.attributes
    assert attributes.uniform(GIB >> 12, gpa >> 12, wanted)
    assert attributes.uniform(gpa >> 12, (2 * GIB) >> 12, PRIVATE if wanted == 0 else 0)
    # The TD goes on: the next request runs at once.
    assert vmm.run_vcpu(handle.td_id, [MemRead(0, 4)], Cancellation.within(5)) == [b"kept"]
    (result,) = vmm.run_vcpu(handle.td_id, [MapGpa(resume, 2 * GIB - gpa)])
    assert isinstance(result, TdVmCallResult) and result.status == TdVmCallStatus.SUCCESS


def test_a_cancelled_request_stops_with_cancelled(platform: Platform) -> None:
    vmm = platform.vmm
    handle = running_td(vmm, 4 * GIB)
    active = threading.Event()
    active.set()
    timer = threading.Timer(0.2, active.clear)
    timer.start()
    try:
        with pytest.raises(VmmError) as stopped:
            vmm.run_vcpu(handle.td_id, many_conversions(handle, 2000), Cancellation(is_active=active.is_set))
    finally:
        timer.cancel()
    assert (stopped.value.refusal, stopped.value.reason) == (Refusal.CANCELLED, "CANCELLED")
    assert vmm.run_vcpu(handle.td_id, [MapGpa(0, PAGE)])[0] == TdVmCallResult(TdVmCallStatus.SUCCESS, 0, 1)


def test_a_request_whose_caller_is_gone_does_nothing(platform: Platform) -> None:
    vmm = platform.vmm
    handle = running_td(vmm, 8 * MIB)
    with pytest.raises(VmmError) as stopped:
        vmm.run_vcpu(handle.td_id, [MapGpa(handle.vm.shared_bit, 8 * MIB)], Cancellation.within(0))
    assert stopped.value.refusal is Refusal.DEADLINE_EXCEEDED
    assert handle.conversions == 0
    assert handle.vm.attributes.uniform(0, (8 * MIB) >> 12, PRIVATE)


def test_a_large_fallocate_past_its_deadline_keeps_its_pages_and_a_huge_one_is_refused(
    platform: Platform,
) -> None:
    vmm = platform.vmm
    pages = vmm.kvm.pages
    baseline = pages.free_pages
    handle = vmm.create_td(TdParams())
    free = pages.free_pages
    fd = vmm.create_guest_memfd(handle.td_id, 64 * TIB, 0)
    with pytest.raises(KvmError) as refused:
        vmm.fallocate(handle.td_id, fd, FALLOC_FL_KEEP_SIZE, 0, 64 * TIB)
    assert refused.value.errno == "ENOMEM"
    assert pages.free_pages == free
    with pytest.raises(VmmError) as stopped:
        vmm.fallocate(handle.td_id, fd, FALLOC_FL_KEEP_SIZE, 0, 64 * MIB, Cancellation.within(0))
    assert stopped.value.refusal is Refusal.DEADLINE_EXCEEDED
    assert pages.free_pages == free  # stopped before the first chunk
    vmm.fallocate(handle.td_id, fd, FALLOC_FL_KEEP_SIZE, 0, 64 * MIB)
    assert pages.free_pages == free - 64 * MIB // PAGE
    vmm.destroy_td(handle.td_id)
    assert pages.free_pages == baseline


def test_destroy_stops_a_request_running_on_the_td_and_an_interrupted_teardown_resumes(
    platform: Platform,
) -> None:
    vmm = platform.vmm
    free_pages, free_keyids = vmm.kvm.pages.free_pages, vmm.kvm.keyids_free
    handle = running_td(vmm, 4 * GIB)
    vmm.run_vcpu(handle.td_id, [Accept(0, 16 * MIB)])
    thread, outcome = in_thread(lambda: vmm.run_vcpu(handle.td_id, many_conversions(handle, 2000)))
    while handle.conversions == 0:
        time.sleep(0.01)
    # A teardown whose caller goes away after the first chunk of pages stops there; the TD stays
    # listed, dead, and the next destroy resumes.
    tdr = handle.vm.tdr_pa
    with pytest.raises(VmmError) as stopped:
        vmm.destroy_td(
            handle.td_id, cancel=Cancellation(is_active=lambda: len(platform.module.td_pages(tdr)) > 4000)
        )
    thread.join(10)
    assert not thread.is_alive()
    (err,) = outcome
    assert isinstance(err, VmmError) and err.reason == "TD_NOT_FOUND"  # kicked out by the destroyer
    assert stopped.value.refusal is Refusal.CANCELLED
    assert vmm.exists(handle.td_id) and handle.vm.dead
    with pytest.raises(Exception, match="EIO"):
        vmm.run_vcpu(handle.td_id, [MemRead(0, 8)])
    reclaimed, _ = vmm.destroy_td(handle.td_id)
    assert reclaimed == 4096 + 3
    assert not vmm.exists(handle.td_id)
    assert (vmm.kvm.pages.free_pages, vmm.kvm.keyids_free) == (free_pages, free_keyids)


def test_tds_created_converted_and_destroyed_from_many_threads_share_the_machine_correctly(
    platform: Platform,
) -> None:
    vmm = platform.vmm
    free_pages, free_keyids = vmm.kvm.pages.free_pages, vmm.kvm.keyids_free
    errors: list[BaseException] = []

    def life(seed: int) -> None:
        try:
            for round_ in range(6):
                handle = running_td(vmm, 64 * MIB)
                shared = handle.vm.shared_bit
                data = bytes([seed, round_]) * 2048
                vmm.run_vcpu(handle.td_id, [Accept(0, 2 * MIB), MemWrite(0, data), MemWrite(MIB, data)])
                vmm.run_vcpu(handle.td_id, [MapGpa(shared | MIB, MIB), MemWrite(shared | MIB, data)])
                assert vmm.host_read(handle.td_id, MIB, len(data)) == data
                assert vmm.run_vcpu(handle.td_id, [MemRead(0, len(data))]) == [data]
                vmm.fallocate(handle.td_id, next(iter(handle.fds)), FALLOC_FL_KEEP_SIZE, 8 * MIB, 4 * MIB)
                vmm.destroy_td(handle.td_id)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=life, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert vmm.tds() == []
    assert (vmm.kvm.pages.free_pages, vmm.kvm.keyids_free) == (free_pages, free_keyids)

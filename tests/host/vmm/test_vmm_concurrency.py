"""One TD's requests never hold what another TD needs: each TD has its own lock, and what TDs share locks
itself for one operation at a time (docs/conventions.md §3).

Timings here are loose on purpose (a loaded 2-core machine must pass them); speed targets live in
``tdxsim bench``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from host.kvm.attributes import KVM_MEMORY_ATTRIBUTE_PRIVATE
from host.kvm.gmem import FALLOC_FL_KEEP_SIZE
from host.platform import Platform, PlatformConfig, build_platform
from host.tdx.tdcs import TdParams
from host.tdx.vcpu import Accept, MapGpa, MemRead, MemWrite
from host.vmm.errors import VmmError
from host.vmm.vmm import TdHandle, Vmm

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
    finally:
        release.set()
        holder.join(10)
    assert busy.conversions == 0


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

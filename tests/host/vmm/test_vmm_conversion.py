"""MapGPA and memory conversion through KVM_RUN (memory-model.md §1.6, §2): TDVMCALL status
codes, 2 MiB chunking, destructive conversion and the implicit conversion of a memory fault."""

from __future__ import annotations

import queue

import pytest

from host.kvm.attributes import KVM_MEMORY_ATTRIBUTE_PRIVATE
from host.kvm.errors import KvmError
from host.kvm.vm import KVM_MAP_GPA_RANGE_DECRYPTED, KVM_MAP_GPA_RANGE_ENCRYPTED
from host.platform import PlatformConfig, build_platform
from host.tdx.sept import SeptState
from host.tdx.tdcs import TdParams
from host.tdx.vcpu import Accept, MapGpa, MemRead, MemWrite, TdVmCallResult
from host.vmm.errors import Refusal, VmmError
from host.vmm.events import Event, EventKind
from host.vmm.vmm import TdHandle, Vmm
from wire.tdx_abi import TdVmCallStatus

PAGE = 4096
MIB = 1 << 20
SHARED = 1 << 47
PRIVATE = KVM_MEMORY_ATTRIBUTE_PRIVATE


@pytest.fixture
def vmm() -> Vmm:
    return build_platform(PlatformConfig(phys_bytes=64 << 20)).vmm


def running_td(vmm: Vmm, attributes: int = 1 << 28, memory: int = 8 * MIB) -> TdHandle:
    handle = vmm.create_td(TdParams(attributes=attributes), memory)
    vmm.finalize(handle.td_id)
    return handle


def drain(q: queue.Queue[Event | None]) -> list[Event]:
    events: list[Event] = []
    while not q.empty():
        event = q.get_nowait()
        assert event is not None
        events.append(event)
    return events


def map_gpa(vmm: Vmm, handle: TdHandle, gpa: int, size: int) -> TdVmCallResult:
    (result,) = vmm.run_vcpu(handle.td_id, [MapGpa(gpa, size)])
    assert isinstance(result, TdVmCallResult)
    return result


@pytest.mark.parametrize(
    ("gpa", "size"),
    [(SHARED | 0x800, PAGE), (SHARED, PAGE + 1), (0x10, 2 * PAGE), (PAGE, 100)],
)
def test_map_gpa_unaligned_is_align_error(vmm: Vmm, gpa: int, size: int) -> None:
    handle = running_td(vmm)
    result = map_gpa(vmm, handle, gpa, size)
    assert result.status == int(TdVmCallStatus.ALIGN_ERROR) == 0x8000000000000002
    assert result.failed_gpa == gpa
    assert handle.conversions == 0


@pytest.mark.parametrize(
    ("gpa", "size"),
    [
        (SHARED, 0),  # size 0: end <= start
        (0, 0),
        (SHARED - PAGE, 2 * PAGE),  # start private, end shared
        (SHARED | PAGE, 1 << 48),  # beyond GPAW
        (1 << 48, PAGE),
    ],
)
def test_map_gpa_size_zero_mixed_shared_bit_or_illegal_is_invalid_operand(
    vmm: Vmm, gpa: int, size: int
) -> None:
    handle = running_td(vmm)
    result = map_gpa(vmm, handle, gpa, size)
    assert result.status == int(TdVmCallStatus.INVALID_OPERAND) == 0x8000000000000000
    assert result.failed_gpa == gpa
    assert handle.conversions == 0


def test_map_gpa_of_5_mib_is_handled_in_3_chunks_of_at_most_2_mib(vmm: Vmm) -> None:
    handle = running_td(vmm)
    watcher = vmm.events.watch()
    result = map_gpa(vmm, handle, SHARED | MIB, 5 * MIB)
    assert result == TdVmCallResult(TdVmCallStatus.SUCCESS, 0, 3)
    exits = [(e.gpa, e.size, e.flags) for e in drain(watcher) if e.kind is EventKind.MAP_GPA]
    assert exits == [
        (MIB, 2 * MIB, KVM_MAP_GPA_RANGE_DECRYPTED),
        (3 * MIB, 2 * MIB, KVM_MAP_GPA_RANGE_DECRYPTED),
        (5 * MIB, MIB, KVM_MAP_GPA_RANGE_DECRYPTED),
    ]
    assert handle.conversions == 3
    attrs = handle.vm.attributes
    assert attrs.uniform(MIB // PAGE, 6 * MIB // PAGE, 0)
    assert attrs.get(MIB // PAGE - 1) == PRIVATE
    assert attrs.get(6 * MIB // PAGE) == PRIVATE

    # And back to private: chunks reported with the shared bit stripped, ENCRYPTED.
    result = map_gpa(vmm, handle, MIB, 5 * MIB)
    assert result == TdVmCallResult(TdVmCallStatus.SUCCESS, 0, 3)
    exits = [(e.gpa, e.size, e.flags) for e in drain(watcher) if e.kind is EventKind.MAP_GPA]
    assert [e[2] for e in exits] == [KVM_MAP_GPA_RANGE_ENCRYPTED] * 3
    assert attrs.uniform(0, 8 * MIB // PAGE, PRIVATE)


def test_map_gpa_exact_2_mib_is_one_chunk(vmm: Vmm) -> None:
    handle = running_td(vmm)
    assert map_gpa(vmm, handle, SHARED | 2 * MIB, 2 * MIB) == TdVmCallResult(TdVmCallStatus.SUCCESS, 0, 1)


def test_private_to_shared_conversion_loses_contents(vmm: Vmm) -> None:
    handle = running_td(vmm)
    secret = b"top secret data!" * 8
    vmm.run_vcpu(handle.td_id, [Accept(0, 2 * PAGE), MemWrite(0, secret), MemWrite(PAGE, secret)])
    (fd,) = handle.fds
    gmem = handle.fds[fd]
    assert sorted(gmem.pages) == [0, 1]
    free = vmm.kvm.pages.free_pages

    assert map_gpa(vmm, handle, SHARED, PAGE).status == TdVmCallStatus.SUCCESS

    # The private page was removed from the S-EPT and punched out of the guest_memfd.
    assert sorted(gmem.pages) == [1]
    assert 0 not in handle.vm.private_map
    assert vmm.kvm.pages.free_pages == free + 1
    sept = vmm.kvm._module.td_summary(handle.vm.tdr_pa).sept
    assert sept.state(0) is SeptState.FREE
    assert vmm.run_vcpu(handle.td_id, [MemRead(SHARED, len(secret))]) == [bytes(len(secret))]
    assert vmm.host_read(handle.td_id, 0, len(secret)) == bytes(len(secret))
    # Back to private: a zeroed PENDING page the guest accepts.
    assert map_gpa(vmm, handle, 0, PAGE).status == TdVmCallStatus.SUCCESS
    results = vmm.run_vcpu(handle.td_id, [Accept(0, PAGE), MemRead(0, len(secret)), MemRead(PAGE, 16)])
    assert results[1:] == [bytes(len(secret)), secret[:16]]


def test_shared_to_private_conversion_drops_the_shared_page(vmm: Vmm) -> None:
    handle = running_td(vmm)
    map_gpa(vmm, handle, SHARED | 4 * PAGE, PAGE)
    vmm.run_vcpu(handle.td_id, [MemWrite(SHARED | 4 * PAGE, b"shared bytes")])
    assert vmm.host_read(handle.td_id, 4 * PAGE, 12) == b"shared bytes"
    map_gpa(vmm, handle, 4 * PAGE, PAGE)
    map_gpa(vmm, handle, SHARED | 4 * PAGE, PAGE)
    assert vmm.run_vcpu(handle.td_id, [MemRead(SHARED | 4 * PAGE, 12)]) == [bytes(12)]


def test_private_access_to_shared_page_converts_then_pending_kills_td(vmm: Vmm) -> None:
    handle = running_td(vmm)
    map_gpa(vmm, handle, SHARED | PAGE, PAGE)
    assert handle.vm.attributes.get(1) == 0
    watcher = vmm.events.watch()

    with pytest.raises(KvmError) as err:
        vmm.run_vcpu(handle.td_id, [MemRead(PAGE, 8)])

    assert err.value.errno == "EIO"
    assert "Guest access before accepting 0x1000" in err.value.message
    events = drain(watcher)
    faults = [e for e in events if e.kind is EventKind.MEMORY_FAULT]
    assert [(e.gpa, e.size, e.flags) for e in faults] == [(PAGE, PAGE, PRIVATE)]
    conversions = [e for e in events if e.kind is EventKind.CONVERSION]
    assert [(e.gpa, e.size, e.detail) for e in conversions] == [(PAGE, PAGE, "to private")]
    # The VMM converted the page; KVM AUGed it PENDING; the access killed the TD.
    assert handle.vm.attributes.get(1) == PRIVATE
    sept = vmm.kvm._module.td_summary(handle.vm.tdr_pa).sept
    assert sept.state(1) is SeptState.PENDING
    assert handle.vm.dead
    with pytest.raises(KvmError) as again:
        vmm.run_vcpu(handle.td_id, [MemRead(0, 8)])
    assert again.value.errno == "EIO"


def test_private_access_to_shared_page_without_sept_ve_disable_is_ve(vmm: Vmm) -> None:
    handle = running_td(vmm, attributes=0)
    map_gpa(vmm, handle, SHARED | PAGE, PAGE)
    with pytest.raises(VmmError) as err:
        vmm.run_vcpu(handle.td_id, [MemRead(PAGE, 8)])
    assert (err.value.refusal, err.value.reason, err.value.gpa) == (
        Refusal.FAILED_PRECONDITION,
        "VE_PENDING_PAGE",
        PAGE,
    )
    assert not handle.vm.dead
    assert vmm.run_vcpu(handle.td_id, [Accept(PAGE, PAGE), MemRead(PAGE, 8)])[1] == bytes(8)


def test_shared_access_to_private_page_converts_it_to_shared(vmm: Vmm) -> None:
    handle = running_td(vmm)
    vmm.run_vcpu(handle.td_id, [Accept(0, PAGE), MemWrite(0, b"private")])
    watcher = vmm.events.watch()
    results = vmm.run_vcpu(handle.td_id, [MemWrite(SHARED, b"public"), MemRead(SHARED, 7)])
    assert results == [6, b"public\0"]
    faults = [e for e in drain(watcher) if e.kind is EventKind.MEMORY_FAULT]
    assert [(e.gpa, e.flags) for e in faults] == [(0, 0)]
    assert handle.vm.attributes.get(0) == 0
    assert 0 not in handle.vm.private_map
    assert vmm.host_read(handle.td_id, 0, 6) == b"public"

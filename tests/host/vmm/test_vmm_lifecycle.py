"""TD creation, initial memory, guest_memfd close and per-TD file ownership through the VMM
(memory-model.md §1.4, §6.1, §6.2)."""

from __future__ import annotations

import contextlib

import pytest

from host.kvm.errors import KvmError
from host.kvm.gmem import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE
from host.platform import Platform, PlatformConfig, build_platform
from host.tdx.tdcs import TdParams
from host.tdx.vcpu import Accept, MemRead, MemWrite
from host.vmm.errors import Refusal, VmmError
from host.vmm.vmm import TdHandle, Vmm
from wire.tdx_abi import OperandId, TdxStatus

PAGE = 4096
MIB = 1 << 20
SHARED = 1 << 47
PUNCH = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE


@pytest.fixture
def platform() -> Platform:
    return build_platform(PlatformConfig(phys_bytes=64 << 20))


def running_td(vmm: Vmm, memory: int = MIB) -> TdHandle:
    handle = vmm.create_td(TdParams(), memory)
    vmm.finalize(handle.td_id)
    return handle


@pytest.mark.parametrize(
    "params",
    [TdParams(attributes=1 << 5), TdParams(gpaw=50), TdParams(mrowner=bytes(47))],
    ids=["attributes", "gpaw", "mrowner"],
)
def test_init_vm_with_bad_params_is_einval_and_leaks_nothing(platform: Platform, params: TdParams) -> None:
    vmm = platform.vmm
    free_pages, free_keyids = vmm.kvm.pages.free_pages, vmm.kvm.keyids_free
    with pytest.raises(KvmError) as err:
        vmm.create_td(params)
    assert err.value.errno == "EINVAL"
    assert err.value.tdx_status == TdxStatus.OPERAND_INVALID | OperandId.RDX
    assert vmm.kvm.keyids_free == free_keyids
    assert vmm.kvm.pages.free_pages == free_pages
    assert vmm.tds() == []


def test_gpaw_52_td_uses_bit_51_as_shared_bit(platform: Platform) -> None:
    vmm = platform.vmm
    handle = vmm.create_td(TdParams(gpaw=52), MIB)
    vmm.finalize(handle.td_id)
    assert handle.vm.shared_bit == 1 << 51
    results = vmm.run_vcpu(handle.td_id, [Accept(0, PAGE), MemWrite(1 << 51, b"shared"), MemRead(1 << 51, 6)])
    assert results[1:] == [6, b"shared"]


def test_init_mem_region_rules(platform: Platform) -> None:
    vmm = platform.vmm
    handle = vmm.create_td(TdParams(), MIB)
    vm = handle.vm
    for gpa, source in [(0x800, bytes(PAGE)), (0, bytes(100)), (0, b""), (SHARED, bytes(PAGE))]:
        with pytest.raises(KvmError) as err:
            vm.tdx_init_mem_region(gpa, source, 0)
        assert err.value.errno == "EINVAL", (gpa, len(source))
    with pytest.raises(KvmError) as err:
        vm.tdx_init_mem_region(0, bytes(PAGE), 2)
    assert err.value.errno == "EINVAL"
    vmm.set_memory_attributes(handle.td_id, 2 * PAGE, PAGE, 0, 0)
    with pytest.raises(KvmError) as err:
        vm.tdx_init_mem_region(PAGE, bytes(2 * PAGE), 0)  # second page is shared
    assert err.value.errno == "EINVAL"
    assert vm.tdx_init_mem_region(0, bytes(PAGE), 0) == 1
    with pytest.raises(KvmError) as err:
        vm.tdx_init_mem_region(0, bytes(PAGE), 0)  # PAGE.ADD onto a MAPPED gpa
    assert err.value.errno == "EIO"
    assert err.value.tdx_status == TdxStatus.EPT_ENTRY_NOT_FREE | OperandId.RCX
    vmm.finalize(handle.td_id)
    with pytest.raises(KvmError) as err:
        vm.tdx_init_mem_region(4 * PAGE, bytes(PAGE), 0)
    assert err.value.errno == "EINVAL"


def test_finalize_twice_and_run_before_finalize_are_einval(platform: Platform) -> None:
    vmm = platform.vmm
    handle = vmm.create_td(TdParams(), MIB)
    with pytest.raises(KvmError) as err:
        vmm.run_vcpu(handle.td_id, [MemRead(0, 8)])
    assert err.value.errno == "EINVAL"
    vmm.finalize(handle.td_id)
    with pytest.raises(KvmError) as err:
        vmm.finalize(handle.td_id)
    assert err.value.errno == "EINVAL"


def test_closed_guest_memfd_faults_are_efault(platform: Platform) -> None:
    vmm = platform.vmm
    handle = running_td(vmm)
    vmm.run_vcpu(handle.td_id, [Accept(0, PAGE), MemWrite(0, b"gone")])
    (fd,) = handle.fds
    free = vmm.kvm.pages.free_pages
    vmm.close_guest_memfd(handle.td_id, fd)
    assert handle.vm.private_map == {}
    assert vmm.kvm.pages.free_pages == free + 1
    with pytest.raises(VmmError) as err:
        vmm.run_vcpu(handle.td_id, [MemRead(0, 4)])
    assert (err.value.refusal, err.value.reason, err.value.errno, err.value.gpa) == (
        Refusal.FAILED_PRECONDITION,
        "MEMORY_FAULT",
        "EFAULT",
        0,
    )


def test_deleting_a_gmem_memslot_loses_private_contents(platform: Platform) -> None:
    vmm = platform.vmm
    handle = running_td(vmm)
    (fd,) = handle.fds
    vmm.run_vcpu(handle.td_id, [Accept(0, PAGE), MemWrite(0, b"lost")])
    vmm.set_user_memory_region(handle.td_id, 0, 0, 0, 0, 0, -1, 0)
    assert handle.vm.private_map == {}
    vmm.set_user_memory_region(handle.td_id, 0, 1 << 2, 0, MIB, 0, fd, 0)
    assert vmm.run_vcpu(handle.td_id, [Accept(0, PAGE), MemRead(0, 4)])[1] == bytes(4)


# ---- a TD's guest_memfd belongs to that TD ------------------------------------------------------
def two_tds_b_holds_data(vmm: Vmm) -> tuple[TdHandle, TdHandle, int]:
    a, b = running_td(vmm), running_td(vmm)
    vmm.run_vcpu(b.td_id, [Accept(0, PAGE), MemWrite(0, b"B secret")])
    (fd_b,) = b.fds
    return a, b, fd_b


def test_fallocate_through_another_td_is_ebadf(platform: Platform) -> None:
    vmm = platform.vmm
    a, b, fd_b = two_tds_b_holds_data(vmm)
    with pytest.raises(KvmError) as err:
        vmm.fallocate(a.td_id, fd_b, PUNCH, 0, PAGE)
    assert err.value.errno == "EBADF"
    assert vmm.run_vcpu(b.td_id, [MemRead(0, 8)]) == [b"B secret"]


def test_punch_never_frees_a_page_still_mapped_in_a_td(platform: Platform) -> None:
    """Whatever TD id the request names, a page stays owned by its guest_memfd while the TD's
    S-EPT maps it: otherwise the allocator hands it out again (here to host userspace, whose
    zeroing store clears the TD-owner bits) and a host action kills TD B in gmem mode."""
    vmm = platform.vmm
    a, b, fd_b = two_tds_b_holds_data(vmm)
    with contextlib.suppress(KvmError):  # refusing the request is fine; freeing B's page is not
        vmm.fallocate(a.td_id, fd_b, PUNCH, 0, PAGE)
    gmem_pages = set(b.fds[fd_b].pages.values())
    assert set(b.vm.private_map.values()) <= gmem_pages
    # A's host userspace touches fresh shared memory; B must be unaffected.
    vmm.set_memory_attributes(a.td_id, 8 * PAGE, PAGE, 0, 0)
    vmm.host_write(a.td_id, 8 * PAGE, b"host data")
    assert platform.mc.poisoned_lines == 0
    results = vmm.run_vcpu(b.td_id, [MemRead(0, 8)])
    assert results in ([b"B secret"], [bytes(8)])


def test_close_through_another_td_is_ebadf(platform: Platform) -> None:
    vmm = platform.vmm
    a, b, fd_b = two_tds_b_holds_data(vmm)
    with pytest.raises(KvmError) as err:
        vmm.close_guest_memfd(a.td_id, fd_b)
    assert err.value.errno == "EBADF"
    assert fd_b in b.fds
    assert vmm.run_vcpu(b.td_id, [MemRead(0, 8)]) == [b"B secret"]


def test_unknown_td_is_not_found(platform: Platform) -> None:
    with pytest.raises(VmmError) as err:
        platform.vmm.host_read(99, 0, 8)
    assert (err.value.refusal, err.value.reason) == (Refusal.NOT_FOUND, "TD_NOT_FOUND")

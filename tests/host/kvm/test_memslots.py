"""KVM_SET_USER_MEMORY_REGION2 rules and guest_memfd binding (memory-model.md §1.4; Linux
``kvm_main.c`` ``kvm_set_memory_region``, ``guest_memfd.c`` ``kvm_gmem_bind``)."""

from __future__ import annotations

import pytest

from host.kvm.errors import KvmError
from host.kvm.gmem import GuestMemfd
from host.kvm.memslots import (
    KVM_MEM_GUEST_MEMFD,
    KVM_MEM_LOG_DIRTY_PAGES,
    KVM_MEM_READONLY,
    KVM_USER_MEM_SLOTS,
)
from host.kvm.vm import KVM_X86_TDX_VM, KvmVm
from host.platform import Platform, PlatformConfig, build_platform
from host.tdx.tdcs import TdParams
from host.tdx.vcpu import Accept, MemRead, MemWrite

PAGE = 4096
MIB = 1 << 20
HVA = 0x7F00_0000_0000
GMEM = KVM_MEM_GUEST_MEMFD


@pytest.fixture
def platform() -> Platform:
    return build_platform(PlatformConfig(phys_bytes=64 << 20))


@pytest.fixture
def vm(platform: Platform) -> KvmVm:
    return platform.vmm.kvm.create_vm(KVM_X86_TDX_VM)


@pytest.fixture
def gmem(vm: KvmVm) -> GuestMemfd:
    return vm.create_guest_memfd(3, 16 * PAGE, 0)


def errno_of(vm: KvmVm, *args: object) -> str:
    with pytest.raises(KvmError) as err:
        vm.set_user_memory_region2(*args)  # type: ignore[arg-type]
    return err.value.errno


def test_gmem_slot_binds_the_file_range(vm: KvmVm, gmem: GuestMemfd) -> None:
    vm.set_user_memory_region2(0, GMEM, MIB, 4 * PAGE, HVA, gmem, 2 * PAGE)
    slot = vm.memslots.slots[0]
    assert (slot.base_gfn, slot.npages, slot.guest_memfd, slot.gmem_first) == (MIB // PAGE, 4, 3, 2)
    assert gmem.bindings == [(2, 6, 0)]
    assert vm.memslots.find(MIB // PAGE + 3) is slot
    assert vm.memslots.find(MIB // PAGE + 4) is None


@pytest.mark.parametrize(
    ("gpa", "size"), [(0, 4 * PAGE), (3 * PAGE, PAGE), (2 * PAGE, 8 * PAGE), (5 * PAGE, 2 * PAGE)]
)
def test_overlapping_slot_is_eexist(vm: KvmVm, gpa: int, size: int) -> None:
    vm.set_user_memory_region2(0, 0, 2 * PAGE, 4 * PAGE, HVA, None, 0)
    assert errno_of(vm, 1, 0, gpa, size, HVA + MIB, None, 0) == "EEXIST"
    assert set(vm.memslots.slots) == {0}


def test_adjacent_slots_do_not_overlap(vm: KvmVm) -> None:
    vm.set_user_memory_region2(0, 0, 2 * PAGE, 4 * PAGE, HVA, None, 0)
    vm.set_user_memory_region2(1, 0, 6 * PAGE, PAGE, HVA + MIB, None, 0)
    vm.set_user_memory_region2(2, 0, PAGE, PAGE, HVA + 2 * MIB, None, 0)
    assert set(vm.memslots.slots) == {0, 1, 2}


def test_moving_a_slot_onto_another_is_eexist(vm: KvmVm) -> None:
    vm.set_user_memory_region2(0, 0, 0, 4 * PAGE, HVA, None, 0)
    vm.set_user_memory_region2(1, 0, MIB, 4 * PAGE, HVA + MIB, None, 0)
    assert errno_of(vm, 1, 0, 2 * PAGE, 4 * PAGE, HVA + MIB, None, 0) == "EEXIST"
    assert vm.memslots.slots[1].base_gfn == MIB // PAGE


@pytest.mark.parametrize(
    ("gpa", "size", "hva", "offset"),
    [
        (0, PAGE + 1, HVA, 0),
        (0, 100, HVA, 0),
        (PAGE // 2, PAGE, HVA, 0),
        (0, PAGE, HVA + 1, 0),
        (0, PAGE, HVA, 512),
    ],
)
def test_unaligned_size_gpa_hva_or_offset_is_einval(
    vm: KvmVm, gmem: GuestMemfd, gpa: int, size: int, hva: int, offset: int
) -> None:
    assert errno_of(vm, 0, GMEM, gpa, size, hva, gmem, offset) == "EINVAL"
    assert vm.memslots.slots == {}
    assert gmem.bindings == []


@pytest.mark.parametrize("extra", [KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY])
def test_guest_memfd_with_dirty_logging_or_readonly_is_einval(
    vm: KvmVm, gmem: GuestMemfd, extra: int
) -> None:
    assert errno_of(vm, 0, GMEM | extra, 0, PAGE, HVA, gmem, 0) == "EINVAL"
    assert gmem.bindings == []


@pytest.mark.parametrize("flag", [1 << 3, 1 << 4, 1 << 16, 1 << 31])
def test_unknown_memslot_flags_are_einval(vm: KvmVm, flag: int) -> None:
    assert errno_of(vm, 0, flag, 0, PAGE, HVA, None, 0) == "EINVAL"


@pytest.mark.parametrize("slot", [-1, KVM_USER_MEM_SLOTS, KVM_USER_MEM_SLOTS + 1, 1 << 16])
def test_slot_id_out_of_range_is_einval(vm: KvmVm, slot: int) -> None:
    assert errno_of(vm, slot, 0, 0, PAGE, HVA, None, 0) == "EINVAL"


def test_last_valid_slot_id_is_accepted(vm: KvmVm) -> None:
    vm.set_user_memory_region2(KVM_USER_MEM_SLOTS - 1, 0, 0, PAGE, HVA, None, 0)
    assert KVM_USER_MEM_SLOTS - 1 in vm.memslots.slots


def test_gpa_range_overflow_is_einval(vm: KvmVm) -> None:
    assert errno_of(vm, 0, 0, (1 << 52) - PAGE, 2 * PAGE, HVA, None, 0) == "EINVAL"


def test_delete_of_nonexistent_slot_is_einval(vm: KvmVm) -> None:
    assert errno_of(vm, 5, 0, 0, 0, 0, None, 0) == "EINVAL"


def test_delete_of_gmem_slot_unbinds_the_range(vm: KvmVm, gmem: GuestMemfd) -> None:
    vm.set_user_memory_region2(0, GMEM, 0, 4 * PAGE, HVA, gmem, 0)
    vm.set_user_memory_region2(0, GMEM, 0, 0, HVA, gmem, 0)
    assert vm.memslots.slots == {}
    assert gmem.bindings == []
    # The file range is free again.
    vm.set_user_memory_region2(1, GMEM, MIB, 4 * PAGE, HVA, gmem, 0)
    assert gmem.bindings == [(0, 4, 1)]


@pytest.mark.parametrize(
    ("gpa", "offset"),
    [(0, 0), (MIB, 0), (0, 4 * PAGE)],
    ids=["same", "moved", "new-offset"],
)
def test_modifying_an_existing_gmem_slot_is_einval(
    vm: KvmVm, gmem: GuestMemfd, gpa: int, offset: int
) -> None:
    vm.set_user_memory_region2(0, GMEM, 0, 4 * PAGE, HVA, gmem, 0)
    assert errno_of(vm, 0, GMEM, gpa, 4 * PAGE, HVA, gmem, offset) == "EINVAL"
    slot = vm.memslots.slots[0]
    assert (slot.base_gfn, slot.gmem_first) == (0, 0)
    assert gmem.bindings == [(0, 4, 0)]


def test_gmem_flag_without_an_open_file_is_ebadf(vm: KvmVm) -> None:
    assert errno_of(vm, 0, GMEM, 0, PAGE, HVA, None, 0) == "EBADF"


def test_vmm_unknown_guest_memfd_fd_is_ebadf(platform: Platform) -> None:
    vmm = platform.vmm
    handle = vmm.create_td(TdParams())
    with pytest.raises(KvmError) as err:
        vmm.set_user_memory_region(handle.td_id, 0, GMEM, 0, PAGE, 0, 9999, 0)
    assert err.value.errno == "EBADF"
    assert handle.vm.memslots.slots == {}


def test_other_vms_guest_memfd_is_einval(platform: Platform, vm: KvmVm) -> None:
    other = platform.vmm.kvm.create_vm(KVM_X86_TDX_VM)
    foreign = other.create_guest_memfd(4, 4 * PAGE, 0)
    assert errno_of(vm, 0, GMEM, 0, PAGE, HVA, foreign, 0) == "EINVAL"
    assert foreign.bindings == []


def test_vmm_other_tds_guest_memfd_is_einval(platform: Platform) -> None:
    vmm = platform.vmm
    first, second = vmm.create_td(TdParams()), vmm.create_td(TdParams())
    fd = vmm.create_guest_memfd(second.td_id, 4 * PAGE, 0)
    with pytest.raises(KvmError) as err:
        vmm.set_user_memory_region(first.td_id, 0, GMEM, 0, PAGE, 0, fd, 0)
    assert err.value.errno == "EINVAL"


@pytest.mark.parametrize(("size", "offset"), [(17 * PAGE, 0), (PAGE, 16 * PAGE), (4 * PAGE, 13 * PAGE)])
def test_offset_plus_size_beyond_gmem_size_is_einval(
    vm: KvmVm, gmem: GuestMemfd, size: int, offset: int
) -> None:
    assert errno_of(vm, 0, GMEM, 0, size, HVA, gmem, offset) == "EINVAL"


@pytest.mark.parametrize("offset", [0, 2 * PAGE, 3 * PAGE, 5 * PAGE])
def test_double_bound_gmem_range_is_einval_not_eexist(vm: KvmVm, gmem: GuestMemfd, offset: int) -> None:
    vm.set_user_memory_region2(0, GMEM, 0, 4 * PAGE, HVA, gmem, 2 * PAGE)
    assert errno_of(vm, 1, GMEM, MIB, 4 * PAGE, HVA + MIB, gmem, offset) == "EINVAL"
    assert gmem.bindings == [(2, 6, 0)]
    assert set(vm.memslots.slots) == {0}


def test_many_slots_bind_non_overlapping_ranges_of_one_gmem(vm: KvmVm, gmem: GuestMemfd) -> None:
    for i in range(8):
        vm.set_user_memory_region2(i, GMEM, i * MIB, 2 * PAGE, HVA + i * MIB, gmem, i * 2 * PAGE)
    assert sorted(gmem.bindings) == [(2 * i, 2 * i + 2, i) for i in range(8)]


def test_many_slots_of_one_gmem_each_hold_private_data(platform: Platform) -> None:
    vmm = platform.vmm
    handle = vmm.create_td(TdParams())
    fd = vmm.create_guest_memfd(handle.td_id, 4 * PAGE, 0)
    gpas = [0, MIB, 2 * MIB, 3 * MIB]
    for i, gpa in enumerate(gpas):
        vmm.set_user_memory_region(handle.td_id, i, GMEM, gpa, PAGE, 0, fd, i * PAGE)
        vmm.set_memory_attributes(handle.td_id, gpa, PAGE, 1 << 3, 0)
    vmm.finalize(handle.td_id)
    ops: list[object] = []
    for i, gpa in enumerate(gpas):
        ops += [Accept(gpa, PAGE), MemWrite(gpa, bytes([i + 1]) * 32)]
    vmm.run_vcpu(handle.td_id, ops)  # type: ignore[arg-type]
    assert vmm.run_vcpu(handle.td_id, [MemRead(gpa, 32) for gpa in gpas]) == [
        bytes([i + 1]) * 32 for i in range(4)
    ]
    gmem = handle.fds[fd]
    assert sorted(gmem.pages) == [0, 1, 2, 3]
    assert {handle.vm.private_map[gpa // PAGE] for gpa in gpas} == set(gmem.pages.values())

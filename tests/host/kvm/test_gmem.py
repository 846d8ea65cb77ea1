"""guest_memfd rules (memory-model.md §1.1–§1.3), after Linux
``tools/testing/selftests/kvm/guest_memfd_test.c``."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from host.kvm.errors import KvmError
from host.kvm.gmem import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, GuestMemfd
from host.kvm.vm import KVM_X86_TDX_VM, KvmVm
from host.platform import Platform, PlatformConfig, build_platform
from host.tdx.tdcs import TdParams
from host.tdx.vcpu import Accept, AcceptResult, MemRead, MemWrite

PAGE = 4096
PUNCH = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
ALLOCATE = FALLOC_FL_KEEP_SIZE
# fallocate(2) mode bits beyond KEEP_SIZE|PUNCH_HOLE: COLLAPSE_RANGE, ZERO_RANGE, INSERT_RANGE,
# UNSHARE_RANGE, and two bits nobody defines.
OTHER_MODE_BITS = [0x08, 0x10, 0x20, 0x40, 0x80, 1 << 20]


@pytest.fixture
def platform() -> Platform:
    return build_platform(PlatformConfig(phys_bytes=64 << 20))


@pytest.fixture
def vm(platform: Platform) -> KvmVm:
    return platform.vmm.kvm.create_vm(KVM_X86_TDX_VM)


@pytest.fixture
def gmem(vm: KvmVm) -> GuestMemfd:
    return vm.create_guest_memfd(3, 4 * PAGE, 0)


def test_create_with_sizes_below_one_page_is_einval(vm: KvmVm) -> None:
    wrong: list[int] = []
    for size in range(1, PAGE):
        with pytest.raises(KvmError) as err:
            vm.create_guest_memfd(3, size, 0)
        if err.value.errno != "EINVAL":
            wrong.append(size)
    assert wrong == []


@pytest.mark.parametrize("size", [0, -PAGE, PAGE + 1, 2 * PAGE - 1, 3 * PAGE + 2048])
def test_create_with_zero_or_unaligned_size_is_einval(vm: KvmVm, size: int) -> None:
    with pytest.raises(KvmError) as err:
        vm.create_guest_memfd(3, size, 0)
    assert err.value.errno == "EINVAL"
    assert 3 not in vm.gmems


@pytest.mark.parametrize("bit", range(64))
def test_create_with_any_unsupported_flag_bit_is_einval(vm: KvmVm, bit: int) -> None:
    with pytest.raises(KvmError) as err:
        vm.create_guest_memfd(3, PAGE, 1 << bit)
    assert err.value.errno == "EINVAL"


def test_create_page_aligned_size_succeeds_and_records_size(vm: KvmVm) -> None:
    gmem = vm.create_guest_memfd(7, 16 * PAGE, 0)
    assert (gmem.fd, gmem.size, gmem.flags, gmem.vm_id) == (7, 16 * PAGE, 0, vm.vm_id)
    assert gmem.pages == {}
    assert vm.gmems[7] is gmem


def test_read_is_einval(gmem: GuestMemfd) -> None:
    with pytest.raises(KvmError) as err:
        gmem.read()
    assert err.value.errno == "EINVAL"


def test_mmap_is_enodev(gmem: GuestMemfd) -> None:
    with pytest.raises(KvmError) as err:
        gmem.mmap()
    assert err.value.errno == "ENODEV"


def test_truncate_resize_is_einval(gmem: GuestMemfd) -> None:
    with pytest.raises(KvmError) as err:
        gmem.truncate()
    assert err.value.errno == "EINVAL"
    assert gmem.size == 4 * PAGE


@pytest.mark.parametrize("mode", [0, FALLOC_FL_PUNCH_HOLE])
def test_fallocate_without_keep_size_is_eopnotsupp(vm: KvmVm, gmem: GuestMemfd, mode: int) -> None:
    with pytest.raises(KvmError) as err:
        vm.fallocate(gmem, mode, 0, PAGE)
    assert err.value.errno == "EOPNOTSUPP"
    assert gmem.pages == {}


@pytest.mark.parametrize("extra", OTHER_MODE_BITS)
@pytest.mark.parametrize("base", [ALLOCATE, PUNCH])
def test_fallocate_with_extra_mode_bits_is_eopnotsupp(
    vm: KvmVm, gmem: GuestMemfd, base: int, extra: int
) -> None:
    with pytest.raises(KvmError) as err:
        vm.fallocate(gmem, base | extra, 0, PAGE)
    assert err.value.errno == "EOPNOTSUPP"


@pytest.mark.parametrize(
    ("offset", "length"),
    [(0, 1), (0, PAGE - 1), (0, PAGE + 1), (1, PAGE), (PAGE, 1), (PAGE, PAGE - 1), (PAGE, PAGE + 1)],
)
@pytest.mark.parametrize("mode", [ALLOCATE, PUNCH])
def test_fallocate_unaligned_offset_or_length_is_einval(
    vm: KvmVm, gmem: GuestMemfd, mode: int, offset: int, length: int
) -> None:
    with pytest.raises(KvmError) as err:
        vm.fallocate(gmem, mode, offset, length)
    assert err.value.errno == "EINVAL"
    assert gmem.pages == {}


@pytest.mark.parametrize(("offset", "length"), [(0, 5 * PAGE), (4 * PAGE, PAGE), (3 * PAGE, 2 * PAGE)])
def test_allocate_beyond_size_is_einval(vm: KvmVm, gmem: GuestMemfd, offset: int, length: int) -> None:
    with pytest.raises(KvmError) as err:
        vm.fallocate(gmem, ALLOCATE, offset, length)
    assert err.value.errno == "EINVAL"
    assert gmem.pages == {}


def test_allocate_within_size_allocates_pages(platform: Platform, vm: KvmVm, gmem: GuestMemfd) -> None:
    free = platform.vmm.kvm.pages.free_pages
    vm.fallocate(gmem, ALLOCATE, 0, 4 * PAGE)
    assert sorted(gmem.pages) == [0, 1, 2, 3]
    assert platform.vmm.kvm.pages.free_pages == free - 4
    vm.fallocate(gmem, ALLOCATE, PAGE, 2 * PAGE)  # already allocated: nothing more
    assert platform.vmm.kvm.pages.free_pages == free - 4


@pytest.mark.parametrize(
    ("offset", "length"), [(4 * PAGE, PAGE), (0, 8 * PAGE), (100 * PAGE, 1 << 30), (3 * PAGE, 1 << 40)]
)
def test_punch_hole_beyond_size_succeeds(vm: KvmVm, gmem: GuestMemfd, offset: int, length: int) -> None:
    vm.fallocate(gmem, ALLOCATE, 0, 4 * PAGE)
    vm.fallocate(gmem, PUNCH, offset, length)
    assert sorted(gmem.pages) == [i for i in range(4) if not offset // PAGE <= i < (offset + length) // PAGE]
    assert gmem.size == 4 * PAGE


def test_punch_hole_frees_pages_back_to_the_allocator(
    platform: Platform, vm: KvmVm, gmem: GuestMemfd
) -> None:
    pages = platform.vmm.kvm.pages
    free = pages.free_pages
    vm.fallocate(gmem, ALLOCATE, 0, 4 * PAGE)
    assert pages.free_pages == free - 4
    vm.fallocate(gmem, PUNCH, PAGE, 2 * PAGE)
    assert pages.free_pages == free - 2
    assert sorted(gmem.pages) == [0, 3]
    vm.fallocate(gmem, PUNCH, 0, 4 * PAGE)
    assert pages.free_pages == free
    assert gmem.pages == {}


def test_punched_private_page_content_is_gone(platform: Platform) -> None:
    vmm = platform.vmm
    handle = vmm.create_td(TdParams(), 1 << 20)
    vmm.finalize(handle.td_id)
    (fd,) = handle.fds
    secret = b"private secret!!" * 16
    vmm.run_vcpu(handle.td_id, [Accept(0, PAGE), MemWrite(0, secret)])
    assert vmm.run_vcpu(handle.td_id, [MemRead(0, len(secret))]) == [secret]
    free = vmm.kvm.pages.free_pages

    vmm.fallocate(handle.td_id, fd, PUNCH, 0, PAGE)

    assert vmm.kvm.pages.free_pages == free + 1
    assert 0 not in handle.vm.private_map
    # Re-fault: the page comes back FREE → AUG → PENDING; the guest accepts a zeroed page.
    accept, data = vmm.run_vcpu(handle.td_id, [Accept(0, PAGE), MemRead(0, len(secret))])
    assert isinstance(accept, AcceptResult)
    assert (accept.accepted, accept.already_accepted, accept.status) == (1, 0, 0)
    assert data == bytes(len(secret))


def test_create_with_a_size_negative_as_loff_t_is_einval() -> None:
    with pytest.raises(KvmError) as err:
        GuestMemfd.check_create(1 << 63, 0)
    assert err.value.errno == "EINVAL"


def test_allocate_more_than_free_memory_is_enomem_at_once_and_takes_nothing(
    platform: Platform, vm: KvmVm
) -> None:
    pages = platform.vmm.kvm.pages
    free = pages.free_pages
    big = vm.create_guest_memfd(4, 64 << 40, 0)  # 64 TiB: legal, the size is only a number
    tracemalloc.start()
    try:
        started = time.perf_counter()
        with pytest.raises(KvmError) as err:
            vm.fallocate(big, ALLOCATE, 0, 64 << 40)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.errno == "ENOMEM"
    assert elapsed < 1.0
    assert peak < 16 << 20  # nothing was built page by page
    assert big.pages == {} and pages.free_pages == free
    # Just too much by one page: refused as well, before anything is allocated.
    small = vm.create_guest_memfd(5, (free + 1) * PAGE, 0)
    with pytest.raises(KvmError) as err:
        vm.fallocate(small, ALLOCATE, 0, (free + 1) * PAGE)
    assert err.value.errno == "ENOMEM"
    assert small.pages == {} and pages.free_pages == free


def test_allocate_counts_pages_already_there_against_free_memory(platform: Platform, vm: KvmVm) -> None:
    pages = platform.vmm.kvm.pages
    gmem = vm.create_guest_memfd(4, 1 << 30, 0)
    vm.fallocate(gmem, ALLOCATE, 0, 8 << 20)
    free = pages.free_pages
    vm.fallocate(gmem, ALLOCATE, 0, (8 << 20) + free * PAGE)  # exactly what is left
    assert pages.free_pages == 0
    assert len(gmem.pages) == 2048 + free
    vm.fallocate(gmem, PUNCH, 0, 1 << 40)
    assert gmem.pages == {} and pages.free_pages == free + 2048


def test_allocate_interrupted_by_a_signal_keeps_what_it_allocated(platform: Platform, vm: KvmVm) -> None:
    gmem = vm.create_guest_memfd(4, 16 << 20, 0)
    checks = iter([False, False, True])
    with pytest.raises(KvmError) as err:
        vm.fallocate(gmem, ALLOCATE, 0, 16 << 20, lambda: next(checks))
    assert err.value.errno == "EINTR"
    assert sorted(gmem.pages) == list(range(2 * 512))  # two chunks done, then the signal
    vm.fallocate(gmem, ALLOCATE, 0, 16 << 20)  # the next call completes it
    assert len(gmem.pages) == 4096


def test_punch_hole_over_terabytes_costs_the_allocated_pages(platform: Platform, vm: KvmVm) -> None:
    gmem = vm.create_guest_memfd(4, 64 << 40, 0)
    for offset in (0, 1 << 40, 40 << 40):
        vm.fallocate(gmem, ALLOCATE, offset, 4 * PAGE)
    started = time.perf_counter()
    vm.fallocate(gmem, PUNCH, PAGE, 64 << 40)
    assert time.perf_counter() - started < 1.0
    assert sorted(gmem.pages) == [0]

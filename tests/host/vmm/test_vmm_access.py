"""KVM_RUN on PENDING pages, host-userspace access to guest memory in gmem and legacy modes, and
TD destruction (memory-model.md §1.2, §3, §5, §6.5, §7)."""

from __future__ import annotations

import pytest

from host.kvm.errors import KvmError
from host.platform import Platform, PlatformConfig, build_platform
from host.tdx.status import TdxError
from host.tdx.tdcs import TdParams
from host.tdx.vcpu import Accept, MapGpa, MemRead, MemWrite
from host.vmm.errors import HostCrashed, Refusal, VmmError
from host.vmm.vmm import TdHandle, Vmm
from wire.tdx_abi import OperandId, TdxStatus

PAGE = 4096
MIB = 1 << 20
SHARED = 1 << 47
SEPT_VE_DISABLE = 1 << 28


@pytest.fixture
def platform() -> Platform:
    return build_platform(PlatformConfig(phys_bytes=64 << 20))


@pytest.fixture
def legacy() -> Platform:
    return build_platform(PlatformConfig(phys_bytes=64 << 20, memory_mode="legacy"))


def running_td(vmm: Vmm, attributes: int = SEPT_VE_DISABLE, memory: int = MIB) -> TdHandle:
    handle = vmm.create_td(TdParams(attributes=attributes), memory)
    vmm.finalize(handle.td_id)
    return handle


# ---- PENDING pages -----------------------------------------------------------------------------
def test_pending_access_with_sept_ve_disable_kills_the_vm(platform: Platform) -> None:
    vmm = platform.vmm
    handle = running_td(vmm)
    vmm.run_vcpu(handle.td_id, [Accept(0, PAGE)])
    with pytest.raises(KvmError) as err:
        vmm.run_vcpu(handle.td_id, [MemWrite(2 * PAGE, b"too early")])
    assert err.value.errno == "EIO"
    assert err.value.message == "Guest access before accepting 0x2000 on vCPU 0"
    assert handle.vm.dead
    # Every later KVM_RUN fails with EIO, even for pages that were fine.
    for ops in ([MemRead(0, 8)], [Accept(2 * PAGE, PAGE)]):
        with pytest.raises(KvmError) as again:
            vmm.run_vcpu(handle.td_id, ops)  # type: ignore[arg-type]
        assert again.value.errno == "EIO"
        assert "Guest access before accepting 0x2000" in again.value.message


def test_pending_access_without_sept_ve_disable_is_ve_and_td_stays_alive(platform: Platform) -> None:
    vmm = platform.vmm
    handle = running_td(vmm, attributes=0)
    with pytest.raises(VmmError) as err:
        vmm.run_vcpu(handle.td_id, [MemRead(3 * PAGE, 8)])
    assert err.value.refusal is Refusal.FAILED_PRECONDITION
    assert err.value.reason == "VE_PENDING_PAGE"
    assert err.value.gpa == 3 * PAGE
    assert not handle.vm.dead
    results = vmm.run_vcpu(
        handle.td_id, [Accept(3 * PAGE, PAGE), MemWrite(3 * PAGE, b"ok"), MemRead(3 * PAGE, 2)]
    )
    assert results[1:] == [2, b"ok"]


# ---- host userspace access, gmem mode ------------------------------------------------------------
def test_host_read_of_private_memory_is_refused_in_gmem_mode(platform: Platform) -> None:
    vmm = platform.vmm
    handle = running_td(vmm)
    vmm.run_vcpu(handle.td_id, [Accept(0, PAGE), MemWrite(0, b"secret")])
    with pytest.raises(VmmError) as err:
        vmm.host_read(handle.td_id, 0, 6)
    assert err.value.refusal is Refusal.PERMISSION_DENIED
    assert err.value.reason == "PRIVATE_MEMORY_NOT_ACCESSIBLE"
    assert err.value.errno == "EINVAL"
    assert err.value.gpa == 0
    # Nothing broke.
    assert vmm.run_vcpu(handle.td_id, [MemRead(0, 6)]) == [b"secret"]
    assert platform.mc.poisoned_lines == 0
    assert not vmm.crashed


def test_host_write_of_private_memory_is_refused_in_gmem_mode(platform: Platform) -> None:
    vmm = platform.vmm
    handle = running_td(vmm)
    vmm.run_vcpu(handle.td_id, [Accept(0, PAGE), MemWrite(0, b"secret")])
    with pytest.raises(VmmError) as err:
        vmm.host_write(handle.td_id, 0, b"evil")
    assert (err.value.refusal, err.value.reason, err.value.errno) == (
        Refusal.PERMISSION_DENIED,
        "PRIVATE_MEMORY_NOT_ACCESSIBLE",
        "EINVAL",
    )
    assert vmm.run_vcpu(handle.td_id, [MemRead(0, 6)]) == [b"secret"]
    assert platform.mc.poisoned_lines == 0


def test_host_read_spanning_a_private_page_is_refused(platform: Platform) -> None:
    vmm = platform.vmm
    handle = running_td(vmm)
    vmm.run_vcpu(handle.td_id, [MapGpa(SHARED, PAGE)])
    assert vmm.host_read(handle.td_id, 0, PAGE) == bytes(PAGE)
    with pytest.raises(VmmError) as err:
        vmm.host_read(handle.td_id, PAGE - 8, 16)
    assert err.value.reason == "PRIVATE_MEMORY_NOT_ACCESSIBLE"


def test_host_and_guest_share_a_shared_page(platform: Platform) -> None:
    vmm = platform.vmm
    handle = running_td(vmm)
    vmm.run_vcpu(handle.td_id, [MapGpa(SHARED | PAGE, PAGE), MemWrite(SHARED | PAGE, b"from guest")])
    assert vmm.host_read(handle.td_id, PAGE, 10) == b"from guest"
    vmm.host_write(handle.td_id, PAGE + 100, b"from host")
    assert vmm.run_vcpu(handle.td_id, [MemRead(SHARED | PAGE + 100, 9)]) == [b"from host"]


# ---- legacy mode -----------------------------------------------------------------------------
def test_legacy_host_read_of_private_data_returns_zeros(legacy: Platform) -> None:
    vmm = legacy.vmm
    handle = running_td(vmm)
    assert handle.fds == {}
    vmm.run_vcpu(handle.td_id, [Accept(0, PAGE), MemWrite(0, b"secret" * 20)])
    assert vmm.host_read(handle.td_id, 0, 120) == bytes(120)
    assert vmm.run_vcpu(handle.td_id, [MemRead(0, 120)]) == [b"secret" * 20]
    assert legacy.mc.poisoned_lines == 0


def test_legacy_host_write_poisons_td_read_then_host_read_crashes_host(legacy: Platform) -> None:
    vmm = legacy.vmm
    handle = running_td(vmm)
    bystander = running_td(vmm)
    vmm.run_vcpu(handle.td_id, [Accept(0, PAGE), MemWrite(0, b"secret" * 20)])

    vmm.host_write(handle.td_id, 0, b"evil")  # silently clears the line's TD-owner bit

    with pytest.raises(VmmError) as err:
        vmm.run_vcpu(handle.td_id, [MemRead(0, 6)])
    assert err.value.refusal is Refusal.DATA_LOSS
    assert err.value.reason == "TD_MACHINE_CHECK"
    assert err.value.tdx_status == TdxStatus.NON_RECOVERABLE_TD_NON_ACCESSIBLE
    assert handle.vm.dead
    assert legacy.mc.poisoned_lines == 1
    with pytest.raises(KvmError) as dead:
        vmm.run_vcpu(handle.td_id, [MemRead(PAGE, 6)])
    assert dead.value.errno == "EIO"
    assert not vmm.crashed

    with pytest.raises(HostCrashed):
        vmm.host_read(handle.td_id, 0, 64)
    assert vmm.crashed
    assert bystander.vm.dead
    with pytest.raises(HostCrashed):
        vmm.run_vcpu(bystander.td_id, [MemRead(0, 8)])
    with pytest.raises(HostCrashed):
        vmm.create_td(TdParams())


def test_legacy_host_read_of_untouched_line_on_a_poisoned_page_is_harmless(legacy: Platform) -> None:
    vmm = legacy.vmm
    handle = running_td(vmm)
    vmm.run_vcpu(handle.td_id, [Accept(0, PAGE), MemWrite(0, b"secret" * 20)])
    vmm.host_write(handle.td_id, 0, b"evil")
    with pytest.raises(VmmError):
        vmm.run_vcpu(handle.td_id, [MemRead(0, 6)])
    assert vmm.host_read(handle.td_id, 64, 64) == bytes(64)  # another line: TD-owned, reads zeros
    assert not vmm.crashed


# ---- destroy -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["gmem", "legacy"])
def test_destroy_reclaims_pages_and_frees_the_keyid(mode: str) -> None:
    platform = build_platform(PlatformConfig(phys_bytes=64 << 20, memory_mode=mode))
    vmm = platform.vmm
    kvm = vmm.kvm
    free_pages, free_keyids = kvm.pages.free_pages, kvm.keyids_free
    handle = running_td(vmm, memory=4 * MIB)
    private_pas: list[int] = []
    vmm.run_vcpu(
        handle.td_id,
        [
            Accept(0, 4 * PAGE),
            MemWrite(0, b"secret" * 1000),
            MapGpa(SHARED | MIB, 2 * PAGE),
            MemWrite(SHARED | MIB, b"shared" * 1000),
        ],
    )
    private_pas = [handle.vm.private_map[g] for g in range(4)]
    tdr = handle.vm.tdr_pa
    assert kvm.keyids_free == free_keyids - 1
    assert kvm.pages.free_pages < free_pages

    reclaimed, hkid = vmm.destroy_td(handle.td_id)

    assert hkid == 16
    assert reclaimed == 4 + 3  # 4 private pages, TDCS, TDVPR, TDR
    assert kvm.keyids_free == free_keyids
    assert kvm.pages.free_pages == free_pages
    for pa in private_pas:
        assert platform.mc.line_state(pa) == (False, False)
    with pytest.raises(TdxError) as err:
        platform.module.td_summary(tdr)
    assert err.value.status == TdxStatus.OPERAND_INVALID | OperandId.RCX
    with pytest.raises(VmmError) as gone:
        vmm.td(handle.td_id)
    assert (gone.value.refusal, gone.value.reason) == (Refusal.NOT_FOUND, "TD_NOT_FOUND")


def test_destroy_of_a_dead_td_still_reclaims_everything(platform: Platform) -> None:
    vmm = platform.vmm
    kvm = vmm.kvm
    free_pages = kvm.pages.free_pages
    handle = running_td(vmm)
    with pytest.raises(KvmError):
        vmm.run_vcpu(handle.td_id, [MemRead(0, 8)])  # PENDING access: VM dead
    vmm.destroy_td(handle.td_id)
    assert kvm.keyids_free == 48
    assert kvm.pages.free_pages == free_pages


def test_destroy_of_unfinalized_td_frees_keyid(platform: Platform) -> None:
    vmm = platform.vmm
    free_pages = vmm.kvm.pages.free_pages
    handle = vmm.create_td(TdParams(), MIB)
    vmm.init_mem_region(handle.td_id, 0, bytes(2 * PAGE), True)
    reclaimed, _ = vmm.destroy_td(handle.td_id)
    assert reclaimed == 2 + 3
    assert vmm.kvm.keyids_free == 48
    assert vmm.kvm.pages.free_pages == free_pages

"""TDX module SEAMCALL/TDCALL leaves (memory-model.md §4, §5, §6, §8): OP_STATE gating, the
S-EPT leaves with their exact status codes, ACCEPT, the KeyID pool, teardown order and MRTD."""

from __future__ import annotations

import hashlib

import pytest

from host.kvm.errors import KvmError
from host.platform import PlatformConfig, build_platform
from host.tdx.keyids import KotState
from host.tdx.memctl import MemoryController
from host.tdx.module import TdxModule
from host.tdx.sept import SeptState
from host.tdx.status import TdxError
from host.tdx.tdcs import OpState, TdLifecycle, TdParams
from host.tdx.vcpu import Accept, AcceptResult, ExitReason, MemRead, MemWrite, TdExit, VcpuRun
from wire.tdx_abi import OperandId, TdxStatus, is_error

PAGE = 4096
MIB = 1 << 20
SHARED_BIT = 1 << 47
TDR = 0x10_0000  # TDR at 1 MiB, TDCS and TDVPR right after it
DATA = 0x40_0000  # data pages from 4 MiB
HKID = 16
SEPT_VE_DISABLE = 1 << 28


class Env:
    """A module over 16 MiB of physical memory with one TD, built leaf by leaf as KVM does."""

    def __init__(self, attributes: int = SEPT_VE_DISABLE, *, init: bool = True) -> None:
        self.mc = MemoryController(16 << 20)
        self.module = TdxModule(self.mc)
        self.tdr = TDR
        self.module.tdh_mng_create(TDR, HKID)
        self.module.tdh_mng_key_config(TDR)
        self.module.tdh_mng_addcx(TDR, TDR + PAGE)
        if init:
            self.module.tdh_mng_init(TDR, TdParams(attributes=attributes))
            self.module.tdh_vp_create(TDR, TDR + 2 * PAGE)

    def state(self, gpa: int) -> SeptState:
        return self.module.td_summary(self.tdr).sept.state(gpa // PAGE)

    def finalize(self) -> bytes:
        return self.module.tdh_mr_finalize(self.tdr)

    def aug(self, gpa: int, pa: int | None = None) -> int:
        pa = DATA + gpa if pa is None else pa
        self.module.tdh_mem_page_aug(self.tdr, gpa, pa)
        return pa

    def enter(self, *ops: object) -> tuple[TdExit, list[object]]:
        run = VcpuRun(list(ops))  # type: ignore[arg-type]
        td_exit = self.module.vp_enter(self.tdr, run, {})
        return td_exit, run.results


def status_of(call: object, *args: object) -> int:
    with pytest.raises(TdxError) as err:
        call(*args)  # type: ignore[operator]
    return err.value.status


# ---- PAGE.ADD / OP_STATE ---------------------------------------------------------------------
def test_page_add_in_initialized_maps_the_page() -> None:
    env = Env()
    env.module.tdh_mem_page_add(env.tdr, 0, DATA, b"\x5a" * PAGE)
    assert env.state(0) is SeptState.MAPPED
    assert env.module.td_summary(env.tdr).op_state is OpState.INITIALIZED


def test_page_add_after_finalize_is_op_state_incorrect() -> None:
    env = Env()
    env.finalize()
    assert env.module.td_summary(env.tdr).op_state is OpState.RUNNABLE
    status = status_of(env.module.tdh_mem_page_add, env.tdr, 0, DATA, bytes(PAGE))
    assert status == TdxStatus.OP_STATE_INCORRECT
    assert env.state(0) is SeptState.FREE


def test_page_add_before_mng_init_is_op_state_incorrect() -> None:
    env = Env(init=False)
    status = status_of(env.module.tdh_mem_page_add, env.tdr, 0, DATA, bytes(PAGE))
    assert status == TdxStatus.OP_STATE_INCORRECT


def test_page_add_on_a_mapped_gpa_is_ept_entry_not_free() -> None:
    env = Env()
    env.module.tdh_mem_page_add(env.tdr, 0, DATA, bytes(PAGE))
    status = status_of(env.module.tdh_mem_page_add, env.tdr, 0, DATA + PAGE, bytes(PAGE))
    assert status == TdxStatus.EPT_ENTRY_NOT_FREE | OperandId.RCX


def test_page_add_of_a_page_already_owned_is_page_metadata_incorrect() -> None:
    env = Env()
    env.module.tdh_mem_page_add(env.tdr, 0, DATA, bytes(PAGE))
    status = status_of(env.module.tdh_mem_page_add, env.tdr, PAGE, DATA, bytes(PAGE))
    assert status == TdxStatus.PAGE_METADATA_INCORRECT | OperandId.R8
    assert env.state(PAGE) is SeptState.FREE


@pytest.mark.parametrize("gpa", [SHARED_BIT, 0x800, 1 << 48])
def test_page_add_to_a_non_private_or_unaligned_gpa_is_operand_invalid(gpa: int) -> None:
    env = Env()
    status = status_of(env.module.tdh_mem_page_add, env.tdr, gpa, DATA, bytes(PAGE))
    assert status == TdxStatus.OPERAND_INVALID | OperandId.RCX


def test_mr_finalize_twice_is_op_state_incorrect() -> None:
    env = Env()
    env.finalize()
    assert status_of(env.module.tdh_mr_finalize, env.tdr) == TdxStatus.OP_STATE_INCORRECT


def test_vp_enter_before_finalize_is_op_state_incorrect() -> None:
    env = Env()
    assert status_of(env.enter) == TdxStatus.OP_STATE_INCORRECT


# ---- PAGE.AUG / ACCEPT -------------------------------------------------------------------------
@pytest.mark.parametrize("finalized", [False, True])
def test_page_aug_maps_pending(finalized: bool) -> None:
    env = Env()
    if finalized:
        env.finalize()
    env.aug(0)
    assert env.state(0) is SeptState.PENDING


def test_page_aug_before_mng_init_is_op_state_incorrect() -> None:
    env = Env(init=False)
    assert status_of(env.aug, 0) == TdxStatus.OP_STATE_INCORRECT


@pytest.mark.parametrize("add", [False, True], ids=["pending", "mapped"])
def test_page_aug_onto_a_present_entry_is_ept_entry_state_incorrect(add: bool) -> None:
    env = Env()
    if add:
        env.module.tdh_mem_page_add(env.tdr, 0, DATA + MIB, bytes(PAGE))
    else:
        env.aug(0, DATA + MIB)
    status = status_of(env.aug, 0)
    assert status == TdxStatus.EPT_ENTRY_STATE_INCORRECT | OperandId.RCX
    assert status == 0xC0000B0D00000001


def test_accept_zeroes_the_page_and_maps_it() -> None:
    env = Env()
    env.finalize()
    env.mc.write(HKID, [(DATA, b"\xee" * PAGE)])  # stale contents under the TD key
    env.aug(0, DATA)
    td_exit, (result, data) = env.enter(Accept(0, PAGE), MemRead(0, PAGE))
    assert td_exit.reason is ExitReason.DONE
    assert result == AcceptResult(accepted=1, already_accepted=0, status=0)
    assert env.state(0) is SeptState.MAPPED
    assert data == bytes(PAGE)
    assert env.mc.read(HKID, [(DATA, PAGE)]) == [bytes(PAGE)]


def test_second_accept_is_page_already_accepted_warning_and_keeps_data() -> None:
    env = Env()
    env.finalize()
    env.aug(0)
    env.aug(PAGE)
    env.enter(Accept(0, 2 * PAGE), MemWrite(0, b"keep me"))
    td_exit, (result, data) = env.enter(Accept(0, 2 * PAGE), MemRead(0, 7))
    assert td_exit.reason is ExitReason.DONE
    assert isinstance(result, AcceptResult)
    assert result.status == int(TdxStatus.PAGE_ALREADY_ACCEPTED) == 0x00000B0A00000000
    assert not result.status & (1 << 63)
    assert not is_error(result.status)
    assert (result.accepted, result.already_accepted) == (0, 2)
    assert data == b"keep me"


def test_accept_2m_over_4k_mappings_is_page_size_mismatch() -> None:
    env = Env()
    env.finalize()
    env.aug(0)
    td_exit, (result,) = env.enter(Accept(0, 2 * MIB, level=1))
    assert td_exit.reason is ExitReason.DONE
    assert isinstance(result, AcceptResult)
    assert result.status == TdxStatus.PAGE_SIZE_MISMATCH | 1 == 0xC0000B0B00000001
    assert result.accepted == 0
    assert env.state(0) is SeptState.PENDING


def test_accept_on_a_free_gpa_exits_to_the_host_with_ept_violation() -> None:
    env = Env()
    env.finalize()
    td_exit, _ = env.enter(Accept(3 * PAGE, PAGE))
    assert (td_exit.reason, td_exit.gpa, td_exit.size, td_exit.private, td_exit.accept) == (
        ExitReason.EPT_VIOLATION,
        3 * PAGE,
        PAGE,
        True,
        True,
    )


@pytest.mark.parametrize(
    ("gpa", "size", "level"),
    [
        (SHARED_BIT, PAGE, 0),
        (0x800, PAGE, 0),
        (0, PAGE, 3),
        (0, PAGE, 1),
        (SHARED_BIT - PAGE, 2 * PAGE, 0),
        (0, 0, 0),
    ],
)
def test_accept_with_bad_operands_is_operand_invalid(gpa: int, size: int, level: int) -> None:
    # An error status (bit 63 set) stops the guest's request; only warnings and the
    # PAGE_SIZE_MISMATCH the guest falls back on travel inside the result.
    env = Env()
    env.finalize()
    td_exit, _ = env.enter(Accept(gpa, size, level))
    assert td_exit.reason is ExitReason.TDCALL_ERROR
    assert td_exit.status == TdxStatus.OPERAND_INVALID | OperandId.RCX


def test_pending_access_with_sept_ve_disable_is_pending_ept_violation() -> None:
    env = Env(SEPT_VE_DISABLE)
    env.finalize()
    env.aug(PAGE)
    td_exit, _ = env.enter(MemRead(PAGE, 8))
    assert (td_exit.reason, td_exit.gpa) == (ExitReason.PENDING_EPT_VIOLATION, PAGE)


def test_pending_access_without_sept_ve_disable_is_ve() -> None:
    env = Env(0)
    env.finalize()
    env.aug(PAGE)
    td_exit, _ = env.enter(MemWrite(PAGE, b"x"))
    assert (td_exit.reason, td_exit.gpa) == (ExitReason.VE, PAGE)
    assert env.state(PAGE) is SeptState.PENDING


# ---- RANGE.BLOCK / TRACK / PAGE.REMOVE -----------------------------------------------------------
def mapped_runnable_env() -> Env:
    env = Env()
    env.module.tdh_mem_page_add(env.tdr, 0, DATA, bytes(PAGE))
    env.finalize()
    return env


def test_remove_without_block_is_gpa_range_not_blocked() -> None:
    env = mapped_runnable_env()
    status = status_of(env.module.tdh_mem_page_remove, env.tdr, 0)
    assert status == TdxStatus.GPA_RANGE_NOT_BLOCKED | OperandId.RCX == 0xC0000B0600000001
    assert env.state(0) is SeptState.MAPPED


def test_remove_after_block_without_track_is_tlb_tracking_not_done() -> None:
    env = mapped_runnable_env()
    assert env.module.tdh_mem_range_block(env.tdr, 0) == TdxStatus.SUCCESS
    assert env.state(0) is SeptState.BLOCKED
    status = status_of(env.module.tdh_mem_page_remove, env.tdr, 0)
    assert status & 0xFFFFFFFF00000000 == TdxStatus.TLB_TRACKING_NOT_DONE
    assert status == TdxStatus.TLB_TRACKING_NOT_DONE | OperandId.TD_EPOCH
    assert env.state(0) is SeptState.BLOCKED


def test_block_twice_returns_gpa_range_already_blocked_warning() -> None:
    env = mapped_runnable_env()
    env.module.tdh_mem_range_block(env.tdr, 0)
    status = env.module.tdh_mem_range_block(env.tdr, 0)
    assert status == int(TdxStatus.GPA_RANGE_ALREADY_BLOCKED) == 0x00000B0700000000
    assert not is_error(status)
    assert env.state(0) is SeptState.BLOCKED


def test_block_of_pending_page_is_pending_blocked() -> None:
    env = mapped_runnable_env()
    env.aug(PAGE)
    env.module.tdh_mem_range_block(env.tdr, PAGE)
    assert env.state(PAGE) is SeptState.PENDING_BLOCKED


def test_block_of_a_free_gpa_is_ept_entry_state_incorrect() -> None:
    env = mapped_runnable_env()
    status = status_of(env.module.tdh_mem_range_block, env.tdr, 5 * PAGE)
    assert status == TdxStatus.EPT_ENTRY_STATE_INCORRECT | OperandId.RCX


def test_block_track_remove_frees_the_entry_and_the_page() -> None:
    env = mapped_runnable_env()
    env.module.tdh_mem_range_block(env.tdr, 0)
    env.module.tdh_mem_track(env.tdr)
    assert env.module.tdh_mem_page_remove(env.tdr, 0) == DATA
    assert env.state(0) is SeptState.FREE
    env.module.tdh_phymem_page_wbinvd(DATA)  # PT_NDA now
    env.aug(7 * PAGE, DATA)  # so the page can be given to the TD again
    assert env.state(7 * PAGE) is SeptState.PENDING


def test_guest_access_to_a_blocked_page_exits_to_the_host() -> None:
    env = mapped_runnable_env()
    env.module.tdh_mem_range_block(env.tdr, 0)
    td_exit, _ = env.enter(MemRead(0, 8))
    assert (td_exit.reason, td_exit.gpa, td_exit.private) == (ExitReason.EPT_VIOLATION, 0, True)


def test_wbinvd_of_a_page_still_in_use_is_page_metadata_incorrect() -> None:
    env = mapped_runnable_env()
    status = status_of(env.module.tdh_phymem_page_wbinvd, DATA)
    assert status == TdxStatus.PAGE_METADATA_INCORRECT | OperandId.RCX


# ---- MR.EXTEND / MRTD --------------------------------------------------------------------------
def test_mr_extend_on_an_unmapped_gpa_is_ept_entry_not_present() -> None:
    env = Env()
    status = status_of(env.module.tdh_mr_extend, env.tdr, 0)
    assert status == TdxStatus.EPT_ENTRY_NOT_PRESENT | OperandId.RCX == 0xC0000B0300000001


def test_mr_extend_on_a_pending_page_is_ept_entry_not_present() -> None:
    env = Env()
    env.aug(0)
    status = status_of(env.module.tdh_mr_extend, env.tdr, 256)
    assert status == TdxStatus.EPT_ENTRY_NOT_PRESENT | OperandId.RCX


def test_mr_extend_unaligned_is_operand_invalid() -> None:
    env = Env()
    env.module.tdh_mem_page_add(env.tdr, 0, DATA, bytes(PAGE))
    assert status_of(env.module.tdh_mr_extend, env.tdr, 128) == TdxStatus.OPERAND_INVALID | OperandId.RCX


def test_mr_extend_after_finalize_is_op_state_incorrect() -> None:
    env = mapped_runnable_env()
    assert status_of(env.module.tdh_mr_extend, env.tdr, 0) == TdxStatus.OP_STATE_INCORRECT


def _block(name: bytes, gpa: int) -> bytes:
    block = name + bytes(16 - len(name)) + gpa.to_bytes(8, "little") + bytes(104)
    assert len(block) == 128
    return block


def expected_mrtd(pages: list[tuple[int, bytes]], measured: bool) -> bytes:
    h = hashlib.sha384()
    for gpa, data in pages:
        h.update(_block(b"MEM.PAGE.ADD", gpa))
        if measured:
            for off in range(0, PAGE, 256):
                h.update(_block(b"MR.EXTEND", gpa + off))
                h.update(data[off : off + 256])
    return h.digest()


def two_page_payload() -> list[tuple[int, bytes]]:
    return [
        (0x0, bytes(range(256)) * 16),
        (0x1000, b"".join(i.to_bytes(2, "little") for i in range(2048))),
    ]


def test_mrtd_of_measured_two_page_payload_matches_sha384_recomputation() -> None:
    env = Env()
    pages = two_page_payload()
    for i, (gpa, data) in enumerate(pages):
        env.module.tdh_mem_page_add(env.tdr, gpa, DATA + i * PAGE, data)
        for off in range(0, PAGE, 256):
            env.module.tdh_mr_extend(env.tdr, gpa + off)
    mrtd = env.finalize()
    assert mrtd == expected_mrtd(pages, measured=True)
    assert env.module.td_summary(env.tdr).mrtd.value == mrtd


def test_mrtd_through_kvm_init_mem_region_matches_recomputation() -> None:
    for measured in (True, False):
        vmm = build_platform(PlatformConfig(phys_bytes=64 << 20)).vmm
        handle = vmm.create_td(TdParams(), MIB)
        payload = b"".join(data for _, data in two_page_payload())
        assert vmm.init_mem_region(handle.td_id, 0, payload, measured) == 2
        mrtd = handle.vm.tdx_finalize_vm()
        assert mrtd == expected_mrtd(two_page_payload(), measured)
        # PAGE.ADD pages are MAPPED: the guest reads them without accepting.
        assert vmm.run_vcpu(handle.td_id, [MemRead(0, 2 * PAGE)]) == [payload]


def test_mrtd_is_zero_before_finalize() -> None:
    env = Env()
    env.module.tdh_mem_page_add(env.tdr, 0, DATA, bytes(PAGE))
    assert env.module.td_summary(env.tdr).mrtd.value == bytes(48)


# ---- KeyID pool --------------------------------------------------------------------------------
def test_keyid_pool_allows_48_tds_and_the_49th_is_enospc() -> None:
    vmm = build_platform(PlatformConfig(phys_bytes=64 << 20)).vmm
    handles = [vmm.create_td(TdParams()) for _ in range(48)]
    assert sorted(h.vm.hkid for h in handles) == list(range(16, 64))
    assert vmm.kvm.keyids_free == 0
    free = vmm.kvm.pages.free_pages
    with pytest.raises(KvmError) as err:
        vmm.create_td(TdParams())
    assert err.value.errno == "ENOSPC"
    assert vmm.kvm.pages.free_pages == free
    assert len(vmm.tds()) == 48

    victim = handles[17]
    _, hkid = vmm.destroy_td(victim.td_id)
    assert hkid == victim.vm.hkid
    assert vmm.kvm.keyids_free == 1
    again = vmm.create_td(TdParams())
    assert again.vm.hkid == hkid
    assert vmm.kvm.keyids_free == 0


def test_keyid_pool_size_is_configurable() -> None:
    vmm = build_platform(PlatformConfig(phys_bytes=64 << 20, keyid_first=32, keyid_count=2)).vmm
    assert [vmm.create_td(TdParams()).vm.hkid for _ in range(2)] == [32, 33]
    with pytest.raises(KvmError) as err:
        vmm.create_td(TdParams())
    assert err.value.errno == "ENOSPC"


def test_mng_create_with_an_assigned_keyid_is_operand_busy() -> None:
    env = Env()
    status = status_of(env.module.tdh_mng_create, TDR + 8 * PAGE, HKID)
    assert status == TdxStatus.OPERAND_BUSY | OperandId.KOT


@pytest.mark.parametrize("hkid", [0, 15, 64])
def test_mng_create_with_a_non_private_keyid_is_operand_invalid(hkid: int) -> None:
    module = TdxModule(MemoryController(16 << 20))
    assert status_of(module.tdh_mng_create, TDR, hkid) == TdxStatus.OPERAND_INVALID | OperandId.RDX


# ---- teardown order ----------------------------------------------------------------------------
LIFECYCLE_INCORRECT = TdxStatus.LIFECYCLE_STATE_INCORRECT | OperandId.TDR


def test_key_freeid_before_vpflushdone_is_lifecycle_state_incorrect() -> None:
    env = mapped_runnable_env()
    assert status_of(env.module.tdh_mng_key_freeid, env.tdr) == LIFECYCLE_INCORRECT
    assert env.module.td_summary(env.tdr).lifecycle is TdLifecycle.TD_KEYS_CONFIGURED


def test_cache_wb_before_vpflushdone_is_lifecycle_state_incorrect() -> None:
    env = mapped_runnable_env()
    assert status_of(env.module.tdh_phymem_cache_wb, env.tdr) == LIFECYCLE_INCORRECT


def test_vpflushdone_twice_is_lifecycle_state_incorrect() -> None:
    env = mapped_runnable_env()
    env.module.tdh_mng_vpflushdone(env.tdr)
    assert status_of(env.module.tdh_mng_vpflushdone, env.tdr) == LIFECYCLE_INCORRECT


def test_reclaim_before_key_freeid_is_lifecycle_state_incorrect() -> None:
    env = mapped_runnable_env()
    env.module.tdh_mng_vpflushdone(env.tdr)
    assert status_of(env.module.tdh_phymem_page_reclaim, DATA) == LIFECYCLE_INCORRECT


def test_reclaim_tdr_before_other_pages_is_operand_busy() -> None:
    env = mapped_runnable_env()
    env.module.tdh_mng_vpflushdone(env.tdr)
    env.module.tdh_phymem_cache_wb(env.tdr)
    env.module.tdh_mng_key_freeid(env.tdr)
    status = status_of(env.module.tdh_phymem_page_reclaim, env.tdr)
    assert status == TdxStatus.OPERAND_BUSY | OperandId.TDR


def test_reclaim_of_an_unowned_page_is_page_metadata_incorrect() -> None:
    env = mapped_runnable_env()
    status = status_of(env.module.tdh_phymem_page_reclaim, DATA + 9 * PAGE)
    assert status == TdxStatus.PAGE_METADATA_INCORRECT | OperandId.RCX


def test_full_teardown_in_order_frees_the_keyid_and_every_page() -> None:
    env = mapped_runnable_env()
    module = env.module
    module.tdh_mng_vpflushdone(env.tdr)
    assert module.td_summary(env.tdr).lifecycle is TdLifecycle.TD_BLOCKED
    assert module.tdh_phymem_cache_wb(env.tdr) == TdxStatus.SUCCESS
    module.tdh_mng_key_freeid(env.tdr)
    assert module.td_summary(env.tdr).lifecycle is TdLifecycle.TD_TEARDOWN
    assert module._kot.state(HKID) is KotState.HKID_FREE
    pages = module.td_pages(env.tdr)
    assert pages[-1] == env.tdr
    assert sorted(pages) == sorted([TDR, TDR + PAGE, TDR + 2 * PAGE, DATA])
    for pa in pages:
        module.tdh_phymem_page_reclaim(pa)
    assert status_of(module.td_summary, env.tdr) == TdxStatus.OPERAND_INVALID | OperandId.RCX
    # The KeyID and every page can be used again.
    module.tdh_mng_create(TDR, HKID)
    module.tdh_mng_key_config(TDR)
    module.tdh_mng_addcx(TDR, DATA)

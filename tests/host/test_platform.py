"""Whole-machine properties of one in-process platform (no gRPC)."""

from __future__ import annotations

import pytest

from host.platform import PlatformConfig, build_platform
from host.tdx.tdcs import TdParams
from host.tdx.vcpu import Accept, MapGpa, MemRead, MemWrite
from host.vmm.events import EventKind

MIB = 1 << 20
PATTERN = bytes(range(256)) * 16  # 4 KiB, recognisable


@pytest.mark.parametrize("integrity", [True, False])
def test_private_plaintext_never_appears_in_physical_memory(integrity: bool) -> None:
    platform = build_platform(PlatformConfig(phys_bytes=64 * MIB, integrity=integrity))
    vmm = platform.vmm
    td = vmm.create_td(TdParams(), memory_bytes=8 * MIB)
    vmm.finalize(td.td_id)
    vmm.run_vcpu(td.td_id, [Accept(0, 4 * MIB), MemWrite(0, PATTERN * 1024)])
    (back,) = vmm.run_vcpu(td.td_id, [MemRead(0, 4 * MIB)])
    assert back == PATTERN * 1024
    physical = bytes(platform.mc.phys)
    assert physical.find(PATTERN[:64]) == -1
    assert physical.find(PATTERN[1000:1064]) == -1

    # The same bytes written to a shared page are plain (KeyID 0 is not encrypted here).
    shared = td.vm.shared_bit
    vmm.run_vcpu(td.td_id, [MapGpa(shared | 4 * MIB, 4096), MemWrite(shared | 4 * MIB, PATTERN)])
    assert bytes(platform.mc.phys).find(PATTERN[:64]) != -1


def test_conversion_events_are_published_per_map_gpa_chunk() -> None:
    platform = build_platform(PlatformConfig(phys_bytes=64 * MIB))
    vmm = platform.vmm
    watcher = vmm.events.watch()
    td = vmm.create_td(TdParams(), memory_bytes=8 * MIB)
    vmm.finalize(td.td_id)
    (result,) = vmm.run_vcpu(td.td_id, [MapGpa(td.vm.shared_bit | 0, 5 * MIB)])
    events = []
    while not watcher.empty():
        event = watcher.get_nowait()
        assert event is not None
        events.append(event)
    kinds = [e.kind for e in events]
    assert kinds.count(EventKind.MAP_GPA) == 3
    assert kinds.count(EventKind.CONVERSION) == 3
    assert [e.size for e in events if e.kind is EventKind.MAP_GPA] == [2 * MIB, 2 * MIB, MIB]
    assert getattr(result, "chunks", None) == 3


def test_destroy_returns_every_page_and_keyid() -> None:
    platform = build_platform(PlatformConfig(phys_bytes=64 * MIB))
    vmm = platform.vmm
    free_pages = vmm.kvm.pages.free_pages
    free_keyids = vmm.kvm.keyids_free
    td = vmm.create_td(TdParams(), memory_bytes=8 * MIB)
    vmm.finalize(td.td_id)
    vmm.run_vcpu(td.td_id, [Accept(0, MIB), MemWrite(0, PATTERN)])
    assert vmm.kvm.pages.free_pages < free_pages
    reclaimed, hkid = vmm.destroy_td(td.td_id)
    assert reclaimed == 256 + 3  # 256 private pages + TDR, TDCS, TDVPR
    assert hkid == 16
    assert vmm.kvm.pages.free_pages == free_pages
    assert vmm.kvm.keyids_free == free_keyids


def test_teardown_of_a_large_accepted_td_finishes_promptly() -> None:
    # Reclaim must not walk the Secure-EPT per page: 64k accepted pages took hours when it did.
    import threading

    platform = build_platform(PlatformConfig(phys_bytes=512 * MIB))
    vmm = platform.vmm
    free_pages = vmm.kvm.pages.free_pages
    td = vmm.create_td(TdParams(), memory_bytes=256 * MIB)
    vmm.finalize(td.td_id)
    vmm.run_vcpu(td.td_id, [Accept(0, 256 * MIB)])
    done: list[tuple[int, int]] = []
    worker = threading.Thread(target=lambda: done.append(vmm.destroy_td(td.td_id)), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert done, "destroying a TD with 256 MiB accepted did not finish within 30 s"
    assert done[0][0] == 65536 + 3
    assert vmm.kvm.pages.free_pages == free_pages


@pytest.mark.parametrize("gpa", [8 * MIB, 1 << 40])
def test_private_access_outside_every_memslot_is_refused_not_spun(gpa: int) -> None:
    from host.vmm.errors import VmmError

    platform = build_platform(PlatformConfig(phys_bytes=64 * MIB))
    vmm = platform.vmm
    td = vmm.create_td(TdParams(), memory_bytes=4 * MIB)
    vmm.finalize(td.td_id)
    with pytest.raises(VmmError) as err:
        vmm.run_vcpu(td.td_id, [MemRead(gpa, 8)])
    assert (err.value.reason, err.value.errno, err.value.gpa) == ("MEMORY_FAULT", "EFAULT", gpa)
    assert vmm.run_vcpu(td.td_id, [Accept(0, 4096), MemRead(0, 8)])[1] == bytes(8)  # the TD lives on


@pytest.mark.parametrize(
    "op", [MemRead(0, 0), MemWrite(0, b""), Accept(0, 0)], ids=["read", "write", "accept"]
)
def test_empty_guest_accesses_are_invalid_argument(op: object) -> None:
    from host.vmm.errors import Refusal, VmmError

    platform = build_platform(PlatformConfig(phys_bytes=64 * MIB))
    td = platform.vmm.create_td(TdParams(), memory_bytes=4 * MIB)
    platform.vmm.finalize(td.td_id)
    with pytest.raises(VmmError) as err:
        platform.vmm.run_vcpu(td.td_id, [op])  # type: ignore[list-item]
    assert (err.value.refusal, err.value.tdx_status) == (Refusal.INVALID_ARGUMENT, 0xC000010000000001)


def test_map_gpa_beyond_guest_memory_is_invalid_operand_at_once() -> None:
    platform = build_platform(PlatformConfig(phys_bytes=64 * MIB))
    vmm = platform.vmm
    td = vmm.create_td(TdParams(), memory_bytes=8 * MIB)
    vmm.finalize(td.td_id)
    shared = td.vm.shared_bit
    (result,) = vmm.run_vcpu(td.td_id, [MapGpa(shared | 0, shared - 4096)])  # the whole shared half
    assert (result.status, result.failed_gpa) == (0x8000000000000000, shared | 8 * MIB)  # type: ignore[attr-defined]
    assert result.chunks == 5  # type: ignore[attr-defined]  # 4 chunks of guest RAM, then the refusal


def test_get_quote_on_a_buffer_that_is_partly_private_is_invalid_operand_and_the_td_runs_on() -> None:
    import struct

    from host.tdx.vcpu import GetQuote

    platform = build_platform(PlatformConfig(phys_bytes=64 * MIB))
    vmm = platform.vmm
    td = vmm.create_td(TdParams(), memory_bytes=8 * MIB)
    vmm.finalize(td.td_id)
    buf = td.vm.shared_bit | 4 * MIB
    header = struct.pack("<QQII", 1, 0xFFFF_FFFF_FFFF_FFFF, 1024, 0)
    results = vmm.run_vcpu(
        td.td_id, [MapGpa(buf, 4096), MemWrite(buf, header + bytes(1024)), GetQuote(buf, 8192)]
    )
    assert results[2].status == 0x8000000000000000  # type: ignore[attr-defined]
    assert vmm.run_vcpu(td.td_id, [Accept(0, 4096), MemRead(0, 4)])[1] == bytes(4)

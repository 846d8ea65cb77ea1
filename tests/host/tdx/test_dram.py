"""DRAM the size of real hosts: reserved lazily, costing what is touched (docs/memory-model.md §7.1)."""

from __future__ import annotations

import os

import pytest

from host.platform import PlatformConfig, build_platform
from host.tdx.dram import DramUnavailable, format_size, max_phys_bytes, reserve
from host.tdx.memctl import PAGE, MemoryController
from host.tdx.tdcs import TdParams
from host.tdx.vcpu import Accept, MemRead, MemWrite

MIB = 1 << 20
GIB = 1 << 30
TIB = 1 << 40
TD = 17


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_a_tebibyte_of_dram_costs_the_pages_touched() -> None:
    before = rss_bytes()
    dram = reserve(TIB, "physical memory")
    try:
        assert len(dram) == TIB
        assert dram[TIB - PAGE : TIB - PAGE + 16] == bytes(16)  # untouched reads as zero
        dram[0:5] = b"first"
        dram[TIB - 4 : TIB] = b"last"
        assert (dram[0:5], dram[TIB - 4 : TIB]) == (b"first", b"last")
        assert rss_bytes() - before < 16 * MIB
    finally:
        dram.close()


def test_memory_controller_of_a_tebibyte_encrypts_at_its_top_and_holds_only_that() -> None:
    before = rss_bytes()
    mc = MemoryController(TIB)
    mc.program_key(TD)
    page = os.urandom(PAGE)
    top = TIB - 2 * PAGE
    mc.write(TD, [(top, page), (0, page)])
    assert mc.read(TD, [(top, PAGE), (0, PAGE)]) == [page, page]
    assert mc.line_state(top) == (True, False)
    assert mc.read(0, [(top, PAGE)]) == [bytes(PAGE)]  # TD-owned: the host reads zeros
    assert rss_bytes() - before < 32 * MIB


def test_a_mapping_the_kernel_refuses_is_one_line_naming_what_and_how_much() -> None:
    with pytest.raises(DramUnavailable) as caught:
        reserve(1 << 62, "physical memory")  # more than any x86-64 user address space
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"cannot map {format_size(1 << 62)} of physical memory: ")
    assert isinstance(caught.value, ValueError)  # start-up turns it into one line and exit 2


def test_the_physical_address_width_bounds_the_machine() -> None:
    assert max_phys_bytes(6) == 1 << 46  # KeyIDs [16, 64): 6 of the 52 address bits
    PlatformConfig(phys_bytes=TIB).check()
    with pytest.raises(ValueError, match=r"4 PiB is more than the 64 TiB .* 6 KeyID bits"):
        PlatformConfig(phys_bytes=1 << 52).check()
    with pytest.raises(ValueError, match=r"128 TiB is more than the 32 TiB"):
        PlatformConfig(phys_bytes=128 * TIB, keyid_count=112).check()  # KeyIDs [16, 128): 7 bits


@pytest.mark.parametrize(("size", "text"), [(1 << 40, "1 TiB"), (3 << 29, "1.5 GiB"), (1000, "1000 bytes")])
def test_sizes_read_as_people_write_them(size: int, text: str) -> None:
    assert format_size(size) == text


def test_a_64_gib_td_on_a_tebibyte_host_costs_what_it_touched() -> None:
    before = rss_bytes()
    platform = build_platform(PlatformConfig(phys_bytes=TIB))
    vmm = platform.vmm
    free_at_boot = vmm.stats().phys_pages_free
    handle = vmm.create_td(TdParams(), memory_bytes=64 * GIB)
    vmm.finalize(handle.td_id)
    chunk = bytes(range(256)) * (2 * MIB // 256)
    gpas = [n * 4 * GIB for n in range(8)]  # 16 MiB spread over the TD's 64 GiB
    for gpa in gpas:
        vmm.run_vcpu(handle.td_id, [Accept(gpa, 2 * MIB), MemWrite(gpa, chunk)])
    assert [vmm.run_vcpu(handle.td_id, [MemRead(gpa, 2 * MIB)])[0] for gpa in gpas] == [chunk] * len(gpas)
    assert rss_bytes() - before < 64 * MIB
    reclaimed, _ = vmm.destroy_td(handle.td_id)
    assert reclaimed >= len(gpas) * 512  # the touched pages, plus control and Secure-EPT pages
    assert vmm.stats().phys_pages_free == free_at_boot

"""Measured launch, RTMRs, TDREPORT and GetQuote on one in-process platform (memory-model.md §8)."""

from __future__ import annotations

import hashlib
import struct

import pytest

from attest.formats.tdreport import decode_tdreport
from host.platform import PlatformConfig, build_platform
from host.tdx.tdcs import TdParams
from host.tdx.vcpu import Accept, GetQuote, MapGpa, MemRead, MemWrite, Report, RtmrExtend
from host.vmm.errors import VmmError
from wire import tdx_abi as abi

MIB = 1 << 20
PAGE = 4096
KERNEL = bytes(range(256)) * 20  # 5120 bytes: two pages once padded


def independent_mrtd(payload: list[tuple[int, bytes, bool]]) -> bytes:
    """MRTD from the documented 128-byte blocks (memory-model.md §8), without the simulator's code."""
    h = hashlib.sha384()
    for gpa, data, measure in payload:
        data = data + bytes(-len(data) % PAGE)
        for page in range(0, len(data), PAGE):
            h.update(b"MEM.PAGE.ADD".ljust(16, b"\0") + (gpa + page).to_bytes(8, "little") + bytes(104))
            if measure:
                for chunk in range(0, PAGE, 256):
                    h.update(
                        b"MR.EXTEND".ljust(16, b"\0")
                        + (gpa + page + chunk).to_bytes(8, "little")
                        + bytes(104)
                    )
                    h.update(data[page + chunk : page + chunk + 256])
    return h.digest()


class FakeSigner:
    def quote(self, td_report: bytes) -> bytes:
        return b"QUOTE:" + hashlib.sha256(td_report).digest()


@pytest.fixture
def launched() -> tuple[object, int, list[tuple[int, bytes, bool]]]:
    platform = build_platform(PlatformConfig(phys_bytes=64 * MIB), signer=FakeSigner())
    payload = [(0x100000, KERNEL, True), (0x200000, b"config", False)]
    handle, pages = platform.vmm.launch_td(TdParams(), 8 * MIB, payload, "evidence")
    assert pages == 3
    return platform, handle.td_id, payload


def report_via_run(vmm: object, td_id: int, report_data: bytes) -> bytes:
    ops = [Accept(0, 2 * PAGE), MemWrite(PAGE, report_data), Report(0, PAGE), MemRead(0, 1024)]
    return vmm.run_vcpu(td_id, ops)[-1]  # type: ignore[attr-defined, no-any-return]


def test_mrtd_matches_an_independent_recomputation_and_one_byte_changes_it(launched) -> None:  # type: ignore[no-untyped-def]
    platform, td_id, payload = launched
    raw = report_via_run(platform.vmm, td_id, bytes(64))
    assert decode_tdreport(raw).body.mr_td == independent_mrtd(payload)
    other = build_platform(PlatformConfig(phys_bytes=64 * MIB))
    changed = [(0x100000, KERNEL[:-1] + bytes([KERNEL[-1] ^ 1]), True), payload[1]]
    handle, _ = other.vmm.launch_td(TdParams(), 8 * MIB, changed)
    assert decode_tdreport(report_via_run(other.vmm, handle.td_id, bytes(64))).body.mr_td == independent_mrtd(
        changed
    )
    assert independent_mrtd(changed) != independent_mrtd(payload)


def test_rtmr_extend_and_report_carry_the_values_and_the_mac_binds_them(launched) -> None:  # type: ignore[no-untyped-def]
    platform, td_id, _ = launched
    vmm = platform.vmm
    event = hashlib.sha384(b"my app").digest()
    vmm.run_vcpu(td_id, [Accept(0, 4 * PAGE), MemWrite(2 * PAGE, event), RtmrExtend(2 * PAGE, 2)])
    raw = report_via_run(vmm, td_id, b"N" * 64)
    report = decode_tdreport(raw)
    assert report.body.rtmr2 == hashlib.sha384(bytes(48) + event).digest()
    assert report.body.rtmr0 == bytes(48)
    assert report.body.report_data == b"N" * 64
    assert report.body.td_attributes == (0x10000000).to_bytes(8, "little")
    assert platform.module.verify_report(raw)
    for offset in (0, 40, 130, 230, 300, 600, 1000):
        flipped = bytearray(raw)
        flipped[offset] ^= 1
        assert not platform.module.verify_report(bytes(flipped)), offset


def test_rtmr_index_4_is_operand_invalid(launched) -> None:  # type: ignore[no-untyped-def]
    platform, td_id, _ = launched
    with pytest.raises(VmmError) as err:
        platform.vmm.run_vcpu(td_id, [Accept(0, PAGE), RtmrExtend(0, 4)])
    assert err.value.tdx_status == 0xC000010000000002  # OPERAND_INVALID | RDX


def get_quote(
    vmm: object, td_id: int, shared_bit: int, report: bytes, size: int = 4 * PAGE
) -> tuple[int, bytes]:
    buf = shared_bit | 4 * MIB
    header = abi.GET_QUOTE_HEADER.pack(abi.GET_QUOTE_VERSION, abi.GetQuoteStatus.IN_FLIGHT, len(report), 0)
    results = vmm.run_vcpu(  # type: ignore[attr-defined]
        td_id, [MapGpa(buf, size), MemWrite(buf, header + report), GetQuote(buf, size), MemRead(buf, size)]
    )
    assert results[2].status == 0  # the TDVMCALL itself succeeded
    _, status, _, out_len = struct.unpack("<QQII", results[3][:24])
    return status, results[3][24 : 24 + out_len]


def test_get_quote_returns_the_signed_quote_and_refuses_an_altered_report(launched) -> None:  # type: ignore[no-untyped-def]
    platform, td_id, _ = launched
    shared_bit = platform.vmm.td(td_id).vm.shared_bit
    raw = report_via_run(platform.vmm, td_id, b"Q" * 64)
    status, quote = get_quote(platform.vmm, td_id, shared_bit, raw)
    assert (status, quote) == (abi.GetQuoteStatus.SUCCESS, FakeSigner().quote(raw))
    altered = bytearray(raw)
    altered[600] ^= 0x80  # MRTD
    status, quote = get_quote(platform.vmm, td_id, shared_bit, bytes(altered))
    assert (status, quote) == (abi.GetQuoteStatus.ERROR, b"")


def test_get_quote_without_a_provisioned_pck_reports_qgs_unavailable() -> None:
    platform = build_platform(PlatformConfig(phys_bytes=64 * MIB))
    handle, _ = platform.vmm.launch_td(TdParams(), 8 * MIB, [(0, b"x", True)])
    raw = report_via_run(platform.vmm, handle.td_id, bytes(64))
    status, _ = get_quote(platform.vmm, handle.td_id, handle.vm.shared_bit, raw)
    assert status == abi.GetQuoteStatus.QGS_UNAVAILABLE

"""The guest library against a real host process: batched accesses, ACCEPT, MapGPA, conversions, the
platform's behaviour on unaccepted pages, measurements and TDREPORT, and TD isolation."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from guest_helpers import KERNEL, MIB, PAGE, image, independent_mrtd, launch

from attest.formats.eventlog import TaggedEvent, decode_event_log, decode_tagged_event, replay
from attest.formats.eventlog.ccel import EV_EVENT_TAG, TDXSIM_EXTEND_EVENT_ID, TDXSIM_MEASURE_EVENT_ID
from attest.formats.tdreport import decode_tdreport
from guest.errors import AccessDenied, GuestFault, QuoteFailed, TdGone, TdxStatusError
from guest.td import Td
from tests.conftest import HostProcess
from wire import tdx_abi as abi
from wire.v1 import guest_pb2

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def td(module_host: HostProcess) -> Iterator[Td]:
    with launch(module_host) as handle:
        yield handle


def test_many_ranges_travel_in_one_request_and_large_transfers_split_at_16_mib(td: Td) -> None:
    base = td.alloc(20 * MIB)
    before = td.rpc_counts
    writes = [(base + i * PAGE, bytes([i % 256]) * 100) for i in range(300)]
    td.write_many(writes)
    assert td.read_many([(g, 100) for g, _ in writes]) == [d for _, d in writes]
    assert (td.rpc_counts - before) == {"WriteMemory": 1, "ReadMemory": 1}
    big = hashlib.shake_256(b"big").digest(20 * MIB)
    before = td.rpc_counts
    td.write(base, big)
    assert td.read(base, 20 * MIB) == big
    assert (td.rpc_counts - before) == {"WriteMemory": 2, "ReadMemory": 2}


def test_accept_tries_2m_then_falls_back_to_4k_within_one_request(td: Td) -> None:
    before = td.rpc_counts
    outcome = td.accept(8 * MIB + 3 * PAGE, 4 * MIB)  # unaligned head and tail, one aligned 2M unit
    assert (outcome.accepted_4k, outcome.accepted_2m, outcome.already_accepted) == (1024, 0, 0)
    assert td.rpc_counts - before == {"Run": 1}
    td.write(8 * MIB + 3 * PAGE, b"usable")
    assert td.read(8 * MIB + 3 * PAGE, 6) == b"usable"


def test_accepting_an_accepted_page_fails_like_linux_unless_allowed(td: Td) -> None:
    td.accept(16 * MIB, 2 * MIB)
    with pytest.raises(TdxStatusError) as err:
        td.accept(16 * MIB, PAGE)
    assert err.value.reason == "PAGE_ALREADY_ACCEPTED"
    assert err.value.status == abi.TdxStatus.PAGE_ALREADY_ACCEPTED | abi.AcceptLevel.PAGE_4K
    outcome = td.accept(16 * MIB - 2 * PAGE, 4 * PAGE, strict=False)
    assert (outcome.accepted_4k, outcome.already_accepted) == (2, 2)


def test_conversion_to_shared_destroys_private_contents_and_back_gives_zeroed_pages(td: Td) -> None:
    gpa = td.alloc(2 * MIB, align=2 * MIB)
    td.write(gpa, b"secret" * 100)
    assert td.convert_to_shared(gpa, 2 * MIB) == 1  # one <= 2 MiB MapGPA chunk
    td.write(td.shared(gpa), b"for the host")
    assert td.read(td.shared(gpa), 12) == b"for the host"
    before = td.rpc_counts
    outcome = td.convert_to_private(gpa, 2 * MIB)
    assert outcome.pages == 512
    assert td.rpc_counts - before == {"Run": 2}  # MapGPA, then ACCEPT
    assert td.read(gpa, 600) == bytes(600)


def test_map_gpa_whose_range_crosses_the_shared_bit_is_invalid_operand(td: Td) -> None:
    start = td.shared_bit - PAGE
    with pytest.raises(TdxStatusError) as err:
        td.map_gpa(start, 2 * PAGE)
    assert err.value.reason == "MAP_GPA_INVALID_OPERAND"
    assert (err.value.status, err.value.gpa) == (abi.TdVmCallStatus.INVALID_OPERAND, start)


def _scripted(td: Td, answers: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Replace td.run with a VMM that answers MapGPA with (status, R11) in turn; returns the calls."""
    calls: list[tuple[int, int]] = []

    def run(instructions: Any, timeout: float | None = None) -> list[guest_pb2.InstructionResult]:
        (ins,) = instructions
        calls.append((ins.map_gpa.gpa, ins.map_gpa.length))
        status, failed = answers.pop(0)
        return [guest_pb2.InstructionResult(status=status, failed_gpa=failed, chunks=1)]

    td.run = run  # type: ignore[method-assign]
    return calls


def test_map_gpa_retry_resumes_at_r11_and_gives_up_after_three_answers_without_progress(td: Td) -> None:
    retry = abi.TdVmCallStatus.RETRY
    calls = _scripted(td, [(retry, 0x201000), (retry, 0x201000), (0, 0)])
    assert td.map_gpa(0x200000, 0x4000) == 3
    assert calls == [(0x200000, 0x4000), (0x201000, 0x3000), (0x201000, 0x3000)]
    calls = _scripted(td, [(retry, 0x200000)] * 3)
    with pytest.raises(TdxStatusError) as err:
        td.map_gpa(0x200000, 0x4000)
    assert err.value.reason == "MAP_GPA_RETRY_EXHAUSTED" and len(calls) == 3
    _scripted(td, [(retry, 0x900000)])
    with pytest.raises(TdxStatusError) as err:
        td.map_gpa(0x200000, 0x4000)
    assert err.value.reason == "MAP_GPA_BAD_RETRY_GPA"


def test_touching_an_unaccepted_page_with_sept_ve_disable_kills_the_td(module_host: HostProcess) -> None:
    with launch(module_host, image(attributes=1 << 28)) as td:
        with pytest.raises(TdGone) as err:
            td.read(32 * MIB, 8)
        assert err.value.reason == "EIO"
        with pytest.raises(TdGone):
            td.accept(32 * MIB, PAGE)


def test_touching_an_unaccepted_page_without_sept_ve_disable_is_a_ve_and_the_td_lives(
    module_host: HostProcess,
) -> None:
    with launch(module_host, image(attributes=0)) as td:
        with pytest.raises(GuestFault) as err:
            td.write(32 * MIB, b"too early")
        assert err.value.reason == "VE_PENDING_PAGE"
        assert err.value.metadata["gpa"] == hex(32 * MIB)
        td.accept(32 * MIB, PAGE)
        td.write(32 * MIB, b"after accept")
        assert td.read(32 * MIB, 12) == b"after accept"


def test_mrtd_and_rtmrs_match_an_independent_recomputation_and_the_event_log_replays(
    module_host: HostProcess,
) -> None:
    payload = [(MIB, KERNEL, True), (2 * MIB, b"cmdline", False)]
    with launch(module_host, image(payload=payload)) as td:
        td.measure(2, b"app v1")
        digest = hashlib.sha384(b"raw digest").digest()
        td.rtmr_extend(3, digest)
        body = decode_tdreport(td.report(b"N" * 64)).body
        assert body.mr_td == independent_mrtd(payload)
        assert body.rtmr2 == hashlib.sha384(bytes(48) + hashlib.sha384(b"app v1").digest()).digest()
        assert body.rtmr3 == hashlib.sha384(bytes(48) + digest).digest()
        assert (body.rtmr0, body.rtmr1) == (bytes(48), bytes(48))
        log = decode_event_log(td.event_log())
        assert [(e.mr_index, e.event_type) for e in log.events] == [(3, EV_EVENT_TAG), (4, EV_EVENT_TAG)]
        measured, extended = (decode_tagged_event(e.data) for e in log.events)
        assert measured == TaggedEvent(TDXSIM_MEASURE_EVENT_ID, b"app v1")
        assert log.events[0].data == b"TDXM\x06\x00\x00\x00app v1"  # taggedEventID, size, data
        assert log.events[0].digest() == hashlib.sha384(measured.data).digest()  # the tagged data's digest
        assert extended == TaggedEvent(TDXSIM_EXTEND_EVENT_ID, b"") and log.events[1].digest() == digest
        assert replay(log) == (body.rtmr0, body.rtmr1, body.rtmr2, body.rtmr3)
    changed = [(MIB, KERNEL[:-1] + bytes([KERNEL[-1] ^ 1]), True), payload[1]]
    with launch(module_host, image(payload=changed)) as other:
        assert decode_tdreport(other.report()).body.mr_td == independent_mrtd(changed) != body.mr_td


def test_report_parses_at_the_documented_offsets_with_reportdata_and_td_parameters(
    module_host: HostProcess,
) -> None:
    config = hashlib.sha384(b"config").digest()
    with launch(module_host, image(attributes=(1 << 28) | 1, xfam=0x61AE7, mrconfigid=config)) as td:
        raw = td.report(bytes(range(64)))
    assert len(raw) == 1024 and raw[0] == 0x81  # REPORTTYPE.type TDX
    assert raw[128:192] == bytes(range(64))  # REPORTDATA
    assert int.from_bytes(raw[512:520], "little") == (1 << 28) | 1  # TDINFO.ATTRIBUTES
    assert int.from_bytes(raw[520:528], "little") == 0x61AE7  # XFAM
    assert raw[576:624] == config  # MRCONFIGID
    assert decode_tdreport(raw).body.report_data == bytes(range(64))


def test_a_guest_cannot_read_or_convert_another_tds_memory(module_host: HostProcess) -> None:
    with launch(module_host, name="a") as a, launch(module_host, name="b") as b:
        b.write(MIB, b"B's secret")
        with pytest.raises(AccessDenied) as err:
            Td.attach(module_host.address, b.td_id, a.credential, lifeline=False)
        assert (err.value.code, err.value.reason) == ("PERMISSION_DENIED", "CREDENTIAL_FOR_ANOTHER_TD")
        # A's own handle pointed at B's td_id: every instruction is refused before it runs.
        a.td_id = b.td_id
        for attempt in (lambda: a.read(MIB, 10), lambda: a.map_gpa(a.shared(MIB), PAGE)):
            with pytest.raises(AccessDenied) as err:
                attempt()
            assert err.value.code == "PERMISSION_DENIED"
        with pytest.raises(AccessDenied) as err:
            Td.attach(module_host.address, b.td_id, "00" * 32, lifeline=False)
        assert (err.value.code, err.value.reason) == ("UNAUTHENTICATED", "UNKNOWN_CREDENTIAL")
        assert b.read(MIB, 10) == b"B's secret"


def test_the_allocator_accepts_pages_once_and_reuses_freed_ones(td: Td) -> None:
    before = td.rpc_counts
    gpa = td.alloc(64 * 1024)
    assert td.rpc_counts - before == {"Run": 1}
    td.free(gpa)
    again = td.alloc(64 * 1024)
    assert again == gpa and td.rpc_counts - before == {"Run": 1}  # already accepted: no request


def test_quote_on_a_host_without_a_quoting_service_is_qgs_unavailable(td: Td) -> None:
    with pytest.raises(QuoteFailed) as err:
        td.quote(b"q" * 64)
    assert (err.value.reason, err.value.status) == ("QGS_UNAVAILABLE", abi.GetQuoteStatus.QGS_UNAVAILABLE)

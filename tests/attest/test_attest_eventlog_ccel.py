"""CC event log codec and RTMR replay (attestation.md §12): the real vector (skipped without the vectors) and
logs built here."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from attest_vectors import vectors_dir

from attest.formats import decode_quote
from attest.formats.eventlog import (
    ALG_SHA256,
    ALG_SHA384,
    Event,
    EventLog,
    EventLogError,
    SpecIdEvent,
    TaggedEvent,
    compare_rtmrs,
    decode_ccel_table,
    decode_event_log,
    decode_tagged_event,
    encode_event_log,
    measure,
    replay,
    tagged_event,
)
from attest.formats.eventlog.ccel import (
    EV_EFI_ACTION,
    EV_EVENT_TAG,
    EV_NO_ACTION,
    EV_SEPARATOR,
    TDXSIM_EXTEND_EVENT_ID,
    TDXSIM_MEASURE_EVENT_ID,
)


def eventlog(name: str) -> bytes:
    """A file of the real event-log vector (skips the test without the vectors)."""
    return (vectors_dir() / "eventlog" / name).read_bytes()


@pytest.fixture(scope="module")
def raw_log() -> bytes:
    return eventlog("ccel_data.bin")


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(eventlog("expected.json"))
    return parsed


def test_real_log_replays_to_the_quotes_rtmr0_to_rtmr2(raw_log: bytes, expected: dict[str, Any]) -> None:
    log = decode_event_log(raw_log)
    quote = decode_quote(eventlog("quote.bin"))
    replayed = replay(log)
    assert [r.hex() for r in replayed] == expected["rtmr"]
    assert replayed[:3] == quote.body.rtmrs[:3]
    result = compare_rtmrs(log, quote.body.rtmrs)
    assert result.ok and result.mismatched == () and result.unchecked == (3,)


def test_real_log_has_the_expected_events_and_sha384_header(raw_log: bytes, expected: dict[str, Any]) -> None:
    log = decode_event_log(raw_log)
    assert len(log.events) == expected["events_in_log"]
    assert log.spec_id.algorithms == ((ALG_SHA384, 48),)
    assert all(len(ev.digest(ALG_SHA384) or b"") == 48 for ev in log.events)
    assert raw_log[log.size :].strip(b"\xff") == b""  # the rest of the log area is fill


def test_real_log_reencodes_byte_exact(raw_log: bytes) -> None:
    log = decode_event_log(raw_log)
    assert encode_event_log(log) == raw_log[: log.size]


def test_ccel_table_names_tdx_and_the_log_area(raw_log: bytes) -> None:
    table = decode_ccel_table(eventlog("ccel_table.bin"))
    assert table.cc_type == 2
    assert table.log_area_minimum_length == len(raw_log) == 0x40000
    assert table.oem_id == b"INTEL "


def test_ccel_table_with_bad_checksum_is_refused() -> None:
    raw = bytearray(eventlog("ccel_table.bin"))
    raw[9] ^= 1
    with pytest.raises(EventLogError, match="checksum"):
        decode_ccel_table(bytes(raw))


def _guest_log() -> EventLog:
    spec = SpecIdEvent(algorithms=((ALG_SHA256, 32), (ALG_SHA384, 48)))
    events = (
        measure(1, EV_EFI_ACTION, b"firmware", (ALG_SHA256, ALG_SHA384)),
        Event(1, EV_NO_ACTION, ((ALG_SHA256, bytes(32)), (ALG_SHA384, bytes(48))), b"StartupLocality\0\3"),
        measure(2, EV_SEPARATOR, b"\0\0\0\0", (ALG_SHA256, ALG_SHA384)),
        measure(3, EV_EFI_ACTION, b"kernel cmdline", (ALG_SHA256, ALG_SHA384)),
        measure(4, EV_EFI_ACTION, b"runtime: app v1", (ALG_SHA256, ALG_SHA384)),
    )
    return EventLog(spec, events)


def test_encoded_log_round_trips_with_two_banks_and_fill() -> None:
    log = _guest_log()
    raw = encode_event_log(log)
    decoded = decode_event_log(raw + b"\xff" * 4096)
    assert decoded.events == log.events and decoded.spec_id == log.spec_id and decoded.size == len(raw)
    assert encode_event_log(decoded) == raw


def test_replay_follows_ccmr_index_minus_one_and_skips_no_action() -> None:
    log = _guest_log()
    zero = bytes(48)

    def ext(reg: bytes, data: bytes) -> bytes:
        return hashlib.sha384(reg + hashlib.sha384(data).digest()).digest()

    assert replay(log) == (
        ext(zero, b"firmware"),
        ext(zero, b"\0\0\0\0"),
        ext(zero, b"kernel cmdline"),
        ext(zero, b"runtime: app v1"),
    )


def test_rtmr3_is_compared_only_when_the_log_extends_it() -> None:
    log = _guest_log()
    rtmrs = list(replay(log))
    assert compare_rtmrs(log, rtmrs).mismatched == ()
    rtmrs[3] = bytes(48)
    assert compare_rtmrs(log, rtmrs).mismatched == (3,)
    without_rtmr3 = EventLog(log.spec_id, log.events[:-1])
    result = compare_rtmrs(without_rtmr3, rtmrs)
    assert result.mismatched == () and result.unchecked == (3,)


def test_off_by_one_ccmr_log_mismatches() -> None:
    # The trustee PR #1068 bug: writing RTMR index instead of CCMR index shifts every event one register.
    log = _guest_log()
    shifted = EventLog(
        log.spec_id, tuple(Event(e.mr_index - 1, e.event_type, e.digests, e.data) for e in log.events)
    )
    result = compare_rtmrs(shifted, replay(log))
    assert result.mismatched == (0, 1, 2) and result.unchecked == (3,)


def test_every_truncation_inside_an_event_raises_eventlog_error() -> None:
    log = _guest_log()
    raw = encode_event_log(log)
    boundaries = {len(log.spec_id.encode())}
    for ev in log.events:
        boundaries.add(max(boundaries) + len(ev.encode()))
    for cut in range(len(raw)):
        if cut in boundaries:
            assert len(decode_event_log(raw[:cut]).events) < len(log.events)
            continue
        with pytest.raises(EventLogError):
            decode_event_log(raw[:cut])


def test_digest_of_an_undeclared_algorithm_is_refused() -> None:
    spec = SpecIdEvent()
    raw = spec.encode() + Event(1, EV_EFI_ACTION, ((ALG_SHA256, bytes(32)),), b"x").encode()
    with pytest.raises(EventLogError, match="not in the spec id"):
        decode_event_log(raw)


def test_oversized_event_data_is_refused_before_slicing() -> None:
    raw = SpecIdEvent().encode() + Event(1, EV_EFI_ACTION, ((ALG_SHA384, bytes(48)),), b"").encode()
    raw = raw[:-4] + (1 << 30).to_bytes(4, "little")
    with pytest.raises(EventLogError, match="declares"):
        decode_event_log(raw)


def test_ccmr_above_four_makes_replay_fail() -> None:
    log = EventLog(SpecIdEvent(), (measure(5, EV_EFI_ACTION, b"x"),))
    with pytest.raises(EventLogError, match="ccmr 5"):
        replay(log)


# --- EV_EVENT_TAG: TCG_PCClientTaggedEvent ------------------------------------------------------------------


def test_tagged_event_is_id_size_data_little_endian_and_round_trips() -> None:
    tagged = TaggedEvent(TDXSIM_MEASURE_EVENT_ID, b"app v1")
    raw = tagged.encode()
    assert raw == b"TDXM" + (6).to_bytes(4, "little") + b"app v1"
    assert TDXSIM_MEASURE_EVENT_ID == 0x4D584454 and TDXSIM_EXTEND_EVENT_ID == 0x45584454
    assert decode_tagged_event(raw) == tagged
    assert decode_tagged_event(raw).encode() == raw
    assert decode_tagged_event(TaggedEvent(7).encode()) == TaggedEvent(7, b"")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"TDXM\x06\x00\x00", "shorter than its 8-byte header"),
        (b"TDXM\x07\x00\x00\x00app v1", "declares 7 bytes of data, has 6"),
        (b"TDXM\x05\x00\x00\x00app v1", "declares 5 bytes of data, has 6"),
        (b"TDXM\xff\xff\xff\xff", "declares 4294967295"),
    ],
)
def test_malformed_tagged_events_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(EventLogError, match=message):
        decode_tagged_event(raw)


def test_tagged_event_id_must_be_a_u32() -> None:
    with pytest.raises(EventLogError, match="u32"):
        TaggedEvent(1 << 32)


def test_tagged_measure_event_digests_the_tagged_data_and_replays_like_the_raw_one() -> None:
    """The digest (what the RTMR is extended with) is the hash of the measured bytes, as before the data was
    framed: a log of tagged events replays to the same RTMRs as one carrying the bytes raw."""
    ev = tagged_event(3, b"kernel cmdline", algorithms=(ALG_SHA256, ALG_SHA384))
    assert (ev.mr_index, ev.event_type) == (3, EV_EVENT_TAG)
    assert decode_tagged_event(ev.data) == TaggedEvent(TDXSIM_MEASURE_EVENT_ID, b"kernel cmdline")
    assert ev.digest(ALG_SHA384) == hashlib.sha384(b"kernel cmdline").digest()
    assert ev.digest(ALG_SHA256) == hashlib.sha256(b"kernel cmdline").digest()
    spec = SpecIdEvent(algorithms=((ALG_SHA256, 32), (ALG_SHA384, 48)))
    tagged_log = EventLog(
        spec, (ev, tagged_event(4, b"app", event_id=0x1234, algorithms=(ALG_SHA256, ALG_SHA384)))
    )
    raw_log = EventLog(
        spec,
        (
            measure(3, EV_EVENT_TAG, b"kernel cmdline", (ALG_SHA256, ALG_SHA384)),
            measure(4, EV_EVENT_TAG, b"app", (ALG_SHA256, ALG_SHA384)),
        ),
    )
    assert replay(tagged_log) == replay(raw_log)
    decoded = decode_event_log(encode_event_log(tagged_log))
    assert decoded.events == tagged_log.events
    assert [decode_tagged_event(e.data).event_id for e in decoded.events] == [TDXSIM_MEASURE_EVENT_ID, 0x1234]

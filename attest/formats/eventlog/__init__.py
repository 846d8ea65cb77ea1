"""CC event log (CCEL, TCG crypto-agile format) codec and RTMR replay (docs/attestation.md §12)."""

from attest.formats.eventlog.ccel import (
    ALG_SHA256,
    ALG_SHA384,
    CcelTable,
    Event,
    EventLog,
    EventLogError,
    SpecIdEvent,
    decode_ccel_table,
    decode_event_log,
    encode_event_log,
    measure,
)
from attest.formats.eventlog.replay import ReplayResult, compare_rtmrs, extend, replay

__all__ = [
    "ALG_SHA256",
    "ALG_SHA384",
    "CcelTable",
    "Event",
    "EventLog",
    "EventLogError",
    "ReplayResult",
    "SpecIdEvent",
    "compare_rtmrs",
    "decode_ccel_table",
    "decode_event_log",
    "encode_event_log",
    "extend",
    "measure",
    "replay",
]

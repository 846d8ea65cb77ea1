"""CC event log (CCEL, TCG crypto-agile format) codec and RTMR replay (docs/attestation.md §12)."""

from attest.formats.eventlog.ccel import (
    ALG_SHA256,
    ALG_SHA384,
    CcelTable,
    Event,
    EventLog,
    EventLogError,
    SpecIdEvent,
    TaggedEvent,
    decode_ccel_table,
    decode_event_log,
    decode_tagged_event,
    encode_event_log,
    measure,
    tagged_event,
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
    "TaggedEvent",
    "compare_rtmrs",
    "decode_ccel_table",
    "decode_event_log",
    "decode_tagged_event",
    "encode_event_log",
    "extend",
    "measure",
    "replay",
    "tagged_event",
]

"""Replay of a CC event log into RTMR0..3 and comparison with a quote (docs/attestation.md §12).

Rule: every RTMR starts as 48 zero bytes; for each event in log order whose CCMR index k is 1..4 and whose
type is not EV_NO_ACTION (informational, never extended, TCG PC Client PFP),
``RTMR[k-1] = SHA-384(RTMR[k-1] || event SHA-384 digest)``. CCMR 0 (MRTD) entries are skipped: MRTD is
built by TDH.MEM.PAGE.ADD/EXTEND, not by extends. An event without a SHA-384 digest or with a CCMR index
above 4 makes the log unusable.

Comparison (``compare_rtmrs``): RTMR0..2 are always compared; RTMR3 only when the log has an RTMR3 event,
because runtime extends (usually RTMR3) have no CCEL entry (trustee#1056); an uncompared RTMR3 is reported in
``ReplayResult.unchecked`` so the token can say so, and a policy can still pin it with a reference value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from attest.formats.eventlog.ccel import ALG_SHA384, CCMR_MRTD, EV_NO_ACTION, EventLog, EventLogError

RTMR_COUNT = 4
RTMR_SIZE = 48
ALWAYS_COMPARED = (0, 1, 2)


def extend(register: bytes, digest: bytes) -> bytes:
    """One RTMR extend: SHA-384(register || digest)."""
    return hashlib.sha384(register + digest).digest()


def replay(log: EventLog) -> tuple[bytes, bytes, bytes, bytes]:
    """RTMR0..3 as the log's events would have built them from zero."""
    rtmrs = [bytes(RTMR_SIZE)] * RTMR_COUNT
    for n, ev in enumerate(log.events):
        if ev.event_type == EV_NO_ACTION or ev.mr_index == CCMR_MRTD:
            continue
        if not 1 <= ev.mr_index <= RTMR_COUNT:
            raise EventLogError(f"event {n} names ccmr {ev.mr_index} (valid: 0..{RTMR_COUNT})")
        digest = ev.digest(ALG_SHA384)
        if digest is None:
            raise EventLogError(f"event {n} has no sha-384 digest")
        rtmrs[ev.mr_index - 1] = extend(rtmrs[ev.mr_index - 1], digest)
    return rtmrs[0], rtmrs[1], rtmrs[2], rtmrs[3]


@dataclass(frozen=True)
class ReplayResult:
    """``replayed`` RTMRs; ``mismatched`` / ``unchecked`` RTMR indexes (sorted)."""

    replayed: tuple[bytes, bytes, bytes, bytes]
    mismatched: tuple[int, ...]
    unchecked: tuple[int, ...]

    @property
    def ok(self) -> bool:
        return not self.mismatched


def compare_rtmrs(log: EventLog, quoted: Sequence[bytes]) -> ReplayResult:
    """Replay ``log`` and compare with the quote's RTMR0..3 under the rule of this module's docstring."""
    replayed = replay(log)
    compared = list(ALWAYS_COMPARED)
    if any(ev.mr_index == 4 and ev.event_type != EV_NO_ACTION for ev in log.events):
        compared.append(3)
    mismatched = tuple(i for i in compared if replayed[i] != quoted[i])
    unchecked = tuple(i for i in range(RTMR_COUNT) if i not in compared)
    return ReplayResult(replayed, mismatched, unchecked)

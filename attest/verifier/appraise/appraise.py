"""Appraisal of a *verified* quote against a policy: every mismatch (docs/attestation.md §7 step 14, §10).

go-tdx-guest ``validate`` style: this module does not check signatures or collateral
(``attest.verifier.dcap`` did);
it compares fields with expected values and reports all mismatches at once, in a fixed order (freshness,
DEBUG, TCB, reference values, event log), so the first one is the most important and becomes the
``ErrorInfo.reason`` of the refusal. ``require_ok`` raises ``AppraisalRefused`` (PERMISSION_DENIED,
docs/conventions.md §7), or its subclass ``StaleEvidence`` when the first mismatch is NONCE_REPLAYED or
NONCE_EXPIRED (FAILED_PRECONDITION: the client must fetch a fresh nonce and attest again).

Reasons (stable strings clients branch on): NONCE_REQUIRED, NONCE_REPLAYED, NONCE_EXPIRED,
REPORT_DATA_MISMATCH, DEBUG_TD, TCB_STATUS_NOT_ACCEPTED, ADVISORY_REJECTED, TEE_TCB_SVN_TOO_LOW,
MRTD_MISMATCH, RTMR0_MISMATCH … RTMR3_MISMATCH, MRCONFIGID_MISMATCH, MROWNER_MISMATCH, MROWNERCONFIG_MISMATCH,
MRSEAM_MISMATCH, XFAM_MISMATCH, TD_ATTRIBUTES_MISMATCH, EVENT_LOG_REQUIRED, RTMR0_EVENT_LOG_MISMATCH …
RTMR3_EVENT_LOG_MISMATCH.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from attest.formats.eventlog.replay import ReplayResult
from attest.formats.quote import TdReport10
from attest.verifier.appraise.options import AppraisalOptions

FIELD_REASONS: dict[str, str] = {
    "mr_td": "MRTD_MISMATCH",
    "rtmr0": "RTMR0_MISMATCH",
    "rtmr1": "RTMR1_MISMATCH",
    "rtmr2": "RTMR2_MISMATCH",
    "rtmr3": "RTMR3_MISMATCH",
    "mr_config_id": "MRCONFIGID_MISMATCH",
    "mr_owner": "MROWNER_MISMATCH",
    "mr_owner_config": "MROWNERCONFIG_MISMATCH",
    "mr_seam": "MRSEAM_MISMATCH",
    "xfam": "XFAM_MISMATCH",
    "td_attributes": "TD_ATTRIBUTES_MISMATCH",
}


class Freshness(enum.Enum):
    """What the verifier found about the nonce presented with the quote (unknown nonces never get here)."""

    FRESH = "fresh"  # issued by this verifier, unused and unexpired; now consumed
    ABSENT = "absent"  # no nonce presented
    REPLAYED = "replayed"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Mismatch:
    reason: str
    message: str


@dataclass(frozen=True)
class Evidence:
    """What appraisal looks at: the TD report body and the verifier's TCB verdict for it."""

    body: TdReport10
    tcb_status: str
    advisory_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Appraisal:
    mismatches: tuple[Mismatch, ...]
    checked_fields: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.mismatches

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(m.reason for m in self.mismatches)


STALE_REASONS: frozenset[str] = frozenset({"NONCE_REPLAYED", "NONCE_EXPIRED"})
"""Freshness refusals: the evidence may be fine, but only a new nonce (and quote) can succeed."""


class AppraisalRefused(Exception):
    """Raised by ``require_ok``: the policy refuses the quote; ``reason`` is the first mismatch's."""

    def __init__(self, appraisal: Appraisal, policy_name: str) -> None:
        first = appraisal.mismatches[0]
        super().__init__("; ".join(f"{m.reason}: {m.message}" for m in appraisal.mismatches))
        self.appraisal = appraisal
        self.policy_name = policy_name
        self.reason = first.reason


class StaleEvidence(AppraisalRefused):
    """Raised by ``require_ok`` when the first mismatch is a freshness one (``STALE_REASONS``)."""


def _freshness(
    freshness: Freshness, report_data_bound: bool | None, options: AppraisalOptions
) -> list[Mismatch]:
    out: list[Mismatch] = []
    if freshness is Freshness.ABSENT and options.require_nonce:
        out.append(Mismatch("NONCE_REQUIRED", "the policy requires a verifier nonce"))
    elif freshness is Freshness.REPLAYED:
        out.append(Mismatch("NONCE_REPLAYED", "the nonce was already used"))
    elif freshness is Freshness.EXPIRED:
        out.append(Mismatch("NONCE_EXPIRED", "the nonce expired before the quote was presented"))
    if report_data_bound is False:
        out.append(Mismatch("REPORT_DATA_MISMATCH", "REPORTDATA does not bind the nonce and public key"))
    return out


def _tcb(evidence: Evidence, options: AppraisalOptions) -> list[Mismatch]:
    out: list[Mismatch] = []
    if evidence.tcb_status not in options.accepted_tcb_statuses:
        accepted = ", ".join(sorted(options.accepted_tcb_statuses))
        out.append(
            Mismatch("TCB_STATUS_NOT_ACCEPTED", f"tcb status {evidence.tcb_status} not in [{accepted}]")
        )
    rejected = sorted(set(evidence.advisory_ids) & options.rejected_advisory_ids)
    if rejected:
        out.append(Mismatch("ADVISORY_REJECTED", f"advisories {', '.join(rejected)} are rejected"))
    minimum = options.min_tee_tcb_svn
    if minimum is not None:
        low = [
            i
            for i, (have, need) in enumerate(zip(evidence.body.tee_tcb_svn, minimum, strict=True))
            if have < need
        ]
        if low:
            out.append(
                Mismatch(
                    "TEE_TCB_SVN_TOO_LOW",
                    f"tee_tcb_svn {evidence.body.tee_tcb_svn.hex()} below {minimum.hex()} at {low}",
                )
            )
    return out


def _reference_values(body: TdReport10, options: AppraisalOptions) -> list[Mismatch]:
    out: list[Mismatch] = []
    rv = options.reference_values
    for name, reason in FIELD_REASONS.items():
        accepted: frozenset[bytes] | None = getattr(rv, name)
        if accepted is not None and getattr(body, name) not in accepted:
            out.append(Mismatch(reason, f"{name} {getattr(body, name).hex()} is not a reference value"))
    return out


def _event_log(replay: ReplayResult | None, options: AppraisalOptions) -> list[Mismatch]:
    if replay is None:
        return (
            [Mismatch("EVENT_LOG_REQUIRED", "the policy requires a cc event log")]
            if options.require_event_log
            else []
        )
    return [
        Mismatch(f"RTMR{i}_EVENT_LOG_MISMATCH", f"replaying the event log does not give the quote's rtmr{i}")
        for i in replay.mismatched
    ]


def appraise(
    evidence: Evidence,
    options: AppraisalOptions,
    *,
    freshness: Freshness = Freshness.ABSENT,
    report_data_bound: bool | None = None,
    replay: ReplayResult | None = None,
) -> Appraisal:
    """Every mismatch of ``evidence`` against ``options``, in the module's order.

    ``report_data_bound``: None when no binding was expected (no nonce), else whether REPORTDATA equals the
    ``attest.formats.binding`` value. ``replay``: the event-log comparison, None when no log was presented.
    """
    mismatches = _freshness(freshness, report_data_bound, options)
    if evidence.body.is_debug and not options.allow_debug:
        mismatches.append(
            Mismatch("DEBUG_TD", "the td has the DEBUG attribute and the policy refuses debug tds")
        )
    mismatches += _tcb(evidence, options)
    mismatches += _reference_values(evidence.body, options)
    mismatches += _event_log(replay, options)
    return Appraisal(tuple(mismatches), options.reference_values.checked())


def require_ok(appraisal: Appraisal, policy_name: str) -> Appraisal:
    """``appraisal`` if it has no mismatch; else raise ``StaleEvidence`` or ``AppraisalRefused``."""
    if appraisal.ok:
        return appraisal
    if appraisal.mismatches[0].reason in STALE_REASONS:
        raise StaleEvidence(appraisal, policy_name)
    raise AppraisalRefused(appraisal, policy_name)


def mismatch_reasons(mismatches: Sequence[Mismatch]) -> str:
    return ",".join(m.reason for m in mismatches)

"""Appraisal of verified quotes against JSON policies (docs/attestation.md §10, go-tdx-guest style)."""

from attest.verifier.appraise.appraise import (
    Appraisal,
    AppraisalRefused,
    Evidence,
    Freshness,
    Mismatch,
    StaleEvidence,
    appraise,
    require_ok,
)
from attest.verifier.appraise.options import (
    DEFAULT_POLICY_NAME,
    AppraisalOptions,
    Policy,
    PolicyError,
    PolicyTooLarge,
    ReferenceValues,
    check_reference_value_bytes,
    default_policy,
    parse_reference_values,
    policy_from_json,
    policy_to_json,
)

__all__ = [
    "DEFAULT_POLICY_NAME",
    "Appraisal",
    "AppraisalOptions",
    "AppraisalRefused",
    "Evidence",
    "Freshness",
    "Mismatch",
    "Policy",
    "PolicyError",
    "PolicyTooLarge",
    "ReferenceValues",
    "StaleEvidence",
    "appraise",
    "check_reference_value_bytes",
    "default_policy",
    "parse_reference_values",
    "policy_from_json",
    "policy_to_json",
    "require_ok",
]

"""EAR-style attestation result claims (docs/attestation.md §13; draft-ietf-rats-ear, Veraison EAR).

A token issued by the verifier carries::

    {
      "eat_profile": "tag:github.com,2023:veraison/ear",
      "iss": "<verifier issuer>", "iat": <int>, "nbf": <int>, "exp": <int>, "jti": "<random hex>",
      "eat_nonce": "<base64url of the 32-byte nonce>",            # only when a nonce was used
      "aud": "<audience>",                                          # only when the requester named one
      "ear.verifier-id": {"developer": "tdxsim", "build": "tdxsim-verifier <version>"},
      "submods": {"cpu0": {
        "ear.status": "affirming" | "warning",
        "ear.trustworthiness-vector": {"instance-identity": 2, "configuration": 2|32,
                                       "executables": 0|2, "hardware": 2|32},
        "ear.appraisal-policy-id": "policy:<name>",
        "ear.veraison.key-attestation": {"akpub": "<base64url SPKI DER of the TD's ephemeral key>"},
        "ear.veraison.annotated-evidence": {"tdx": {
            "tcb_status": "UpToDate", "advisory_ids": [...], "debug": false, "fmspc": "B0C06F000000",
            "tee_tcb_svn", "mr_seam", "mr_signer_seam", "td_attributes", "xfam", "mr_td", "mr_config_id",
            "mr_owner", "mr_owner_config", "rtmr0".."rtmr3", "report_data": lowercase hex,
            "event_log": "verified" | "absent", "rtmr_unchecked_by_event_log": [3]}}}}
    }

Trustworthiness values follow AR4SI tiers (none 0, affirming 2, warning 32, contraindicated 96):
``instance-identity`` 2 (the quote chains to a trust anchor); ``hardware`` 2 for UpToDate, 32 for any other
accepted TCB status; ``configuration`` 2, or 32 for a DEBUG TD the policy allowed; ``executables`` 2 when MRTD
or an RTMR was compared with a reference value or an event log, else 0 (no claim). ``ear.status`` is the worst
tier in the vector, ignoring entries of value 0, so a token is never better than its weakest checked claim.
Refusals never produce a token: they are errors (docs/conventions.md §7).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from attest.verifier.token.jwt import b64url

EAT_PROFILE = "tag:github.com,2023:veraison/ear"
SUBMOD = "cpu0"
ANNOTATED = "ear.veraison.annotated-evidence"
KEY_ATTESTATION = "ear.veraison.key-attestation"
AFFIRMING, WARNING = 2, 32
STATUS_BY_TIER = ((96, "contraindicated"), (32, "warning"), (2, "affirming"))


def ear_status(vector: Mapping[str, int]) -> str:
    """The worst AR4SI tier among the vector's non-zero claims ("none" if every entry is 0)."""
    worst = max((v for v in vector.values() if v not in (-1, 0, 1)), default=0)
    return next((name for floor, name in STATUS_BY_TIER if worst >= floor), "none")


def build_claims(
    *,
    issuer: str,
    build: str,
    now: int,
    ttl: int,
    policy_name: str,
    tdx: Mapping[str, Any],
    vector: Mapping[str, int],
    nonce: bytes | None,
    tee_public_key_spki: bytes | None,
    audience: str | None = None,
) -> dict[str, Any]:
    """The claims set of the module docstring."""
    submod: dict[str, Any] = {
        "ear.status": ear_status(vector),
        "ear.trustworthiness-vector": dict(vector),
        "ear.appraisal-policy-id": f"policy:{policy_name}",
        ANNOTATED: {"tdx": dict(tdx)},
    }
    if tee_public_key_spki is not None:
        submod[KEY_ATTESTATION] = {"akpub": b64url(tee_public_key_spki)}
    claims: dict[str, Any] = {
        "eat_profile": EAT_PROFILE,
        "iss": issuer,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": secrets.token_hex(16),
        "ear.verifier-id": {"developer": "tdxsim", "build": build},
        "submods": {SUBMOD: submod},
    }
    if nonce is not None:
        claims["eat_nonce"] = b64url(nonce)
    if audience is not None:
        claims["aud"] = audience
    return claims


def appraisal_of(claims: Mapping[str, Any]) -> dict[str, Any]:
    """The ``cpu0`` appraisal of a verified token's claims ({} when absent)."""
    submods = claims.get("submods")
    if not isinstance(submods, dict):
        return {}
    sub = submods.get(SUBMOD)
    return sub if isinstance(sub, dict) else {}


def tdx_claims(claims: Mapping[str, Any]) -> dict[str, Any]:
    """The TDX measurements and TCB claims of a token (``submods.cpu0[annotated-evidence].tdx``)."""
    annotated = appraisal_of(claims).get(ANNOTATED)
    tdx = annotated.get("tdx") if isinstance(annotated, dict) else None
    return tdx if isinstance(tdx, dict) else {}

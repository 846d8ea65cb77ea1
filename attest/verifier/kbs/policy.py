"""Resource policies of the key broker: which verified tokens may receive a resource.

A resource policy is a JSON object (every member optional; unknown members refused)::

    {
      "version": 1,
      "ear_statuses": ["affirming"],        # token's cpu0 ear.status must be one of these (default affirming)
      "attestation_policies": ["default"],  # token's ear.appraisal-policy-id "policy:<name>"; absent = any
      "claims": {                           # any-of per claim of the token's tdx annotated evidence
        "mr_td": ["<hex>", …], "rtmr1": […], "tcb_status": ["UpToDate"], "debug": [false], "fmspc": […]
      }
    }

Hex claim values compare case-insensitively; booleans and numbers compare exactly. A claim the token lacks
never matches. Every release also requires the token to carry a key attestation (the TD's ephemeral key):
the secret is only ever sent sealed to it (``attest.formats.sealed_secret``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from attest.jsonutil import loads_json
from attest.verifier.token.ear import appraisal_of, tdx_claims

POLICY_KEYS = frozenset({"version", "ear_statuses", "attestation_policies", "claims"})
EAR_STATUSES = frozenset({"affirming", "warning", "contraindicated", "none"})


class ResourcePolicyError(ValueError):
    reason = "RESOURCE_POLICY_INVALID"


@dataclass(frozen=True)
class ResourcePolicy:
    ear_statuses: frozenset[str] = frozenset({"affirming"})
    attestation_policies: frozenset[str] | None = None  # None = any appraisal policy
    claims: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def denials(self, token_claims: Mapping[str, Any]) -> list[str]:
        """Why ``token_claims`` may not receive the resource; empty when allowed."""
        out: list[str] = []
        appraisal = appraisal_of(token_claims)
        status = appraisal.get("ear.status")
        if status not in self.ear_statuses:
            out.append(f"ear.status {status!r} not in {sorted(self.ear_statuses)}")
        if self.attestation_policies is not None:
            policy_id = str(appraisal.get("ear.appraisal-policy-id", ""))
            if policy_id.removeprefix("policy:") not in self.attestation_policies:
                out.append(f"appraisal policy {policy_id!r} not accepted")
        tdx = tdx_claims(token_claims)
        for name, accepted in self.claims:
            if name not in tdx or not any(_equal(tdx[name], want) for want in accepted):
                out.append(f"claim {name} does not match")
        return out


def _equal(have: Any, want: Any) -> bool:
    if isinstance(have, str) and isinstance(want, str):
        return have.lower() == want.lower()
    return type(have) is type(want) and bool(have == want)


def parse_resource_policy(text: str) -> ResourcePolicy:
    doc = loads_json(text, "resource policy", ResourcePolicyError) if text.strip() else {}
    if not isinstance(doc, dict):
        raise ResourcePolicyError("resource policy must be a json object")
    unknown = sorted(set(doc) - POLICY_KEYS)
    if unknown:
        raise ResourcePolicyError(f"unknown resource policy member {unknown[0]!r}")
    if doc.get("version", 1) != 1:
        raise ResourcePolicyError("resource policy version must be 1")
    statuses = doc.get("ear_statuses", ["affirming"])
    if not isinstance(statuses, list) or not statuses or not set(statuses) <= EAR_STATUSES:
        raise ResourcePolicyError(f"ear_statuses must be a non-empty subset of {sorted(EAR_STATUSES)}")
    policies = doc.get("attestation_policies")
    if policies is not None and (
        not isinstance(policies, list) or not all(isinstance(p, str) for p in policies)
    ):
        raise ResourcePolicyError("attestation_policies must be a list of policy names")
    claims = doc.get("claims", {})
    if not isinstance(claims, dict):
        raise ResourcePolicyError("claims must be an object")
    parsed: list[tuple[str, tuple[Any, ...]]] = []
    for name, values in sorted(claims.items()):
        if not isinstance(values, list) or not values:
            raise ResourcePolicyError(f"claims.{name} must be a non-empty list")
        if not all(isinstance(v, str | bool | int) for v in values):
            raise ResourcePolicyError(f"claims.{name} values must be strings, booleans or integers")
        parsed.append((name, tuple(values)))
    return ResourcePolicy(
        frozenset(statuses), None if policies is None else frozenset(policies), tuple(parsed)
    )

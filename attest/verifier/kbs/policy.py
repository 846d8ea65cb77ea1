"""Resource policies of the key broker: which verified tokens may receive a resource (docs/attestation.md §13,
docs/grpc.md "VerifierService" ``PutResource``).

A resource policy is a JSON object (every member optional; unknown members refused)::

    {
      "version": 1,
      "ear_statuses": ["affirming"],        # token's cpu0 ear.status must be one of these (default affirming)
      "attestation_policies": ["default"],  # token's ear.appraisal-policy-id "policy:<name>"; absent = any
      "claims": {                           # any-of per claim of the token's tdx annotated evidence
        "mr_td": ["<hex>", …], "rtmr1": […], "tcb_status": ["UpToDate"], "debug": [false], "fmspc": […]
      }
    }

Every member and value is checked by ``RESOURCE_POLICY_SCHEMA`` (``attest.schema``) when the resource is
stored: at most 64 KiB of UTF-8 (``RESOURCE_TOO_LARGE``); ``ear_statuses`` a non-empty subset of the four
EAR statuses; ``attestation_policies`` up to 256 policy names; ``claims`` only the token's scalar TDX claims
(``CLAIM_VALUES``: the TD report fields as hex of their exact size, ``tcb_status``, ``debug``, ``fmspc``,
``quote_version``, ``event_log``), each a non-empty list of at most 1024 values of that claim's type.

Hex claim values compare case-insensitively; booleans and numbers compare exactly. A claim the token lacks
never matches. Every release also requires the token to carry a key attestation (the TD's ephemeral key):
the secret is only ever sent as a JWE to it (``attest.formats.secret_jwe``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from attest import schema
from attest.formats import layout as L
from attest.formats.collateral import TCB_STATUSES
from attest.verifier.token.ear import appraisal_of, tdx_claims

EAR_STATUSES = frozenset({"affirming", "warning", "contraindicated", "none"})
MAX_RESOURCE_POLICY_SIZE = 64 << 10  # bytes of resource-policy JSON (docs/conventions.md §6)
MAX_POLICY_NAMES = 256
MAX_CLAIM_VALUES = 1024
#: The scalar TDX claims of a token (``attest.verifier.service.core``) a resource policy may require, and
#: the schema of each accepted value.
CLAIM_VALUES: dict[str, schema.Schema] = {
    **{name: schema.Hex(size) for name, size in L.TD_REPORT15_FIELDS},
    "tcb_status": schema.Str(choices=frozenset(TCB_STATUSES)),
    "debug": schema.Bool(),
    "fmspc": schema.Hex(6),
    "quote_version": schema.Int(4, 5),
    "event_log": schema.Str(choices=frozenset({"verified", "absent"})),
}
RESOURCE_POLICY_SCHEMA = schema.Object(
    {
        "version": schema.Const(1),
        "ear_statuses": schema.Array(schema.Str(choices=EAR_STATUSES), len(EAR_STATUSES), min_items=1),
        "attestation_policies": schema.Array(schema.Str(128, schema.NAME), MAX_POLICY_NAMES),
        "claims": schema.Object(
            {name: schema.Array(value, MAX_CLAIM_VALUES, min_items=1) for name, value in CLAIM_VALUES.items()}
        ),
    }
)


class ResourcePolicyError(ValueError):
    reason = "RESOURCE_POLICY_INVALID"


class ResourcePolicyTooLarge(ResourcePolicyError, schema.TooLarge):
    """A resource policy over ``MAX_RESOURCE_POLICY_SIZE`` bytes (docs/conventions.md §6, §7)."""

    reason = "RESOURCE_TOO_LARGE"


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
    """Check a resource policy against ``RESOURCE_POLICY_SCHEMA`` (at most 64 KiB, every member known and
    of its type) and build it; any problem is a ``ResourcePolicyError``."""
    doc = schema.load(
        text,
        "resource policy",
        RESOURCE_POLICY_SCHEMA,
        ResourcePolicyError,
        max_size=MAX_RESOURCE_POLICY_SIZE,
        too_large=ResourcePolicyTooLarge,
    )
    policies = doc.get("attestation_policies")
    claims = tuple((name, tuple(values)) for name, values in sorted(doc.get("claims", {}).items()))
    return ResourcePolicy(
        frozenset(doc.get("ear_statuses", ["affirming"])),
        None if policies is None else frozenset(policies),
        claims,
    )

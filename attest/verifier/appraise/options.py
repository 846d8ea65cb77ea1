"""Appraisal options and the JSON policy documents they come from (docs/attestation.md §10; options as in
docs/architecture.md, "Design rules").

Options are frozen dataclasses in the go-tdx-guest ``validate.Options`` manner: every field documents its
default, and ``None`` means "not checked". ``policy_from_json`` range- and length-checks a policy before any
quote is seen, so a bad policy is refused at ``SetPolicy`` (INVALID_ARGUMENT, reason ``POLICY_INVALID``).

Policy document schema (JSON object; every member optional; unknown members are refused)::

    {
      "version": 1,                              # schema version; only 1 exists
      "allow_debug": false,                      # DEBUG TDs (TDATTRIBUTES bit 0) refused unless true
      "accepted_tcb_statuses": ["UpToDate"],     # Intel status strings; "Revoked" is never acceptable
      "rejected_advisory_ids": ["INTEL-SA-…"],   # refuse when the verified quote carries one of these
      "min_tee_tcb_svn": "<32 hex>",             # 16 bytes, compared component-wise (each byte >=)
      "require_nonce": true,                     # refuse quotes presented without a verifier nonce
      "require_event_log": false,                # refuse when no CC event log is presented
      "token_ttl_seconds": 300,                  # lifetime of the issued token (1..86400; server default 300)
      "reference_values": {                      # any-of lists of lowercase/uppercase hex per field
        "mr_td": ["<96 hex>", …], "rtmr0": […], "rtmr1": […], "rtmr2": […], "rtmr3": […],
        "mr_config_id": […], "mr_owner": […], "mr_owner_config": […], "mr_seam": […],
        "xfam": ["<16 hex>"], "td_attributes": ["<16 hex>"]
      },
      "reference_value_sets": ["prod-image"]     # names stored with SetReferenceValues, merged in
    }

The document is checked by ``POLICY_SCHEMA`` (``attest.schema``) before any of it is used: at most
``MAX_POLICY_SIZE`` (64 KiB) of UTF-8 text (else ``POLICY_TOO_LARGE``), every member of its type and range
(``version`` the integer 1; statuses from Intel's list; advisory IDs 1..64 characters of ``[A-Za-z0-9._-]``;
hex of exactly the field's size; set names as policy names), at most 256 statuses or advisory IDs, 1024
values per reference field and 16 reference-value sets. Policy and set names are 1..128 ASCII characters of
``[A-Za-z0-9._-]``.

A field is checked when the policy or any named reference-value set gives at least one value for it; the
accepted values are the union of all of them. A named set that does not exist at ``Attest`` time is an error
(NOT_FOUND, reason ``REFERENCE_VALUES_NOT_FOUND``): a policy never silently checks less than it says.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from attest import schema
from attest.formats import layout as L
from attest.formats.collateral import TCB_STATUSES

POLICY_VERSION = 1
DEFAULT_POLICY_NAME = "default"
INTEL_TCB_STATUSES = frozenset(TCB_STATUSES) - {"Revoked"}
NEVER_ACCEPTED = frozenset({"Revoked"})
MAX_TOKEN_TTL = 86400
REFERENCE_FIELDS: tuple[str, ...] = (
    "mr_td",
    "rtmr0",
    "rtmr1",
    "rtmr2",
    "rtmr3",
    "mr_config_id",
    "mr_owner",
    "mr_owner_config",
    "mr_seam",
    "xfam",
    "td_attributes",
)
MAX_VALUES_PER_FIELD = 1024
MAX_POLICY_SIZE = 64 << 10  # bytes of policy JSON (docs/conventions.md §6)
MAX_LIST = 256  # accepted statuses, rejected advisory IDs
MAX_REFERENCE_VALUE_SETS = 16
ADVISORY_ID = re.compile(r"[A-Za-z0-9._-]+")  # "INTEL-SA-00837"


class PolicyError(ValueError):
    """A policy or reference-value document that does not follow the schema."""

    reason = "POLICY_INVALID"


@dataclass(frozen=True)
class ReferenceValues:
    """Accepted values per TD report field (any-of). Each ``None`` (the default) = not checked."""

    mr_td: frozenset[bytes] | None = None
    rtmr0: frozenset[bytes] | None = None
    rtmr1: frozenset[bytes] | None = None
    rtmr2: frozenset[bytes] | None = None
    rtmr3: frozenset[bytes] | None = None
    mr_config_id: frozenset[bytes] | None = None
    mr_owner: frozenset[bytes] | None = None
    mr_owner_config: frozenset[bytes] | None = None
    mr_seam: frozenset[bytes] | None = None
    xfam: frozenset[bytes] | None = None
    td_attributes: frozenset[bytes] | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            values = getattr(self, f.name)
            if values is None:
                continue
            size = L.FIELD_SIZES[f.name]
            if not values or any(len(v) != size for v in values):
                raise PolicyError(f"reference values for {f.name} must be non-empty {size}-byte values")

    def merged(self, extra: Mapping[str, Sequence[bytes]]) -> ReferenceValues:
        """These values united with ``extra`` (field -> values), e.g. a stored reference-value set."""
        changes: dict[str, frozenset[bytes]] = {}
        for name, values in extra.items():
            if name not in REFERENCE_FIELDS:
                raise PolicyError(f"unknown reference value field {name!r}")
            if not values:
                continue
            current: frozenset[bytes] | None = getattr(self, name)
            changes[name] = (current or frozenset()) | frozenset(values)
        return replace(self, **changes)

    def checked(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self) if getattr(self, f.name) is not None)


@dataclass(frozen=True)
class AppraisalOptions:
    """What appraisal enforces on a verified quote. Defaults are the safe ones."""

    reference_values: ReferenceValues = field(default_factory=ReferenceValues)
    allow_debug: bool = False  # default: DEBUG TDs refused
    accepted_tcb_statuses: frozenset[str] = frozenset({"UpToDate"})  # default: UpToDate only
    rejected_advisory_ids: frozenset[str] = frozenset()  # default: none rejected by id
    min_tee_tcb_svn: bytes | None = None  # 16 bytes component-wise; None = not checked
    require_nonce: bool = True  # default: freshness required
    require_event_log: bool = False  # default: a log is replayed when given, not required
    token_ttl_seconds: int | None = None  # None = the server's default

    def __post_init__(self) -> None:
        bad = self.accepted_tcb_statuses - INTEL_TCB_STATUSES
        if bad & NEVER_ACCEPTED:
            raise PolicyError("Revoked is never an acceptable tcb status")
        if bad:
            raise PolicyError(f"unknown tcb status {sorted(bad)[0]!r}")
        if not self.accepted_tcb_statuses:
            raise PolicyError("accepted_tcb_statuses must not be empty")
        if self.min_tee_tcb_svn is not None and len(self.min_tee_tcb_svn) != 16:
            raise PolicyError("min_tee_tcb_svn must be 16 bytes")
        if self.token_ttl_seconds is not None and not 1 <= self.token_ttl_seconds <= MAX_TOKEN_TTL:
            raise PolicyError(f"token_ttl_seconds must be 1..{MAX_TOKEN_TTL}")


@dataclass(frozen=True)
class Policy:
    """A named policy: its options plus the names of reference-value sets to merge at appraisal time."""

    name: str
    options: AppraisalOptions
    reference_value_sets: tuple[str, ...] = ()

    def resolve(self, sets: Mapping[str, Mapping[str, Sequence[bytes]]]) -> AppraisalOptions:
        """Options with every named set merged in; ``sets`` must hold each name (caller checked)."""
        values = self.options.reference_values
        for name in self.reference_value_sets:
            values = values.merged(sets[name])
        return replace(self.options, reference_values=values)


REFERENCE_VALUES_SCHEMA = schema.Object(
    {name: schema.Array(schema.Hex(L.FIELD_SIZES[name]), MAX_VALUES_PER_FIELD) for name in REFERENCE_FIELDS}
)
POLICY_SCHEMA = schema.Object(
    {
        "version": schema.Const(POLICY_VERSION),
        "allow_debug": schema.Bool(),
        "accepted_tcb_statuses": schema.Array(
            schema.Str(choices=frozenset(TCB_STATUSES)), MAX_LIST, min_items=1
        ),
        "rejected_advisory_ids": schema.Array(schema.Str(64, ADVISORY_ID), MAX_LIST),
        "min_tee_tcb_svn": schema.Hex(16),
        "require_nonce": schema.Bool(),
        "require_event_log": schema.Bool(),
        "token_ttl_seconds": schema.Int(1, MAX_TOKEN_TTL),
        "reference_values": REFERENCE_VALUES_SCHEMA,
        "reference_value_sets": schema.Array(schema.Str(128, schema.NAME), MAX_REFERENCE_VALUE_SETS),
    }
)


class PolicyTooLarge(PolicyError, schema.TooLarge):
    """A policy document over ``MAX_POLICY_SIZE`` bytes (RESOURCE_EXHAUSTED, docs/conventions.md §6, §7)."""

    reason = "POLICY_TOO_LARGE"


def check_name(name: str, error: type[ValueError] = PolicyError, what: str = "policy name") -> str:
    """A policy or reference-value set name: 1..128 characters of ``[A-Za-z0-9._-]`` (ASCII only)."""
    if not isinstance(name, str) or not schema.NAME.fullmatch(name):
        raise error(f"{what} must be 1..128 characters of [A-Za-z0-9._-]")
    return name


def parse_reference_values(doc: object, what: str = "reference_values") -> dict[str, list[bytes]]:
    """``{field: [hex, …]}`` -> ``{field: [bytes, …]}``, fields and lengths checked."""
    checked = REFERENCE_VALUES_SCHEMA.check(doc, what, PolicyError)
    return {name: [bytes.fromhex(v) for v in values] for name, values in checked.items()}


def check_reference_value_bytes(values: Mapping[str, Sequence[bytes]]) -> None:
    """Fields and sizes of raw reference values (``SetReferenceValues``)."""
    for name, vals in values.items():
        if name not in REFERENCE_FIELDS:
            raise PolicyError(f"unknown reference value field {name!r}")
        if len(vals) > MAX_VALUES_PER_FIELD:
            raise PolicyError(f"at most {MAX_VALUES_PER_FIELD} values per field")
        for v in vals:
            if len(v) != L.FIELD_SIZES[name]:
                raise PolicyError(f"{name} values must be {L.FIELD_SIZES[name]} bytes, got {len(v)}")


def policy_from_json(name: str, text: str) -> Policy:
    """Parse and check a policy document (schema in the module docstring): at most ``MAX_POLICY_SIZE`` bytes
    (``PolicyTooLarge``), then every member against ``POLICY_SCHEMA`` (``PolicyError``)."""
    check_name(name)
    doc = schema.load(
        text, "policy", POLICY_SCHEMA, PolicyError, max_size=MAX_POLICY_SIZE, too_large=PolicyTooLarge
    )
    ref = parse_reference_values(doc.get("reference_values", {}))
    statuses = doc.get("accepted_tcb_statuses")
    svn = doc.get("min_tee_tcb_svn")
    options = AppraisalOptions(
        reference_values=ReferenceValues().merged(ref),
        allow_debug=doc.get("allow_debug", False),
        accepted_tcb_statuses=frozenset(statuses) if statuses is not None else frozenset({"UpToDate"}),
        rejected_advisory_ids=frozenset(doc.get("rejected_advisory_ids", ())),
        min_tee_tcb_svn=None if svn is None else bytes.fromhex(svn),
        require_nonce=doc.get("require_nonce", True),
        require_event_log=doc.get("require_event_log", False),
        token_ttl_seconds=doc.get("token_ttl_seconds"),
    )
    return Policy(name, options, tuple(doc.get("reference_value_sets", ())))


def default_policy() -> Policy:
    """The built-in ``default`` policy (used until one named ``default`` is stored): every default above."""
    return Policy(DEFAULT_POLICY_NAME, AppraisalOptions())


def policy_to_json(policy: Policy) -> str:
    """Canonical JSON of a policy (sorted keys), what ``GetPolicy`` returns for the built-in default."""
    o = policy.options
    rv = o.reference_values
    doc: dict[str, Any] = {
        "version": POLICY_VERSION,
        "allow_debug": o.allow_debug,
        "accepted_tcb_statuses": sorted(o.accepted_tcb_statuses),
        "rejected_advisory_ids": sorted(o.rejected_advisory_ids),
        "require_nonce": o.require_nonce,
        "require_event_log": o.require_event_log,
        "reference_values": {n: sorted(v.hex() for v in getattr(rv, n)) for n in rv.checked()},
        "reference_value_sets": list(policy.reference_value_sets),
    }
    if o.min_tee_tcb_svn is not None:
        doc["min_tee_tcb_svn"] = o.min_tee_tcb_svn.hex()
    if o.token_ttl_seconds is not None:
        doc["token_ttl_seconds"] = o.token_ttl_seconds
    return json.dumps(doc, sort_keys=True, indent=2)

"""The KBS attestation protocol's payloads for TDX, as trustee and CoCo's attestation agent define them
(docs/kbs.md §2–§3): the runtime data and how it is bound into REPORTDATA, and the TDX evidence.

**Runtime data binding** (``tee: "tdx"``). The agent makes an ephemeral key, exports it as the JWK
``tee-pubkey``, and hashes the *primary runtime data*::

    REPORTDATA = SHA-384( JCS({"additional-evidence": A, "nonce": N, "tee-pubkey": K}) ) || 16 zero bytes

with N the challenge's ``nonce`` string exactly as the KBS sent it, K the ``tee-pubkey`` JWK exactly as the
client sends it in ``runtime-data``, A the ``tee-evidence.additional_evidence`` string (empty when the guest
has no device attesters), JCS the RFC 8785 canonical JSON (members sorted, no whitespace), SHA-384 the hash
trustee's attestation service uses for every TEE but s390x, and the 48-byte digest zero-padded to the 64
bytes of REPORTDATA. trustee's KBS rebuilds the same object from the session's nonce and the attestation
(``kbs/src/attestation/backend.rs``); its TDX verifier pads the digest the same way before comparing.

**TDX evidence** (``tee-evidence.primary_evidence``): ``{"quote": base64(quote), "cc_eventlog":
base64(event log)}``, standard base64 with padding, the event log being what Linux exposes at
``/sys/firmware/acpi/tables/data/CCEL`` (the log area the ACPI CCEL table points at; ``null`` or absent
when the guest has none). Trustee's verifier (``deps/verifier/src/tdx``) reads the same two members.

``canonical_json`` covers what these documents hold (objects, arrays, strings, integers, booleans, null);
a float is refused rather than serialized differently from RFC 8785's ECMAScript number form.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from typing import Any

PROTOCOL_VERSION = "0.4.0"  # the version trustee's KBS and the attestation agent speak (semver, "=" match)
TEE = "tdx"
SESSION_COOKIE = "kbs-session-id"
REPORT_DATA_SIZE = 64
MAX_DEPTH = 32
MAX_SAFE_INTEGER = 2**53 - 1  # RFC 8785 §3.2.2.3: numbers are IEEE 754 doubles
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


class KbsEvidenceError(ValueError):
    """A runtime-data or evidence document that cannot be canonicalized or decoded."""


def _string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            raise KbsEvidenceError("json text holds a lone surrogate")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _canonical(value: Any, depth: int) -> str:
    if depth > MAX_DEPTH:
        raise KbsEvidenceError(f"json nested deeper than {MAX_DEPTH}")
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise KbsEvidenceError("json integer outside the exactly representable range")
        return str(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_canonical(v, depth + 1) for v in value) + "]"
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise KbsEvidenceError("json object keys must be strings")
        keys = sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        return "{" + ",".join(f"{_string(k)}:{_canonical(value[k], depth + 1)}" for k in keys) + "}"
    raise KbsEvidenceError(f"json value of type {type(value).__name__} has no canonical form here")


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) canonical UTF-8 of ``value`` (no floats; see the module docstring)."""
    return _canonical(value, 0).encode("utf-8")


def runtime_data(nonce: str, tee_pubkey: Mapping[str, Any], additional_evidence: str = "") -> dict[str, Any]:
    """The primary runtime data object the TD's REPORTDATA binds."""
    return {"tee-pubkey": dict(tee_pubkey), "nonce": nonce, "additional-evidence": additional_evidence}


def report_data(nonce: str, tee_pubkey: Mapping[str, Any], additional_evidence: str = "") -> bytes:
    """REPORTDATA for ``tee: "tdx"``: SHA-384 of the canonical runtime data, zero-padded to 64 bytes."""
    digest = hashlib.sha384(canonical_json(runtime_data(nonce, tee_pubkey, additional_evidence))).digest()
    return digest.ljust(REPORT_DATA_SIZE, b"\0")


def tdx_evidence(quote: bytes, event_log: bytes | None) -> dict[str, str | None]:
    """``primary_evidence`` for a TD: its quote and CC event log, base64."""
    return {
        "cc_eventlog": base64.b64encode(event_log).decode("ascii") if event_log else None,
        "quote": base64.b64encode(quote).decode("ascii"),
    }


def _b64(text: object, what: str, limit: int) -> bytes:
    if not isinstance(text, str):
        raise KbsEvidenceError(f"{what} must be a base64 string")
    if len(text) > limit * 4 // 3 + 4:
        raise KbsEvidenceError(f"{what} is larger than {limit} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KbsEvidenceError(f"{what} is not base64") from None


def parse_tdx_evidence(evidence: object, max_quote: int, max_event_log: int) -> tuple[bytes, bytes]:
    """``(quote, event log)`` from ``primary_evidence`` (the event log ``b""`` when absent)."""
    if not isinstance(evidence, Mapping):
        raise KbsEvidenceError("tdx evidence must be a json object with quote and cc_eventlog")
    quote = _b64(evidence.get("quote"), "tdx evidence quote", max_quote)
    log = evidence.get("cc_eventlog")
    event_log = b"" if log is None or log == "" else _b64(log, "tdx evidence cc_eventlog", max_event_log)
    return quote, event_log

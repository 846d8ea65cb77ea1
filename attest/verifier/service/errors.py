"""The verifier service's refusals and the table mapping each failure to a status (docs/conventions.md §7).

The service core raises either its own ``ServiceError`` subclasses or the domain exceptions of the packages it
composes; ``status_of`` turns any of them into ``(code name, reason, metadata)`` through ``STATUS_TABLE``
(first matching class wins, so subclasses come first). The servicer builds the gRPC status from that; the
audit log records the same reason. Codes are names of ``grpc.StatusCode`` so this module needs no gRPC import.

Verification failures become INVALID_ARGUMENT with reason ``VERIFY_<STEP>`` (the step of docs/attestation.md
§7 that failed: ``VERIFY_HEADER``, ``VERIFY_COLLATERAL``, ``VERIFY_CRL``, ``VERIFY_PCK_CHAIN``,
``VERIFY_PLATFORM``, ``VERIFY_TDX_MODULE``, ``VERIFY_QE_REPORT_SIGNATURE``, ``VERIFY_QE_REPORT_DATA``,
``VERIFY_QE_IDENTITY``, ``VERIFY_QUOTE_SIGNATURE``, ``VERIFY_TCB_LEVEL``); a Revoked TCB is a refusal
(PERMISSION_DENIED, ``TCB_REVOKED``). An appraisal refusal is PERMISSION_DENIED with the first mismatch as
reason, except a stale one (``StaleEvidence``: NONCE_REPLAYED, NONCE_EXPIRED), which is FAILED_PRECONDITION
like every freshness failure. Nothing caused by input ever maps to INTERNAL.

A document or secret over its documented size (docs/conventions.md §6) is RESOURCE_EXHAUSTED with reason
``POLICY_TOO_LARGE`` or ``RESOURCE_TOO_LARGE`` and metadata ``limit`` and ``size``, like gRPC's own answer to
a message over the channel's limit; a document of the wrong shape is INVALID_ARGUMENT. Every metadata value is
clipped (``clip``), so what a refusal repeats of the caller's input stays small.

The database failing under a running server (``sqlite3.Error``: disk I/O error, read-only or locked file;
``StoreError``: also a PostgreSQL server that cannot be reached or fails a statement, with psycopg's first
line as the message) is UNAVAILABLE with reason ``STORE_UNAVAILABLE``: the one retryable code
(docs/conventions.md §7), and never UNKNOWN, which a client could not tell from a bug. So is a PCCS that gives
no collateral (``PccsUnavailable``: unreachable, timed out, an error status or an unusable answer; reason
``PCCS_UNAVAILABLE``, metadata ``pccs``), while a PCCS that has no collateral for the quote's FMSPC (404,
``CollateralNotFound``) is FAILED_PRECONDITION ``COLLATERAL_NOT_FOUND`` as when no file has it.
``SERVER_FAULTS`` are the codes the servicer also reports on stderr, one line per failure, since the operator
rather than the caller has to act on them.
"""

from __future__ import annotations

import sqlite3
import unicodedata
from collections.abc import Mapping

from attest.errors import AttestError, TcbRevoked
from attest.formats.binding import BindingError
from attest.formats.eventlog import EventLogError
from attest.schema import TooLarge
from attest.verifier.appraise import AppraisalRefused, PolicyError, StaleEvidence
from attest.verifier.dcap.pccs_client import CollateralNotFound, PccsError, PccsUnavailable
from attest.verifier.kbs import ResourcePolicyError
from attest.verifier.store import StoreError
from attest.verifier.token import TokenError


class ServiceError(Exception):
    """A refusal decided by the service itself; subclasses fix the status code."""

    code = "FAILED_PRECONDITION"

    def __init__(self, reason: str, message: str, **metadata: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.metadata = metadata


class BadRequest(ServiceError):
    code = "INVALID_ARGUMENT"


class NotFound(ServiceError):
    code = "NOT_FOUND"


class Refused(ServiceError):
    code = "PERMISSION_DENIED"


class Unauthenticated(ServiceError):
    code = "UNAUTHENTICATED"


class PreconditionFailed(ServiceError):
    code = "FAILED_PRECONDITION"


class OverLimit(ServiceError):
    """A request field over its documented size (``RESOURCE_TOO_LARGE``, metadata ``limit``, ``size``)."""

    code = "RESOURCE_EXHAUSTED"


STATUS_TABLE: tuple[tuple[type[Exception], str], ...] = (
    (StaleEvidence, "FAILED_PRECONDITION"),
    (TcbRevoked, "PERMISSION_DENIED"),
    (AttestError, "INVALID_ARGUMENT"),
    (AppraisalRefused, "PERMISSION_DENIED"),
    (TooLarge, "RESOURCE_EXHAUSTED"),
    (EventLogError, "INVALID_ARGUMENT"),
    (BindingError, "INVALID_ARGUMENT"),
    (PolicyError, "INVALID_ARGUMENT"),
    (ResourcePolicyError, "INVALID_ARGUMENT"),
    (TokenError, "UNAUTHENTICATED"),
    (sqlite3.Error, "UNAVAILABLE"),
    (StoreError, "UNAVAILABLE"),
    (PccsUnavailable, "UNAVAILABLE"),
    (CollateralNotFound, "FAILED_PRECONDITION"),
)
HANDLED: tuple[type[Exception], ...] = (ServiceError, *(cls for cls, _ in STATUS_TABLE))
SERVER_FAULTS = frozenset({"UNAVAILABLE"})
MAX_ECHO = 256  # characters of a caller's string echoed in a message, metadata value or audit subject


def clip(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` cut to ``limit`` characters (with "…" when cut): what a refusal or the audit log repeats of
    a caller's input stays small, whatever the caller sent (gRPC trailers are limited to a few KiB)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def printable(text: str) -> str:
    """``text`` with control and format characters (newlines, terminal escapes, bidirectional overrides) as
    ``\\uXXXX``: what a refusal echoes of a caller's input stays one harmless line wherever it is shown."""
    return "".join(f"\\u{ord(ch):04x}" if unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in text)


def _reason(err: Exception) -> str:
    if isinstance(err, TcbRevoked):
        return "TCB_REVOKED"
    if isinstance(err, AttestError):
        return f"VERIFY_{(err.step or 'header').upper()}"
    if isinstance(err, (sqlite3.Error, StoreError)):
        return "STORE_UNAVAILABLE"
    reason = getattr(err, "reason", None)
    return reason if isinstance(reason, str) else type(err).__name__.upper()


def _metadata(err: Exception) -> dict[str, str]:
    if isinstance(err, (ServiceError, PccsError)):
        return dict(err.metadata)
    if isinstance(err, TcbRevoked):
        return {"step": err.step or "", "advisory_ids": ",".join(err.advisory_ids)}
    if isinstance(err, AttestError):
        return {"step": err.step or "", "error": type(err).__name__}
    if isinstance(err, AppraisalRefused):
        return {"mismatches": ",".join(err.appraisal.reasons), "policy": err.policy_name}
    if isinstance(err, TooLarge):
        return dict(err.metadata)
    return {}


def status_of(err: Exception) -> tuple[str, str, Mapping[str, str]] | None:
    """``(grpc code name, ErrorInfo reason, metadata)`` for a handled failure, ``None`` for a bug; metadata
    values are clipped to ``MAX_ECHO`` characters."""
    if isinstance(err, ServiceError):
        code = err.code
    else:
        code = next((code for cls, code in STATUS_TABLE if isinstance(err, cls)), "")
        if not code:
            return None
    return code, _reason(err), {k: clip(v) for k, v in _metadata(err).items()}

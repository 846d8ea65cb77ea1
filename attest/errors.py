"""Exceptions of the attestation side: a short flat list named for what happened.

Every failure of decoding or DCAP verification (docs/attestation.md §7) raises one of these; nothing returns a
bool and no raw ``IndexError``/``struct.error``/``ValueError`` escapes the public functions. Messages are
short and lower-case, in the manner of dcap-qvl ("tcbinfo expired", "qe report hash mismatch").

``step`` names the verification step that failed (set by ``attest.verifier.dcap``; ``None`` for pure
decoding).
"""

from __future__ import annotations


class AttestError(Exception):
    """Base of every attestation failure; ``str(err)`` is the short reason."""

    def __init__(self, message: str, *, step: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.step = step


class QuoteFormatError(AttestError):
    """The quote bytes are not a well-formed TDX DCAP quote v4/v5 (truncated, overrun length, unknown
    version, TEE type, body type, key type or certification data type; docs/attestation.md §2–§4)."""


class CollateralError(AttestError):
    """The collateral is malformed or is not for this quote (bad JSON, wrong id/version, FMSPC/PCEID
    mismatch with the PCK certificate; docs/attestation.md §7 steps 2 and 5)."""


class CollateralExpired(CollateralError):
    """A collateral item (TCB Info, QE Identity, CRL) is past its ``nextUpdate`` at the given time."""


class CollateralNotYetValid(CollateralError):
    """A collateral item's ``issueDate`` (or CRL ``thisUpdate``) lies after the given time."""


class CertificateChainError(AttestError):
    """A certificate chain does not lead to a configured trust anchor, a certificate is outside its
    validity window, or a certificate (or its SGX extension) is malformed (docs/attestation.md §6, §7
    step 4)."""


class CertificateRevoked(CertificateChainError):
    """A chain's certificate is listed in the root CA CRL or the PCK CRL (docs/attestation.md §7 step 3)."""


class SignatureError(AttestError):
    """An ECDSA P-256 signature does not verify: TCB Info, QE Identity, CRL, QE report or the quote itself."""


class QeReportBindingError(AttestError):
    """QE REPORTDATA[0:32] != SHA-256(attestation key || QE auth data) (docs/attestation.md §7 step 8)."""


class QeIdentityMismatch(AttestError):
    """The QE report does not match the QE Identity (MRSIGNER, ISVPRODID, masked MISCSELECT/ATTRIBUTES)."""


class TdxModuleMismatch(AttestError):
    """MRSIGNERSEAM / SEAMATTRIBUTES do not match the TDX module identity (docs/attestation.md §7 step 6)."""


class TcbLevelNotFound(AttestError):
    """No TCB level of the TCB Info (or QE Identity, or module identity) matches the platform."""


class TcbRevoked(AttestError):
    """The merged TCB status is Revoked: a terminal verdict, never returned as a result."""

    def __init__(self, message: str, *, advisory_ids: tuple[str, ...] = (), step: str | None = None) -> None:
        super().__init__(message, step=step)
        self.advisory_ids = advisory_ids


class PolicyViolation(AttestError):
    """Appraisal refused a verified quote (reference values, DEBUG, accepted statuses; not used by verify)."""

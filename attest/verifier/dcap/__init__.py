"""DCAP verification of TDX quotes (docs/attestation.md §6–§9): collateral, CRLs, PCK chain, QE, TCB status.

Returns a ``VerifiedQuote`` with Intel's status string and advisories, or raises a named ``attest.errors``
exception carrying the failing step. No policy (docs/architecture.md: ``verify`` <- ``appraise``).
"""

from attest.formats.collateral import Collateral, parse_collateral
from attest.verifier.dcap.quote_verifier import VerifiedQuote, Verifier, verify, verify_signature_links
from attest.verifier.dcap.tcb import TcbStatus

__all__ = [
    "Collateral",
    "TcbStatus",
    "VerifiedQuote",
    "Verifier",
    "parse_collateral",
    "verify",
    "verify_signature_links",
]

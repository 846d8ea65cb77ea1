"""DCAP verification of TDX quotes (attestation.md §6–§9): collateral, CRLs, PCK chain, QE, TCB status.

Returns a ``VerifiedQuote`` with Intel's status string and advisories, or raises a named ``attest.errors``
exception carrying the failing step. No policy (style.md: ``verify`` <- ``appraise``).
"""

from attest.verify.collateral import Collateral, parse_collateral
from attest.verify.tcb import TcbStatus
from attest.verify.verifier import VerifiedQuote, Verifier, verify, verify_signature_links

__all__ = [
    "Collateral",
    "TcbStatus",
    "VerifiedQuote",
    "Verifier",
    "parse_collateral",
    "verify",
    "verify_signature_links",
]

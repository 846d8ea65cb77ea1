"""The TD quoting enclave behind the VMM's GetQuote handling (the QGS + TD_QE of Intel DCAP): it signs a
DCAP quote over a TDREPORT the module's MAC check accepted (docs/attestation.md §4, §5; docs/architecture.md
"Attestation and secret release")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class QuoteSigner(Protocol):
    """The DCAP quote-signing logic (``attest.intel``): TDREPORT in, signed quote out."""

    def quote(self, td_report: bytes) -> bytes: ...


class QuoteRefused(Exception):
    """The enclave will not quote: the report failed verification, or no PCK is provisioned."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TdQuotingEnclave:
    def __init__(self, verify_report: Callable[[bytes], bool], signer: QuoteSigner | None) -> None:
        self._verify_report = verify_report
        self._signer = signer
        self.quotes = 0

    @property
    def available(self) -> bool:
        return self._signer is not None

    def get_quote(self, td_report: bytes) -> bytes:
        if self._signer is None:
            raise QuoteRefused(
                "QGS_UNAVAILABLE", "no PCK certificate is provisioned on this host (tdxsim pki init)"
            )
        if not self._verify_report(td_report):
            raise QuoteRefused(
                "REPORT_MAC_MISMATCH", "TDREPORT failed EVERIFYREPORT2: altered or from another platform"
            )
        quote = self._signer.quote(td_report)
        self.quotes += 1
        return quote

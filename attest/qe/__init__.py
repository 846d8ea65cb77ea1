"""The TD quoting enclave's logic as a library (attestation.md §2–§5): QE report bound to an attestation
key and signed by the PCK key, DCAP quotes v4/v5 from TDREPORTs; and a TDREPORT builder with the simulated
platform's identity (``attest.platform``) for tests and tools.
"""

from attest.qe.enclave import QuotingEnclave, QuotingEnclaveError, build_qe_report, qe_report_data
from attest.qe.tdreport import build_td_report

__all__ = ["QuotingEnclave", "QuotingEnclaveError", "build_qe_report", "build_td_report", "qe_report_data"]

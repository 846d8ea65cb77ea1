"""The simulated Intel infrastructure: what Intel runs and signs on a real platform, simulated.

- the PCS (Provisioning Certification Service): root CA, PCK Platform/Processor CA, per-platform PCK leaves
with
  the SGX extension, TCB Signing certificate, CRLs, signed TCB Info / QE Identity and dcap-qvl collateral
  (``certificates``, ``signed_collateral``, ``pcs_directory``; docs/attestation.md §6, §9);
- the TD quoting enclave's signing logic: a QE report bound to an attestation key and signed by the PCK key,
  DCAP quotes v4/v5 from TDREPORTs (``quoting_enclave``; docs/attestation.md §2–§5);
- the simulated platform's identity every one of them reports (``identity``), and a TDREPORT builder for tests
  and tools (``td_report_builder``).

Everything it issues says it is a tdxsim simulation; evidence chained to its root is rejected by verifiers
that trust Intel's root only. ``PkiOptions`` produces the negative cases (revoked PCK, expired collateral, TCB
status, wrong issuer).
"""

from attest.intel.pcs_directory import (
    Pki,
    PkiError,
    PkiOptions,
    PlatformPck,
    init_pki,
    load_pck,
    load_pki,
)
from attest.intel.quoting_enclave import QuotingEnclave, QuotingEnclaveError, build_qe_report, qe_report_data
from attest.intel.td_report_builder import build_td_report

__all__ = [
    "Pki",
    "PkiError",
    "PkiOptions",
    "PlatformPck",
    "QuotingEnclave",
    "QuotingEnclaveError",
    "build_qe_report",
    "build_td_report",
    "init_pki",
    "load_pck",
    "load_pki",
    "qe_report_data",
]

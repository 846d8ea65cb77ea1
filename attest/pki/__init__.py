"""Simulated Intel PCS: root CA, PCK Platform CA, per-platform PCK leaves with the SGX extension, TCB Signing
certificate, CRLs, signed TCB Info / QE Identity and dcap-qvl collateral (attestation.md §6, §9, §15).

Everything it issues says it is a tdxsim simulation; evidence chained to its root is rejected by verifiers
that trust Intel's root only. ``PkiOptions`` produces the negative cases (revoked PCK, expired collateral, TCB
status, wrong issuer).
"""

from attest.pki.store import (
    Pki,
    PkiError,
    PkiOptions,
    PlatformPck,
    init_pki,
    load_pck,
    load_pki,
)

__all__ = ["Pki", "PkiError", "PkiOptions", "PlatformPck", "init_pki", "load_pck", "load_pki"]

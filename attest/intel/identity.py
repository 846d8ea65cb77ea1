"""The simulated platform's identity: one place for every value a TDREPORT, a QE report, a PCK certificate and
the signed collateral must agree on.

What the values model (docs/attestation.md):

- §6 PCK certificate SGX extension: FMSPC, PCEID, the 16 SGX TCB component SVNs, PCESVN and CPUSVN, SGX type.
  The platform is modelled on the Emerald Rapids platform of the real TD 1.5 vector (``tdx_v5_quote.bin``,
  FMSPC ``90C06F000000``): same FMSPC, same SGX components and PCESVN, same TDX module SVNs. The CPUSVN a PCK
  certificate carries for a TDX platform is the 16 component SVNs as bytes (as in the real PCK leaves).
- §3 TD report body, TEE_TCB_INFO part (filled by the host's TDX module into every TDREPORT, copied by the QE
  into the quote): TEE_TCB_SVN (``[0]`` module ISVSVN, ``[1]`` module major version, ``[2]`` TDX late
  microcode SVN), MRSEAM, MRSIGNERSEAM, SEAMATTRIBUTES; TEE_TCB_SVN2 for TD 1.5 bodies.
- §5 QE report: the TD quoting enclave's MRENCLAVE, MRSIGNER, ISVPRODID (2 = TD_QE), ISVSVN, ATTRIBUTES,
  MISCSELECT; §2 header QE vendor ID (Intel's: dcap-qvl rejects any other).
- §9 the TCB Info / QE Identity the simulated PCS signs (``attest.intel``) are derived from these constants,
so
  a quote produced from a TDREPORT carrying them matches the platform's UpToDate TCB level.

Simulated, not Intel: MRSEAM, MRENCLAVE and the QE MRSIGNER are hashes of tdxsim-specific strings (below), not
measurements of Intel binaries; MRSIGNERSEAM is zeros because Intel's module is signed that way and verifiers
compare it with TCB Info ``tdxModule.mrsigner`` (zeros). What makes simulated evidence unmistakable is the
PKI: every chain ends at the tdxsim simulated root (``attest.intel``), which no real verifier trusts.
"""

from __future__ import annotations

import hashlib
from typing import Final

from attest.formats import layout as L

# --- §6 PCK certificate / platform TCB ----------------------------------------------------------------------
FMSPC: Final = bytes.fromhex("90C06F000000")
"""Family-Model-Stepping-Platform-CustomSKU (6 bytes); Emerald Rapids like the real v5 vector."""

PCEID: Final = bytes.fromhex("0000")
"""Provisioning Certification Enclave ID (2 bytes); 0000 on every real platform."""

PCESVN: Final = 13
"""PCE ISVSVN the PCK certificate vouches for (TCB Info ``pcesvn`` of the UpToDate level)."""

SGX_TCB_COMPONENTS: Final[tuple[int, ...]] = (3, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0)
"""The 16 SGX TCB component SVNs (extension OIDs .2.1–.2.16; TCB Info ``sgxtcbcomponents``)."""

CPUSVN: Final = bytes(SGX_TCB_COMPONENTS)
"""CPUSVN (16 bytes): the PCK certificate's .2.18 and the CPUSVN of QE reports and TDREPORTs."""

SGX_TYPE_STANDARD: Final = 0
SGX_TYPE_SCALABLE: Final = 1
SGX_TYPE_SCALABLE_WITH_INTEGRITY: Final = 2
SGX_TYPE: Final = SGX_TYPE_SCALABLE
"""SGX type (.5): Scalable, as every real TDX platform's PCK leaf (issued by the PCK Platform CA with
PlatformInstanceID and Configuration). Like real TDX quotes, simulated ones then need dcap-qvl's
``QuotePolicy`` to allow dynamic platforms, cached keys and SMT (``strict`` alone refuses them)."""

# --- §3 TEE_TCB_INFO (the TDX module) -----------------------------------------------------------------------
TDX_MODULE_ISVSVN: Final = 11
TDX_MODULE_MAJOR_VERSION: Final = 1  # TDX module 1.x: TCB Info identity "TDX_01"
TDX_LATE_MICROCODE_SVN: Final = 4
TEE_TCB_SVN: Final = bytes([TDX_MODULE_ISVSVN, TDX_MODULE_MAJOR_VERSION, TDX_LATE_MICROCODE_SVN]) + bytes(13)
"""TEE_TCB_SVN (16 bytes) as real TD 1.5 quotes carry it (``0b 01 04 00…``); the TCB Info ``tdxtcbcomponents``
of the UpToDate level are exactly these 16 bytes."""

TEE_TCB_SVN2: Final = TEE_TCB_SVN
"""TEE_TCB_SVN2 of TD 1.5 bodies: the module SVN now; equal to TEE_TCB_SVN as no module update happens in
place (no TD relaunch advised)."""

TDX_MODULE_ID: Final = f"TDX_{TDX_MODULE_MAJOR_VERSION:02X}"
"""The ``tdxModuleIdentities`` id a verifier selects from TEE_TCB_SVN[1] (docs/attestation.md §7 step 6)."""

MRSEAM_SOURCE: Final = b"tdxsim SIMULATED TDX module 1.5 - not an Intel TDX module measurement"
MRSEAM: Final = hashlib.sha384(MRSEAM_SOURCE).digest()
"""MRSEAM (48 bytes): SHA-384 of ``MRSEAM_SOURCE``, a tdxsim-specific string, not a module measurement."""

MRSIGNERSEAM: Final = bytes(48)
"""MRSIGNERSEAM: zeros, as for Intel's module (TCB Info ``tdxModule.mrsigner``)."""

SEAM_ATTRIBUTES: Final = bytes(8)
"""SEAMATTRIBUTES: must be zero (docs/attestation.md §7 step 6)."""

TEE_TCB_INFO_VALID: Final = (0x301FF).to_bytes(8, "little")
"""TEE_TCB_INFO.VALID: bit i marks the 8 bytes at offset 8*i as populated. Set: VALID, TEE_TCB_SVN and MRSEAM
(bits 0–8, ``ff01…`` as TDX 1.0 reports show) and TEE_TCB_SVN2 (bits 16–17, TDX 1.5); MRSIGNERSEAM and
SEAMATTRIBUTES are left unpopulated (zero for Intel's module). [inference from the TDX module ABI]"""

# --- §5 the TD quoting enclave ------------------------------------------------------------------------------
QE_VENDOR_ID: Final = L.INTEL_QE_VENDOR_ID
"""Quote header QE vendor ID: Intel's ``939A7233F79C4CA9940A0DB3957F0607`` (dcap-qvl rejects any other)."""

QE_MRENCLAVE_SOURCE: Final = b"tdxsim SIMULATED TD quoting enclave - not an Intel enclave measurement"
QE_MRENCLAVE: Final = hashlib.sha256(QE_MRENCLAVE_SOURCE).digest()
"""QE MRENCLAVE (32 bytes): SHA-256 of a tdxsim-specific string."""

QE_MRSIGNER_SOURCE: Final = b"tdxsim SIMULATED TD quoting enclave signer - not Intel"
QE_MRSIGNER: Final = hashlib.sha256(QE_MRSIGNER_SOURCE).digest()
"""QE MRSIGNER (32 bytes): SHA-256 of a tdxsim-specific string; the simulated QE Identity's ``mrsigner``."""

QE_ISVPRODID: Final = 2
"""ISVPRODID of the TD quoting enclave (TD_QE), as Intel's."""

QE_ISVSVN: Final = 4
"""ISVSVN of the simulated QE; the QE Identity's UpToDate level."""

QE_ATTRIBUTES: Final = bytes.fromhex("1500000000000000e700000000000000")
"""SGX ATTRIBUTES of the QE report as real TD QEs report them (INIT|MODE64BIT|PROVISIONKEY, XFRM 0xE7; DEBUG
clear). Under the QE Identity mask ``FBFFFFFFFFFFFFFF0000000000000000`` it equals
``11000000000000000000000000000000``."""

QE_MISCSELECT: Final = bytes(4)
"""MISCSELECT of the QE report (4 raw bytes, u32 LE)."""

QE_AUTH_DATA: Final = bytes(range(32))
"""QE authentication data: 32 bytes ``000102…1f`` as every real quote (dcap-qvl requires exactly 32)."""

# --- collateral framing -------------------------------------------------------------------------------------
TCB_EVALUATION_DATA_NUMBER: Final = 18
"""``tcbEvaluationDataNumber`` of the signed TCB Info and QE Identity (Intel's current at the v5 vector)."""

assert len(FMSPC) == 6 and len(PCEID) == 2 and len(CPUSVN) == 16
assert len(TEE_TCB_SVN) == 16 and len(MRSEAM) == 48 and len(QE_MRSIGNER) == 32


def seam_identity_fields() -> dict[str, bytes]:
    """What the host's TDX module reports about itself (TEE_TCB_INFO and REPORTMACSTRUCT.CPUSVN), keyed by
    the field names of ``host.tdx.tdcs.SeamIdentity``: ``SeamIdentity(**seam_identity_fields())`` makes its
    TDREPORTs match the TCB level the simulated PCS signs."""
    return {
        "cpu_svn": CPUSVN,
        "tee_tcb_svn": TEE_TCB_SVN,
        "tee_tcb_svn2": TEE_TCB_SVN2,
        "mr_seam": MRSEAM,
        "mr_signer_seam": MRSIGNERSEAM,
        "seam_attributes": SEAM_ATTRIBUTES,
        "tee_tcb_info_valid": TEE_TCB_INFO_VALID,
    }

"""Names in the PCK certificate hierarchy (docs/attestation.md §6): Intel's, and tdxsim's simulation marker.

Intel's certificates name their subject and issuer with five attributes in this RDN order: CN, O "Intel
Corporation", L "Santa Clara", ST "CA", C "US" (UTF8String, C a PrintableString). The common names:

==================================  ==============================================================
``Intel SGX Root CA``               the self-signed root
``Intel SGX PCK Platform CA``       issues PCK leaves of multi-package ("Scalable") platforms, every TDX one
``Intel SGX PCK Processor CA``      issues PCK leaves of single-package "Standard" SGX platforms
``Intel SGX PCK Certificate``       the PCK leaf
``Intel SGX TCB Signing``           signs TCB Info and QE Identity
==================================  ==============================================================

What verifiers compare:

- go-tdx-guest (``verify/verify.go``): each certificate's subject CN must equal its phrase (the root's, "Intel
  SGX PCK Platform CA" for the intermediate, the leaf's, "Intel SGX TCB Signing"), the PCK issuer CN names the
  CA (platform or processor), and each issuer name, as a string, must equal its parent's subject;
- Intel's QVL (``DistinguishedName::operator==``): CN, C, O, L and ST against its constants, expressly not
  the raw name;
- dcap-qvl 0.7.0 (webpki): a certificate's issuer name bytes equal the next certificate's subject name
  bytes; no name is compared with a constant.

tdxsim's simulated PCS therefore uses Intel's five attributes verbatim and marks every name as simulated with
one more RDN that none of them reads: an organizationalUnitName ``SIMULATION_MARKER`` right after O. Issuer
and subject stay byte-identical to each other, so every name-based check passes; what a verifier trusts is
the root's key, and tdxsim's root key is its own, never Intel's.
"""

from __future__ import annotations

from typing import Final

from cryptography import x509
from cryptography.x509.oid import NameOID

ROOT_CA_CN: Final = "Intel SGX Root CA"
PLATFORM_CA_CN: Final = "Intel SGX PCK Platform CA"
PROCESSOR_CA_CN: Final = "Intel SGX PCK Processor CA"
PCK_CN: Final = "Intel SGX PCK Certificate"
TCB_SIGNING_CN: Final = "Intel SGX TCB Signing"
ORGANIZATION: Final = "Intel Corporation"
LOCALITY: Final = "Santa Clara"
STATE: Final = "CA"
COUNTRY: Final = "US"

SIMULATION_MARKER: Final = "tdxsim SIMULATED - not issued by Intel"
"""The organizationalUnitName every tdxsim certificate carries in its subject (and so in its children's
issuer)."""

_MARKER_TEXT: Final = "tdxsim SIMULATED"  # in the marker, and in the CN and O of PKIs made before it


def intel_name(common_name: str, *, simulated: bool = True) -> x509.Name:
    """An Intel-shaped name (CN, O, [OU marker,] L, ST, C); ``simulated`` adds the tdxsim marker."""
    attributes = [
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
    ]
    if simulated:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, SIMULATION_MARKER))
    attributes += [
        x509.NameAttribute(NameOID.LOCALITY_NAME, LOCALITY),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, STATE),
        x509.NameAttribute(NameOID.COUNTRY_NAME, COUNTRY),
    ]
    return x509.Name(attributes)


def common_name(name: x509.Name) -> str | None:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else None


def is_simulated(name: x509.Name) -> bool:
    """True when ``name`` carries tdxsim's simulation marker (or an earlier PKI's "tdxsim SIMULATED" text)."""
    return any(isinstance(a.value, str) and _MARKER_TEXT in a.value for a in name)

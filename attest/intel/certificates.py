"""Keys, certificates and CRLs of the simulated Intel PCS (docs/attestation.md §6, §9).

The hierarchy mirrors Intel's: a self-signed root CA; the PCK Platform CA and the TCB Signing certificate
issued by it; one PCK leaf per platform issued by the Platform CA with the SGX extension; a root CA CRL signed
by the root and a PCK CRL signed by the Platform CA. Every certificate is ECDSA P-256 / ecdsa-with-SHA256 with
Intel's extension set and order (AKI, CRL distribution point, SKI, critical KeyUsage, critical
BasicConstraints; the SGX extension last, non-critical).

Every subject names tdxsim and says SIMULATED; the distribution points live under ``tdxsim.invalid`` (RFC
2606: never resolvable). A quote chained to this root is rejected by any verifier trusting only Intel's root.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from attest.formats.pck_extension import SGX_EXTENSION_OID, PckExtension, encode_sgx_extension

ROOT_CA_CN = "tdxsim SIMULATED SGX Root CA — not Intel"
PLATFORM_CA_CN = "tdxsim SIMULATED SGX PCK Platform CA"
TCB_SIGNING_CN = "tdxsim SIMULATED SGX TCB Signing"
PCK_LEAF_CN = "tdxsim SIMULATED SGX PCK Certificate"  # verifiers require "SGX PCK Certificate" in the CN
ORGANIZATION = "tdxsim simulation (not Intel Corporation)"
ROGUE_ROOT_O = "tdxsim rogue issuer for negative tests"
ROOT_CRL_URL = "https://certificates.tdxsim.invalid/SimulatedSGXRootCA.der"
PCK_CRL_URL = "https://api.tdxsim.invalid/sgx/certification/v4/pckcrl?ca=platform&encoding=der"


def name(common_name: str, organization: str = ORGANIZATION) -> x509.Name:
    """Subject/issuer name with Intel's attribute order (CN, O, L, ST, C)."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Simulated"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)


def _utc(unix: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(unix, dt.UTC)


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _signing_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=True,  # Intel's "Non Repudiation"
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _crl_dp(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints(
        [x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)]
    )


def issue(
    *,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: Issued | None,
    serial: int,
    not_before: int,
    not_after: int,
    ca_path_length: int | None,
    is_ca: bool,
    crl_url: str,
    sgx_extension: PckExtension | None = None,
) -> Issued:
    """Issue one certificate (self-signed when ``issuer`` is None) with Intel's extension set and order."""
    signer_key = key if issuer is None else issuer.key
    issuer_name = subject if issuer is None else issuer.certificate.subject
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(_utc(not_before))
        .not_valid_after(_utc(not_after))
        .add_extension(aki, critical=False)
        .add_extension(_crl_dp(crl_url), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_ca_usage() if is_ca else _signing_usage(), critical=True)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=ca_path_length), critical=True)
    )
    if sgx_extension is not None:
        ext = x509.UnrecognizedExtension(
            x509.ObjectIdentifier(SGX_EXTENSION_OID), encode_sgx_extension(sgx_extension)
        )
        builder = builder.add_extension(ext, critical=False)
    return Issued(builder.sign(signer_key, hashes.SHA256()), key)


def build_crl(
    issuer: Issued, revoked_serials: Sequence[int], this_update: int, next_update: int, number: int = 1
) -> bytes:
    """A v2 CRL (DER) as Intel's: CRL number and AKI extensions; entries with reason keyCompromise."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.certificate.subject)
        .last_update(_utc(this_update))
        .next_update(_utc(next_update))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    )
    for serial in revoked_serials:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(_utc(this_update))
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(issuer.key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.DER)

"""Keys, certificates and CRLs of the simulated Intel PCS (docs/attestation.md §6, §9).

The hierarchy mirrors Intel's: a self-signed root CA; issued by it, a PCK CA (the Platform CA, or the
Processor CA for SGX type 0 platforms, as Intel issues them) and the TCB Signing certificate; one PCK leaf per
platform issued by the PCK CA with the SGX extension; a root CA CRL signed by the root and a PCK CRL signed by
the PCK CA. Every certificate is X.509 v3, ECDSA P-256 / ecdsa-with-SHA256, with a 20-octet serial and Intel's
extension set and order (AKI with the key identifier only, CRL distribution point, SKI, both identifiers the
SHA-1 of the SubjectPublicKeyInfo; critical KeyUsage, critical BasicConstraints; the SGX extension last,
non-critical). A test compares all of it field by field with the real chains.

Names are Intel's (``attest.formats.pck_names``: the CNs verifiers match on, O "Intel Corporation", L, ST, C)
plus the organizational unit ``SIMULATION_MARKER`` that no verifier reads; the CRL distribution points keep
Intel's paths under hosts in ``tdxsim.invalid`` (RFC 2606: never resolvable). What makes the evidence
simulated is the root's key, which is tdxsim's own: a quote chained to this root is rejected by any verifier
trusting only Intel's root.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attest.formats import pck_names
from attest.formats.pck_extension import SGX_EXTENSION_OID, PckExtension, encode_sgx_extension

ROOT_CRL_URL = "https://certificates.tdxsim.invalid/IntelSGXRootCA.der"
PCK_CRL_URL = "https://api.tdxsim.invalid/sgx/certification/v4/pckcrl?ca={ca}&encoding=der"
PCK_CA_PLATFORM = "platform"
PCK_CA_PROCESSOR = "processor"
PCK_CA_CNS = {PCK_CA_PLATFORM: pck_names.PLATFORM_CA_CN, PCK_CA_PROCESSOR: pck_names.PROCESSOR_CA_CN}


def name(common_name: str) -> x509.Name:
    """A simulated certificate's subject/issuer: Intel's attributes and order plus the simulation marker."""
    return pck_names.intel_name(common_name, simulated=True)


def key_identifier(key: ec.EllipticCurvePublicKey) -> bytes:
    """The key identifier of Intel's SKI and AKI: SHA-1 of the DER SubjectPublicKeyInfo (as every real one is;
    not RFC 5280 §4.2.1.2's method 1, which hashes the key's bits only)."""
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha1(spki).digest()  # an identifier, not a security hash


def pck_crl_url(pck_ca: str) -> str:
    """The PCK CRL distribution point of leaves issued by the ``platform`` or ``processor`` CA."""
    return PCK_CRL_URL.format(ca=pck_ca)


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
    aki = x509.AuthorityKeyIdentifier(key_identifier(signer_key.public_key()), None, None)
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
        .add_extension(x509.SubjectKeyIdentifier(key_identifier(key.public_key())), critical=False)
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
            x509.AuthorityKeyIdentifier(key_identifier(issuer.key.public_key()), None, None), critical=False
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

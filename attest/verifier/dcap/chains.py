"""X.509 and ECDSA plumbing for DCAP verification: chains to trust anchors, CRLs, raw r||s signatures.

docs/attestation.md §1 (raw ``r‖s`` signatures, raw ``x‖y`` keys), §6 (PCK chain, Intel SGX Root CA), §7 steps
2–4. Every check returns the validity window ``(not_before, not_after)`` (unix seconds, inclusive) over which
its time-dependent result holds, so a caller may cache the result and reuse it for any ``now`` inside the
window.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from attest.errors import (
    CertificateChainError,
    CertificateRevoked,
    CollateralError,
    CollateralExpired,
    CollateralNotYetValid,
    SignatureError,
)
from attest.formats import x509_input

Window = tuple[int, int]
ALWAYS: Window = (-(2**63), 2**63)
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def intersect(*windows: Window) -> Window:
    return (max(w[0] for w in windows), min(w[1] for w in windows))


def load_certificates(data: bytes | str, what: str) -> list[x509.Certificate]:
    """PEM (one or more blocks; a trailing NUL is tolerated) or a single DER certificate, every part parsed
    up front (``attest.formats.x509_input``): anything unusable is a ``CertificateChainError``."""
    return x509_input.certificates(data, lambda why: CertificateChainError(f"{what}: {why}"))


def load_crl(der: bytes, what: str) -> x509.CertificateRevocationList:
    """A DER CRL, every entry parsed up front; anything unusable is a ``CollateralError``."""
    return x509_input.crl(der, lambda why: CollateralError(f"{what} is {why}"))


def p256_public_key(raw_xy: bytes) -> ec.EllipticCurvePublicKey:
    """Raw 64-byte ``x‖y`` to a P-256 key; a point off the curve is a signature failure, not a crash."""
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + raw_xy)
    except ValueError:
        raise SignatureError("attestation key is not a p-256 point") from None


def verify_raw_signature(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes, what: str) -> None:
    """Verify an ECDSA P-256/SHA-256 signature given as raw ``r‖s`` (32+32 bytes big-endian)."""
    if len(signature) != 64:
        raise SignatureError(f"{what} signature must be 64 bytes")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, data, _ECDSA_SHA256)
    except InvalidSignature:
        raise SignatureError(f"{what} signature is invalid") from None


def ec_key_of(cert: x509.Certificate, what: str) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise CertificateChainError(f"{what}: certificate key is not p-256")
    return key


def cert_window(cert: x509.Certificate) -> Window:
    return (int(cert.not_valid_before_utc.timestamp()), int(cert.not_valid_after_utc.timestamp()))


def _cn(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else cert.subject.rfc4514_string()


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer`` signed ``cert``; an issuer key or signature algorithm ``cryptography`` cannot use
    (``UnsupportedAlgorithm`` among them) is a link that does not hold."""
    try:
        cert.verify_directly_issued_by(issuer)
    except x509_input.MALFORMED_OR_INVALID:
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


@dataclass(frozen=True)
class VerifiedChain:
    """A chain from leaf to one of the trust anchors, and the window in which every certificate is valid."""

    certificates: tuple[x509.Certificate, ...]  # leaf first, anchor last
    window: Window

    @property
    def leaf(self) -> x509.Certificate:
        return self.certificates[0]

    @property
    def anchor(self) -> x509.Certificate:
        return self.certificates[-1]


def verify_chain(
    certs: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate], now: int, what: str
) -> VerifiedChain:
    """Check ``certs`` (leaf first) link by link up to a configured anchor, all inside their validity at
    ``now``.

    A chain may end with the anchor itself (Intel ships the root in the quote) or with a certificate directly
    issued by an anchor. A self-signed top that is not byte-identical to an anchor is refused.
    """
    if not anchors:
        raise CertificateChainError(f"{what}: no trust anchor configured")
    chain = list(certs)
    for child, parent in itertools.pairwise(chain):
        if not _is_ca(parent):
            raise CertificateChainError(f"{what}: '{_cn(parent)}' is not a ca")
        if not _issued_by(child, parent):
            raise CertificateChainError(f"{what}: '{_cn(child)}' is not issued by '{_cn(parent)}'")
    top = chain[-1]
    top_der = top.public_bytes(Encoding.DER)
    anchor_ders = [a.public_bytes(Encoding.DER) for a in anchors]
    if top_der not in anchor_ders:
        for anchor in anchors:
            if _issued_by(top, anchor) and top.issuer == anchor.subject:
                chain.append(anchor)
                break
        else:
            raise CertificateChainError(f"{what}: chain does not end at a trusted root")
    window = intersect(*(cert_window(c) for c in chain))
    if now < window[0]:
        raise CertificateChainError(f"{what}: certificate not yet valid")
    if now > window[1]:
        raise CertificateChainError(f"{what}: certificate expired")
    return VerifiedChain(tuple(chain), window)


@dataclass(frozen=True)
class VerifiedCrl:
    crl: x509.CertificateRevocationList
    window: Window

    def check_not_revoked(self, cert: x509.Certificate, what: str) -> None:
        if cert.issuer != self.crl.issuer:
            return
        if self.crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            raise CertificateRevoked(f"{what} certificate '{_cn(cert)}' is revoked")


def verify_crl(
    crl: x509.CertificateRevocationList, issuer: x509.Certificate, now: int, what: str
) -> VerifiedCrl:
    """The CRL is issued by ``issuer`` (name and signature) and current at ``now``."""
    if crl.issuer != issuer.subject:
        raise CertificateChainError(f"{what} issuer is not '{_cn(issuer)}'")
    with x509_input.malformed_as(lambda why: SignatureError(f"{what} signature cannot be checked: {why}")):
        valid = crl.is_signature_valid(ec_key_of(issuer, what))
    if not valid:
        raise SignatureError(f"{what} signature is invalid")
    this_update = int(crl.last_update_utc.timestamp())
    next_update = crl.next_update_utc
    window = (this_update, int(next_update.timestamp()) if next_update is not None else ALWAYS[1])
    if now < window[0]:
        raise CollateralNotYetValid(f"{what} is not yet valid")
    if now > window[1]:
        raise CollateralExpired(f"{what} expired")
    return VerifiedCrl(crl, window)

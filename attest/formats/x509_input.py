"""Untrusted certificates, CRLs and keys through ``cryptography``: its whole error family, parsed eagerly.

``cryptography`` reports bad input with more than ``ValueError``: ``UnsupportedAlgorithm`` (a key of an
unknown type or on an unsupported curve, an unknown signature algorithm), ``x509.InvalidVersion``,
``x509.DuplicateExtension`` and ``x509.UnsupportedGeneralNameType`` (none of them a ``ValueError``), and
``TypeError`` (an encrypted private key and no password). ``MALFORMED`` names that family; every parser of
the attestation side catches all of it and raises its package's own error, so hostile bytes are a refusal
with a reason (docs/conventions.md §7), never ``UNKNOWN``/``INTERNAL`` or a traceback.

Certificates and CRLs are also parsed lazily: ``load_der_x509_certificate`` accepts bytes whose subject,
extensions or public key fail only when first read, deep inside a chain check. ``certificates`` and ``crl``
read every part verification uses right after loading (version, names, validity, signature algorithm,
extensions, public key; every revoked entry of a CRL), so a certificate that loads is one that can be used,
and every later read of it is safe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_der_public_key

from wire.crypto_input import MALFORMED as MALFORMED  # the parsers here refuse exactly this family

MALFORMED_OR_INVALID: tuple[type[Exception], ...] = (*MALFORMED, InvalidSignature)
"""``MALFORMED`` and a signature that does not verify: a link of a chain that does not hold."""

PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


@contextmanager
def malformed_as(make: Callable[[str], Exception]) -> Iterator[None]:
    """Turn any of ``MALFORMED`` raised inside into ``make(message)`` (the caller's own error)."""
    try:
        yield
    except MALFORMED as exc:
        raise make(str(exc) or type(exc).__name__) from None


def _read_certificate(cert: x509.Certificate) -> None:
    cert.version  # noqa: B018  (each read parses a lazily decoded part, raising one of MALFORMED)
    cert.serial_number  # noqa: B018
    cert.subject.rfc4514_string()
    cert.issuer.rfc4514_string()
    cert.not_valid_before_utc  # noqa: B018
    cert.not_valid_after_utc  # noqa: B018
    cert.signature_hash_algorithm  # noqa: B018
    for extension in cert.extensions:
        extension.value  # noqa: B018
    cert.public_key()


def _read_crl(crl: x509.CertificateRevocationList) -> None:
    crl.issuer.rfc4514_string()
    crl.last_update_utc  # noqa: B018
    crl.next_update_utc  # noqa: B018
    crl.signature_hash_algorithm  # noqa: B018
    for extension in crl.extensions:
        extension.value  # noqa: B018
    for revoked in crl:
        revoked.serial_number  # noqa: B018
        revoked.revocation_date_utc  # noqa: B018
        for extension in revoked.extensions:
            extension.value  # noqa: B018


def certificates(data: bytes | str, make: Callable[[str], Exception]) -> list[x509.Certificate]:
    """PEM (one or more blocks; trailing NULs and whitespace tolerated) or one DER certificate, every part
    read; none, or anything ``cryptography`` refuses, raises ``make(message)``."""
    with malformed_as(lambda why: make(f"unparsable certificate: {why}")):
        raw = data.encode() if isinstance(data, str) else bytes(data)  # a lone surrogate: UnicodeEncodeError
        if PEM_CERTIFICATE in raw:
            certs = x509.load_pem_x509_certificates(raw.rstrip(b"\x00\r\n \t"))
        else:
            certs = [x509.load_der_x509_certificate(raw)]
        for cert in certs:
            _read_certificate(cert)
    if not certs:
        raise make("no certificate")
    return certs


def crl(der: bytes, make: Callable[[str], Exception]) -> x509.CertificateRevocationList:
    """A DER CRL with every entry read; anything ``cryptography`` refuses raises ``make(message)``."""
    with malformed_as(lambda why: make(f"not a der crl: {why}")):
        parsed = x509.load_der_x509_crl(der)
        _read_crl(parsed)
    return parsed


def public_key_der(der: bytes, make: Callable[[str], Exception]) -> PublicKeyTypes:
    """A SubjectPublicKeyInfo DER public key of any type ``cryptography`` knows; else ``make(message)``."""
    with malformed_as(make):
        return load_der_public_key(der)

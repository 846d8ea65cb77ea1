"""The platform a quote's PCK chain names, read before verification to choose its collateral: the FMSPC of
the leaf's SGX extension, the PCK CA that issued the leaf (``platform`` or ``processor``, the ``ca`` of the
PCK CRL) and the digest of the chain's root (docs/attestation.md §17). Verification then checks all of it.

Every quote of one platform carries the same chain, and parsing it eagerly costs about a millisecond per
certificate, so the answer is kept per chain (a bounded LRU of ``CACHE_SIZE`` chains); a chain that does not
parse is refused again each time, never cached.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attest.errors import AttestError, CertificateChainError
from attest.formats import pck_names
from attest.formats.pck_extension import pck_extension_of
from attest.formats.quote import Quote
from attest.verifier.dcap.chains import load_certificates

PCK_CA_PLATFORM, PCK_CA_PROCESSOR = "platform", "processor"
CACHE_SIZE = 256


@dataclass(frozen=True)
class PckPlatform:
    fmspc: bytes
    #: ``platform`` or ``processor``, by the leaf's issuer name; any other issuer counts as processor, as
    #: dcap-qvl counts it.
    pck_ca: str
    #: SHA-256 of the DER of the chain's last certificate (its root); None when that one does not parse.
    root_digest: bytes | None


def pck_platform(quote: Quote) -> PckPlatform:
    """The platform of ``quote``'s PCK chain; ``CertificateChainError`` (step ``pck_chain``) when the chain is
    missing or does not parse, the PCK extension's own error when the leaf has none."""
    try:
        pems = tuple(quote.pck_chain.pem_certificates())
    except AttestError as err:
        raise CertificateChainError(str(err), step="pck_chain") from None
    if not pems:
        raise CertificateChainError("pck chain is empty", step="pck_chain")
    return _platform_of_chain(pems)


@lru_cache(maxsize=CACHE_SIZE)
def _platform_of_chain(pems: tuple[bytes, ...]) -> PckPlatform:
    try:
        leaf = load_certificates(pems[0], "pck chain")[0]
    except AttestError as err:
        raise CertificateChainError(str(err), step="pck_chain") from None
    try:
        root: x509.Certificate | None = load_certificates(pems[-1], "pck chain")[0]
    except AttestError:
        root = None
    try:
        fmspc = pck_extension_of(leaf).fmspc
    except AttestError as err:
        err.step = err.step or "pck_chain"
        raise
    issuer = pck_names.common_name(leaf.issuer)
    ca = PCK_CA_PLATFORM if issuer == pck_names.PLATFORM_CA_CN else PCK_CA_PROCESSOR
    digest = hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).digest() if root else None
    return PckPlatform(fmspc, ca, digest)

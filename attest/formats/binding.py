"""The REPORTDATA binding rule, one definition for the TD guest and the verifier (docs/attestation.md §11).

A TD proves freshness and key possession by putting 64 bytes into REPORTDATA when it asks for a quote. tdxsim
documents one explicit rule (peers each pick their own hash convention, trustee#162)::

    REPORTDATA = SHA-512( b"tdxsim-attest-v1" || nonce || SHA-256(ephemeral public key, SPKI DER) )

- ``nonce`` is the 32 random bytes the verifier issued with ``GetNonce`` (single use, expiring);
- the public key is the TD's ephemeral key as X.509 SubjectPublicKeyInfo DER: EC P-256, P-384 or P-521, or RSA
  of 2048..4096 bits (``TEE_KEY_TYPES``, the keys trustee's attestation agent makes); the key broker encrypts
  released secrets to it as a JWE (``attest.formats.secret_jwe``), so only the attested TD can open them;
- the domain prefix keeps tdxsim's rule apart from any other use of REPORTDATA, and the fixed 16-byte
  prefix plus fixed 32-byte fields make the concatenation unambiguous; SHA-512 fills all 64 bytes, so no zero
  padding exists that another convention could collide with.

The verifier recomputes the value from the nonce and key given to ``Attest`` and compares all 64 bytes in
constant time. Quotes without a nonce (only when the policy sets ``require_nonce`` false) bind no key.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from attest.formats import x509_input

DOMAIN = b"tdxsim-attest-v1"
NONCE_SIZE = 32
REPORT_DATA_SIZE = 64
TEE_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
RSA_BITS = (2048, 4096)  # inclusive range of accepted modulus sizes
TEE_KEY_TYPES = "ec p-256, p-384, p-521 or rsa 2048..4096 bits"

TeePublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
TeePrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class BindingError(ValueError):
    """A nonce or public key that cannot take part in the binding (wrong size, not a usable TEE key)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def spki_der(public_key: TeePublicKey) -> bytes:
    """The SubjectPublicKeyInfo DER encoding the rule hashes."""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_tee_key(key: object) -> TeePublicKey:
    """``key`` if it is one of ``TEE_KEY_TYPES``, else a ``BindingError``."""
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, TEE_CURVES):
        return key
    if isinstance(key, rsa.RSAPublicKey) and RSA_BITS[0] <= key.key_size <= RSA_BITS[1]:
        return key
    raise BindingError(f"tee public key must be {TEE_KEY_TYPES}", "BAD_TEE_PUBLIC_KEY")


def load_tee_public_key(der: bytes) -> TeePublicKey:
    """Parse the TD's ephemeral key: canonical SPKI DER of one of ``TEE_KEY_TYPES``, nothing else. Every
    refusal, a key of a type or curve ``cryptography`` does not support included, is a ``BindingError``."""
    key = check_tee_key(
        x509_input.public_key_der(
            der,
            lambda why: BindingError(f"tee public key is not usable spki der: {why}", "BAD_TEE_PUBLIC_KEY"),
        )
    )
    if spki_der(key) != der:
        raise BindingError("tee public key is not canonical spki der", "BAD_TEE_PUBLIC_KEY")
    return key


def report_data(nonce: bytes, public_key_spki_der: bytes) -> bytes:
    """REPORTDATA (64 bytes) binding ``nonce`` (32 bytes) and the ephemeral key (SPKI DER)."""
    if len(nonce) != NONCE_SIZE:
        raise BindingError(f"nonce must be {NONCE_SIZE} bytes, got {len(nonce)}", "BAD_NONCE")
    key_digest = hashlib.sha256(public_key_spki_der).digest()
    return hashlib.sha512(DOMAIN + nonce + key_digest).digest()


def matches(report_data_field: bytes, nonce: bytes, public_key_spki_der: bytes) -> bool:
    """True when a quote's REPORTDATA equals the rule's value (constant-time comparison)."""
    return hmac.compare_digest(report_data_field, report_data(nonce, public_key_spki_der))

"""The key broker's envelope: a secret sealed to the TD's ephemeral P-256 key (ECDH, HKDF-SHA256, AES-GCM).

Format ``tdxsim-kbs-v1`` (alg string ``ECDH-ES+HKDF-SHA256+A256GCM``), fields of ``SealedSecret``:

- ``ephemeral_public_key``: SPKI DER of a fresh P-256 key E made by the broker for this one release;
- ``iv``: 12 random bytes; ``ciphertext``: AES-256-GCM ciphertext of the secret followed by the 16-byte tag.

Key derivation and authenticated data, with T = the TD's public key (the SPKI DER the token's
``ear.veraison.key-attestation.akpub`` names, i.e. the key bound into REPORTDATA by
``attest.formats.binding``)::

    Z    = ECDH(E_priv, T_pub)                                   (32-byte x coordinate)
    salt = SHA-256(SPKI(E) || SPKI(T))
    K    = HKDF-SHA256(Z, salt, info = b"tdxsim-kbs-v1 A256GCM", length = 32)
    AAD  = b"tdxsim-kbs-v1\\x00" || resource path (UTF-8)

The salt binds both public keys (a different recipient key derives a different K); the AAD binds the
resource path, so an envelope cannot be presented as another resource. Only the holder of T's private key,
which never leaves the TD, can open the envelope (``open_sealed``, used by the guest library).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from attest.formats.binding import load_tee_public_key, spki_der

ALG = "ECDH-ES+HKDF-SHA256+A256GCM"
VERSION = b"tdxsim-kbs-v1"
HKDF_INFO = VERSION + b" A256GCM"
IV_SIZE = 12


class EnvelopeError(ValueError):
    """An envelope that cannot be opened (wrong key, tampered, wrong path, malformed)."""


@dataclass(frozen=True)
class SealedSecret:
    alg: str
    ephemeral_public_key: bytes
    iv: bytes
    ciphertext: bytes


def _aad(path: str) -> bytes:
    return VERSION + b"\x00" + path.encode("utf-8")


def _key(shared: bytes, ephemeral_spki: bytes, recipient_spki: bytes) -> bytes:
    salt = hashlib.sha256(ephemeral_spki + recipient_spki).digest()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=HKDF_INFO).derive(shared)


def seal(secret: bytes, recipient_spki: bytes, path: str) -> SealedSecret:
    """Encrypt ``secret`` for the holder of the private key of ``recipient_spki`` (P-256 SPKI DER)."""
    recipient = load_tee_public_key(recipient_spki)
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    ephemeral_spki = spki_der(ephemeral.public_key())
    key = _key(ephemeral.exchange(ec.ECDH(), recipient), ephemeral_spki, recipient_spki)
    iv = os.urandom(IV_SIZE)
    return SealedSecret(ALG, ephemeral_spki, iv, AESGCM(key).encrypt(iv, secret, _aad(path)))


def open_sealed(sealed: SealedSecret, private_key: ec.EllipticCurvePrivateKey, path: str) -> bytes:
    """Decrypt an envelope with the TD's ephemeral private key; raises ``EnvelopeError`` on any failure."""
    if sealed.alg != ALG or len(sealed.iv) != IV_SIZE:
        raise EnvelopeError(f"unsupported envelope {sealed.alg!r}")
    try:
        ephemeral = load_tee_public_key(sealed.ephemeral_public_key)
    except ValueError:
        raise EnvelopeError("envelope ephemeral key is not p-256 spki der") from None
    key = _key(
        private_key.exchange(ec.ECDH(), ephemeral),
        sealed.ephemeral_public_key,
        spki_der(private_key.public_key()),
    )
    try:
        return AESGCM(key).decrypt(sealed.iv, sealed.ciphertext, _aad(path))
    except InvalidTag:
        raise EnvelopeError("envelope does not open with this key and path") from None

"""ECDSA P-256 keys of the simulated PCS and the QE: generation (random or seeded), raw ``r‖s`` signatures,
raw ``x‖y`` public keys, PEM files (docs/attestation.md §1 encoding rules).
"""

from __future__ import annotations

import hashlib
import secrets

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


class KeySource:
    """Where keys, serial numbers and identifiers come from: the OS CSPRNG, or a seed (deterministic PKI).

    With a seed every value is SHA-512(seed ‖ label) reduced to its range, so the same seed and labels give
    the same keys, serials and PPIDs (ECDSA signatures themselves stay randomized).
    """

    def __init__(self, seed: bytes | None) -> None:
        self._seed = seed

    def _bytes(self, label: str, n: int) -> bytes:
        if self._seed is None:
            return secrets.token_bytes(n)
        return hashlib.sha512(self._seed + b"\x00" + label.encode()).digest()[:n]

    def private_key(self, label: str) -> ec.EllipticCurvePrivateKey:
        if self._seed is None:
            return ec.generate_private_key(ec.SECP256R1())
        scalar = int.from_bytes(self._bytes(f"key:{label}", 64), "big") % (P256_ORDER - 1) + 1
        return ec.derive_private_key(scalar, ec.SECP256R1())

    def serial(self, label: str) -> int:
        """A positive 20-octet serial number (Intel's are 20 octets), top bit cleared."""
        value = int.from_bytes(self._bytes(f"serial:{label}", 20), "big") >> 1
        return value or 1

    def identifier(self, label: str, n: int) -> bytes:
        return self._bytes(f"id:{label}", n)


def sign_raw(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA P-256/SHA-256 signature as raw ``r‖s`` (32+32 bytes big-endian, docs/attestation.md §1)."""
    r, s = decode_dss_signature(key.sign(data, _ECDSA_SHA256))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def raw_public_key(key: ec.EllipticCurvePublicKey) -> bytes:
    """Raw ``x‖y`` (64 bytes, no 0x04 prefix, docs/attestation.md §1)."""
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[1:]


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key_pem(data: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("private key is not ecdsa p-256")
    return key

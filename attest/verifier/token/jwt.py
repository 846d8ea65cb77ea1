"""Compact JWS/JWT with ES256 on ``cryptography`` alone (RFC 7515, 7518 §3.4, 7519, 7517, 7638).

- Header ``{"alg": "ES256", "kid": <kid>, "typ": "JWT"}``; the signature is ECDSA P-256 / SHA-256 over
  ``base64url(header) "." base64url(payload)``, encoded as raw ``r || s`` (32 + 32 bytes, big-endian).
- ``kid`` is the RFC 7638 JWK thumbprint: base64url(SHA-256 of ``{"crv","kty","x","y"}`` in lexical order,
  no whitespace). A relying party picks the JWKS key by ``kid`` (the way Intel Trust Authority tokens are
  checked, docs/attestation.md §13).
- ``verify`` accepts only ``alg`` ES256 (no ``none``, no algorithm from the key), requires ``kid``,
  ``iat`` and ``exp``, checks ``nbf``/``exp`` against the caller's ``now`` with a small leeway, and raises
  ``TokenError`` (reason for ErrorInfo) on any failure; it never returns a bool.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from attest.jsonutil import loads_json

ALG = "ES256"
COORD_SIZE = 32
DEFAULT_LEEWAY = 5  # seconds of clock skew tolerated on exp / nbf / iat
MAX_TOKEN_SIZE = 64 << 10
BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class TokenError(ValueError):
    """A token that does not verify; ``reason`` is one of the TOKEN_* ErrorInfo reasons."""

    def __init__(self, message: str, reason: str = "TOKEN_INVALID") -> None:
        super().__init__(message)
        self.reason = reason


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Unpadded base64url (RFC 7515 §2) only: any other character, padding or a length of 4k+1 is a
    ``TokenError`` (``base64`` itself would skip characters outside the alphabet)."""
    if not isinstance(text, str) or not BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise TokenError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The RFC 7517 EC public JWK of a P-256 key (members ``kty``, ``crv``, ``x``, ``y``)."""
    numbers = key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(COORD_SIZE, "big")),
        "y": b64url(numbers.y.to_bytes(COORD_SIZE, "big")),
    }


def thumbprint(key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) of the key's JWK: the ``kid``."""
    return b64url(hashlib.sha256(_canonical(public_jwk(key))).digest())


def jwk_to_key(jwk: Mapping[str, Any]) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from an EC JWK; anything else raises ``TokenError``."""
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise TokenError("jwk is not an ec p-256 key", "TOKEN_KEY_UNKNOWN")
    x, y = b64url_decode(jwk.get("x", "")), b64url_decode(jwk.get("y", ""))
    if len(x) != COORD_SIZE or len(y) != COORD_SIZE:
        raise TokenError("jwk coordinates must be 32 bytes", "TOKEN_KEY_UNKNOWN")
    try:
        return ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
        ).public_key()
    except ValueError:
        raise TokenError("jwk point is not on p-256", "TOKEN_KEY_UNKNOWN") from None


def jwks_document(keys: Sequence[ec.EllipticCurvePublicKey]) -> dict[str, Any]:
    """An RFC 7517 JWK Set with ``kid``, ``alg`` ES256 and ``use`` sig on every key."""
    return {"keys": [{**public_jwk(k), "kid": thumbprint(k), "alg": ALG, "use": "sig"} for k in keys]}


def sign(claims: Mapping[str, Any], key: ec.EllipticCurvePrivateKey) -> str:
    """Compact JWS of ``claims`` signed with ``key`` (ES256, ``kid`` = thumbprint)."""
    header = {"alg": ALG, "kid": thumbprint(key.public_key()), "typ": "JWT"}
    signing_input = f"{b64url(_canonical(header))}.{b64url(_canonical(dict(claims)))}"
    der = key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{signing_input}.{b64url(r.to_bytes(COORD_SIZE, 'big') + s.to_bytes(COORD_SIZE, 'big'))}"


@dataclass(frozen=True)
class VerifiedToken:
    header: dict[str, Any]
    claims: dict[str, Any]


def _json_object(segment: str, what: str) -> dict[str, Any]:
    obj = loads_json(b64url_decode(segment), f"token {what}", TokenError)
    if not isinstance(obj, dict):
        raise TokenError(f"token {what} is not a json object")
    return obj


def unverified_header(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("token is not a compact jws")
    return _json_object(parts[0], "header")


def verify(
    token: str,
    jwks: Mapping[str, Any],
    now: float,
    *,
    issuer: str | None = None,
    leeway: int = DEFAULT_LEEWAY,
) -> VerifiedToken:
    """Check ``token`` against a JWK Set at unix time ``now``; returns header and claims or raises."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_SIZE:
        raise TokenError("token is empty or too large")
    if not COMPACT_JWS.fullmatch(token):
        raise TokenError("token is not a compact jws of three base64url parts")
    parts = token.split(".")
    header = _json_object(parts[0], "header")
    if header.get("alg") != ALG:
        raise TokenError(f"token alg must be {ALG}")
    kid = header.get("kid")
    jwk = next((k for k in jwks.get("keys", []) if isinstance(k, dict) and k.get("kid") == kid), None)
    if not isinstance(kid, str) or jwk is None:
        raise TokenError("token kid is not in the jwks", "TOKEN_KEY_UNKNOWN")
    key = jwk_to_key(jwk)
    sig = b64url_decode(parts[2])
    if len(sig) != 2 * COORD_SIZE:
        raise TokenError("token signature must be 64 bytes", "TOKEN_SIGNATURE_INVALID")
    der = encode_dss_signature(
        int.from_bytes(sig[:COORD_SIZE], "big"), int.from_bytes(sig[COORD_SIZE:], "big")
    )
    try:
        key.verify(der, f"{parts[0]}.{parts[1]}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise TokenError("token signature is invalid", "TOKEN_SIGNATURE_INVALID") from None
    claims = _json_object(parts[1], "payload")
    exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf", claims.get("iat"))
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (exp, iat, nbf)):
        raise TokenError("token lacks integer iat/exp")
    assert isinstance(exp, int) and isinstance(nbf, int)
    if now > exp + leeway:
        raise TokenError("token expired", "TOKEN_EXPIRED")
    if now + leeway < nbf:
        raise TokenError("token is not yet valid", "TOKEN_NOT_YET_VALID")
    if issuer is not None and claims.get("iss") != issuer:
        raise TokenError("token issuer mismatch", "TOKEN_ISSUER_MISMATCH")
    return VerifiedToken(header, claims)

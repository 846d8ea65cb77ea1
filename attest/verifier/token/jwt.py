"""ES256 JWTs signed and checked through joserfc (RFC 7515, 7518 §3.4, 7519, 7517, 7638;
docs/attestation.md §13 says why that library).

- Header ``{"alg": "ES256", "kid": <kid>, "typ": "JWT"}``; ``kid`` is the RFC 7638 JWK thumbprint of the
  signing key, so a relying party picks the JWKS key by ``kid`` (as Intel Trust Authority tokens are checked).
- ``verify`` accepts only ``alg`` ES256 (no ``none``, no algorithm taken from the key), requires ``kid``,
  ``iat`` and ``exp``, refuses any ``crit`` header (RFC 7515 §4.1.11: tdxsim understands no extension, so
  every critical one is unknown), checks ``nbf``/``exp`` against the caller's ``now`` with a small leeway,
  the issuer when given, and ``aud`` against the caller's identity when it names one. Every failure is a
  ``TokenError`` whose ``reason`` is an ErrorInfo reason; it never returns a bool.

This module chooses algorithms and maps errors; signatures, encodings and claim checks are the library's.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import ECKey

from attest.jsonutil import loads_json
from wire.crypto_input import MALFORMED

ALG = "ES256"
DEFAULT_LEEWAY = 5  # seconds of clock skew tolerated on exp / nbf / iat
MAX_TOKEN_SIZE = 64 << 10
BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_KEY_ERRORS: tuple[type[Exception], ...] = (JoseError, KeyError, *MALFORMED)


class TokenError(ValueError):
    """A token that does not verify; ``reason`` is one of the TOKEN_* ErrorInfo reasons."""

    def __init__(self, message: str, reason: str = "TOKEN_INVALID") -> None:
        super().__init__(message)
        self.reason = reason


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2), as claims carry binary values (``eat_nonce``, ``akpub``)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Unpadded base64url only: any other character, padding or a length of 4k+1 is a ``TokenError``
    (``base64`` itself would skip characters outside the alphabet)."""
    if not isinstance(text, str) or not BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise TokenError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _jose(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> ECKey:
    return ECKey.import_key(key)


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The RFC 7517 EC public JWK of a P-256 key (members ``kty``, ``crv``, ``x``, ``y``)."""
    return {str(k): str(v) for k, v in _jose(key).as_dict(private=False).items()}


def thumbprint(key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) of the key's JWK: the ``kid``."""
    return _jose(key).thumbprint()


def jwk_to_key(jwk: Mapping[str, Any]) -> ECKey:
    """A P-256 public key from an EC JWK; anything else raises ``TokenError`` (``TOKEN_KEY_UNKNOWN``)."""
    if not isinstance(jwk, Mapping) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise TokenError("jwk is not an ec p-256 key", "TOKEN_KEY_UNKNOWN")
    members: dict[str, str | list[str]] = {}
    for name in ("kty", "crv", "x", "y"):
        value = jwk.get(name)
        if not isinstance(value, str):
            raise TokenError("jwk members must be strings", "TOKEN_KEY_UNKNOWN")
        members[name] = value
    try:
        key = ECKey.import_key(members)
        key.public_key  # noqa: B018  (builds the point: off-curve coordinates fail here)
    except _KEY_ERRORS as err:
        raise TokenError(
            f"jwk is not a usable p-256 key: {type(err).__name__}", "TOKEN_KEY_UNKNOWN"
        ) from None
    return key


def jwks_document(keys: Sequence[ec.EllipticCurvePublicKey]) -> dict[str, Any]:
    """An RFC 7517 JWK Set with ``kid``, ``alg`` ES256 and ``use`` sig on every key."""
    return {"keys": [{**public_jwk(k), "kid": thumbprint(k), "alg": ALG, "use": "sig"} for k in keys]}


def sign(claims: Mapping[str, Any], key: ec.EllipticCurvePrivateKey) -> str:
    """Compact JWS of ``claims`` signed with ``key`` (ES256, ``kid`` = thumbprint)."""
    header = {"alg": ALG, "kid": thumbprint(key.public_key()), "typ": "JWT"}
    return jwt.encode(header, dict(claims), _jose(key), algorithms=[ALG])


@dataclass(frozen=True)
class VerifiedToken:
    header: dict[str, Any]
    claims: dict[str, Any]


def _json_object(segment: str, what: str) -> dict[str, Any]:
    obj = loads_json(b64url_decode(segment), f"token {what}", TokenError)
    if not isinstance(obj, dict):
        raise TokenError(f"token {what} is not a json object")
    return obj


def _check_claims(
    claims: dict[str, Any], now: float, issuer: str | None, audience: str | None, leeway: int
) -> None:
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if (value is not None or name != "nbf") and (not isinstance(value, int) or isinstance(value, bool)):
            raise TokenError("token lacks integer iat/exp")
    options: dict[str, Any] = {"exp": {"essential": True}, "iat": {"essential": True}}
    if issuer is not None:
        options["iss"] = {"essential": True, "value": issuer}
    if audience is not None:
        options["aud"] = {"value": audience}  # when the token names audiences, one of them must be us
    registry = jwt.JWTClaimsRegistry(now=int(now), leeway=leeway, **options)
    try:
        registry.validate(claims)
    except ExpiredTokenError:
        raise TokenError("token expired", "TOKEN_EXPIRED") from None
    except (InvalidClaimError, MissingClaimError) as err:
        claim = getattr(err, "claim", "")
        if claim in ("nbf", "iat"):
            raise TokenError("token is not yet valid", "TOKEN_NOT_YET_VALID") from None
        if claim == "iss":
            raise TokenError("token issuer mismatch", "TOKEN_ISSUER_MISMATCH") from None
        if claim == "aud":
            raise TokenError("token is meant for another audience", "TOKEN_AUDIENCE_MISMATCH") from None
        raise TokenError(f"token claim {claim} is invalid") from None
    except JoseError as err:
        raise TokenError(f"token claims are invalid: {type(err).__name__}") from None


def verify(
    token: str,
    jwks: Mapping[str, Any],
    now: float,
    *,
    issuer: str | None = None,
    audience: str | None = None,
    leeway: int = DEFAULT_LEEWAY,
) -> VerifiedToken:
    """Check ``token`` against a JWK Set at unix time ``now``; returns header and claims or raises.
    ``audience``: who is checking (a token with an ``aud`` claim must name it); None checks no ``aud``."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_SIZE:
        raise TokenError("token is empty or too large")
    if not COMPACT_JWS.fullmatch(token):
        raise TokenError("token is not a compact jws of three base64url parts")
    header = _json_object(token.split(".", 1)[0], "header")
    if header.get("alg") != ALG:
        raise TokenError(f"token alg must be {ALG}")
    if "crit" in header:
        raise TokenError("token names critical header extensions this verifier does not understand")
    kid = header.get("kid")
    jwk = next(
        (
            k
            for k in jwks.get("keys", [])
            if isinstance(k, dict) and isinstance(kid, str) and k.get("kid") == kid
        ),
        None,
    )
    if jwk is None:
        raise TokenError("token kid is not in the jwks", "TOKEN_KEY_UNKNOWN")
    key = jwk_to_key(jwk)
    try:
        verified = jws.deserialize_compact(token, key, algorithms=[ALG])
    except BadSignatureError:
        raise TokenError("token signature is invalid", "TOKEN_SIGNATURE_INVALID") from None
    except _KEY_ERRORS as err:
        raise TokenError(f"token is not a valid jws: {type(err).__name__}") from None
    payload = verified.payload
    claims = loads_json(payload if payload is not None else b"", "token payload", TokenError)
    if not isinstance(claims, dict):
        raise TokenError("token payload is not a json object")
    _check_claims(claims, now, issuer, audience, leeway)
    return VerifiedToken(header, claims)

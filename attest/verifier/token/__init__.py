"""Result tokens: ES256 JWTs with EAR-style claims, signed by persisted keys (docs/attestation.md §13)."""

from attest.verifier.token.ear import EAT_PROFILE, appraisal_of, build_claims, ear_status, tdx_claims
from attest.verifier.token.jwt import (
    TokenError,
    VerifiedToken,
    b64url,
    b64url_decode,
    jwks_document,
    public_jwk,
    sign,
    thumbprint,
    verify,
)
from attest.verifier.token.signing_keys import SigningKeys

__all__ = [
    "EAT_PROFILE",
    "SigningKeys",
    "TokenError",
    "VerifiedToken",
    "appraisal_of",
    "b64url",
    "b64url_decode",
    "build_claims",
    "ear_status",
    "jwks_document",
    "public_jwk",
    "sign",
    "tdx_claims",
    "thumbprint",
    "verify",
]

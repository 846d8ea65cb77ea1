"""Tokens and released secrets in standard JOSE, checked by libraries other than the one tdxsim uses
(docs/attestation.md §13): PyJWT and jwcrypto verify tokens from the JWKS alone, jwcrypto opens the JWE;
``crit`` and ``aud`` are honoured by tdxsim's own checks."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jwt as jwcrypto_jwt

from attest.formats import secret_jwe
from attest.formats.binding import BindingError
from attest.verifier.token import TokenError, jwks_document, sign, verify

NOW = 1_800_000_000
ISSUER = "tdxsim-verifier"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**extra: Any) -> dict[str, Any]:
    return {"iss": ISSUER, "iat": NOW, "exp": NOW + 300, **extra}


def verify_independently(token: str, jwks: dict[str, Any], audience: str | None = None) -> dict[str, Any]:
    """The claims of ``token`` as PyJWT and jwcrypto each verify it from the JWKS document alone (the two
    must agree)."""
    kid = pyjwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    by_pyjwt = pyjwt.decode(
        token,
        pyjwt.PyJWK(jwk).key,
        algorithms=["ES256"],
        audience=audience,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False, "verify_aud": bool(audience)},
    )
    keyset = jwcrypto_jwk.JWKSet.from_json(json.dumps(jwks))
    checked = jwcrypto_jwt.JWT(jwt=token, key=keyset, algs=["ES256"], check_claims=False)
    by_jwcrypto = json.loads(checked.claims)
    assert by_pyjwt == by_jwcrypto
    return by_jwcrypto


def test_tokens_verify_with_pyjwt_and_jwcrypto_from_the_jwks() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwks = json.loads(json.dumps(jwks_document([key.public_key()])))
    token = sign(_claims(aud="relying-party", sub="td"), key)
    assert verify_independently(token, jwks, "relying-party")["sub"] == "td"
    assert verify(token, jwks, NOW, issuer=ISSUER, audience="relying-party").claims["aud"] == "relying-party"


def _signed(header: dict[str, Any], claims: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> str:
    """A compact JWS signed outside tdxsim's code (the header is whatever a forger chooses)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def test_a_token_with_a_crit_header_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwks = jwks_document([key.public_key()])
    kid = jwks["keys"][0]["kid"]
    plain = _signed({"alg": "ES256", "kid": kid}, _claims(), key)
    assert verify(plain, jwks, NOW, issuer=ISSUER).claims["iss"] == ISSUER  # the hand signing is sound
    for crit in (["exp-policy"], ["b64"], []):
        header = {"alg": "ES256", "kid": kid, "crit": crit, "exp-policy": "strict", "b64": True}
        with pytest.raises(TokenError) as err:
            verify(_signed(header, _claims(), key), jwks, NOW, issuer=ISSUER)
        assert err.value.reason == "TOKEN_INVALID" and "critical" in str(err.value)


def test_audience_is_checked_when_the_checker_names_itself() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwks = jwks_document([key.public_key()])
    for aud in ("other", ["a", "b"]):
        with pytest.raises(TokenError) as err:
            verify(sign(_claims(aud=aud), key), jwks, NOW, issuer=ISSUER, audience=ISSUER)
        assert err.value.reason == "TOKEN_AUDIENCE_MISMATCH"
    assert (
        verify(sign(_claims(aud=["x", ISSUER]), key), jwks, NOW, audience=ISSUER).claims["aud"][1] == ISSUER
    )
    assert (
        "aud" not in verify(sign(_claims(), key), jwks, NOW, audience=ISSUER).claims
    )  # none named: accepted


@pytest.mark.parametrize(
    ("make", "alg"),
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), "ECDH-ES+A256KW"),
        (lambda: ec.generate_private_key(ec.SECP521R1()), "ECDH-ES+A256KW"),
        (lambda: rsa.generate_private_key(65537, 2048), "RSA-OAEP-256"),
    ],
    ids=["p256", "p521", "rsa2048"],
)
def test_released_secret_is_a_flattened_jwe_jwcrypto_opens(make: Any, alg: str) -> None:
    key = make()
    jwe = json.loads(json.dumps(secret_jwe.seal(b"disk key 0123", key.public_key())))
    assert sorted(jwe) == ["ciphertext", "encrypted_key", "iv", "protected", "tag"]
    protected = json.loads(base64.urlsafe_b64decode(jwe["protected"] + "=="))
    assert (protected["alg"], protected["enc"]) == (alg, "A256GCM")
    assert ("epk" in protected) == (
        alg == "ECDH-ES+A256KW"
    )  # in the protected header, as trustee's client reads
    other = jwcrypto_jwe.JWE()
    other.deserialize(json.dumps(jwe), key=jwcrypto_jwk.JWK.from_pyca(key))
    assert other.payload == b"disk key 0123"
    assert secret_jwe.open_secret(jwe, key) == b"disk key 0123"
    assert secret_jwe.open_secret(json.dumps(jwe), key) == b"disk key 0123"


def test_a_jwe_opens_only_with_its_key_and_untouched() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwe = secret_jwe.seal(b"s", key.public_key())
    again = secret_jwe.seal(b"s", key.public_key())
    assert (
        jwe["encrypted_key"] != again["encrypted_key"] and jwe["protected"] != again["protected"]
    )  # fresh epk
    with pytest.raises(secret_jwe.JweError):
        secret_jwe.open_secret(jwe, ec.generate_private_key(ec.SECP256R1()))
    flipped = {**jwe, "ciphertext": ("B" if jwe["ciphertext"][0] == "A" else "A") + jwe["ciphertext"][1:]}
    with pytest.raises(secret_jwe.JweError):
        secret_jwe.open_secret(flipped, key)
    header = json.loads(base64.urlsafe_b64decode(jwe["protected"] + "=="))
    for changed in (
        {**header, "enc": "A128GCM"},
        {**header, "zip": "DEF"},
        {**header, "crit": ["x"], "x": 1},
    ):
        with pytest.raises(secret_jwe.JweError):
            secret_jwe.open_secret({**jwe, "protected": _b64(json.dumps(changed).encode())}, key)


def test_tee_pubkey_jwk_round_trip_and_refusals() -> None:
    for key in (ec.generate_private_key(ec.SECP384R1()), rsa.generate_private_key(65537, 3072)):
        jwk = secret_jwe.public_jwk(key.public_key())
        assert jwk["alg"] == secret_jwe.key_algorithm(key.public_key())
        assert secret_jwe.load_public_jwk(jwk).public_numbers() == key.public_key().public_numbers()
    p256 = secret_jwe.public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())
    private = json.loads(jwcrypto_jwk.JWK.generate(kty="EC", crv="P-256").export_private())
    for bad in (
        {**p256, "alg": "RSA-OAEP-256"},
        {**p256, "crv": "secp256k1"},
        {**p256, "y": p256["x"]},
        {"kty": "oct", "k": "AAAA"},
        private,
        "not a jwk",
        {**p256, "x": 5},
    ):
        with pytest.raises(BindingError) as err:
            secret_jwe.load_public_jwk(bad)
        assert err.value.reason == "BAD_TEE_PUBLIC_KEY"

"""ES256 JWTs verified from the JWKS alone; EAR status; signing keys persisted (attestation.md §13)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from attest.verifier.store import SqliteStore, StoreError
from attest.verifier.token import SigningKeys, TokenError, ear_status, jwks_document, sign, thumbprint, verify

NOW = 1_800_000_000


def _claims(**extra: Any) -> dict[str, Any]:
    return {"iss": "tdxsim-verifier", "iat": NOW, "exp": NOW + 300, **extra}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_token_verifies_with_the_jwks_alone_and_independently_of_this_library() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = sign(_claims(sub="td"), key)
    jwks = json.loads(json.dumps(jwks_document([key.public_key()])))  # as a relying party receives it
    verified = verify(token, jwks, NOW + 1, issuer="tdxsim-verifier")
    assert verified.claims["sub"] == "td" and verified.header == {
        "alg": "ES256",
        "kid": thumbprint(key.public_key()),
        "typ": "JWT",
    }
    # Re-check the signature by hand from the JWK coordinates (RFC 7515 + 7518 §3.4).
    h, p, s = token.split(".")
    jwk = jwks["keys"][0]
    x, y = (int.from_bytes(base64.urlsafe_b64decode(jwk[c] + "=="), "big") for c in "xy")
    pub = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    sig = base64.urlsafe_b64decode(s + "==")
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    pub.verify(der, f"{h}.{p}".encode(), ec.ECDSA(hashes.SHA256()))


def test_kid_is_the_rfc7638_thumbprint() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = jwks_document([key.public_key()])["keys"][0]
    canonical = json.dumps(
        {k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True
    )
    assert jwk["kid"] == _b64(hashlib.sha256(canonical.encode()).digest())


def _refusal(token: str, jwks: dict[str, Any], now: int = NOW) -> str:
    with pytest.raises(TokenError) as err:
        verify(token, jwks, now, issuer="tdxsim-verifier")
    return err.value.reason


def test_tampered_expired_foreign_and_alg_none_tokens_are_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwks = jwks_document([key.public_key()])
    token = sign(_claims(), key)
    h, p, s = token.split(".")
    forged_payload = _b64(json.dumps(_claims(admin=True)).encode())
    assert _refusal(f"{h}.{forged_payload}.{s}", jwks) == "TOKEN_SIGNATURE_INVALID"
    assert _refusal(token, jwks, NOW + 300 + 60) == "TOKEN_EXPIRED"
    assert _refusal(sign(_claims(), ec.generate_private_key(ec.SECP256R1())), jwks) == "TOKEN_KEY_UNKNOWN"
    none_header = _b64(json.dumps({"alg": "none", "kid": jwks["keys"][0]["kid"]}).encode())
    assert _refusal(f"{none_header}.{p}.", jwks) == "TOKEN_INVALID"
    assert _refusal("not-a-token", jwks) == "TOKEN_INVALID"
    assert _refusal(sign(_claims(iss="someone-else"), key), jwks) == "TOKEN_ISSUER_MISMATCH"


@pytest.mark.parametrize(
    ("vector", "status"),
    [
        ({"instance-identity": 2, "hardware": 2, "executables": 0}, "affirming"),
        ({"instance-identity": 2, "hardware": 32}, "warning"),
        ({"configuration": 96, "hardware": 2}, "contraindicated"),
        ({"hardware": 0}, "none"),
    ],
)
def test_ear_status_is_the_worst_nonzero_tier(vector: dict[str, int], status: str) -> None:
    assert ear_status(vector) == status


def test_signing_key_survives_reopening_the_store(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "v.db")
    keys = SigningKeys.load_or_create(store, NOW)
    token = keys.sign(_claims())
    store.close()
    reopened = SigningKeys.load_or_create(SqliteStore(tmp_path / "v.db"), NOW + 10)
    assert reopened.current_kid == keys.current_kid
    assert verify(token, reopened.jwks(), NOW + 1).claims["iat"] == NOW


def test_rotation_keeps_old_tokens_verifiable(tmp_path: Path) -> None:
    keys = SigningKeys.load_or_create(SqliteStore(tmp_path / "v.db"), NOW)
    old = keys.sign(_claims())
    new_kid = keys.rotate(NOW + 1)
    assert len(keys.jwks()["keys"]) == 2
    assert verify(old, keys.jwks(), NOW + 2).header["kid"] != new_kid
    assert verify(keys.sign(_claims()), keys.jwks(), NOW + 2).header["kid"] == new_kid


DEEP = "[" * 2000  # json.loads raises RecursionError, not ValueError


@pytest.mark.parametrize("segment", [0, 1])
def test_deeply_nested_token_header_or_payload_is_a_token_error(segment: int) -> None:
    """A nested header is refused before the signature check, a nested payload after it (so it is signed)."""
    key = ec.generate_private_key(ec.SECP256R1())
    parts = sign(_claims(), key).split(".")
    parts[segment] = _b64(DEEP.encode())
    der = key.sign(f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    parts[2] = _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    with pytest.raises(TokenError, match=r"is not json: nested too deeply$") as err:
        verify(".".join(parts), jwks_document([key.public_key()]), NOW, issuer="tdxsim-verifier")
    assert err.value.reason == "TOKEN_INVALID"


@pytest.mark.parametrize(
    "pem",
    [
        b"not a key",
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
        .replace(bytes.fromhex("06082a8648ce3d030107"), bytes.fromhex("06082a8648ce3d030102")),  # unsupported
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        ),
    ],
    ids=["garbage", "unsupported-curve", "another-kid"],
)
def test_a_damaged_stored_signing_key_is_a_store_error(tmp_path: Path, pem: bytes) -> None:
    store = SqliteStore(tmp_path / "v.db")
    if not pem.startswith(b"-----"):
        pem = b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(pem) + b"-----END PRIVATE KEY-----\n"
    store.add_signing_key("some-kid", pem, NOW)
    with pytest.raises(StoreError):
        SigningKeys.load_or_create(store, NOW)

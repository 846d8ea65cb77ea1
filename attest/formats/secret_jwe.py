"""A released secret as a JSON Web Encryption to the TD's ephemeral key, and that key as a JWK
(RFC 7516 flattened JSON, RFC 7518, RFC 7517; docs/attestation.md §13, docs/kbs.md §4).

The key broker answers both front doors, gRPC ``GetResource`` and the KBS protocol's ``/kbs/v0/resource``,
with the same JWE, the one trustee's KBS sends and CoCo's attestation agent opens:

- EC TD keys (P-256, P-384, P-521): ``alg`` ``ECDH-ES+A256KW`` (ECDH with a one-time broker key, Concat KDF,
  AES key wrap of a random content key), the broker's ephemeral key as ``epk`` in the protected header;
- RSA TD keys (2048..4096 bits): ``alg`` ``RSA-OAEP-256``;
- content: ``enc`` ``A256GCM``; the additional authenticated data is the protected header as sent, so no
  member of it can be changed in transit.

Flattened serialization carries ``protected``, ``encrypted_key``, ``iv``, ``ciphertext`` and ``tag``. Every
member sits in the protected header (``epk`` included): trustee's client reads ``epk`` only from there, so
the broker encrypts the compact form with joserfc and re-presents its five parts as the flattened members
(RFC 7516 §7.2.2: the same values, hence the same AAD).

All JOSE work is joserfc's (docs/attestation.md §13 says why that library); this module only chooses the
algorithms and turns the library's errors into ``JweError`` / ``BindingError``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from attest.formats.binding import BindingError, TeePrivateKey, TeePublicKey, check_tee_key
from wire.crypto_input import MALFORMED

EC_ALG = "ECDH-ES+A256KW"
RSA_ALG = "RSA-OAEP-256"
ENC = "A256GCM"
ALGORITHMS = (EC_ALG, RSA_ALG, ENC)
FLATTENED_MEMBERS = ("protected", "encrypted_key", "iv", "ciphertext", "tag")
MAX_JWE_SIZE = 128 << 10  # characters of a flattened JWE a TD accepts (a 64 KiB secret is ~87 K of base64url)
_LIBRARY_ERRORS: tuple[type[Exception], ...] = (JoseError, KeyError, *MALFORMED)


class JweError(ValueError):
    """A JWE that cannot be opened: malformed, another algorithm, tampered, or for another key."""


def key_algorithm(public_key: TeePublicKey) -> str:
    """The JWE ``alg`` a secret for ``public_key`` is wrapped with (the ``alg`` of its ``tee-pubkey``)."""
    return EC_ALG if isinstance(public_key, ec.EllipticCurvePublicKey) else RSA_ALG


def _jose_key(key: TeePublicKey | TeePrivateKey) -> ECKey | RSAKey:
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return ECKey.import_key(key)
    return RSAKey.import_key(key)


def seal(secret: bytes, recipient: TeePublicKey) -> dict[str, str]:
    """``secret`` encrypted to ``recipient`` (a fresh content key, and for EC a fresh broker key, each
    time): the flattened JWE JSON object."""
    header = {"alg": key_algorithm(recipient), "enc": ENC}
    compact = jwe.encrypt_compact(header, secret, _jose_key(check_tee_key(recipient)), algorithms=ALGORITHMS)
    return dict(zip(FLATTENED_MEMBERS, compact.split("."), strict=True))


def open_secret(flattened: Mapping[str, Any] | str | bytes, private_key: TeePrivateKey) -> bytes:
    """The plaintext of a flattened JWE (object or its JSON text) with the TD's private key; any failure,
    an algorithm other than ``ALGORITHMS`` or a header the library does not understand (``crit``) included,
    is a ``JweError``."""
    if isinstance(flattened, str | bytes):
        if len(flattened) > MAX_JWE_SIZE:
            raise JweError(f"jwe is larger than {MAX_JWE_SIZE} characters")
        try:
            flattened = json.loads(flattened)
        except (ValueError, RecursionError):
            raise JweError("jwe is not json") from None
    if not isinstance(flattened, Mapping) or not all(
        isinstance(flattened.get(m), str) for m in FLATTENED_MEMBERS
    ):
        raise JweError(f"jwe is not a flattened json object with string {', '.join(FLATTENED_MEMBERS)}")
    data = {m: flattened[m] for m in FLATTENED_MEMBERS}
    try:
        result = jwe.decrypt_json(data, _jose_key(private_key), algorithms=ALGORITHMS)  # type: ignore[arg-type]
    except _LIBRARY_ERRORS as err:
        raise JweError(f"jwe does not open with this key: {type(err).__name__}") from None
    if result.plaintext is None:
        raise JweError("jwe has no plaintext")
    return bytes(result.plaintext)


def public_jwk(public_key: TeePublicKey) -> dict[str, str]:
    """The KBS protocol's ``tee-pubkey``: the key's RFC 7517 JWK with ``alg`` = the JWE key algorithm
    (``{"kty":"EC","crv","x","y","alg"}`` or ``{"kty":"RSA","n","e","alg"}``)."""
    jwk = {str(k): str(v) for k, v in _jose_key(check_tee_key(public_key)).as_dict(private=False).items()}
    return {**jwk, "alg": key_algorithm(public_key)}


def load_public_jwk(jwk: object) -> TeePublicKey:
    """The TD key a ``tee-pubkey`` JWK names: an EC (P-256/384/521) or RSA (2048..4096) public key whose
    ``alg``, when present, is the one secrets for it are wrapped with. Anything else is a ``BindingError``
    (``BAD_TEE_PUBLIC_KEY``)."""
    if not isinstance(jwk, Mapping) or not all(isinstance(v, str) for v in jwk.values()):
        raise BindingError("tee-pubkey is not a jwk of string members", "BAD_TEE_PUBLIC_KEY")
    if "d" in jwk or "p" in jwk:
        raise BindingError("tee-pubkey carries a private key", "BAD_TEE_PUBLIC_KEY")
    kty = jwk.get("kty")
    if kty not in ("EC", "RSA"):
        raise BindingError(f"tee-pubkey kty must be EC or RSA, not {str(kty)[:16]!r}", "BAD_TEE_PUBLIC_KEY")
    members = {k: v for k, v in jwk.items() if k not in ("alg", "use", "kid", "key_ops")}
    try:
        jose_key = ECKey.import_key(members) if kty == "EC" else RSAKey.import_key(members)
        key: Any = jose_key.get_op_key("wrapKey")
    except _LIBRARY_ERRORS as err:
        raise BindingError(
            f"tee-pubkey is not a usable jwk: {type(err).__name__}", "BAD_TEE_PUBLIC_KEY"
        ) from None
    key = check_tee_key(key)
    alg = jwk.get("alg")
    if alg is not None and alg != key_algorithm(key):
        raise BindingError(f"tee-pubkey alg must be {key_algorithm(key)} for this key", "BAD_TEE_PUBLIC_KEY")
    return key  # type: ignore[no-any-return]

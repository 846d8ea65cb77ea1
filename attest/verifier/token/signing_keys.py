"""The verifier's token signing keys, persisted in the store so a restart keeps issued tokens valid
(docs/attestation.md §13, docs/fleet.md "The database").

``SigningKeys.load_or_create`` reads every stored key (PKCS#8 PEM, unencrypted: the database, a 0600 file
or a PostgreSQL database, is the verifier's secret store anyway) and creates one P-256 key on first start,
atomically in the database, so replicas starting together on one database agree on a single key; ``reload``
picks up keys another replica added. The newest key signs; all keys are published in the JWKS, so rotation
(``rotate``) never invalidates tokens already issued. A stored key that does not load, or is not the P-256
key its kid names, is a ``StoreError``: the database is damaged (``tdxsim verifier`` says so in one line and
exits 2).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attest.formats import x509_input
from attest.verifier.store import Store, StoreError
from attest.verifier.token import jwt


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load(store: Store, known: dict[str, ec.EllipticCurvePrivateKey]) -> list[ec.EllipticCurvePrivateKey]:
    """Every stored key, oldest first (``known`` ones by kid without parsing them again)."""
    keys: list[ec.EllipticCurvePrivateKey] = []
    for kid, pem, _ in store.signing_keys():
        if kid in known:
            keys.append(known[kid])
            continue
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except x509_input.MALFORMED as err:  # UnsupportedAlgorithm included: the database is damaged
            raise StoreError(f"stored signing key {kid} cannot be loaded: {err}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or jwt.thumbprint(key.public_key()) != kid:
            raise StoreError(f"stored signing key {kid} is not the p-256 key its kid names")
        keys.append(key)
    return keys


class SigningKeys:
    def __init__(self, store: Store, keys: list[ec.EllipticCurvePrivateKey]) -> None:
        if not keys:
            raise ValueError("no signing key")
        self._store = store
        self._keys = keys
        self._loaded_at = time.monotonic()

    @classmethod
    def load_or_create(cls, store: Store, now: int) -> SigningKeys:
        keys = _load(store, {})
        if not keys:
            key = ec.generate_private_key(ec.SECP256R1())
            # Atomic in the database: replicas starting together on an empty one agree on a single first key.
            store.add_first_signing_key(jwt.thumbprint(key.public_key()), _pem(key), now)
            keys = _load(store, {})
        return cls(store, keys)

    def reload(self, max_age: float = 0.0) -> None:
        """Re-read the key set unless it was read less than ``max_age`` seconds ago: keys another verifier
        sharing the database added (rotation) are published and, when newest, sign here too. Keys already
        loaded are not parsed again."""
        now = time.monotonic()
        if max_age > 0 and now - self._loaded_at < max_age:
            return
        keys = _load(self._store, {jwt.thumbprint(k.public_key()): k for k in self._keys})
        if keys:
            self._keys = keys
        self._loaded_at = now

    def rotate(self, now: int) -> str:
        """Add a new signing key; returns its kid. Older keys stay published."""
        key = ec.generate_private_key(ec.SECP256R1())
        kid = jwt.thumbprint(key.public_key())
        self._store.add_signing_key(kid, _pem(key), now)
        self._keys.append(key)
        return kid

    @property
    def current_kid(self) -> str:
        return jwt.thumbprint(self._keys[-1].public_key())

    def sign(self, claims: Mapping[str, Any]) -> str:
        return jwt.sign(claims, self._keys[-1])

    def jwks(self) -> dict[str, Any]:
        return jwt.jwks_document([k.public_key() for k in self._keys])

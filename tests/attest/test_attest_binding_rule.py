"""The REPORTDATA binding rule of attest/binding.py (attestation.md §11)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from attest.formats import binding


def _key() -> ec.EllipticCurvePublicKey:
    return ec.generate_private_key(ec.SECP256R1()).public_key()


def test_report_data_is_sha512_of_domain_nonce_and_key_digest() -> None:
    nonce, spki = bytes(range(32)), binding.spki_der(_key())
    expected = hashlib.sha512(b"tdxsim-attest-v1" + nonce + hashlib.sha256(spki).digest()).digest()
    assert binding.report_data(nonce, spki) == expected
    assert len(expected) == binding.REPORT_DATA_SIZE


def test_binding_changes_with_nonce_and_key() -> None:
    spki = binding.spki_der(_key())
    value = binding.report_data(bytes(32), spki)
    assert binding.matches(value, bytes(32), spki)
    assert not binding.matches(value, b"\x01" + bytes(31), spki)
    assert not binding.matches(value, bytes(32), binding.spki_der(_key()))


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_nonce_of_wrong_size_is_refused(size: int) -> None:
    with pytest.raises(binding.BindingError) as err:
        binding.report_data(bytes(size), binding.spki_der(_key()))
    assert err.value.reason == "BAD_NONCE"


def test_only_canonical_spki_of_the_kbs_key_types_is_a_tee_key() -> None:
    key = _key()
    assert binding.load_tee_public_key(binding.spki_der(key)) == key
    for good in (
        ec.generate_private_key(ec.SECP384R1()).public_key(),
        ec.generate_private_key(ec.SECP521R1()).public_key(),
        rsa.generate_private_key(65537, 2048).public_key(),
    ):
        assert binding.load_tee_public_key(binding.spki_der(good)) == good
    k1 = ec.generate_private_key(ec.SECP256K1()).public_key()
    rsa_1024 = rsa.generate_private_key(65537, 1024).public_key()
    compressed = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    for bad in (b"", b"junk", binding.spki_der(k1), binding.spki_der(rsa_1024), compressed):
        with pytest.raises(binding.BindingError) as err:
            binding.load_tee_public_key(bad)
        assert err.value.reason == "BAD_TEE_PUBLIC_KEY"

"""Key-broker envelope (ECDH P-256 + HKDF-SHA256 + AES-256-GCM) and resource policies."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from attest.formats.binding import spki_der
from attest.verifier.kbs import EnvelopeError, ResourcePolicyError, open_sealed, parse_resource_policy, seal


def _td_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_sealed_secret_opens_only_with_the_td_key_and_path() -> None:
    key = _td_key()
    sealed = seal(b"disk key 0123", spki_der(key.public_key()), "default/key/disk")
    assert b"disk key 0123" not in sealed.ciphertext
    assert len(sealed.ciphertext) == len(b"disk key 0123") + 16 and len(sealed.iv) == 12
    assert open_sealed(sealed, key, "default/key/disk") == b"disk key 0123"
    with pytest.raises(EnvelopeError):
        open_sealed(sealed, _td_key(), "default/key/disk")
    with pytest.raises(EnvelopeError):
        open_sealed(sealed, key, "default/key/other")
    flipped = replace(sealed, ciphertext=bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:])
    with pytest.raises(EnvelopeError):
        open_sealed(flipped, key, "default/key/disk")


def test_every_release_uses_a_fresh_ephemeral_key() -> None:
    spki = spki_der(_td_key().public_key())
    a, b = seal(b"s", spki, "p"), seal(b"s", spki, "p")
    assert a.ephemeral_public_key != b.ephemeral_public_key and a.ciphertext != b.ciphertext


def _claims(status: str = "affirming", **tdx: Any) -> dict[str, Any]:
    return {
        "submods": {
            "cpu0": {
                "ear.status": status,
                "ear.appraisal-policy-id": "policy:prod",
                "ear.veraison.annotated-evidence": {"tdx": {"mr_td": "AB" * 48, "debug": False, **tdx}},
            }
        }
    }


def test_resource_policy_matches_claims_case_insensitively_and_lists_denials() -> None:
    policy = parse_resource_policy(
        '{"attestation_policies": ["prod"], "claims": {"mr_td": ["' + "ab" * 48 + '"], "debug": [false]}}'
    )
    assert policy.denials(_claims()) == []
    assert policy.denials(_claims(debug=True)) == ["claim debug does not match"]
    assert policy.denials(_claims("warning")) == ["ear.status 'warning' not in ['affirming']"]
    assert parse_resource_policy('{"attestation_policies": ["dev"]}').denials(_claims()) == [
        "appraisal policy 'policy:prod' not accepted"
    ]
    assert parse_resource_policy('{"claims": {"rtmr3": ["' + "00" * 48 + '"]}}').denials(_claims()) == [
        "claim rtmr3 does not match"
    ]


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "{not json",
        '{"claim": {}}',
        '{"ear_statuses": []}',
        '{"ear_statuses": ["great"]}',
        '{"ear_statuses": [[]]}',
        '{"ear_statuses": [{}]}',
        '{"ear_statuses": "affirming"}',
        '{"claims": {"a": []}}',
        '{"claims": {"mr_td": []}}',
        '{"claims": {"mr_td": [[]]}}',
        '{"claims": {"mr_td": ["00"]}}',
        '{"claims": {"debug": ["false"]}}',
        '{"claims": {"advisory_ids": [["INTEL-SA-00837"]]}}',
        '{"claims": {"quote_version": [true]}}',
        '{"claims": {"tcb_status": ["Great"]}}',
        '{"attestation_policies": [1]}',
        '{"attestation_policies": ["a/b"]}',
        '{"version": true}',
        '{"version": "1"}',
    ],
)
def test_bad_resource_policies_are_refused(text: str) -> None:
    with pytest.raises(ResourcePolicyError):
        parse_resource_policy(text)


DEEP = "[" * 2000  # json.loads raises RecursionError, not ValueError


def test_deeply_nested_resource_policy_is_a_resource_policy_error() -> None:
    with pytest.raises(ResourcePolicyError, match=r"^resource policy is not json: nested too deeply$"):
        parse_resource_policy(DEEP)


def test_a_resource_policy_over_64_kib_is_resource_too_large() -> None:
    with pytest.raises(ResourcePolicyError) as err:
        parse_resource_policy("{}".ljust((64 << 10) + 1))
    assert err.value.reason == "RESOURCE_TOO_LARGE"
    assert parse_resource_policy("{}".ljust(64 << 10)).ear_statuses == {"affirming"}

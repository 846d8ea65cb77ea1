"""Resource policies of the key broker: which verified tokens may receive a resource."""

from __future__ import annotations

from typing import Any

import pytest

from attest.verifier.kbs import ResourcePolicyError, parse_resource_policy


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

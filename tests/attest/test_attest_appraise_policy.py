"""Appraisal (attestation.md §10): every mismatch listed, safe defaults, strict policy documents."""

from __future__ import annotations

from dataclasses import replace

import pytest
from attest_vectors import expected_for, read_quote

from attest.formats import decode_quote
from attest.formats.quote import TdReport10
from attest.verifier.appraise import (
    AppraisalOptions,
    AppraisalRefused,
    Evidence,
    Freshness,
    PolicyError,
    ReferenceValues,
    StaleEvidence,
    appraise,
    default_policy,
    policy_from_json,
    policy_to_json,
    require_ok,
)
from attest.verifier.appraise.options import MAX_POLICY_SIZE, PolicyTooLarge


def debug_body() -> TdReport10:
    """The TD report of the real DEBUG vector (like every reader of the vectors, skips without them)."""
    return decode_quote(read_quote("tdx_v4_debug_td_quote.bin")).body


def v4_body() -> TdReport10:
    return decode_quote(read_quote("tdx_v4_quote.bin")).body


def _evidence(
    body: TdReport10 | None = None, status: str = "UpToDate", advisories: tuple[str, ...] = ()
) -> Evidence:
    return Evidence(v4_body() if body is None else body, status, advisories)


def test_real_debug_td_is_refused_by_the_default_policy() -> None:
    assert expected_for("tdx_v4_debug_td_quote.bin")["td_attributes"] == debug_body().td_attributes.hex()
    result = appraise(_evidence(debug_body()), default_policy().options, freshness=Freshness.FRESH)
    assert result.reasons == ("DEBUG_TD",)
    allowed = policy_from_json("dbg", '{"allow_debug": true}').options
    assert appraise(_evidence(debug_body()), allowed, freshness=Freshness.FRESH).ok


def test_default_policy_requires_a_nonce_and_up_to_date() -> None:
    options = default_policy().options
    assert appraise(_evidence(), options).reasons == ("NONCE_REQUIRED",)
    assert appraise(_evidence(status="OutOfDate"), options, freshness=Freshness.FRESH).reasons == (
        "TCB_STATUS_NOT_ACCEPTED",
    )


def test_all_mismatches_are_listed_freshness_first() -> None:
    options = AppraisalOptions(
        reference_values=ReferenceValues(mr_td=frozenset({b"\x01" * 48}), rtmr1=frozenset({b"\x02" * 48})),
        min_tee_tcb_svn=b"\xff" + bytes(15),
        rejected_advisory_ids=frozenset({"INTEL-SA-00615"}),
    )
    result = appraise(
        _evidence(debug_body(), "SWHardeningNeeded", ("INTEL-SA-00615",)),
        options,
        freshness=Freshness.REPLAYED,
        report_data_bound=False,
    )
    assert result.reasons == (
        "NONCE_REPLAYED",
        "REPORT_DATA_MISMATCH",
        "DEBUG_TD",
        "TCB_STATUS_NOT_ACCEPTED",
        "ADVISORY_REJECTED",
        "TEE_TCB_SVN_TOO_LOW",
        "MRTD_MISMATCH",
        "RTMR1_MISMATCH",
    )


@pytest.mark.parametrize(
    ("freshness", "reason"), [(Freshness.REPLAYED, "NONCE_REPLAYED"), (Freshness.EXPIRED, "NONCE_EXPIRED")]
)
def test_require_ok_raises_stale_evidence_when_nonce_is_stale(freshness: Freshness, reason: str) -> None:
    result = appraise(_evidence(debug_body()), default_policy().options, freshness=freshness)
    with pytest.raises(StaleEvidence) as err:
        require_ok(result, "default")
    assert (err.value.reason, err.value.appraisal.reasons, err.value.policy_name) == (
        reason,
        (reason, "DEBUG_TD"),
        "default",
    )


@pytest.mark.parametrize("freshness", [Freshness.FRESH, Freshness.ABSENT])
def test_require_ok_raises_a_plain_refusal_for_other_mismatches(freshness: Freshness) -> None:
    result = appraise(_evidence(debug_body()), default_policy().options, freshness=freshness)
    with pytest.raises(AppraisalRefused) as err:
        require_ok(result, "default")
    assert type(err.value) is AppraisalRefused
    assert err.value.reason == ("DEBUG_TD" if freshness is Freshness.FRESH else "NONCE_REQUIRED")
    ok = appraise(_evidence(), default_policy().options, freshness=Freshness.FRESH)
    assert require_ok(ok, "default") is ok


def test_reference_values_accept_any_listed_value() -> None:
    options = policy_from_json(
        "p",
        '{"require_nonce": false, "reference_values": {"mr_td": ["'
        + "00" * 48
        + '", "'
        + expected_for("tdx_v4_quote.bin")["mr_td"]
        + '"],'
        ' "td_attributes": ["0000001000000000"], "rtmr3": ["' + "00" * 48 + '"]}}',
    ).options
    result = appraise(_evidence(), options)
    assert result.ok and set(result.checked_fields) == {"mr_td", "td_attributes", "rtmr3"}
    other = replace(v4_body(), xfam=b"\xff" * 8, mr_td=b"\x07" * 48)
    assert appraise(_evidence(other), options).reasons == ("MRTD_MISMATCH",)


def test_reference_value_sets_merge_into_the_policy() -> None:
    policy = policy_from_json("p", '{"require_nonce": false, "reference_value_sets": ["img"]}')
    assert policy.reference_value_sets == ("img",)
    options = policy.resolve({"img": {"mr_td": [b"\x01" * 48]}})
    assert appraise(_evidence(), options).reasons == ("MRTD_MISMATCH",)
    options = policy.resolve({"img": {"mr_td": [b"\x01" * 48, v4_body().mr_td]}})
    assert appraise(_evidence(), options).ok


def test_event_log_required_and_replay_mismatches_are_reported() -> None:
    options = AppraisalOptions(require_nonce=False, require_event_log=True)
    assert appraise(_evidence(), options).reasons == ("EVENT_LOG_REQUIRED",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"allow_debug": "yes"}', "true or false"),
        ('{"accepted_tcb_statuses": ["Revoked"]}', "never"),
        ('{"accepted_tcb_statuses": ["Fine"]}', r"accepted_tcb_statuses\[0\]: must be one of"),
        ('{"accepted_tcb_statuses": []}', "accepted_tcb_statuses: must hold 1..256 values"),
        ('{"accepted_tcb_statuses": [["UpToDate"]]}', r"accepted_tcb_statuses\[0\]: must be a string"),
        ('{"accepted_tcb_statuses": "UpToDate"}', "accepted_tcb_statuses: must be a list"),
        ('{"reference_values": {"mr_td": ["00"]}}', "48 bytes"),
        ('{"reference_values": {"mr_td": [" ' + "ab" * 47 + ' "]}}', "96 hex digits"),
        ('{"reference_values": {"mrtd": []}}', "unknown member reference_values.'mrtd'"),
        ('{"reference_values": []}', "reference_values: must be a json object"),
        ('{"min_tee_tcb_svn": "zz"}', "min_tee_tcb_svn: must be 32 hex digits"),
        ('{"token_ttl_seconds": 0}', "token_ttl_seconds: must be 1..86400"),
        ('{"token_ttl_seconds": true}', "token_ttl_seconds: must be an integer"),
        ('{"token_ttl_seconds": 1e400}', "token_ttl_seconds: must be an integer"),
        ('{"rejected_advisory_ids": [{}]}', r"rejected_advisory_ids\[0\]: must be a string"),
        ('{"rejected_advisory_ids": ["INTEL SA"]}', "must match"),
        ('{"reference_value_sets": ["a/b"]}', "must match"),
        ('{"reference_value_sets": [' + ", ".join(['"s"'] * 17) + "]}", "0..16 values"),
        ('{"allow_debugging": true}', "unknown member 'allow_debugging'"),
        ('{"version": 2}', "version: must be 1"),
        ('{"version": true}', "version: must be 1"),
        ('{"version": 1.0}', "version: must be 1"),
        ("[1]", "json object"),
    ],
)
def test_bad_policy_documents_are_refused_before_any_quote(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        policy_from_json("p", text)


def test_policy_json_round_trips_through_the_canonical_form() -> None:
    policy = policy_from_json(
        "p",
        '{"allow_debug": true, "accepted_tcb_statuses": ["UpToDate", "SWHardeningNeeded"],'
        ' "reference_values": {"xfam": ["e702060000000000"]}, "token_ttl_seconds": 60}',
    )
    assert policy_from_json("p", policy_to_json(policy)) == policy


DEEP = "[" * 2000  # json.loads raises RecursionError, not ValueError


def test_deeply_nested_policy_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match=r"^policy is not json: nested too deeply$"):
        policy_from_json("p", DEEP)


def test_a_policy_over_64_kib_is_too_large_before_it_is_decoded() -> None:
    at_limit = '{"rejected_advisory_ids": ["A"]}'.ljust(MAX_POLICY_SIZE)
    assert policy_from_json("p", at_limit).options.rejected_advisory_ids == {"A"}
    with pytest.raises(PolicyTooLarge) as err:
        policy_from_json("p", at_limit + " ")
    assert err.value.reason == "POLICY_TOO_LARGE"
    with pytest.raises(PolicyTooLarge):
        policy_from_json("p", "[" * (28 << 20))  # the 28 MiB document a client once stored


@pytest.mark.parametrize("name", ["", "a" * 129, "a/b", "é", "٣", "a b"])
def test_policy_names_are_ascii(name: str) -> None:
    with pytest.raises(PolicyError, match="policy name"):
        policy_from_json(name, "{}")

"""Hostile request fields through the verifier's in-process gRPC server: every refusal is a named status with
an ``ErrorInfo``, never UNKNOWN or INTERNAL (docs/conventions.md §7), and what a refusal or the audit log
repeats of the caller's input stays small (a long echo once overflowed gRPC's trailer limit and reached the
client as RESOURCE_EXHAUSTED without a reason).

Random bytes, strings (any Unicode, long, JSON-shaped) and extreme integers go into every field of every
VerifierService request (hypothesis, derandomized and bounded); named cases pin each escape that was found.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from attest_served import Served, served_verifier
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attest.formats import binding
from attest.verifier.service.servicer import MAX_MESSAGE
from wire.rpc_status import error_info
from wire.v1 import attestation_pb2 as pb

NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
P256_SPKI = binding.spki_der(ec.generate_private_key(ec.SECP256R1()).public_key())
#: The same key with its named curve replaced by prime192v2 (1.2.840.10045.3.1.2), which cryptography
#: refuses with UnsupportedAlgorithm rather than ValueError.
UNSUPPORTED_CURVE_SPKI = P256_SPKI.replace(
    bytes.fromhex("06082a8648ce3d030107"), bytes.fromhex("06082a8648ce3d030102")
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served_verifier(tmp_path_factory.mktemp("verifier") / "v.db", max_workers=4) as served:
        yield served


def outcome(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    """``(code, ErrorInfo reason)`` of a call: OK with "", or a refusal that must carry an ErrorInfo."""
    try:
        call()
    except grpc.RpcError as err:
        code = err.code()  # type: ignore[attr-defined]
        assert code not in NEVER, (code, err.details())  # type: ignore[attr-defined]
        info = error_info(err)
        assert info is not None, (code, err.details())  # type: ignore[attr-defined]
        assert len(err.details() or "") <= MAX_MESSAGE  # type: ignore[attr-defined]
        return code, info.reason
    return grpc.StatusCode.OK, ""


# ---- the escapes that were found ---------------------------------------------------------------------------


def test_attest_with_a_key_on_an_unsupported_curve_is_bad_tee_public_key(served: Served) -> None:
    request = pb.AttestRequest(quote=b"q", nonce=bytes(32), tee_public_key=UNSUPPORTED_CURVE_SPKI)
    assert outcome(lambda: served.stub.Attest(request)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "BAD_TEE_PUBLIC_KEY",
    )


@pytest.mark.parametrize(
    "policy",
    [
        '{"ear_statuses": [[]]}',
        '{"ear_statuses": [{}]}',
        '{"claims": {"mr_td": [[]]}}',
        '{"claims": {"x": [1]}}',
    ],
)
def test_put_resource_with_unhashable_or_unknown_policy_values_is_resource_policy_invalid(
    served: Served, policy: str
) -> None:
    request = pb.PutResourceRequest(path="default/key/disk", secret=b"s", policy_json=policy)
    assert outcome(lambda: served.admin.PutResource(request)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "RESOURCE_POLICY_INVALID",
    )


def test_documents_and_secrets_over_64_kib_are_too_large(served: Served) -> None:
    big = "{}".ljust((64 << 10) + 1)
    with pytest.raises(grpc.RpcError) as err:
        served.admin.SetPolicy(pb.SetPolicyRequest(name="p", policy_json=big))
    info = error_info(err.value)
    assert info is not None and dict(info.metadata) == {"limit": str(64 << 10), "size": str(len(big))}
    assert outcome(lambda: served.admin.SetPolicy(pb.SetPolicyRequest(name="p", policy_json=big))) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "POLICY_TOO_LARGE",
    )
    huge = "[" * (8 << 20)  # what once went into the store: megabytes of policy
    assert outcome(lambda: served.admin.SetPolicy(pb.SetPolicyRequest(name="p", policy_json=huge)))[1] == (
        "POLICY_TOO_LARGE"
    )
    for request in (
        pb.PutResourceRequest(path="a", secret=b"s", policy_json=big),
        pb.PutResourceRequest(path="a", secret=bytes((64 << 10) + 1)),
    ):
        assert outcome(lambda r=request: served.admin.PutResource(r)) == (  # type: ignore[misc]
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "RESOURCE_TOO_LARGE",
        )
    assert outcome(lambda: served.admin.PutResource(pb.PutResourceRequest(path="a", secret=bytes(64 << 10))))[
        0
    ] == (grpc.StatusCode.OK)


def test_long_inputs_are_not_echoed_whole(served: Served) -> None:
    long = "k" * 20000
    before = (
        served.core.store.audit_entries(0, 1000)[-1].id if served.core.store.audit_entries(0, 1000) else 0
    )
    cases: list[tuple[Callable[[], object], tuple[grpc.StatusCode, str]]] = [
        (
            lambda: served.admin.SetPolicy(pb.SetPolicyRequest(name="p", policy_json=json.dumps({long: 1}))),
            (grpc.StatusCode.INVALID_ARGUMENT, "POLICY_INVALID"),
        ),
        (
            lambda: served.stub.GetPolicy(pb.GetPolicyRequest(name=long)),
            (grpc.StatusCode.NOT_FOUND, "POLICY_NOT_FOUND"),
        ),
        (
            lambda: served.stub.Attest(pb.AttestRequest(quote=b"q", policy=long)),
            (grpc.StatusCode.NOT_FOUND, "POLICY_NOT_FOUND"),
        ),
        (
            lambda: served.admin.PutResource(pb.PutResourceRequest(path=long, secret=b"s")),
            (grpc.StatusCode.INVALID_ARGUMENT, "RESOURCE_PATH_INVALID"),
        ),
    ]
    for call, expected in cases:
        assert outcome(call) == expected
    entries = served.core.store.audit_entries(before, 1000)
    assert entries and all(len(e.subject) <= 256 for e in entries)


# ---- every field, random -----------------------------------------------------------------------------------

TEXT = st.one_of(
    st.text(max_size=64),
    st.sampled_from(["", "default", "a" * 129, "k" * 9000, "[" * 3000, '{"ear_statuses": [[]]}', "{}"]),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=20), inner, max_size=3),
        max_leaves=8,
    ).map(json.dumps),
)
BYTES = st.one_of(
    st.binary(max_size=128),
    st.sampled_from(
        [b"", bytes(32), P256_SPKI, UNSUPPORTED_CURVE_SPKI, bytes(64 << 10), bytes((64 << 10) + 1)]
    ),
)
U32 = st.sampled_from([0, 1, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1)
U64 = st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64 - 1]) | st.integers(0, 2**64 - 1)
BEARER = st.one_of(
    st.none(),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80).map(lambda t: f"Bearer {t}"),
    st.just("Bearer a.b.c"),
)


@st.composite
def requests(draw: st.DrawFn, served: Served) -> tuple[str, Callable[[], Any]]:
    stub, admin = served.stub, served.admin
    method = draw(st.sampled_from(["GetNonce", "Attest", "SetPolicy", "GetPolicy", "SetReferenceValues",
                                   "PutResource", "GetResource", "GetAuditLog"]))  # fmt: skip
    if method == "GetNonce":
        request: Any = pb.GetNonceRequest(ttl_seconds=draw(U32))
        return method, lambda: stub.GetNonce(request)
    if method == "Attest":
        request = pb.AttestRequest(
            quote=draw(BYTES),
            event_log=draw(BYTES),
            nonce=draw(BYTES),
            tee_public_key=draw(BYTES),
            policy=draw(TEXT),
        )
        return method, lambda: stub.Attest(request)
    if method == "SetPolicy":
        request = pb.SetPolicyRequest(name=draw(TEXT), policy_json=draw(TEXT))
        return method, lambda: admin.SetPolicy(request)
    if method == "GetPolicy":
        request = pb.GetPolicyRequest(name=draw(TEXT))
        return method, lambda: stub.GetPolicy(request)
    if method == "SetReferenceValues":
        values = [
            pb.ReferenceValue(
                field=draw(st.sampled_from(["mr_td", "xfam", "nope", ""]) | TEXT),
                values=draw(st.lists(BYTES, max_size=3)),
            )
            for _ in range(draw(st.integers(0, 3)))
        ]
        request = pb.SetReferenceValuesRequest(name=draw(TEXT), values=values)
        return method, lambda: admin.SetReferenceValues(request)
    if method == "PutResource":
        request = pb.PutResourceRequest(path=draw(TEXT), secret=draw(BYTES), policy_json=draw(TEXT))
        return method, lambda: admin.PutResource(request)
    if method == "GetResource":
        request = pb.GetResourceRequest(path=draw(TEXT))
        bearer = draw(BEARER)
        metadata = None if bearer is None else (("authorization", bearer),)
        return method, lambda: stub.GetResource(request, metadata=metadata)
    request = pb.GetAuditLogRequest(after_id=draw(U64), limit=draw(U32))
    return method, lambda: admin.GetAuditLog(request)


@settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
def test_random_fields_of_every_request_get_a_named_status(served: Served, data: Any) -> None:
    _, call = data.draw(requests(served))
    outcome(call)


def test_the_fuzz_left_the_server_answering(served: Served, tmp_path: Path) -> None:
    assert outcome(lambda: served.stub.GetJwks(pb.GetJwksRequest())) == (grpc.StatusCode.OK, "")

"""Every parser of untrusted bytes raises only its package's own error (docs/conventions.md §7).

Random, truncated and mutated inputs (hypothesis, derandomized so a run is repeatable and bounded in time)
for quotes (whole quotes and their PCK certificates, DER mutated and re-wrapped in PEM), the PCK SGX
extension, TDREPORTs, CC event logs, collateral (JSON members replaced, CRL and certificate bytes mutated),
the TD's public key, tokens and JWKs, and the key broker's envelope. An escape (``UnsupportedAlgorithm``,
``ValueError``, ``IndexError`` …) is what the verifier would answer with UNKNOWN or INTERNAL.
``TDXSIM_FUZZ_EXAMPLES`` scales every test's example count for a longer local run.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from dataclasses import replace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attest.errors import AttestError, CertificateChainError, CollateralError, QuoteFormatError
from attest.formats import binding, secret_jwe
from attest.formats.collateral import parse_collateral, parse_qe_identity, parse_tcb_info
from attest.formats.eventlog import EventLogError, compare_rtmrs, decode_event_log, encode_event_log, measure
from attest.formats.eventlog.ccel import ALG_SHA256, ALG_SHA384, SpecIdEvent, decode_ccel_table
from attest.formats.pck_extension import parse_sgx_extension
from attest.formats.quote import CertificationData, Quote, decode_quote
from attest.formats.tdreport import decode_tdreport
from attest.formats.x509_input import certificates
from attest.intel import PkiOptions
from attest.verifier import offline
from attest.verifier.dcap import Verifier
from attest.verifier.dcap.pck_platform import pck_platform
from attest.verifier.token import TokenError, jwks_document, sign, verify
from attest.verifier.token.jwt import jwk_to_key
from tests.attest.attest_sim_evidence import NOW, Evidence, make_evidence

SCALE = float(os.environ.get("TDXSIM_FUZZ_EXAMPLES", "1"))


def fuzz(examples: int) -> Any:
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Evidence:
    return make_evidence(tmp_path_factory.mktemp("pki") / "pki", PkiOptions(now=NOW, sgx_type=1))


@pytest.fixture(scope="module")
def verifier(evidence: Evidence) -> Verifier:
    return Verifier([evidence.pki.root_der], cache_size=0)


# ---- mutations ---------------------------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, original: bytes, max_edits: int = 4) -> bytes:
    """``original`` with a few byte changes, deletions, insertions, or cut short."""
    data = bytearray(original)
    if draw(st.booleans()) and data:
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    for _ in range(draw(st.integers(1, max_edits))):
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        op = draw(st.sampled_from(["set", "flip", "delete", "insert"]))
        if op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def _pem(der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = b"\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return b"-----BEGIN CERTIFICATE-----\n" + lines + b"\n-----END CERTIFICATE-----\n"


def _ders(pem_chain: bytes | str) -> list[bytes]:
    raw = pem_chain.encode() if isinstance(pem_chain, str) else pem_chain
    return [
        c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(raw.rstrip(b"\0"))
    ]


def _with_pck_chain(quote: Quote, chain: bytes) -> bytes:
    outer = quote.signature_data.certification_data
    inner = replace(outer, certification_data=CertificationData(5, chain))
    return replace(quote, signature_data=replace(quote.signature_data, certification_data=inner)).encode()


def _only(errors: tuple[type[Exception], ...], call: Any, *args: Any, **kwargs: Any) -> None:
    """Call; the expected errors pass, anything else fails the test (hypothesis then shrinks it)."""
    with contextlib.suppress(*errors):
        call(*args, **kwargs)


# ---- quotes ------------------------------------------------------------------------------------------------


@fuzz(300)
@given(data=st.data())
def test_mutated_quotes_raise_only_attest_errors(evidence: Evidence, verifier: Verifier, data: Any) -> None:
    raw = data.draw(mutated(evidence.quote))
    _only((QuoteFormatError,), decode_quote, raw)
    _only((AttestError,), offline.inspect, raw)
    _only((AttestError,), verifier.verify, raw, evidence.collateral, NOW)


@fuzz(400)
@given(data=st.data())
def test_mutated_pck_certificates_raise_only_attest_errors(
    evidence: Evidence, verifier: Verifier, data: Any
) -> None:
    quote = decode_quote(evidence.quote)
    ders = _ders(quote.pck_chain.data)
    which = data.draw(st.integers(0, len(ders) - 1))
    ders[which] = data.draw(mutated(ders[which]))
    raw = _with_pck_chain(quote, b"".join(_pem(d) for d in ders))
    parsed = decode_quote(raw)
    _only((AttestError,), pck_platform, parsed)
    _only((AttestError,), offline.inspect, raw)
    _only((AttestError,), verifier.verify, raw, evidence.collateral, NOW)


@fuzz(300)
@given(raw=st.binary(max_size=2048))
def test_random_bytes_as_quote_tdreport_event_log_ccel_and_sgx_extension(raw: bytes) -> None:
    _only((QuoteFormatError,), decode_quote, raw)
    _only((QuoteFormatError,), decode_tdreport, raw.ljust(1024, b"\x81")[:1024])
    _only((EventLogError,), decode_event_log, raw)
    _only((EventLogError,), decode_ccel_table, raw)
    _only((CertificateChainError,), parse_sgx_extension, raw)


@fuzz(300)
@given(data=st.data())
def test_mutated_sgx_extensions_raise_only_certificate_chain_errors(evidence: Evidence, data: Any) -> None:
    leaf = x509.load_pem_x509_certificate(evidence.pki.platform(0).chain_pem)
    ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.2.840.113741.1.13.1")).value
    assert isinstance(ext, x509.UnrecognizedExtension)
    _only((CertificateChainError,), parse_sgx_extension, data.draw(mutated(ext.value, 6)))


def test_an_oid_with_a_huge_arc_is_a_certificate_chain_error() -> None:
    huge_oid = b"\x06\x82\x08\x00" + b"\xff" * 2047 + b"\x01"  # one arc of ~14000 bits
    item = b"\x30\x82\x08\x06" + huge_oid + b"\x04\x00"
    with pytest.raises(CertificateChainError):
        parse_sgx_extension(b"\x30\x82\x08\x0a" + item)


# ---- event logs --------------------------------------------------------------------------------------------


@fuzz(300)
@given(data=st.data())
def test_mutated_event_logs_raise_only_event_log_errors(data: Any) -> None:
    spec = SpecIdEvent(algorithms=((ALG_SHA256, 32), (ALG_SHA384, 48)))
    events = tuple(measure(i % 5, 0x80000000 + i, bytes([i]) * i, (ALG_SHA256, ALG_SHA384)) for i in range(6))
    raw = data.draw(mutated(encode_event_log(spec, events), 6))
    try:
        log = decode_event_log(raw)
        compare_rtmrs(log, [bytes(48)] * 4)
    except EventLogError:
        pass


# ---- collateral ------------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@fuzz(300)
@given(data=st.data())
def test_collateral_with_a_replaced_member_raises_only_collateral_errors(
    evidence: Evidence, verifier: Verifier, data: Any
) -> None:
    doc = json.loads(evidence.pki.collateral_json)
    member = data.draw(st.sampled_from(sorted(doc)))
    doc[member] = data.draw(JSON_VALUES)
    try:
        collateral = parse_collateral(json.dumps(doc))
    except CollateralError:
        return
    _only((AttestError,), verifier.verify, evidence.quote, collateral, NOW)


def _replace_in(doc: Any, path: list[Any], value: Any) -> Any:
    if not path:
        return value
    doc[path[0]] = _replace_in(doc[path[0]], path[1:], value)
    return doc


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            out += _paths(value, (*prefix, index))
    return out


@fuzz(400)
@given(data=st.data())
def test_tcb_info_and_qe_identity_with_a_replaced_field_raise_only_collateral_errors(
    evidence: Evidence, verifier: Verifier, data: Any
) -> None:
    coll = evidence.collateral
    which = data.draw(st.sampled_from(["tcb_info_text", "qe_identity_text"]))
    doc = json.loads(getattr(coll, which))
    path = data.draw(st.sampled_from(_paths(doc)[1:]))
    text = json.dumps(_replace_in(doc, list(path), data.draw(JSON_VALUES)))
    parse = parse_tcb_info if which == "tcb_info_text" else parse_qe_identity
    try:
        parse(text)
    except CollateralError:
        return
    _only((AttestError,), verifier.verify, evidence.quote, replace(coll, **{which: text}), NOW)


@fuzz(300)
@given(data=st.data())
def test_mutated_crls_and_collateral_chains_raise_only_attest_errors(
    evidence: Evidence, verifier: Verifier, data: Any
) -> None:
    coll = evidence.collateral
    which = data.draw(
        st.sampled_from(["root_ca_crl", "pck_crl", "tcb_info_issuer_chain", "pck_crl_issuer_chain"])
    )
    value: Any = getattr(coll, which)
    if isinstance(value, bytes):
        value = data.draw(mutated(value, 6))
    else:
        ders = _ders(value)
        index = data.draw(st.integers(0, len(ders) - 1))
        ders[index] = data.draw(mutated(ders[index]))
        value = b"".join(_pem(d) for d in ders).decode()
    doc = json.loads(evidence.pki.collateral_json)
    doc[which.removesuffix("_text")] = value.hex() if isinstance(value, bytes) else value
    _only((CollateralError,), parse_collateral, json.dumps(doc))
    _only((AttestError,), verifier.verify, evidence.quote, replace(coll, **{which: value}), NOW)


def test_collateral_text_with_a_lone_surrogate_is_a_collateral_error(evidence: Evidence) -> None:
    doc = json.loads(evidence.pki.collateral_json)
    doc["tcb_info"] = doc["tcb_info"][:-1] + ', "note": "\ud800"}'  # json.dumps escapes the surrogate
    with pytest.raises(CollateralError):
        parse_collateral(json.dumps(doc))


# ---- keys, tokens, envelopes -------------------------------------------------------------------------------

P256_SPKI = binding.spki_der(ec.generate_private_key(ec.SECP256R1()).public_key())
P256_OID = bytes.fromhex("06082a8648ce3d030107")  # 1.2.840.10045.3.1.7
EC_KEY_OID = bytes.fromhex("06072a8648ce3d0201")  # 1.2.840.10045.2.1


@pytest.mark.parametrize(
    "spki",
    [
        P256_SPKI.replace(P256_OID, bytes.fromhex("06082a8648ce3d030102")),  # prime192v2: unsupported curve
        P256_SPKI.replace(P256_OID, bytes.fromhex("06082a8648ce3d030199")),  # no such curve
        P256_SPKI.replace(EC_KEY_OID, bytes.fromhex("06072a8648ce3d0209")),  # no such key type
        binding.spki_der(ec.generate_private_key(ec.SECP256K1()).public_key()),
        binding.spki_der(rsa.generate_private_key(65537, 1024).public_key()),
        P256_SPKI[:-1],
        b"",
    ],
    ids=[
        "unsupported-curve",
        "unknown-curve",
        "unknown-key-type",
        "secp256k1",
        "rsa-1024",
        "truncated",
        "empty",
    ],
)
def test_unusable_tee_public_keys_are_binding_errors(spki: bytes) -> None:
    with pytest.raises(binding.BindingError) as err:
        binding.load_tee_public_key(spki)
    assert err.value.reason == "BAD_TEE_PUBLIC_KEY"


@fuzz(300)
@given(data=st.data())
def test_mutated_tee_public_keys_raise_only_binding_errors(data: Any) -> None:
    _only((binding.BindingError,), binding.load_tee_public_key, data.draw(mutated(P256_SPKI)))


SIGNING_KEY = ec.generate_private_key(ec.SECP256R1())
JWKS = jwks_document([SIGNING_KEY.public_key()])
TOKEN = sign({"iss": "tdxsim-verifier", "iat": NOW, "exp": NOW + 300}, SIGNING_KEY)


@fuzz(300)
@given(data=st.data())
def test_mutated_and_random_tokens_raise_only_token_errors(data: Any) -> None:
    header, payload, signature = TOKEN.split(".")
    choice = data.draw(st.integers(0, 3))
    if choice == 0:
        token = data.draw(st.text(max_size=300))
    elif choice == 1:
        token = data.draw(mutated(TOKEN.encode())).decode("latin-1")
    else:  # a genuine header (its kid is in the jwks) with a hostile payload or signature
        part = data.draw(st.text(max_size=200))
        token = f"{header}.{part}.{signature}" if choice == 2 else f"{header}.{payload}.{part}"
    _only((TokenError,), verify, token, JWKS, NOW, issuer="tdxsim-verifier")


def test_a_token_whose_payload_is_not_ascii_is_a_token_error() -> None:
    header, _, signature = TOKEN.split(".")
    with pytest.raises(TokenError):
        verify(f"{header}.é.{signature}", JWKS, NOW)


@fuzz(200)
@given(jwk=st.dictionaries(st.sampled_from(["kty", "crv", "x", "y", "kid"]), JSON_VALUES, max_size=5))
def test_hostile_jwks_raise_only_token_errors(jwk: dict[str, Any]) -> None:
    _only((TokenError,), jwk_to_key, {"kty": "EC", "crv": "P-256", **jwk})
    _only((TokenError,), verify, TOKEN, {"keys": [{**jwk, "kid": JWKS["keys"][0]["kid"]}]}, NOW)


JWE_KEY = ec.generate_private_key(ec.SECP256R1())
JWE = secret_jwe.seal(b"secret", JWE_KEY.public_key())


@fuzz(200)
@given(data=st.data())
def test_mutated_jwes_raise_only_jwe_errors(data: Any) -> None:
    member = data.draw(st.sampled_from(sorted(JWE)))
    hostile = {**JWE, member: data.draw(mutated(JWE[member].encode())).decode("latin-1")}
    _only((secret_jwe.JweError,), secret_jwe.open_secret, hostile, JWE_KEY)
    _only((secret_jwe.JweError,), secret_jwe.open_secret, data.draw(st.binary(max_size=300)), JWE_KEY)


@fuzz(200)
@given(
    jwk=st.dictionaries(st.sampled_from(["kty", "crv", "x", "y", "n", "e", "alg"]), JSON_VALUES, max_size=6)
)
def test_hostile_tee_pubkey_jwks_raise_only_binding_errors(jwk: dict[str, Any]) -> None:
    _only((binding.BindingError,), secret_jwe.load_public_jwk, jwk)
    _only((binding.BindingError,), secret_jwe.load_public_jwk, {"kty": "EC", "crv": "P-256", **jwk})


@fuzz(200)
@given(raw=st.binary(max_size=600))
def test_random_certificate_bytes_raise_only_the_callers_error(raw: bytes) -> None:
    _only((CertificateChainError,), certificates, raw, CertificateChainError)
    _only((CertificateChainError,), certificates, _pem(raw), CertificateChainError)

"""The verifier core in-process: nonce flow, refusals with reasons, tokens, key broker, audit (issue 4).

Simulated evidence comes from the simulated PCS and quoting enclave (``attest.intel``); real quotes from the
real vectors (tests that need them skip without them; the shared core then holds simulated collateral only).
The wall clock is injected, so nonce and token expiry need no sleeping.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from attest_vectors import (
    AVAILABLE,
    V4,
    expected_for,
    intel_root_pem,
    mixed_time,
    read_collateral,
    read_quote,
)
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from attest.formats import binding
from attest.formats.eventlog import EventLog, SpecIdEvent, encode_event_log, measure, replay
from attest.formats.eventlog.ccel import EV_EFI_ACTION
from attest.formats.secret_jwe import open_secret
from attest.intel import Pki, PkiOptions, init_pki
from attest.intel.quoting_enclave import QuotingEnclave
from attest.intel.td_report_builder import DEBUG, SEPT_VE_DISABLE, build_td_report
from attest.verifier.appraise import AppraisalRefused, StaleEvidence
from attest.verifier.dcap.quote_verifier import load_anchors
from attest.verifier.dcap.roots import INTEL_SGX_ROOT_CA_PEM
from attest.verifier.service.core import ISSUER, CollateralIndex, ServiceConfig, VerifierCore
from attest.verifier.service.errors import status_of
from attest.verifier.store import SqliteStore, open_store
from attest.verifier.token import b64url, tdx_claims, verify

V4_AT = mixed_time()
MRTD = bytes.fromhex("11" * 48)
LOG = EventLog(
    SpecIdEvent(),
    (
        measure(1, EV_EFI_ACTION, b"tdvf"),
        measure(2, EV_EFI_ACTION, b"kernel"),
        measure(3, EV_EFI_ACTION, b"initrd"),
    ),
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return init_pki(tmp_path_factory.mktemp("pki") / "pki", PkiOptions(now=V4_AT, seed=b"core"))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Td:
    key: ec.EllipticCurvePrivateKey

    @property
    def spki(self) -> bytes:
        return binding.spki_der(self.key.public_key())


def new_td() -> Td:
    return Td(ec.generate_private_key(ec.SECP256R1()))


def sim_quote(
    pki: Pki,
    report_data: bytes,
    *,
    mr_td: bytes = MRTD,
    debug: bool = False,
    rtmrs: Sequence[bytes] | None = None,
) -> bytes:
    platform = pki.platform(0)
    attributes = SEPT_VE_DISABLE | (DEBUG if debug else 0)
    report = build_td_report(
        report_data=report_data,
        mr_td=mr_td,
        td_attributes=attributes.to_bytes(8, "little"),
        rtmrs=rtmrs if rtmrs is not None else replay(LOG),
    )
    return QuotingEnclave(platform.key, platform.chain_pem).quote(report)


@pytest.fixture
def clock() -> Clock:
    return Clock(1_800_000_000.0)


@pytest.fixture
def core(tmp_path: Path, pki: Pki, clock: Clock) -> Iterator[VerifierCore]:
    # Intel's root and the simulated one, and (with the vectors) the real v4 collateral beside the simulated
    # PCS's: both platforms share an FMSPC, so the index must pick by root.
    real = [read_collateral(V4)] if AVAILABLE else []
    collateral = CollateralIndex([*real, pki.collateral_json])
    store = SqliteStore(tmp_path / "v.db")
    yield VerifierCore(
        store,
        [*_anchors(INTEL_SGX_ROOT_CA_PEM), *_anchors(pki.root_pem)],
        collateral,
        ServiceConfig(verify_at=V4_AT),
        clock,
    )
    store.close()


def _anchors(pem: bytes) -> list[x509.Certificate]:
    return load_anchors([pem])


def _reason(err: BaseException) -> tuple[str, str]:
    assert isinstance(err, Exception)
    status = status_of(err)
    assert status is not None
    return status[0], status[1]


def _attest(core: VerifierCore, pki: Pki, td: Td, **quote_args: object) -> tuple[bytes, bytes]:
    nonce = core.get_nonce().nonce
    return nonce, sim_quote(pki, binding.report_data(nonce, td.spki), **quote_args)  # type: ignore[arg-type]


def test_fresh_nonce_bound_quote_gets_a_token_verifiable_from_the_jwks(core: VerifierCore, pki: Pki) -> None:
    td = new_td()
    nonce, quote = _attest(core, pki, td)
    result = core.attest(quote, encode_event_log(LOG), nonce, td.spki, "")
    assert (result.ear_status, result.tcb_status, result.advisory_ids) == ("affirming", "UpToDate", ())
    claims = verify(result.token, core.jwks(), core.clock()).claims
    tdx = tdx_claims(claims)
    assert tdx["mr_td"] == MRTD.hex() and tdx["debug"] is False and tdx["event_log"] == "verified"
    assert tdx["rtmr1"] == replay(LOG)[1].hex()
    assert claims["eat_nonce"] == b64url(nonce)
    assert claims["exp"] - claims["iat"] == 300
    cpu0 = claims["submods"]["cpu0"]
    assert cpu0["ear.veraison.key-attestation"]["akpub"] == b64url(td.spki)
    assert cpu0["ear.trustworthiness-vector"] == {
        "instance-identity": 2,
        "configuration": 2,
        "executables": 2,
        "hardware": 2,
    }
    assert [(e.action, e.outcome, e.reason) for e in core.audit_log(0, 10)] == [("Attest", "ALLOWED", "OK")]


def test_replayed_nonce_is_refused_even_with_a_new_quote(core: VerifierCore, pki: Pki) -> None:
    td = new_td()
    nonce, quote = _attest(core, pki, td)
    core.attest(quote, b"", nonce, td.spki, "")
    again = sim_quote(pki, binding.report_data(nonce, td.spki))
    with pytest.raises(StaleEvidence) as err:
        core.attest(again, b"", nonce, td.spki, "")
    assert _reason(err.value) == ("FAILED_PRECONDITION", "NONCE_REPLAYED")
    assert status_of(err.value)[2] == {"mismatches": "NONCE_REPLAYED", "policy": "default"}  # type: ignore[index]


def test_expired_nonce_is_refused(core: VerifierCore, pki: Pki, clock: Clock) -> None:
    td = new_td()
    nonce, quote = _attest(core, pki, td)
    clock.now += 301
    with pytest.raises(StaleEvidence) as err:
        core.attest(quote, b"", nonce, td.spki, "")
    assert _reason(err.value) == ("FAILED_PRECONDITION", "NONCE_EXPIRED")
    assert [(e.action, e.outcome, e.reason) for e in core.audit_log(0, 10)][-1] == (
        "Attest",
        "REFUSED",
        "NONCE_EXPIRED",
    )


def test_replayed_nonce_keeps_every_mismatch_in_the_refusal(core: VerifierCore, pki: Pki) -> None:
    td, thief = new_td(), new_td()
    nonce, quote = _attest(core, pki, td)
    core.attest(quote, b"", nonce, td.spki, "")
    with pytest.raises(StaleEvidence) as err:
        core.attest(quote, b"", nonce, thief.spki, "")
    assert _reason(err.value) == ("FAILED_PRECONDITION", "NONCE_REPLAYED")
    assert err.value.appraisal.reasons == ("NONCE_REPLAYED", "REPORT_DATA_MISMATCH")
    assert status_of(err.value)[2]["mismatches"] == "NONCE_REPLAYED,REPORT_DATA_MISMATCH"  # type: ignore[index]


def test_unknown_nonce_is_not_found(core: VerifierCore, pki: Pki) -> None:
    td = new_td()
    nonce = bytes(32)
    with pytest.raises(Exception) as err:
        core.attest(sim_quote(pki, binding.report_data(nonce, td.spki)), b"", nonce, td.spki, "")
    assert _reason(err.value) == ("NOT_FOUND", "NONCE_NOT_FOUND")


def test_quote_bound_to_another_key_is_refused(core: VerifierCore, pki: Pki) -> None:
    td, thief = new_td(), new_td()
    nonce, quote = _attest(core, pki, td)
    with pytest.raises(AppraisalRefused) as err:
        core.attest(quote, b"", nonce, thief.spki, "")
    assert _reason(err.value) == ("PERMISSION_DENIED", "REPORT_DATA_MISMATCH")


def test_debug_td_and_wrong_mrtd_are_refused_with_every_reason(core: VerifierCore, pki: Pki) -> None:
    core.set_policy("prod", '{"reference_values": {"mr_td": ["' + MRTD.hex() + '"]}}')
    td = new_td()
    nonce, quote = _attest(core, pki, td, mr_td=b"\x22" * 48, debug=True)
    with pytest.raises(AppraisalRefused) as err:
        core.attest(quote, b"", nonce, td.spki, "prod")
    assert _reason(err.value) == ("PERMISSION_DENIED", "DEBUG_TD")
    assert err.value.appraisal.reasons == ("DEBUG_TD", "MRTD_MISMATCH")
    assert status_of(err.value)[2]["mismatches"] == "DEBUG_TD,MRTD_MISMATCH"  # type: ignore[index]


def test_event_log_that_does_not_replay_to_the_rtmrs_is_refused(core: VerifierCore, pki: Pki) -> None:
    td = new_td()
    nonce, quote = _attest(core, pki, td)
    forged = EventLog(LOG.spec_id, (LOG.events[0], measure(2, EV_EFI_ACTION, b"other kernel"), LOG.events[2]))
    with pytest.raises(AppraisalRefused) as err:
        core.attest(quote, encode_event_log(forged), nonce, td.spki, "")
    assert err.value.appraisal.reasons == ("RTMR1_EVENT_LOG_MISMATCH",)


def test_malformed_event_log_is_invalid_argument(core: VerifierCore, pki: Pki) -> None:
    td = new_td()
    nonce, quote = _attest(core, pki, td)
    with pytest.raises(Exception) as err:
        core.attest(quote, encode_event_log(LOG)[:-3], nonce, td.spki, "")
    assert _reason(err.value) == ("INVALID_ARGUMENT", "EVENT_LOG_MALFORMED")


def test_tampered_quote_names_the_failed_verification_step(core: VerifierCore, pki: Pki) -> None:
    td = new_td()
    nonce, quote = _attest(core, pki, td)
    bad = bytearray(quote)
    bad[48 + 136] ^= 1  # one bit of MRTD, inside the signed region
    with pytest.raises(Exception) as err:
        core.attest(bytes(bad), b"", nonce, td.spki, "")
    assert _reason(err.value) == ("INVALID_ARGUMENT", "VERIFY_QUOTE_SIGNATURE")
    with pytest.raises(Exception) as err:
        core.attest(b"\x04\x00garbage", b"", b"", b"", "")
    assert _reason(err.value) == ("INVALID_ARGUMENT", "VERIFY_HEADER")


def test_simulated_quote_is_refused_by_a_verifier_trusting_only_intel(
    tmp_path: Path, pki: Pki, clock: Clock
) -> None:
    intel_only = VerifierCore(
        SqliteStore(tmp_path / "i.db"),
        _anchors(INTEL_SGX_ROOT_CA_PEM),
        CollateralIndex([pki.collateral_json]),
        ServiceConfig(verify_at=V4_AT),
        clock,
    )
    td = new_td()
    nonce, quote = _attest(intel_only, pki, td)
    with pytest.raises(Exception) as err:
        intel_only.attest(quote, b"", nonce, td.spki, "")
    code, reason = _reason(err.value)
    assert code == "INVALID_ARGUMENT" and reason in ("VERIFY_COLLATERAL", "VERIFY_CRL", "VERIFY_PCK_CHAIN")


def test_real_v4_quote_verifies_under_a_policy_without_nonce(core: VerifierCore) -> None:
    mr_td = expected_for(V4)["mr_td"]
    core.set_policy("real", '{"require_nonce": false, "reference_values": {"mr_td": ["' + mr_td + '"]}}')
    result = core.attest(read_quote(V4), b"", b"", b"", "real")
    assert (result.tcb_status, result.ear_status) == ("UpToDate", "affirming")
    assert tdx_claims(result.claims)["fmspc"] == "B0C06F000000"
    with pytest.raises(AppraisalRefused) as err:
        core.attest(read_quote(V4), b"", b"", b"", "")
    assert err.value.reason == "NONCE_REQUIRED"


def test_unknown_policy_and_reference_set_are_not_found(core: VerifierCore) -> None:
    quote = read_quote(V4)
    with pytest.raises(Exception) as err:
        core.attest(quote, b"", b"", b"", "nope")
    assert _reason(err.value) == ("NOT_FOUND", "POLICY_NOT_FOUND")
    core.set_policy("sets", '{"require_nonce": false, "reference_value_sets": ["img"]}')
    with pytest.raises(Exception) as err:
        core.attest(quote, b"", b"", b"", "sets")
    assert _reason(err.value) == ("NOT_FOUND", "REFERENCE_VALUES_NOT_FOUND")
    core.set_reference_values("img", {"mr_td": [bytes.fromhex(expected_for(V4)["mr_td"])]})
    assert core.attest(quote, b"", b"", b"", "sets").tcb_status == "UpToDate"


def test_secret_is_released_as_a_jwe_to_the_attested_key_only(
    core: VerifierCore, pki: Pki, clock: Clock
) -> None:
    core.put_resource("default/key/disk", b"top secret", '{"claims": {"mr_td": ["' + MRTD.hex() + '"]}}')
    td = new_td()
    nonce, quote = _attest(core, pki, td)
    token = core.attest(quote, b"", nonce, td.spki, "").token
    jwe = core.get_resource("default/key/disk", f"Bearer {token}")
    assert open_secret(jwe, td.key) == b"top secret"
    audit = core.audit_log(0, 100)
    assert all(b"top secret" not in e.detail.encode() for e in audit)
    assert [(e.action, e.reason) for e in audit][-1] == ("GetResource", "OK")

    for auth, expected in [
        (None, ("UNAUTHENTICATED", "TOKEN_MISSING")),
        ("Basic abc", ("UNAUTHENTICATED", "TOKEN_MISSING")),
        ("Bearer " + token[:-4] + "AAAA", ("UNAUTHENTICATED", "TOKEN_SIGNATURE_INVALID")),
    ]:
        with pytest.raises(Exception) as err:
            core.get_resource("default/key/disk", auth)
        assert _reason(err.value) == expected
    with pytest.raises(Exception) as err:
        core.get_resource("default/key/none", f"Bearer {token}")
    assert _reason(err.value) == ("NOT_FOUND", "RESOURCE_NOT_FOUND")
    clock.now += 400
    with pytest.raises(Exception) as err:
        core.get_resource("default/key/disk", f"Bearer {token}")
    assert _reason(err.value) == ("UNAUTHENTICATED", "TOKEN_EXPIRED")


def test_token_of_another_image_is_denied_the_secret(core: VerifierCore, pki: Pki) -> None:
    core.put_resource("k", b"s", '{"claims": {"mr_td": ["' + MRTD.hex() + '"]}}')
    td = new_td()
    nonce, quote = _attest(core, pki, td, mr_td=b"\x33" * 48)
    token = core.attest(quote, b"", nonce, td.spki, "").token
    with pytest.raises(Exception) as err:
        core.get_resource("k", f"Bearer {token}")
    assert _reason(err.value) == ("PERMISSION_DENIED", "RESOURCE_POLICY_DENIED")


def test_token_without_a_bound_key_gets_no_secret(core: VerifierCore) -> None:
    core.put_resource("k", b"s", "{}")
    core.set_policy("real", '{"require_nonce": false}')
    token = core.attest(read_quote(V4), b"", b"", b"", "real").token
    with pytest.raises(Exception) as err:
        core.get_resource("k", f"Bearer {token}")
    assert _reason(err.value) == ("PERMISSION_DENIED", "TOKEN_NOT_KEY_BOUND")


@pytest.mark.parametrize(
    ("nonce", "key", "reason"),
    [
        (b"x" * 31, b"k", "BAD_NONCE"),
        (b"x" * 32, b"", "TEE_PUBLIC_KEY_REQUIRED"),
        (b"", b"k", "NONCE_REQUIRED_FOR_KEY"),
        (b"x" * 32, b"not spki", "BAD_TEE_PUBLIC_KEY"),
    ],
)
def test_malformed_requests_are_invalid_argument(
    core: VerifierCore, nonce: bytes, key: bytes, reason: str
) -> None:
    with pytest.raises(Exception) as err:
        core.attest(read_quote(V4), b"", nonce, key, "")
    assert _reason(err.value) == ("INVALID_ARGUMENT", reason)


def test_admin_credential_guards_admin_operations(tmp_path: Path, pki: Pki, clock: Clock) -> None:
    guarded = VerifierCore(
        SqliteStore(tmp_path / "a.db"),
        _anchors(pki.root_pem),
        CollateralIndex(),
        ServiceConfig(admin_credential="s3"),
        clock,
    )
    guarded.require_admin("s3")
    for presented, code, reason in [
        ("", "UNAUTHENTICATED", "MISSING_CREDENTIAL"),
        ("bad", "UNAUTHENTICATED", "UNKNOWN_CREDENTIAL"),
    ]:
        with pytest.raises(Exception) as err:
            guarded.require_admin(presented)
        assert _reason(err.value) == (code, reason)


def test_without_an_admin_credential_no_one_is_admin(tmp_path: Path, pki: Pki, clock: Clock) -> None:
    open_door = VerifierCore(
        SqliteStore(tmp_path / "b.db"), _anchors(pki.root_pem), CollateralIndex(), clock=clock
    )
    for presented in ("", "anything"):
        with pytest.raises(Exception) as err:
            open_door.require_admin(presented)
        assert _reason(err.value)[0] == "UNAUTHENTICATED"


def test_real_v5_quotes_give_the_vector_verdicts(tmp_path: Path, clock: Clock) -> None:
    v5 = VerifierCore(
        SqliteStore(tmp_path / "v5.db"),
        _anchors(intel_root_pem()),
        CollateralIndex([read_collateral("tdx_v5_quote.bin")]),
        ServiceConfig(verify_at=expected_for("tdx_v5_quote.bin")["verify_at_unix"]),
        clock,
    )
    v5.set_policy("real", '{"require_nonce": false}')
    assert v5.attest(read_quote("tdx_v5_quote.bin"), b"", b"", b"", "real").tcb_status == "UpToDate"
    with pytest.raises(Exception) as err:
        v5.attest(read_quote("tdx_v5_outdated_quote.bin"), b"", b"", b"", "real")
    assert _reason(err.value) == ("INVALID_ARGUMENT", "VERIFY_TCB_LEVEL")


def test_nonce_table_stays_bounded_under_many_get_nonce_calls_with_a_short_ttl(
    tmp_path: Path, pki: Pki, clock: Clock
) -> None:
    store = SqliteStore(tmp_path / "v.db")
    config = ServiceConfig(verify_at=V4_AT, nonce_retention=2)
    core = VerifierCore(store, _anchors(pki.root_pem), CollateralIndex([pki.collateral_json]), config, clock)
    td = new_td()
    nonce = core.get_nonce(ttl_seconds=1).nonce
    quote = sim_quote(pki, binding.report_data(nonce, td.spki))
    core.attest(quote, b"", nonce, td.spki, "")
    sizes = []
    for _ in range(1500):  # 100 calls a second for 15 s, each nonce living 1 s and kept 2 s more
        core.get_nonce(ttl_seconds=1)
        clock.now += 0.01
        sizes.append(store.nonce_count())
    assert max(sizes) <= 300 + 2 + 1  # what the last 3 s issued, plus one being added
    with pytest.raises(Exception) as err:  # the used nonce is gone: a replay is still refused
        core.attest(quote, b"", nonce, td.spki, "")
    assert _reason(err.value) == ("NOT_FOUND", "NONCE_NOT_FOUND")
    store.close()


def test_a_replay_within_the_retention_window_is_still_named_and_restart_purges(
    tmp_path: Path, pki: Pki, clock: Clock
) -> None:
    store = SqliteStore(tmp_path / "v.db")
    config = ServiceConfig(verify_at=V4_AT, nonce_retention=600)
    core = VerifierCore(store, _anchors(pki.root_pem), CollateralIndex([pki.collateral_json]), config, clock)
    td = new_td()
    nonce, quote = _attest(core, pki, td)
    core.attest(quote, b"", nonce, td.spki, "")
    for _ in range(50):
        core.get_nonce(ttl_seconds=1)
    clock.now += 300 + 599  # expired, inside the retention window
    with pytest.raises(StaleEvidence) as err:
        core.attest(quote, b"", nonce, td.spki, "")
    assert _reason(err.value) == ("FAILED_PRECONDITION", "NONCE_REPLAYED")
    clock.now += 2
    VerifierCore(store, _anchors(pki.root_pem), CollateralIndex([pki.collateral_json]), config, clock)
    assert store.nonce_count() == 0  # a restart purges everything past retention at once
    store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_nul_in_a_callers_name_is_refused_and_audited_on_every_backend(
    backend: str, tmp_path: Path, pki: Pki, clock: Clock, request: pytest.FixtureRequest
) -> None:
    """PostgreSQL text refuses NUL: the audit of a refusal must not turn it into STORE_UNAVAILABLE."""
    target = tmp_path / "v.db" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    store = open_store(target)
    try:
        core = VerifierCore(
            store, _anchors(pki.root_pem), CollateralIndex([pki.collateral_json]), ServiceConfig(), clock
        )
        with pytest.raises(Exception) as err:
            core.attest(b"", b"", b"", b"", "a\x00b")
        assert _reason(err.value)[0] in ("NOT_FOUND", "INVALID_ARGUMENT"), _reason(err.value)
        with pytest.raises(Exception) as err:
            core.get_resource("a\x00b/key/1", None)
        assert _reason(err.value)[0] in ("UNAUTHENTICATED", "INVALID_ARGUMENT"), _reason(err.value)
        subjects = [entry.subject for entry in core.audit_log(0, 10)]
        assert subjects == ["a\\u0000b", "a\\u0000b/key/1"]
    finally:
        store.close()


def test_a_token_of_a_key_another_replica_just_rotated_verifies_at_once(
    tmp_path: Path, pki: Pki, clock: Clock
) -> None:
    """Two verifiers on one database: the JWKS is re-read at most once a second, but a token whose kid is
    new is checked against a fresh read, and the JWKS then lists the new key."""
    stores = [SqliteStore(tmp_path / "shared.db") for _ in range(2)]
    try:
        a, b = (
            VerifierCore(
                store, _anchors(pki.root_pem), CollateralIndex([pki.collateral_json]), ServiceConfig(), clock
            )
            for store in stores
        )
        before = [k["kid"] for k in b.jwks()["keys"]]
        kid = a.keys.rotate(int(clock()))
        now = int(clock())
        token = a.keys.sign({"iss": ISSUER, "iat": now, "exp": now + 300, "sub": "td"})
        assert [k["kid"] for k in b.jwks()["keys"]] == before  # read less than a second ago
        with pytest.raises(Exception) as err:
            b.require_admin(token)  # verified (so refused as a token, not as an unknown credential)
        assert _reason(err.value) == ("PERMISSION_DENIED", "TOKEN_NOT_ADMIN")
        assert [k["kid"] for k in b.jwks()["keys"]] == [*before, kid]
    finally:
        for store in stores:
            store.close()

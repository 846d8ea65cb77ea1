"""The verifier service's logic, without gRPC: nonces, Attest, policies, reference values, key broker, audit.

The servicer (``attest.verifier.service.servicer``) only translates messages and exceptions.
``Attest`` runs, in order (cheap and local checks first, the nonce consumed before the expensive steps so a
nonce never survives an attempt):

1. request shape: quote size, nonce 0 or 32 bytes, TD key P-256 SPKI DER, key only together with a nonce
   (INVALID_ARGUMENT);
2. policy and its reference-value sets (NOT_FOUND);
3. event log decoded, if given (INVALID_ARGUMENT ``EVENT_LOG_MALFORMED``);
4. quote decoded, its FMSPC read from the PCK certificate, collateral for that FMSPC chosen: a file's, or
   a PCCS's (``--pccs``, fetched and cached, docs/attestation.md §17) (INVALID_ARGUMENT ``VERIFY_HEADER`` /
   ``VERIFY_PCK_CHAIN``; FAILED_PRECONDITION ``COLLATERAL_NOT_FOUND``; a PCCS without an answer: UNAVAILABLE
   ``PCCS_UNAVAILABLE``, never a verdict);
5. nonce consumed (unknown: NOT_FOUND ``NONCE_NOT_FOUND``; replayed/expired become appraisal mismatches);
6. DCAP verification (``attest.verifier.dcap.Verifier``, one caching instance per server thread) at
``verify_at`` or
   now (INVALID_ARGUMENT ``VERIFY_<STEP>``, Revoked: PERMISSION_DENIED ``TCB_REVOKED``);
7. REPORTDATA == ``attest.formats.binding.report_data(nonce, key)`` (or, for the KBS protocol's front door,
   the value its runtime data gives: ``report_data``), event log replayed against RTMR0..3;
8. appraisal: every mismatch listed (PERMISSION_DENIED, reason = the first, metadata ``mismatches``; when the
   first is NONCE_REPLAYED/NONCE_EXPIRED, FAILED_PRECONDITION: the client must fetch a fresh nonce);
9. token: ES256 JWT with EAR claims (``attest.verifier.token.ear``), signed by the persisted key, with
   ``aud`` when the requester names an audience.

``GetResource`` releases a secret as a JWE to the TD key the token attests (``attest.formats.secret_jwe``).

Time: nonce expiry and token ``iat``/``exp`` use the wall clock (``clock``); ``verify_at`` (``--at``) only
fixes the DCAP verification time, for archived collateral. Every decision is written to the audit log with its
reason; secrets and tokens are never written there.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attest import schema
from attest.errors import AttestError
from attest.formats import binding, secret_jwe
from attest.formats import layout as L
from attest.formats.collateral import parse_tcb_info
from attest.formats.eventlog import EventLog, decode_event_log
from attest.formats.eventlog.replay import ReplayResult, compare_rtmrs
from attest.formats.quote import TdReport15, decode_quote
from attest.verifier.appraise import (
    DEFAULT_POLICY_NAME,
    AppraisalRefused,
    Evidence,
    Freshness,
    Policy,
    appraise,
    check_reference_value_bytes,
    default_policy,
    policy_from_json,
    policy_to_json,
    require_ok,
)
from attest.verifier.dcap import Collateral, VerifiedQuote, Verifier, parse_collateral
from attest.verifier.dcap.chains import load_certificates
from attest.verifier.dcap.pccs_client import PccsCollateral
from attest.verifier.dcap.pck_platform import PCK_CA_PLATFORM, pck_platform
from attest.verifier.kbs import parse_resource_policy
from attest.verifier.service.errors import (
    BadRequest,
    NotFound,
    OverLimit,
    PreconditionFailed,
    Refused,
    Unauthenticated,
    clip,
    printable,
    status_of,
)
from attest.verifier.store import AuditRecord, NonceState, Store
from attest.verifier.token import SigningKeys, TokenError, b64url_decode, build_claims, tdx_claims
from attest.verifier.token import verify as verify_token

ISSUER = "tdxsim-verifier"
BUILD = "tdxsim-verifier 0.1.0"
MAX_QUOTE_SIZE = 64 << 10
MAX_EVENT_LOG_SIZE = 16 << 20
MAX_SECRET_SIZE = 64 << 10
MAX_AUDIT_PAGE = 1000
MAX_AUDIENCE = 256  # characters of a requested token audience
#: Seconds a replica publishes its last read of the signing keys before reading them again (docs/fleet.md).
KEY_RELOAD_SECONDS = 1.0
RESOURCE_PATH = re.compile(r"[A-Za-z0-9._-]{1,128}(/[A-Za-z0-9._-]{1,128}){0,7}")


@dataclass(frozen=True)
class ServiceConfig:
    """Knobs of the service; defaults are the documented ones."""

    nonce_ttl: int = 300  # seconds, GetNonce default (docs/attestation.md §11: expiry; 5 min)
    nonce_ttl_max: int = 3600  # seconds, cap on a requested ttl
    #: Seconds an expired (or used and expired) nonce is kept, so a late Attest still hears NONCE_EXPIRED or
    #: NONCE_REPLAYED; after that it is purged and would be NONCE_NOT_FOUND (refused all the same).
    nonce_retention: int = 600
    token_ttl: int = 300  # seconds, unless the policy says otherwise
    verify_at: int | None = None  # fixed DCAP verification time (unix); None = now
    issuer: str = ISSUER
    #: The operator's credential admin RPCs present as ``authorization: Bearer``; None: no admin API.
    admin_credential: str | None = None


@dataclass(frozen=True)
class NonceGrant:
    nonce: bytes
    issued_at: int
    expires_at: int


@dataclass(frozen=True)
class AttestResult:
    token: str
    expires_at: int
    ear_status: str
    tcb_status: str
    advisory_ids: tuple[str, ...]
    kid: str
    claims: Mapping[str, Any]


def _root_digest(pem_chain: bytes | str) -> bytes | None:
    """SHA-256 of the last certificate (the root) of a PEM chain, None when the chain does not parse."""
    try:
        certs = load_certificates(pem_chain, "chain")
    except AttestError:
        return None
    return hashlib.sha256(certs[-1].public_bytes(serialization.Encoding.DER)).digest() if certs else None


class CollateralIndex:
    """Collateral chosen per quote by FMSPC and, when several roots share an FMSPC (Intel's real platform and
    the simulated one both use ``90C06F000000``), by the root that ends the quote's PCK chain and the TCB
    Info issuer chain. A later collateral for the same (FMSPC, root) replaces an earlier one.

    With ``pccs`` (docs/attestation.md §17), a quote that no file matches by (FMSPC, root) gets the collateral
    of its FMSPC and PCK CA from the PCCS, fetched on demand and cached until its ``nextUpdate``; the PCCS's
    ``CollateralNotFound`` and ``PccsUnavailable`` pass to the caller."""

    def __init__(self, texts: Sequence[str] = (), pccs: PccsCollateral | None = None) -> None:
        self._by_key: dict[tuple[bytes, bytes | None], Collateral] = {}
        self.pccs = pccs
        for text in texts:
            self.add(parse_collateral(text))

    def add(self, coll: Collateral) -> None:
        fmspc = parse_tcb_info(coll.tcb_info_text).fmspc
        self._by_key[(fmspc, _root_digest(coll.tcb_info_issuer_chain))] = coll

    @property
    def fmspcs(self) -> list[bytes]:
        return sorted({fmspc for fmspc, _ in self._by_key})

    def select(
        self, fmspc: bytes, pck_root: bytes | None, pck_ca: str = PCK_CA_PLATFORM
    ) -> Collateral | None:
        hit = self._by_key.get((fmspc, pck_root))
        if hit is not None:
            return hit
        if self.pccs is not None:
            return self.pccs.get(fmspc, pck_ca)
        same = [c for (f, _), c in self._by_key.items() if f == fmspc]
        return same[0] if len(same) == 1 else None


def _tdx_claims(vq: VerifiedQuote, replay: ReplayResult | None) -> dict[str, Any]:
    body = vq.report
    names = L.TD_REPORT15_FIELDS if isinstance(body, TdReport15) else L.TD_REPORT10_FIELDS
    out: dict[str, Any] = {name: getattr(body, name).hex() for name, _ in names}
    out.update(
        tcb_status=vq.status,
        advisory_ids=list(vq.advisory_ids),
        debug=body.is_debug,
        fmspc=vq.fmspc.hex().upper(),
        quote_version=vq.quote.header.version,
        event_log="verified" if replay is not None else "absent",
    )
    if replay is not None:
        out["rtmr_unchecked_by_event_log"] = list(replay.unchecked)
    return out


def _vector(vq: VerifiedQuote, checked: Sequence[str], replay: ReplayResult | None) -> dict[str, int]:
    executables = bool(replay is not None or set(checked) & {"mr_td", "rtmr0", "rtmr1", "rtmr2", "rtmr3"})
    return {
        "instance-identity": 2,
        "configuration": 32 if vq.is_debug else 2,
        "executables": 2 if executables else 0,
        "hardware": 2 if vq.status == "UpToDate" else 32,
    }


class VerifierCore:
    """The verifier: one store, trust anchors, collateral per FMSPC. Thread-safe."""

    def __init__(
        self,
        store: Store,
        anchors: Sequence[x509.Certificate],
        collateral: CollateralIndex,
        config: ServiceConfig = ServiceConfig(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not anchors:
            raise ValueError("no trust anchor configured")
        self.store = store
        self.anchors = list(anchors)
        self.collateral = collateral
        self.config = config
        self.clock = clock
        self.keys = SigningKeys.load_or_create(store, int(clock()))
        self._local = threading.local()
        store.purge_nonces(clock() - config.nonce_retention)  # once, whole: what piled up while stopped

    # --- helpers ------------------------------------------------------------------------------------------

    def _verifier(self) -> Verifier:
        verifier: Verifier | None = getattr(self._local, "verifier", None)
        if verifier is None:
            verifier = Verifier(self.anchors)
            self._local.verifier = verifier
        return verifier

    def _audit(self, action: str, subject: str, err: Exception | None, **detail: Any) -> None:
        if err is None:
            outcome, reason = "ALLOWED", "OK"
        else:
            status = status_of(err)
            outcome, reason = "REFUSED", status[1] if status else "INTERNAL"
            if isinstance(err, AppraisalRefused):
                detail["mismatches"] = list(err.appraisal.reasons)
        # printable: the subject is the caller's (a policy name, a resource path) and may hold a NUL, which a
        # PostgreSQL text column refuses; the refusal must reach the audit log, not turn into a store failure
        self.store.audit(int(self.clock() * 1000), action, outcome, reason, clip(printable(subject)), detail)

    def require_admin(self, presented: str) -> None:
        """Admin RPCs need the operator's credential: none is UNAUTHENTICATED, an attestation token (a TD's
        credential) is PERMISSION_DENIED, anything else UNAUTHENTICATED."""
        expected = self.config.admin_credential
        if not presented:
            raise Unauthenticated(
                "MISSING_CREDENTIAL",
                "admin rpc needs the verifier's admin credential (authorization: Bearer …)",
            )
        if expected is not None and hmac.compare_digest(presented.encode(), expected.encode()):
            return
        try:
            self._verify_token(presented)
        except TokenError:
            raise Unauthenticated("UNKNOWN_CREDENTIAL", "not the verifier's admin credential") from None
        raise Refused("TOKEN_NOT_ADMIN", "an attestation token does not authorize the verifier's admin api")

    # --- nonces -------------------------------------------------------------------------------------------

    def get_nonce(self, ttl_seconds: int = 0) -> NonceGrant:
        ttl = min(ttl_seconds or self.config.nonce_ttl, self.config.nonce_ttl_max)
        now = self.clock()
        nonce = os.urandom(binding.NONCE_SIZE)
        self.store.add_nonce(nonce, now, now + ttl, purge_before=now - self.config.nonce_retention)
        return NonceGrant(nonce, int(now), int(now + ttl))

    # --- policies -----------------------------------------------------------------------------------------

    @staticmethod
    def _policy_name(name: str) -> str:
        """The name to look up; one no policy can have (``schema.NAME``) is NOT_FOUND without a lookup."""
        name = name or DEFAULT_POLICY_NAME
        if not schema.NAME.fullmatch(name):
            raise NotFound("POLICY_NOT_FOUND", f"no policy named {clip(name)!r}", policy=clip(name))
        return name

    def load_policy(self, name: str) -> Policy:
        name = self._policy_name(name)
        stored = self.store.get_policy(name)
        if stored is not None:
            return policy_from_json(name, stored.document)
        if name == DEFAULT_POLICY_NAME:
            return default_policy()
        raise NotFound("POLICY_NOT_FOUND", f"no policy named {name!r}", policy=name)

    def set_policy(self, name: str, text: str) -> Policy:
        try:
            policy = policy_from_json(name, text)
            self.store.put_policy(policy.name, text, int(self.clock()))
        except Exception as err:
            self._audit("SetPolicy", name, err)
            raise
        self._audit("SetPolicy", name, None, sha256=hashlib.sha256(text.encode()).hexdigest())
        return policy

    def get_policy(self, name: str) -> tuple[str, str, int, bool]:
        """``(name, json, updated_at, built_in)``."""
        name = self._policy_name(name)
        stored = self.store.get_policy(name)
        if stored is not None:
            return name, stored.document, stored.updated_at, False
        if name == DEFAULT_POLICY_NAME:
            return name, policy_to_json(default_policy()), 0, True
        raise NotFound("POLICY_NOT_FOUND", f"no policy named {name!r}", policy=name)

    def set_reference_values(self, name: str, values: Mapping[str, Sequence[bytes]]) -> int:
        try:
            if not schema.NAME.fullmatch(name):
                raise BadRequest(
                    "REFERENCE_VALUES_INVALID",
                    "reference value set names are 1..128 characters of [A-Za-z0-9._-]",
                )
            check_reference_value_bytes(values)
            self.store.put_reference_values(name, values, int(self.clock()))
        except Exception as err:
            self._audit("SetReferenceValues", name, err)
            raise
        count = sum(len(v) for v in values.values())
        self._audit("SetReferenceValues", name, None, fields=sorted(values), count=count)
        return count

    # --- attestation --------------------------------------------------------------------------------------

    def attest(
        self,
        quote: bytes,
        event_log: bytes,
        nonce: bytes,
        tee_public_key: bytes,
        policy_name: str,
        audience: str = "",
        *,
        report_data: bytes | None = None,
        door: str = "",
    ) -> AttestResult:
        """``report_data``: the REPORTDATA the caller's protocol binds (the KBS protocol's runtime data),
        instead of tdxsim's rule; ``door``: that front door's name for the audit log ("" = gRPC)."""
        subject = policy_name or DEFAULT_POLICY_NAME
        where = {"door": door} if door else {}
        try:
            result = self._attest(quote, event_log, nonce, tee_public_key, subject, audience, report_data)
        except Exception as err:
            self._audit("Attest", subject, err, nonce=nonce[:8].hex(), **where)
            raise
        tdx = tdx_claims(result.claims)
        self._audit(
            "Attest",
            subject,
            None,
            nonce=nonce[:8].hex(),
            mr_td=tdx.get("mr_td"),
            tcb_status=result.tcb_status,
            **where,
        )
        return result

    def _check_shape(
        self, quote: bytes, event_log: bytes, nonce: bytes, tee_public_key: bytes, audience: str
    ) -> None:
        if len(audience) > MAX_AUDIENCE or not audience.isprintable():
            raise BadRequest(
                "AUDIENCE_INVALID", f"audience must be at most {MAX_AUDIENCE} printable characters"
            )
        if not quote or len(quote) > MAX_QUOTE_SIZE:
            raise BadRequest("VERIFY_HEADER", f"quote must be 1..{MAX_QUOTE_SIZE} bytes", step="header")
        if len(event_log) > MAX_EVENT_LOG_SIZE:
            raise BadRequest("EVENT_LOG_MALFORMED", f"event log larger than {MAX_EVENT_LOG_SIZE} bytes")
        if nonce and len(nonce) != binding.NONCE_SIZE:
            raise BadRequest("BAD_NONCE", f"nonce must be {binding.NONCE_SIZE} bytes, got {len(nonce)}")
        if nonce and not tee_public_key:
            raise BadRequest("TEE_PUBLIC_KEY_REQUIRED", "a nonce is bound together with the td's public key")
        if tee_public_key and not nonce:
            raise BadRequest("NONCE_REQUIRED_FOR_KEY", "a public key is bound only together with a nonce")
        if tee_public_key:
            binding.load_tee_public_key(tee_public_key)

    def _policy_with_sets(self, name: str) -> tuple[Policy, dict[str, dict[str, list[bytes]]]]:
        policy = self.load_policy(name)
        sets: dict[str, dict[str, list[bytes]]] = {}
        for set_name in policy.reference_value_sets:
            values = self.store.get_reference_values(set_name)
            if values is None:
                raise NotFound(
                    "REFERENCE_VALUES_NOT_FOUND",
                    f"policy {policy.name!r} names missing reference values {set_name!r}",
                    reference_values=set_name,
                )
            sets[set_name] = values
        return policy, sets

    def _freshness(self, nonce: bytes, now: float) -> Freshness:
        if not nonce:
            return Freshness.ABSENT
        state = self.store.consume_nonce(nonce, now)
        if state is NonceState.UNKNOWN:
            raise NotFound("NONCE_NOT_FOUND", "the nonce was not issued by this verifier")
        return {
            NonceState.CONSUMED: Freshness.FRESH,
            NonceState.REPLAYED: Freshness.REPLAYED,
            NonceState.EXPIRED: Freshness.EXPIRED,
        }[state]

    def _attest(
        self,
        raw_quote: bytes,
        raw_log: bytes,
        nonce: bytes,
        tee_public_key: bytes,
        policy_name: str,
        audience: str,
        report_data: bytes | None = None,
    ) -> AttestResult:
        self._check_shape(raw_quote, raw_log, nonce, tee_public_key, audience)
        policy, sets = self._policy_with_sets(policy_name)
        options = policy.resolve(sets)
        log: EventLog | None = decode_event_log(raw_log) if raw_log else None
        try:
            quote = decode_quote(raw_quote)
        except AttestError as err:
            err.step = err.step or "header"
            raise
        platform = pck_platform(quote)
        fmspc = platform.fmspc
        collateral = self.collateral.select(fmspc, platform.root_digest, platform.pck_ca)
        if collateral is None:
            raise PreconditionFailed(
                "COLLATERAL_NOT_FOUND",
                f"no collateral for fmspc {fmspc.hex().upper()}",
                fmspc=fmspc.hex().upper(),
            )
        now = self.clock()
        freshness = self._freshness(nonce, now)
        at = self.config.verify_at if self.config.verify_at is not None else int(now)
        vq = self._verifier().verify(raw_quote, collateral, at)
        if report_data is not None:
            bound: bool | None = hmac.compare_digest(vq.report.report_data, report_data)
        else:
            bound = binding.matches(vq.report.report_data, nonce, tee_public_key) if nonce else None
        replay = compare_rtmrs(log, vq.report.rtmrs) if log is not None else None
        appraisal = appraise(
            Evidence(vq.report, vq.status, vq.advisory_ids),
            options,
            freshness=freshness,
            report_data_bound=bound,
            replay=replay,
        )
        require_ok(appraisal, policy.name)
        issued = int(self.clock())
        ttl = options.token_ttl_seconds or self.config.token_ttl
        claims = build_claims(
            issuer=self.config.issuer,
            build=BUILD,
            now=issued,
            ttl=ttl,
            policy_name=policy.name,
            tdx=_tdx_claims(vq, replay),
            vector=_vector(vq, appraisal.checked_fields, replay),
            nonce=nonce or None,
            tee_public_key_spki=tee_public_key or None,
            audience=audience or None,
        )
        token = self.keys.sign(claims)
        ear = claims["submods"]["cpu0"]["ear.status"]
        return AttestResult(
            token, issued + ttl, ear, vq.status, vq.advisory_ids, self.keys.current_kid, claims
        )

    def jwks(self, *, fresh: bool = False) -> dict[str, Any]:
        """Every signing key in the database, current and previous: a replica sharing it may have rotated.
        Read again at most every ``KEY_RELOAD_SECONDS`` (``fresh``: now), not once per call."""
        self.keys.reload(0.0 if fresh else KEY_RELOAD_SECONDS)
        return self.keys.jwks()

    def _verify_token(self, token: str, audience: str | None = None) -> dict[str, Any]:
        """A token's claims; a ``kid`` not yet seen reads the keys again first (a replica may have just
        rotated)."""
        issuer = self.config.issuer
        try:
            return verify_token(token, self.jwks(), self.clock(), issuer=issuer, audience=audience).claims
        except TokenError as err:
            if err.reason != "TOKEN_KEY_UNKNOWN":
                raise
        return verify_token(
            token, self.jwks(fresh=True), self.clock(), issuer=issuer, audience=audience
        ).claims

    # --- key broker ---------------------------------------------------------------------------------------

    def put_resource(self, path: str, secret: bytes, policy_text: str) -> None:
        try:
            if not RESOURCE_PATH.fullmatch(path) or ".." in path.split("/"):
                raise BadRequest(
                    "RESOURCE_PATH_INVALID",
                    "path must be 1..8 segments of 1..128 characters of [A-Za-z0-9._-]",
                )
            if not secret:
                raise BadRequest("RESOURCE_SECRET_INVALID", f"secret must be 1..{MAX_SECRET_SIZE} bytes")
            if len(secret) > MAX_SECRET_SIZE:
                raise OverLimit(
                    "RESOURCE_TOO_LARGE",
                    f"secret is {len(secret)} bytes, at most {MAX_SECRET_SIZE}",
                    limit=str(MAX_SECRET_SIZE),
                    size=str(len(secret)),
                )
            parse_resource_policy(policy_text)
            self.store.put_resource(path, secret, policy_text, int(self.clock()))
        except Exception as err:
            self._audit("PutResource", path, err)
            raise
        self._audit("PutResource", path, None, policy_sha256=hashlib.sha256(policy_text.encode()).hexdigest())

    def _bearer(self, authorization: str | None) -> dict[str, Any]:
        if not authorization:
            raise Unauthenticated("TOKEN_MISSING", "call metadata authorization: Bearer <token> is missing")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("TOKEN_MISSING", "authorization is not a bearer token")
        issuer = self.config.issuer  # the key broker is this verifier: a token meant for others is refused
        return self._verify_token(token.strip(), audience=issuer)

    def get_resource(self, path: str, authorization: str | None, door: str = "") -> dict[str, str]:
        """The resource at ``path`` as a flattened JWE to the TD key the bearer token attests (``door`` as
        for ``attest``)."""
        where = {"door": door} if door else {}
        jti = ""
        try:
            claims = self._bearer(authorization)
            jti = str(claims.get("jti", ""))
            resource = self.store.get_resource(path)
            if resource is None:
                raise NotFound("RESOURCE_NOT_FOUND", f"no resource at {clip(path)!r}", path=clip(path))
            denials = parse_resource_policy(resource.policy).denials(claims)
            if denials:
                raise Refused("RESOURCE_POLICY_DENIED", "; ".join(denials), denials=" | ".join(denials))
            akpub = claims["submods"]["cpu0"].get("ear.veraison.key-attestation", {}).get("akpub")
            if not isinstance(akpub, str):
                raise Refused("TOKEN_NOT_KEY_BOUND", "the token attests no td key to seal the secret to")
            sealed = secret_jwe.seal(resource.secret, binding.load_tee_public_key(b64url_decode(akpub)))
        except Exception as err:
            self._audit("GetResource", path, err, jti=jti, **where)
            raise
        self._audit("GetResource", path, None, jti=jti, **where)
        return sealed

    def audit_log(self, after_id: int, limit: int) -> list[AuditRecord]:
        return self.store.audit_entries(after_id, min(limit or 100, MAX_AUDIT_PAGE))

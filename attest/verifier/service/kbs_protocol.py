"""The KBS attestation protocol (trustee's Request-Challenge-Attestation-Response) over ``VerifierCore``,
without HTTP: sessions, payload checks, refusals as trustee's ErrorInformation (docs/kbs.md).

One attestation, two front doors: a KBS session takes its nonce from the verifier's nonce store
(``VerifierCore.get_nonce``), its ``Attestation`` is verified, appraised and audited by
``VerifierCore.attest`` under the same policies (``extra-params.attestation-policy-selector`` names one;
``default`` otherwise), and its resources come from the same key broker (``VerifierCore.get_resource``), as
the same JWE.

- ``auth``: a ``Request`` with ``version`` 0.4.0 and ``tee`` "tdx" opens a session: a random id (the
  ``kbs-session-id`` cookie) and a ``Challenge`` whose ``nonce`` is the store's 32 bytes, base64. Any other
  version, a TEE other than TDX, or an unknown policy selector is 401 ``AttestationError``.
- ``attest``: the session's ``Attestation``: ``runtime-data.nonce`` must be the challenge's, the
  ``tee-pubkey`` a JWK of an EC P-256/384/521 or RSA 2048..4096 key, the ``tee-evidence`` TDX evidence;
  REPORTDATA must be the runtime data's binding (``attest.formats.kbs_evidence``). A session attests once:
  its nonce is consumed by the first attempt, so a second attestation on it (a replay) is refused like any
  other, 401 with the core's reason (``NONCE_REPLAYED``). Success: ``{"token": JWT}``, kept in the session.
- ``resource``: the session's token, or ``Authorization: Bearer <token>``; 401 without either or with a
  token that does not verify, 403 when the resource policy (or the token's lack of a TD key) refuses,
  404 for a path that names no resource.

Sessions live in memory, at most ``max_sessions`` (expired ones are dropped; a Request that finds every slot
live is 503, no live session is evicted), each until its nonce expires or, once attested, its token does; a
restart ends them and a client attests again (trustee's KBS keeps its sessions in memory too).
"""

from __future__ import annotations

import base64
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from attest.formats import binding, kbs_evidence, secret_jwe
from attest.jsonutil import loads_json
from attest.verifier.appraise import DEFAULT_POLICY_NAME
from attest.verifier.service.core import (
    MAX_EVENT_LOG_SIZE,
    MAX_QUOTE_SIZE,
    RESOURCE_PATH,
    VerifierCore,
)
from attest.verifier.service.errors import SERVER_FAULTS, clip, printable, status_of

ERROR_TYPE_PREFIX = "https://github.com/confidential-containers/kbs/errors"
SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(\+[0-9A-Za-z.-]+)?")
SESSION_ID = re.compile(r"[0-9a-f]{32}")
MAX_SESSIONS = 4096
MAX_DETAIL = 512  # characters of an ErrorInformation detail
POLICY_SELECTOR = "attestation-policy-selector"


class KbsError(Exception):
    """A refusal: HTTP ``status``, trustee's error ``kind`` (ErrorInformation type) and a one-line detail."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = clip(printable(detail[: 2 * MAX_DETAIL]), MAX_DETAIL)

    def information(self) -> dict[str, str]:
        """trustee's ErrorInformation JSON (RFC 7807 problem details: ``type``, ``detail``)."""
        return {"type": f"{ERROR_TYPE_PREFIX}/{self.kind}", "detail": self.detail}


class KbsSerdeError(KbsError):
    """A payload that is not the JSON the protocol defines (401 ``SerdeError``, as trustee answers)."""

    def __init__(self, detail: str) -> None:
        super().__init__(401, "SerdeError", detail)


@dataclass
class Session:
    id: str
    nonce: str
    nonce_bytes: bytes
    policy: str
    expires_at: float
    token: str | None = None


def _object(body: bytes, what: str) -> dict[str, Any]:
    doc = loads_json(body, what, KbsSerdeError)
    if not isinstance(doc, dict):
        raise KbsError(401, "SerdeError", f"{what} is not a json object")
    return doc


def _from_core(err: Exception, fallback: tuple[int, str]) -> KbsError:
    """A core refusal as the KBS reports it: server faults 503, the rest ``fallback`` with the reason."""
    status = status_of(err)
    if status is None:
        raise err
    code, reason, _ = status
    if code in SERVER_FAULTS:
        return KbsError(503, "AttestationError", f"{reason}: {err}")
    return KbsError(fallback[0], fallback[1], f"{reason}: {err}")


class KbsProtocol:
    """The RCAR state machine over one ``VerifierCore``. Thread-safe; no call holds the session lock while
    it verifies."""

    def __init__(self, core: VerifierCore, max_sessions: int = MAX_SESSIONS) -> None:
        self.core = core
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    # --- sessions -----------------------------------------------------------------------------------------

    def _make_room(self) -> None:
        """Drop expired sessions; 503 when every slot still holds a live one. A live session is never evicted:
        a flood of Requests must not cost a TD between its challenge and its attestation its session."""
        now = self.core.clock()
        with self._lock:
            for sid in [sid for sid, s in self._sessions.items() if s.expires_at <= now]:
                del self._sessions[sid]
            if len(self._sessions) >= self.max_sessions:
                raise KbsError(
                    503, "AttestationError", f"the kbs is busy: {self.max_sessions} live sessions, try later"
                )

    def _store(self, session: Session) -> None:
        self._make_room()
        with self._lock:
            self._sessions[session.id] = session

    def session(self, session_id: str | None) -> Session | None:
        """The live session a cookie names, or None."""
        if not session_id or not SESSION_ID.fullmatch(session_id):
            return None
        with self._lock:
            found = self._sessions.get(session_id)
        if found is None or found.expires_at <= self.core.clock():
            return None
        return found

    # --- Request → Challenge ------------------------------------------------------------------------------

    def auth(self, body: bytes) -> tuple[Session, dict[str, Any]]:
        request = _object(body, "kbs request")
        version = request.get("version")
        match = SEMVER.fullmatch(version) if isinstance(version, str) else None
        if match is None or match.group(1, 2, 3) != tuple(kbs_evidence.PROTOCOL_VERSION.split(".")):
            raise KbsError(
                401,
                "AttestationError",
                f"KBS Client Protocol Version Mismatch: expect ={kbs_evidence.PROTOCOL_VERSION} "
                f"while the request is {clip(str(version), 32)}",
            )
        if request.get("tee") != kbs_evidence.TEE:
            raise KbsError(401, "AttestationError", f"this kbs verifies {kbs_evidence.TEE!r} evidence only")
        extra = request.get("extra-params")
        selector = extra.get(POLICY_SELECTOR) if isinstance(extra, Mapping) else None
        if selector is not None and not isinstance(selector, str):
            raise KbsError(401, "SerdeError", f"{POLICY_SELECTOR} must be a string")
        policy = selector or DEFAULT_POLICY_NAME
        self._make_room()  # before a nonce is written for a session that could not be kept
        try:
            self.core.load_policy(policy)
            grant = self.core.get_nonce()
        except Exception as err:
            raise _from_core(err, (401, "AttestationError")) from None
        nonce = base64.b64encode(grant.nonce).decode("ascii")
        session = Session(secrets.token_hex(16), nonce, grant.nonce, policy, float(grant.expires_at))
        self._store(session)
        return session, {"nonce": nonce, "extra-params": ""}

    # --- Attestation → token ------------------------------------------------------------------------------

    def attest(self, session_id: str | None, body: bytes) -> tuple[Session, str]:
        session = self.session(session_id)
        if session is None:
            raise KbsError(401, "AttestationError", "no live kbs session: POST a Request to /kbs/v0/auth")
        attestation = _object(body, "kbs attestation")
        if attestation.get("init-data") is not None:
            raise KbsError(401, "AttestationError", "init-data is not supported by this kbs")
        runtime = attestation.get("runtime-data")
        evidence = attestation.get("tee-evidence")
        if not isinstance(runtime, Mapping) or not isinstance(evidence, Mapping):
            raise KbsError(401, "SerdeError", "attestation needs runtime-data and tee-evidence objects")
        if runtime.get("nonce") != session.nonce:
            raise KbsError(
                401,
                "AttestationError",
                "the nonce in the handshake session is different from the one in the Attestation",
            )
        tee_pubkey = runtime.get("tee-pubkey")
        additional = evidence.get("additional_evidence", "")
        if not isinstance(additional, str):
            raise KbsError(401, "SerdeError", "tee-evidence.additional_evidence must be a string")
        if additional:
            raise KbsError(401, "AttestationError", "additional (device) evidence is not supported")
        primary = evidence.get("primary_evidence")
        if isinstance(primary, str):  # tolerated: the attester's JSON text instead of the object
            primary = loads_json(primary, "primary_evidence", KbsSerdeError)
        try:
            key = secret_jwe.load_public_jwk(tee_pubkey)
            assert isinstance(tee_pubkey, Mapping)
            expected = kbs_evidence.report_data(session.nonce, tee_pubkey, additional)
            quote, event_log = kbs_evidence.parse_tdx_evidence(primary, MAX_QUOTE_SIZE, MAX_EVENT_LOG_SIZE)
        except (binding.BindingError, kbs_evidence.KbsEvidenceError) as err:
            raise KbsError(401, "AttestationError", str(err)) from None
        try:
            result = self.core.attest(
                quote,
                event_log,
                session.nonce_bytes,
                binding.spki_der(key),
                session.policy,
                report_data=expected,
                door="kbs",
            )
        except Exception as err:
            raise _from_core(err, (401, "AttestationError")) from None
        with self._lock:
            session.token = result.token
            session.expires_at = float(result.expires_at)
        return session, result.token

    # --- resources ----------------------------------------------------------------------------------------

    def resource(self, path: str, session_id: str | None, authorization: str | None) -> dict[str, str]:
        """The resource at ``repository/type/tag`` as a flattened JWE."""
        if not RESOURCE_PATH.fullmatch(path) or ".." in path.split("/"):
            raise KbsError(404, "InvalidRequestPath", f"Request path {clip(path, 64)} is invalid")
        session = self.session(session_id)
        if authorization:
            bearer = authorization
        elif session is not None and session.token is not None:
            bearer = f"Bearer {session.token}"
        else:
            raise KbsError(401, "TokenNotFound", "Attestation Token not found: attest, or send a token")
        try:
            return self.core.get_resource(path, bearer, door="kbs")
        except Exception as err:
            status = status_of(err)
            if status is None:
                raise
            code = status[0]
            if code == "NOT_FOUND":
                raise KbsError(404, "InvalidRequestPath", f"{status[1]}: {err}") from None
            if code == "PERMISSION_DENIED":
                raise KbsError(403, "PolicyDeny", f"{status[1]}: {err}") from None
            raise _from_core(err, (401, "TokenVerifierError")) from None

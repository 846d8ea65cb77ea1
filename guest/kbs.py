"""A KBS client inside a simulated TD: trustee's Request-Challenge-Attestation-Response flow over HTTP, the
way CoCo's attestation agent runs it in a real TD (docs/kbs.md §7, §1–§4).

Written to be read by people writing their own client; each step names the protocol message it makes:

1. ``POST /kbs/v0/auth`` with a ``Request`` (version 0.4.0, tee ``tdx``) → a ``Challenge`` nonce and the
   ``kbs-session-id`` cookie (kept in this client's cookie jar);
2. a fresh ephemeral key (EC P-256 by default, as the agent's; RSA-2048 on request), exported as the
   ``tee-pubkey`` JWK; REPORTDATA = SHA-384 of the canonical runtime data, zero-padded
   (``attest.formats.kbs_evidence.report_data``);
3. a DCAP quote for that REPORTDATA through the host (TDG.MR.REPORT + GetQuote, :meth:`guest.td.Td.quote`)
   and the TD's CC event log, as TDX evidence; ``POST /kbs/v0/attest`` → the attestation token;
4. ``GET /kbs/v0/resource/<repository>/<type>/<tag>`` on the same session → a JWE to the ephemeral key,
   opened here (``attest.formats.secret_jwe``); the private key never leaves this process.

Refusals raise :class:`guest.errors.AttestationRefused` whose ``code`` is ``HTTP <status>`` and whose
``reason`` is the verifier's reason when the ErrorInformation detail starts with one
(``RESOURCE_POLICY_DENIED``, ``MRTD_MISMATCH``, ``NONCE_REPLAYED`` …), else trustee's error type
(``TokenNotFound`` …); metadata ``http_status`` and ``type``. A KBS that cannot be reached is
``KBS_UNREACHABLE``.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote as url_quote

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from attest.formats import kbs_evidence, secret_jwe
from attest.formats.binding import TeePrivateKey
from guest.errors import AttestationRefused, GuestError
from guest.td import Td
from wire.tls import TlsConfig, ssl_client_context

TIMEOUT = 30.0
MAX_RESPONSE = 1 << 20  # bytes of a KBS answer this client reads (a 64 KiB secret's JWE is ~90 KiB)
ERROR_TYPE = re.compile(r".*/errors/([A-Za-z]+)")
REASON = re.compile(r"([A-Z][A-Z0-9_]{2,63}):")


@dataclass(frozen=True)
class KbsAttestation:
    """What a successful attestation gave this TD: the token and the key secrets are wrapped to."""

    token: str
    private_key: TeePrivateKey
    nonce: str


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: urllib would otherwise repeat the request, bearer token included, to whatever
    host (or ``ftp:`` URL) the answer names."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class KbsClient:
    """One KBS session (a cookie jar) at ``url`` (``http://HOST:PORT`` or ``https://…`` with ``tls``)."""

    def __init__(self, url: str, tls: TlsConfig | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise GuestError(f"kbs url {url!r} is not http:// or https://", "KBS_URL_INVALID")
        self.url = url.rstrip("/")
        self._jar = http.cookiejar.CookieJar()
        handlers: list[Any] = [urllib.request.HTTPCookieProcessor(self._jar), _NoRedirect()]
        if tls is not None:
            handlers.append(urllib.request.HTTPSHandler(context=ssl_client_context(tls)))
        self._opener = urllib.request.build_opener(*handlers)

    def __enter__(self) -> KbsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._jar.clear()

    def _call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/kbs/v0/{path}", data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with self._opener.open(request, timeout=TIMEOUT) as reply:
                raw = reply.read(MAX_RESPONSE + 1)
        except urllib.error.HTTPError as err:
            raise _refusal(err.code, err.read(MAX_RESPONSE)) from None
        except (urllib.error.URLError, OSError) as err:
            raise GuestError(f"kbs at {self.url} cannot be reached: {err}", "KBS_UNREACHABLE") from None
        if len(raw) > MAX_RESPONSE:
            raise GuestError(f"kbs answer larger than {MAX_RESPONSE} bytes", "KBS_RESPONSE_MALFORMED")
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise GuestError("kbs answer is not json", "KBS_RESPONSE_MALFORMED") from None

    def attest(
        self, td: Td, *, policy: str = "", with_event_log: bool = True, rsa_key: bool = False
    ) -> KbsAttestation:
        """Steps 1–3: authenticate this TD (under ``policy``, the KBS's default when empty)."""
        request: dict[str, Any] = {"version": kbs_evidence.PROTOCOL_VERSION, "tee": kbs_evidence.TEE}
        request["extra-params"] = {"attestation-policy-selector": policy} if policy else ""
        challenge = self._call("POST", "auth", request)
        nonce = challenge.get("nonce") if isinstance(challenge, dict) else None
        if not isinstance(nonce, str):
            raise GuestError("kbs challenge has no nonce", "KBS_RESPONSE_MALFORMED")
        key: TeePrivateKey = (
            rsa.generate_private_key(65537, 2048) if rsa_key else ec.generate_private_key(ec.SECP256R1())
        )
        tee_pubkey = secret_jwe.public_jwk(key.public_key())
        quote = td.quote(kbs_evidence.report_data(nonce, tee_pubkey))
        evidence = kbs_evidence.tdx_evidence(quote, td.event_log() if with_event_log else None)
        attestation = {
            "runtime-data": {"nonce": nonce, "tee-pubkey": tee_pubkey},
            "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""},
        }
        reply = self._call("POST", "attest", attestation)
        token = reply.get("token") if isinstance(reply, dict) else None
        if not isinstance(token, str):
            raise GuestError("kbs attestation answer has no token", "KBS_RESPONSE_MALFORMED")
        return KbsAttestation(token, key, nonce)

    def get_resource(self, path: str, attestation: KbsAttestation, *, by_token: bool = False) -> bytes:
        """Step 4: the resource ``repository/type/tag``, on this session (or by the bearer token)."""
        parts = path.split("/")
        if len(parts) != 3 or not all(parts):
            raise GuestError(f"kbs resource {path!r} is not repository/type/tag", "KBS_RESOURCE_INVALID")
        quoted = "/".join(url_quote(p, safe="") for p in parts)
        jwe = self._call("GET", f"resource/{quoted}", token=attestation.token if by_token else None)
        try:
            return secret_jwe.open_secret(jwe, attestation.private_key)
        except secret_jwe.JweError as err:
            raise GuestError(f"the released secret does not open: {err}", "SECRET_JWE_INVALID") from None


def _refusal(status: int, body: bytes) -> AttestationRefused:
    """An HTTP refusal with trustee's ErrorInformation as the guest library's error."""
    kind, detail = "", body[:512].decode("utf-8", "replace")
    try:
        info = json.loads(body)
    except (ValueError, RecursionError):
        info = None
    if isinstance(info, dict):
        match = ERROR_TYPE.fullmatch(str(info.get("type", "")))
        kind = match.group(1) if match else ""
        detail = str(info.get("detail", ""))[:512]
    found = REASON.match(detail)
    reason = found.group(1) if found else (kind or f"HTTP_{status}")
    metadata = {"http_status": str(status), "type": kind}
    return AttestationRefused(f"kbs refused ({status}): {detail}", reason, f"HTTP {status}", metadata)

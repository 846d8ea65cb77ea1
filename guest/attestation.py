"""Remote attestation from inside a TD: the relying-party side of a key broker, as a guest does it
(docs/attestation.md §11, §13; trustee's KBS flow; docs/conventions.md §9 lessons).

1. ``GetNonce`` from the verifier;
2. a fresh ephemeral P-256 key, and REPORTDATA = ``attest.formats.binding.report_data(nonce, key)`` — the one
   binding rule the verifier checks;
3. a DCAP quote for that REPORTDATA (TDG.MR.REPORT + GetQuote, :meth:`guest.td.Td.quote`), sent with the
   TD's CC event log to ``Attest`` → a signed attestation token;
4. ``GetResource`` with the token → the secret as a JWE to the ephemeral key (``attest.formats.secret_jwe``:
   ECDH-ES+A256KW / A256GCM), opened here and only here.

``guest.kbs`` does the same through the KBS protocol's HTTP endpoints (trustee's RCAR flow).

The private key never leaves this process; the verifier never returns a secret in clear.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from cryptography.hazmat.primitives.asymmetric import ec

from attest.formats import binding
from attest.formats.secret_jwe import JweError, open_secret
from guest.connection import open_verifier_channel
from guest.errors import AttestationRefused, GuestError, from_rpc_error
from guest.td import Td
from wire.balancing import TargetError
from wire.tls import TlsConfig
from wire.v1 import attestation_pb2, attestation_pb2_grpc

TIMEOUT = 30.0
#: Exchanges ``Verifier.attest`` tries when a verifier replica cannot answer (UNAVAILABLE), each with a new
#: nonce and key; the pause before the next one grows by ``RETRY_PAUSE`` seconds each time.
ATTEST_ATTEMPTS = 4
RETRY_PAUSE = 0.2


@dataclass(frozen=True)
class Attestation:
    """What a successful ``Attest`` gave this TD."""

    token: str
    expires_at_unix: int
    tcb_status: str
    ear_status: str
    private_key: ec.EllipticCurvePrivateKey
    #: The evidence the token was issued for: the DCAP quote and the CC event log sent with it.
    quote: bytes = b""
    event_log: bytes = b""


class Verifier:
    """A connection to a tdxsim verifier (``tdxsim verifier``): plaintext, or TLS / mTLS with ``tls``.
    ``address`` may name several replicas (a list, a comma list, or a DNS name): calls go round-robin to
    those that answer (``guest.connection.open_verifier_channel``)."""

    def __init__(self, address: str | Sequence[str], tls: TlsConfig | None = None) -> None:
        try:
            self._channel = open_verifier_channel(address, tls)
        except TargetError as err:
            raise GuestError(f"verifier address: {err}", "VERIFIER_ADDRESS_INVALID") from None
        self._stub = attestation_pb2_grpc.VerifierServiceStub(self._channel)
        #: The ``Attest`` request of the current attempt, so a refusal can carry the evidence it refused.
        self._sent: attestation_pb2.AttestRequest | None = None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def attest(
        self, td: Td, *, policy: str = "", with_event_log: bool = True, audience: str = ""
    ) -> Attestation:
        """Steps 1–3: a token for this TD under ``policy`` (the verifier's default when empty), naming
        ``audience`` as its ``aud`` when given. A replica that cannot answer (UNAVAILABLE: it is gone, or its
        database is) costs one attempt: the exchange starts over with a fresh nonce and key, at the next
        replica, up to ``ATTEST_ATTEMPTS`` times; a nonce is never presented twice."""
        for attempt in range(1, ATTEST_ATTEMPTS + 1):
            self._sent = None
            try:
                return self._attest_once(td, policy, with_event_log, audience)
            except grpc.RpcError as err:
                if attempt == ATTEST_ATTEMPTS or not _unavailable(err):
                    refused = from_rpc_error(err, verifier=True)
                    if isinstance(refused, AttestationRefused) and self._sent is not None:
                        refused.quote, refused.event_log = self._sent.quote, self._sent.event_log
                    raise refused from None
            time.sleep(RETRY_PAUSE * attempt)
        raise AssertionError("unreachable")

    def _attest_once(self, td: Td, policy: str, with_event_log: bool, audience: str) -> Attestation:
        nonce = self._stub.GetNonce(attestation_pb2.GetNonceRequest(), timeout=TIMEOUT).nonce
        key = ec.generate_private_key(ec.SECP256R1())
        spki = binding.spki_der(key.public_key())
        quote = td.quote(binding.report_data(nonce, spki))
        request = attestation_pb2.AttestRequest(
            quote=quote,
            event_log=td.event_log() if with_event_log else b"",
            nonce=nonce,
            tee_public_key=spki,
            policy=policy,
            audience=audience,
        )
        self._sent = request
        reply = self._stub.Attest(request, timeout=TIMEOUT)
        return Attestation(
            reply.token,
            reply.expires_at_unix,
            reply.tcb_status,
            reply.ear_status,
            key,
            quote,
            request.event_log,
        )

    def fetch_secret(self, attestation: Attestation, path: str) -> bytes:
        """Step 4: the resource at ``path``, released to this TD's token and opened with its key."""
        try:
            reply = self._stub.GetResource(
                attestation_pb2.GetResourceRequest(path=path),
                metadata=[("authorization", f"Bearer {attestation.token}")],
                timeout=TIMEOUT,
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err, verifier=True) from None
        try:
            return open_secret(reply.jwe_json, attestation.private_key)
        except JweError as err:
            raise GuestError(f"the released secret does not open: {err}", "SECRET_JWE_INVALID") from None


def _unavailable(err: grpc.RpcError) -> bool:
    return isinstance(err, grpc.Call) and err.code() is grpc.StatusCode.UNAVAILABLE

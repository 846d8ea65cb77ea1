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

from dataclasses import dataclass

import grpc
from cryptography.hazmat.primitives.asymmetric import ec

from attest.formats import binding
from attest.formats.secret_jwe import JweError, open_secret
from guest.connection import open_channel
from guest.errors import GuestError, from_rpc_error
from guest.td import Td
from wire.tls import TlsConfig
from wire.v1 import attestation_pb2, attestation_pb2_grpc

TIMEOUT = 30.0


@dataclass(frozen=True)
class Attestation:
    """What a successful ``Attest`` gave this TD."""

    token: str
    expires_at_unix: int
    tcb_status: str
    ear_status: str
    private_key: ec.EllipticCurvePrivateKey


class Verifier:
    """A connection to a tdxsim verifier (``tdxsim verifier``): plaintext, or TLS / mTLS with ``tls``."""

    def __init__(self, address: str, tls: TlsConfig | None = None) -> None:
        self._channel = open_channel(address, tls)
        self._stub = attestation_pb2_grpc.VerifierServiceStub(self._channel)

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
        ``audience`` as its ``aud`` when given."""
        try:
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
            reply = self._stub.Attest(request, timeout=TIMEOUT)
        except grpc.RpcError as err:
            raise from_rpc_error(err, verifier=True) from None
        return Attestation(reply.token, reply.expires_at_unix, reply.tcb_status, reply.ear_status, key)

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

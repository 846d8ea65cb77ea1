"""``tdxsim.v1.VerifierService``: messages in, ``VerifierCore`` call, messages out (docs/architecture.md).

Exceptions become statuses through ``attest.verifier.service.errors.status_of`` (one table) and
``wire.rpc_status.abort`` (ErrorInfo, domain ``tdxsim.v1``). An exception the table does not know is
a bug: INTERNAL with the error on stderr (``wire.rpc_status.guard``), never a code a client could mistake
for a refusal. A server fault (the database failing: UNAVAILABLE) is also written to stderr as one line,
without a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from attest.verifier.service.core import VerifierCore
from attest.verifier.service.errors import HANDLED, SERVER_FAULTS, clip, status_of
from wire.credentials import bearer
from wire.rpc_status import abort, guard
from wire.v1 import attestation_pb2 as pb
from wire.v1 import attestation_pb2_grpc

F = TypeVar("F", bound=Callable[..., Any])
MAX_MESSAGE = 1024  # characters of a status message: trailers must stay well under gRPC's 8 KiB default


def _refuse(servicer: Any, context: grpc.ServicerContext, err: Exception) -> bool:
    if not isinstance(err, HANDLED):
        return False
    status = status_of(err)
    assert status is not None
    code, reason, metadata = status
    if code in SERVER_FAULTS:
        line = f"tdxsim verifier: {code} {reason}: {err}"
        print(line.replace("\n", " "), file=sys.stderr, flush=True)
    abort(context, grpc.StatusCode[code], clip(str(err), MAX_MESSAGE), reason, metadata)


translate: Callable[[F], F] = guard("tdxsim verifier", _refuse)
"""Servicer decorator: handled failures abort with their status and ErrorInfo; anything else is a fault of
the verifier (INTERNAL, logged on stderr). Messages and metadata are clipped, so no refusal's trailers can
outgrow what a client accepts."""


def _metadata(context: grpc.ServicerContext, key: str) -> str | None:
    for k, v in context.invocation_metadata() or ():
        if k.lower() == key:
            return v if isinstance(v, str) else v.decode("utf-8", "replace")
    return None


class VerifierServicer(attestation_pb2_grpc.VerifierServiceServicer):
    def __init__(self, core: VerifierCore) -> None:
        self.core = core

    def _admin(self, context: grpc.ServicerContext) -> None:
        self.core.require_admin(bearer(context))

    @translate
    def GetNonce(self, request: pb.GetNonceRequest, context: grpc.ServicerContext) -> pb.GetNonceResponse:
        grant = self.core.get_nonce(request.ttl_seconds)
        return pb.GetNonceResponse(
            nonce=grant.nonce, issued_at_unix=grant.issued_at, expires_at_unix=grant.expires_at
        )

    @translate
    def Attest(self, request: pb.AttestRequest, context: grpc.ServicerContext) -> pb.AttestResponse:
        result = self.core.attest(
            request.quote,
            request.event_log,
            request.nonce,
            request.tee_public_key,
            request.policy,
            request.audience,
        )
        return pb.AttestResponse(
            token=result.token,
            expires_at_unix=result.expires_at,
            ear_status=result.ear_status,
            tcb_status=result.tcb_status,
            advisory_ids=list(result.advisory_ids),
            kid=result.kid,
        )

    @translate
    def GetJwks(self, request: pb.GetJwksRequest, context: grpc.ServicerContext) -> pb.GetJwksResponse:
        return pb.GetJwksResponse(jwks_json=json.dumps(self.core.jwks(), sort_keys=True))

    @translate
    def SetPolicy(self, request: pb.SetPolicyRequest, context: grpc.ServicerContext) -> pb.SetPolicyResponse:
        self._admin(context)
        policy = self.core.set_policy(request.name, request.policy_json)
        return pb.SetPolicyResponse(name=policy.name)

    @translate
    def GetPolicy(self, request: pb.GetPolicyRequest, context: grpc.ServicerContext) -> pb.GetPolicyResponse:
        name, text, updated, built_in = self.core.get_policy(request.name)
        return pb.GetPolicyResponse(name=name, policy_json=text, updated_at_unix=updated, built_in=built_in)

    @translate
    def SetReferenceValues(
        self, request: pb.SetReferenceValuesRequest, context: grpc.ServicerContext
    ) -> pb.SetReferenceValuesResponse:
        self._admin(context)
        values: dict[str, list[bytes]] = {}
        for rv in request.values:
            values.setdefault(rv.field, []).extend(rv.values)
        count = self.core.set_reference_values(request.name, values)
        return pb.SetReferenceValuesResponse(name=request.name, value_count=count)

    @translate
    def PutResource(
        self, request: pb.PutResourceRequest, context: grpc.ServicerContext
    ) -> pb.PutResourceResponse:
        self._admin(context)
        self.core.put_resource(request.path, request.secret, request.policy_json)
        return pb.PutResourceResponse(path=request.path)

    @translate
    def GetResource(
        self, request: pb.GetResourceRequest, context: grpc.ServicerContext
    ) -> pb.GetResourceResponse:
        jwe = self.core.get_resource(request.path, _metadata(context, "authorization"))
        return pb.GetResourceResponse(path=request.path, jwe_json=json.dumps(jwe, sort_keys=True))

    @translate
    def GetAuditLog(
        self, request: pb.GetAuditLogRequest, context: grpc.ServicerContext
    ) -> pb.GetAuditLogResponse:
        self._admin(context)
        outcome = {"ALLOWED": pb.AUDIT_OUTCOME_ALLOWED, "REFUSED": pb.AUDIT_OUTCOME_REFUSED}
        return pb.GetAuditLogResponse(
            entries=[
                pb.AuditEntry(
                    id=r.id,
                    at_unix_ms=r.at_ms,
                    action=r.action,
                    outcome=outcome.get(r.outcome, pb.AUDIT_OUTCOME_UNSPECIFIED),
                    reason=r.reason,
                    subject=r.subject,
                    detail_json=r.detail,
                )
                for r in self.core.audit_log(request.after_id, request.limit)
            ]
        )

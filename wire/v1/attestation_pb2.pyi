from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuditOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIT_OUTCOME_UNSPECIFIED: _ClassVar[AuditOutcome]
    AUDIT_OUTCOME_ALLOWED: _ClassVar[AuditOutcome]
    AUDIT_OUTCOME_REFUSED: _ClassVar[AuditOutcome]
AUDIT_OUTCOME_UNSPECIFIED: AuditOutcome
AUDIT_OUTCOME_ALLOWED: AuditOutcome
AUDIT_OUTCOME_REFUSED: AuditOutcome

class GetNonceRequest(_message.Message):
    __slots__ = ("ttl_seconds",)
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ttl_seconds: int
    def __init__(self, ttl_seconds: _Optional[int] = ...) -> None: ...

class GetNonceResponse(_message.Message):
    __slots__ = ("nonce", "issued_at_unix", "expires_at_unix")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    issued_at_unix: int
    expires_at_unix: int
    def __init__(self, nonce: _Optional[bytes] = ..., issued_at_unix: _Optional[int] = ..., expires_at_unix: _Optional[int] = ...) -> None: ...

class AttestRequest(_message.Message):
    __slots__ = ("quote", "event_log", "nonce", "tee_public_key", "policy", "audience")
    QUOTE_FIELD_NUMBER: _ClassVar[int]
    EVENT_LOG_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    TEE_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    quote: bytes
    event_log: bytes
    nonce: bytes
    tee_public_key: bytes
    policy: str
    audience: str
    def __init__(self, quote: _Optional[bytes] = ..., event_log: _Optional[bytes] = ..., nonce: _Optional[bytes] = ..., tee_public_key: _Optional[bytes] = ..., policy: _Optional[str] = ..., audience: _Optional[str] = ...) -> None: ...

class AttestResponse(_message.Message):
    __slots__ = ("token", "expires_at_unix", "ear_status", "tcb_status", "advisory_ids", "kid")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    EAR_STATUS_FIELD_NUMBER: _ClassVar[int]
    TCB_STATUS_FIELD_NUMBER: _ClassVar[int]
    ADVISORY_IDS_FIELD_NUMBER: _ClassVar[int]
    KID_FIELD_NUMBER: _ClassVar[int]
    token: str
    expires_at_unix: int
    ear_status: str
    tcb_status: str
    advisory_ids: _containers.RepeatedScalarFieldContainer[str]
    kid: str
    def __init__(self, token: _Optional[str] = ..., expires_at_unix: _Optional[int] = ..., ear_status: _Optional[str] = ..., tcb_status: _Optional[str] = ..., advisory_ids: _Optional[_Iterable[str]] = ..., kid: _Optional[str] = ...) -> None: ...

class GetJwksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetJwksResponse(_message.Message):
    __slots__ = ("jwks_json",)
    JWKS_JSON_FIELD_NUMBER: _ClassVar[int]
    jwks_json: str
    def __init__(self, jwks_json: _Optional[str] = ...) -> None: ...

class SetPolicyRequest(_message.Message):
    __slots__ = ("name", "policy_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    policy_json: str
    def __init__(self, name: _Optional[str] = ..., policy_json: _Optional[str] = ...) -> None: ...

class SetPolicyResponse(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetPolicyResponse(_message.Message):
    __slots__ = ("name", "policy_json", "updated_at_unix", "built_in")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_JSON_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    BUILT_IN_FIELD_NUMBER: _ClassVar[int]
    name: str
    policy_json: str
    updated_at_unix: int
    built_in: bool
    def __init__(self, name: _Optional[str] = ..., policy_json: _Optional[str] = ..., updated_at_unix: _Optional[int] = ..., built_in: _Optional[bool] = ...) -> None: ...

class ReferenceValue(_message.Message):
    __slots__ = ("field", "values")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    field: str
    values: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, field: _Optional[str] = ..., values: _Optional[_Iterable[bytes]] = ...) -> None: ...

class SetReferenceValuesRequest(_message.Message):
    __slots__ = ("name", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: _containers.RepeatedCompositeFieldContainer[ReferenceValue]
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Iterable[_Union[ReferenceValue, _Mapping]]] = ...) -> None: ...

class SetReferenceValuesResponse(_message.Message):
    __slots__ = ("name", "value_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    value_count: int
    def __init__(self, name: _Optional[str] = ..., value_count: _Optional[int] = ...) -> None: ...

class PutResourceRequest(_message.Message):
    __slots__ = ("path", "secret", "policy_json")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    POLICY_JSON_FIELD_NUMBER: _ClassVar[int]
    path: str
    secret: bytes
    policy_json: str
    def __init__(self, path: _Optional[str] = ..., secret: _Optional[bytes] = ..., policy_json: _Optional[str] = ...) -> None: ...

class PutResourceResponse(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class GetResourceRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class GetResourceResponse(_message.Message):
    __slots__ = ("path", "jwe_json")
    PATH_FIELD_NUMBER: _ClassVar[int]
    JWE_JSON_FIELD_NUMBER: _ClassVar[int]
    path: str
    jwe_json: str
    def __init__(self, path: _Optional[str] = ..., jwe_json: _Optional[str] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("id", "at_unix_ms", "action", "outcome", "reason", "subject", "detail_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_JSON_FIELD_NUMBER: _ClassVar[int]
    id: int
    at_unix_ms: int
    action: str
    outcome: AuditOutcome
    reason: str
    subject: str
    detail_json: str
    def __init__(self, id: _Optional[int] = ..., at_unix_ms: _Optional[int] = ..., action: _Optional[str] = ..., outcome: _Optional[_Union[AuditOutcome, str]] = ..., reason: _Optional[str] = ..., subject: _Optional[str] = ..., detail_json: _Optional[str] = ...) -> None: ...

class GetAuditLogRequest(_message.Message):
    __slots__ = ("after_id", "limit")
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    after_id: int
    limit: int
    def __init__(self, after_id: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class GetAuditLogResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ...) -> None: ...

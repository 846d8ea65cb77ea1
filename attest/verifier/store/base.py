"""What the verifier persists, whatever holds it: the ``Store`` interface its two backends implement.

The verifier keeps nonces, policies, reference values, key-broker resources, the audit log and its token
signing keys in one database (docs/attestation.md §16): an embedded SQLite file for one process
(``attest.verifier.store.sqlite``), or a PostgreSQL database that any number of verifier replicas share
(``attest.verifier.store.postgres``). Both give the same answers: a nonce is consumed by one conditional
update, so of any number of concurrent ``consume_nonce`` calls, in any number of processes, exactly one sees
``CONSUMED``; whatever a method wrote is committed (and on disk) when it returns.

Every failure of the database while a server runs (unreachable, restarting, a full disk) is a
``StoreError``, which the service answers with UNAVAILABLE ``STORE_UNAVAILABLE`` and the one-line reason;
at start-up it is one line and exit 2.

Times are unix seconds (float for nonces, which may live one second in tests; int elsewhere). The store holds
bytes and JSON text and knows nothing about their meaning; callers validate before storing.
"""

from __future__ import annotations

import enum
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NONCE_PURGE_BATCH = 64  # expired nonces deleted per insert: many more than the one inserted, bounded work
INT64_MAX = 2**63 - 1  # both backends' integers are signed 64-bit; a larger Python int cannot be bound


class StoreError(RuntimeError):
    """The database cannot be used: newer schema, unreadable file, damaged content, or (PostgreSQL) the
    server cannot be reached; the message is one line saying which."""


class NonceState(enum.Enum):
    """Outcome of ``Store.consume_nonce``; only ``CONSUMED`` means the nonce was fresh and is now used."""

    CONSUMED = "consumed"
    UNKNOWN = "unknown"
    REPLAYED = "replayed"
    EXPIRED = "expired"


@dataclass(frozen=True)
class StoredDocument:
    name: str
    document: str
    updated_at: int


@dataclass(frozen=True)
class StoredResource:
    path: str
    secret: bytes
    policy: str
    updated_at: int


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at_ms: int
    action: str
    outcome: str
    reason: str
    subject: str
    detail: str


def encode_reference_values(values: Mapping[str, Sequence[bytes]]) -> str:
    """The JSON text both backends store for a reference-value set (hex strings, fields sorted)."""
    return json.dumps({k: [v.hex() for v in vs] for k, vs in sorted(values.items())})


def decode_reference_values(document: str) -> dict[str, list[bytes]]:
    doc: dict[str, list[str]] = json.loads(document)
    return {k: [bytes.fromhex(v) for v in vs] for k, vs in doc.items()}


def encode_detail(detail: Mapping[str, Any]) -> str:
    return json.dumps(dict(detail), sort_keys=True)


def clamp_int64(value: int) -> int:
    """``value`` within 0..INT64_MAX: an RPC's uint64 (up to 2**64 - 1) cannot be bound as a parameter."""
    return min(max(value, 0), INT64_MAX)


class Store(ABC):
    """The verifier's database. Thread-safe: each method is one transaction."""

    #: ``sqlite`` or ``postgresql``.
    backend: str
    #: Where the state lives, for logs and ``fleet.json``: a file path, or a PostgreSQL URL without password.
    location: str

    #: True when the database is a server reached over a connection (PostgreSQL): it can become
    #: unreachable while the verifier runs, so its health follows ``probe`` (docs/fleet.md "The database").
    remote: bool = False
    #: Called (without waiting, from the failing request's thread) each time a transaction fails because
    #: the database cannot be used; the verifier's health monitor sets it.
    on_unavailable: Callable[[], None] | None = None

    @abstractmethod
    def close(self) -> None: ...

    def probe(self, timeout: float) -> None:
        """Raise ``StoreError`` unless the database answers within about ``timeout`` seconds. A local file
        has nothing to reach: its failures belong to the statement that meets them, so this does nothing."""
        return None

    @abstractmethod
    def schema_version(self) -> int:
        """The highest migration applied (``attest.verifier.store.migrations``)."""

    # --- nonces -------------------------------------------------------------------------------------------

    @abstractmethod
    def add_nonce(
        self, nonce: bytes, issued_at: float, expires_at: float, *, purge_before: float | None = None
    ) -> int:
        """Insert a nonce; with ``purge_before``, in the same transaction, delete at most
        ``NONCE_PURGE_BATCH`` nonces (used or not) that expired before it. Returns how many were deleted."""

    @abstractmethod
    def purge_nonces(self, expired_before: float, limit: int | None = None) -> int:
        """Delete nonces whose ``expires_at`` is before ``expired_before``, oldest first, at most ``limit``
        (None: all), through the index on ``expires_at``."""

    @abstractmethod
    def nonce_count(self) -> int:
        """Rows in the nonce table (issued and not yet purged)."""

    @abstractmethod
    def consume_nonce(self, nonce: bytes, now: float) -> NonceState:
        """Mark ``nonce`` used if it is known, unused and not expired at ``now``; say why not otherwise."""

    # --- policies and reference values --------------------------------------------------------------------

    @abstractmethod
    def put_policy(self, name: str, document: str, now: int) -> None: ...

    @abstractmethod
    def get_policy(self, name: str) -> StoredDocument | None: ...

    @abstractmethod
    def put_reference_values(self, name: str, values: Mapping[str, Sequence[bytes]], now: int) -> None: ...

    @abstractmethod
    def get_reference_values(self, name: str) -> dict[str, list[bytes]] | None: ...

    # --- key-broker resources -----------------------------------------------------------------------------

    @abstractmethod
    def put_resource(self, path: str, secret: bytes, policy: str, now: int) -> None: ...

    @abstractmethod
    def get_resource(self, path: str) -> StoredResource | None: ...

    # --- audit log ----------------------------------------------------------------------------------------

    @abstractmethod
    def audit(
        self, at_ms: int, action: str, outcome: str, reason: str, subject: str, detail: Mapping[str, Any]
    ) -> int:
        """Append an entry; returns its id."""

    @abstractmethod
    def audit_entries(self, after_id: int = 0, limit: int = 100) -> list[AuditRecord]:
        """Up to ``limit`` entries with id > ``after_id``, oldest first (``after_id`` beyond 64-bit integers
        is clamped: no id can exceed ``INT64_MAX``)."""

    # --- token signing keys -------------------------------------------------------------------------------

    @abstractmethod
    def add_signing_key(self, kid: str, private_pem: bytes, now: int) -> None:
        """Add a key; it becomes the newest, the one that signs (rotation)."""

    @abstractmethod
    def add_first_signing_key(self, kid: str, private_pem: bytes, now: int) -> bool:
        """Add the key only if there is none yet, atomically across every process on this database (replicas
        starting together agree on one key set); True when this one was added."""

    @abstractmethod
    def signing_keys(self) -> list[tuple[str, bytes, int]]:
        """Every key, oldest first; the newest signs, all stay in the JWKS so older tokens still verify."""

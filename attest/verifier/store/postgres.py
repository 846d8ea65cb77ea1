"""The verifier's state in PostgreSQL: one database that any number of verifier replicas share.

``tdxsim verifier --db postgresql://…`` (a libpq URL; ``?host=/dir`` reaches a Unix socket). Every replica
talks to the database through a psycopg 3 connection pool, and the database, not a process, decides
everything replicas could race on (docs/fleet.md "The database"):

- a nonce is consumed by one ``UPDATE … WHERE used_at IS NULL AND expires_at >= now RETURNING``: under
  READ COMMITTED a second concurrent update of the row waits for the first to commit, re-reads the row, finds
  it used and changes nothing, so of any number of replicas exactly one answers ``CONSUMED``;
- expired nonces are purged in bounded batches chosen with ``FOR UPDATE SKIP LOCKED``, so replicas purging at
  once never wait for each other;
- schema migrations and the first signing key are written under transaction-level advisory locks
  (``pg_advisory_xact_lock``): replicas starting together apply each migration once and agree on one key set;
- each method is one transaction, committed before it returns (the server's ``synchronous_commit`` decides
  when that is on disk: on by default).

Connections are checked when taken from the pool (an empty query), so after the server restarts a dead
connection is replaced instead of failing a request. A database that cannot be reached within
``POOL_WAIT`` seconds, or fails a statement, is a ``StoreError`` with psycopg's first line (the service's
UNAVAILABLE ``STORE_UNAVAILABLE``); the pool keeps reconnecting in the background, so the replica recovers
by itself once the server is back. ``probe`` (a ``SELECT 1``) lets the verifier's health follow the
database between requests (docs/fleet.md "The database").
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import conninfo, sql
from psycopg_pool import ConnectionPool

from attest.verifier.store.base import (
    NONCE_PURGE_BATCH,
    AuditRecord,
    NonceState,
    Store,
    StoredDocument,
    StoredResource,
    StoreError,
    clamp_int64,
    decode_reference_values,
    encode_detail,
    encode_reference_values,
)
from attest.verifier.store.migrations import LATEST, MIGRATIONS

#: Seconds a request waits for a pooled connection (or a new one) before the store says it is unavailable.
POOL_WAIT = 5.0
#: Seconds to wait for the database at start-up.
OPEN_WAIT = 10.0
#: libpq's own connect timeout, seconds.
CONNECT_TIMEOUT = 5
#: Seconds the pool keeps trying to reconnect before reporting; it tries again at the next request.
RECONNECT_TIMEOUT = 30.0
POOL_MAX = 8
#: libpq's TCP keepalive and user timeout (ignored on a Unix socket): a database behind a network path that
#: silently drops packets is noticed within about ten seconds (by a request or the health probe), instead of
#: after the kernel's TCP retransmission timeout of many minutes.
TCP_LIVENESS = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,  # milliseconds
}
#: Advisory lock keys (any 64-bit integers no other user of the database takes): "tdxsim" in ASCII, 1 and 2.
MIGRATION_LOCK = 0x7464787369_01
SIGNING_KEY_LOCK = 0x7464787369_02

SCHEMA_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)"""


def redacted(url: str) -> str:
    """``url`` as libpq parameters without the password, for logs and status files."""
    try:
        params = conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql (unparsable url)"
    params.pop("password", None)
    shown = " ".join(f"{k}={v}" for k, v in sorted(params.items()) if k in {"host", "port", "dbname", "user"})
    return f"postgresql {shown}".strip()


def carries_password(url: str) -> bool:
    """Whether ``url`` holds a password (which a command line shows to every local user in /proc)."""
    try:
        return bool(conninfo.conninfo_to_dict(url).get("password"))
    except psycopg.Error:
        return False


def _one_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


class PostgresStore(Store):
    """A PostgreSQL database reached through a connection pool; thread-safe, shareable by processes."""

    backend = "postgresql"
    remote = True

    def __init__(self, url: str, *, pool_max: int = POOL_MAX) -> None:
        self.location = redacted(url)
        self._committed_at = self._failed_at = 0.0  # time.monotonic() of the last success and failure
        try:
            conninfo.conninfo_to_dict(url)
        except psycopg.Error as err:
            raise StoreError(f"--db {self.location}: {_one_line(err)}") from None
        self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = ConnectionPool(
            url,
            min_size=1,
            max_size=max(pool_max, 1),
            open=False,
            timeout=POOL_WAIT,
            reconnect_timeout=RECONNECT_TIMEOUT,
            check=ConnectionPool.check_connection,
            kwargs={
                "connect_timeout": CONNECT_TIMEOUT,
                "application_name": "tdxsim-verifier",
                **TCP_LIVENESS,
            },
            name="tdxsim-verifier",
        )
        try:
            # One direct connection first: an unreachable server is its own precise error at once, not a
            # pool timeout after OPEN_WAIT seconds.
            psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT).close()
            self._pool.open(wait=True, timeout=OPEN_WAIT)
            self._migrate()
        except psycopg.Error as err:
            self._pool.close()
            raise StoreError(f"{self.location}: {_one_line(err)}") from None
        except BaseException:
            self._pool.close()
            raise

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """One transaction on a pooled connection: committed when the block ends, rolled back if it raises;
        a database failure is a ``StoreError`` naming it."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as err:
            if isinstance(err, psycopg.OperationalError):  # the connection, not the statement, failed
                self._failed_at = time.monotonic()
                if self.on_unavailable is not None:
                    self.on_unavailable()
            raise StoreError(f"{self.location}: {_one_line(err)}") from None
        self._committed_at = time.monotonic()

    def _migrate(self) -> None:
        with self._pool.connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(SCHEMA_TABLE)
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
            version = int(row[0]) if row is not None else 0
            if version > LATEST:
                raise StoreError(f"{self.location}: schema version {version} is newer than {LATEST}")
            for migration in MIGRATIONS:
                if migration.version > version:
                    for statement in migration.postgresql:
                        conn.execute(statement.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations(version, description) VALUES (%s, %s)",
                        (migration.version, migration.description),
                    )

    def close(self) -> None:
        self._pool.close()

    def probe(self, timeout: float) -> None:
        """``SELECT 1`` on a pooled connection, waiting at most ``timeout`` seconds for one. A transaction
        committed within the last ``timeout`` seconds, with no failure since, answers instead: a pool busy
        with requests that succeed is a reachable database, not one to take out of service."""
        committed = self._committed_at
        if committed > self._failed_at and time.monotonic() - committed < timeout:
            return
        try:
            with self._pool.connection(timeout=timeout) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as err:
            self._failed_at = time.monotonic()
            raise StoreError(f"{self.location}: {_one_line(err)}") from None
        self._committed_at = time.monotonic()

    def schema_version(self) -> int:
        with self._tx() as conn:
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
        return int(row[0]) if row is not None else 0

    # --- nonces -------------------------------------------------------------------------------------------

    def add_nonce(
        self, nonce: bytes, issued_at: float, expires_at: float, *, purge_before: float | None = None
    ) -> int:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO nonces(nonce, issued_at, expires_at, used_at) VALUES (%s, %s, %s, NULL)",
                (nonce, issued_at, expires_at),
            )
            if purge_before is None:
                return 0
            return self._purge(conn, purge_before, NONCE_PURGE_BATCH)

    @staticmethod
    def _purge(conn: psycopg.Connection[tuple[Any, ...]], expired_before: float, limit: int | None) -> int:
        cur = conn.execute(
            "DELETE FROM nonces WHERE nonce IN (SELECT nonce FROM nonces WHERE expires_at < %s "
            "ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED)",
            (expired_before, limit),
        )
        return max(cur.rowcount, 0)

    def purge_nonces(self, expired_before: float, limit: int | None = None) -> int:
        with self._tx() as conn:
            return self._purge(conn, expired_before, limit)

    def nonce_count(self) -> int:
        with self._tx() as conn:
            row = conn.execute("SELECT COUNT(*) FROM nonces").fetchone()
        return int(row[0]) if row is not None else 0

    def consume_nonce(self, nonce: bytes, now: float) -> NonceState:
        with self._tx() as conn:
            won = conn.execute(
                "UPDATE nonces SET used_at = %s WHERE nonce = %s AND used_at IS NULL AND expires_at >= %s "
                "RETURNING nonce",
                (now, nonce, now),
            ).fetchone()
            if won is not None:
                return NonceState.CONSUMED
            row = conn.execute("SELECT used_at FROM nonces WHERE nonce = %s", (nonce,)).fetchone()
        if row is None:
            return NonceState.UNKNOWN
        return NonceState.REPLAYED if row[0] is not None else NonceState.EXPIRED

    # --- policies and reference values --------------------------------------------------------------------

    def _upsert_document(self, table: str, name: str, document: str, now: int) -> None:
        with self._tx() as conn:
            conn.execute(
                sql.SQL(
                    "INSERT INTO {}(name, document, updated_at) VALUES (%s, %s, %s) ON CONFLICT(name) "
                    "DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at"
                ).format(sql.Identifier(table)),
                (name, document, now),
            )

    def put_policy(self, name: str, document: str, now: int) -> None:
        self._upsert_document("policies", name, document, now)

    def get_policy(self, name: str) -> StoredDocument | None:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT name, document, updated_at FROM policies WHERE name = %s", (name,)
            ).fetchone()
        return None if row is None else StoredDocument(str(row[0]), str(row[1]), int(row[2]))

    def put_reference_values(self, name: str, values: Mapping[str, Sequence[bytes]], now: int) -> None:
        self._upsert_document("reference_values", name, encode_reference_values(values), now)

    def get_reference_values(self, name: str) -> dict[str, list[bytes]] | None:
        with self._tx() as conn:
            row = conn.execute("SELECT document FROM reference_values WHERE name = %s", (name,)).fetchone()
        return None if row is None else decode_reference_values(str(row[0]))

    # --- key-broker resources -----------------------------------------------------------------------------

    def put_resource(self, path: str, secret: bytes, policy: str, now: int) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO resources(path, secret, policy, updated_at) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT(path) DO UPDATE SET secret = excluded.secret, policy = excluded.policy, "
                "updated_at = excluded.updated_at",
                (path, secret, policy, now),
            )

    def get_resource(self, path: str) -> StoredResource | None:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT path, secret, policy, updated_at FROM resources WHERE path = %s", (path,)
            ).fetchone()
        return None if row is None else StoredResource(str(row[0]), bytes(row[1]), str(row[2]), int(row[3]))

    # --- audit log ----------------------------------------------------------------------------------------

    def audit(
        self, at_ms: int, action: str, outcome: str, reason: str, subject: str, detail: Mapping[str, Any]
    ) -> int:
        with self._tx() as conn:
            row = conn.execute(
                "INSERT INTO audit(at_ms, action, outcome, reason, subject, detail) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (at_ms, action, outcome, reason, subject, encode_detail(detail)),
            ).fetchone()
        return int(row[0]) if row is not None else 0

    def audit_entries(self, after_id: int = 0, limit: int = 100) -> list[AuditRecord]:
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT id, at_ms, action, outcome, reason, subject, detail FROM audit WHERE id > %s "
                "ORDER BY id LIMIT %s",
                (clamp_int64(after_id), clamp_int64(limit)),
            ).fetchall()
        return [AuditRecord(int(r[0]), int(r[1]), *(str(v) for v in r[2:])) for r in rows]

    # --- token signing keys -------------------------------------------------------------------------------

    def add_signing_key(self, kid: str, private_pem: bytes, now: int) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO signing_keys(kid, private_pem, created_at) VALUES (%s, %s, %s)",
                (kid, private_pem, now),
            )

    def add_first_signing_key(self, kid: str, private_pem: bytes, now: int) -> bool:
        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SIGNING_KEY_LOCK,))
            cur = conn.execute(
                "INSERT INTO signing_keys(kid, private_pem, created_at) "
                "SELECT %s, %s, %s WHERE NOT EXISTS (SELECT 1 FROM signing_keys)",
                (kid, private_pem, now),
            )
            return cur.rowcount == 1

    def signing_keys(self) -> list[tuple[str, bytes, int]]:
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT kid, private_pem, created_at FROM signing_keys ORDER BY created_at, seq"
            ).fetchall()
        return [(str(k), bytes(p), int(c)) for k, p, c in rows]

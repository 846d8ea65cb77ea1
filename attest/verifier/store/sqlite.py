"""The verifier's state in an embedded SQLite file: the default backend, for one verifier process.

A restart loses nothing and a used nonce stays used (docs/conventions.md §9). Durability rules:

- stdlib ``sqlite3``, one connection shared by the server's threads behind a ``threading.Lock`` (every method
  takes it, so each method is one serialized transaction); WAL journal with ``synchronous=FULL``, so a nonce
  marked used is on disk before ``consume_nonce`` returns (a crash right after cannot make it usable again);
- nonce consumption is one conditional ``UPDATE … WHERE used_at IS NULL AND expires_at >= now``: two
  concurrent ``Attest`` calls with one nonce cannot both win (SQLite's file lock also serializes processes
  that open the same file on one machine);
- the nonce table does not grow without bound: every ``add_nonce`` may delete up to ``NONCE_PURGE_BATCH``
  nonces, used or not, that expired before the caller's cutoff (oldest first, through an index on
  ``expires_at``), so each insert does bounded work and removes far more than it adds whenever anything is
  stale; the table holds the nonces of the last TTL plus the caller's retention window, nothing older;
- the database file is created with mode 0600 (it holds key-broker secrets and the token signing key);
- the schema version is ``PRAGMA user_version``; missing migrations (``attest.verifier.store.migrations``)
  are applied at open, an unknown newer version is refused rather than misread.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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


class SqliteStore(Store):
    """One SQLite database file; thread-safe (see the module docstring)."""

    backend = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        if not self.path.exists():
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
            os.close(fd)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    def _migrate(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then see it done
        try:
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version > LATEST:
                raise StoreError(f"{self.path}: schema version {version} is newer than {LATEST}")
            for migration in MIGRATIONS:
                if migration.version > version:
                    for statement in migration.sqlite:
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version={migration.version}")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def schema_version(self) -> int:
        row = self._one("PRAGMA user_version", ())
        return int(row[0]) if row is not None else 0

    def _write(self, sql: str, args: Sequence[Any]) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def _one(self, sql: str, args: Sequence[Any]) -> tuple[Any, ...] | None:
        with self._lock:
            row = self._db.execute(sql, args).fetchone()
        return None if row is None else tuple(row)

    # --- nonces -------------------------------------------------------------------------------------------

    def add_nonce(
        self, nonce: bytes, issued_at: float, expires_at: float, *, purge_before: float | None = None
    ) -> int:
        with self._lock:
            if purge_before is None:
                self._insert_nonce(nonce, issued_at, expires_at)
                return 0
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._insert_nonce(nonce, issued_at, expires_at)
                purged = self._purge_nonces(purge_before, NONCE_PURGE_BATCH)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return purged

    def _insert_nonce(self, nonce: bytes, issued_at: float, expires_at: float) -> None:
        self._db.execute(
            "INSERT INTO nonces(nonce, issued_at, expires_at, used_at) VALUES (?, ?, ?, NULL)",
            (nonce, issued_at, expires_at),
        )

    def _purge_nonces(self, expired_before: float, limit: int | None) -> int:
        cur = self._db.execute(
            "DELETE FROM nonces WHERE rowid IN "
            "(SELECT rowid FROM nonces WHERE expires_at < ? ORDER BY expires_at LIMIT ?)",
            (expired_before, -1 if limit is None else limit),
        )
        return int(cur.rowcount)

    def purge_nonces(self, expired_before: float, limit: int | None = None) -> int:
        with self._lock:
            return self._purge_nonces(expired_before, limit)

    def nonce_count(self) -> int:
        row = self._one("SELECT COUNT(*) FROM nonces", ())
        return int(row[0]) if row is not None else 0

    def consume_nonce(self, nonce: bytes, now: float) -> NonceState:
        with self._lock:
            cur = self._db.execute(
                "UPDATE nonces SET used_at = ? WHERE nonce = ? AND used_at IS NULL AND expires_at >= ?",
                (now, nonce, now),
            )
            if cur.rowcount == 1:
                return NonceState.CONSUMED
            row = self._db.execute("SELECT used_at FROM nonces WHERE nonce = ?", (nonce,)).fetchone()
        if row is None:
            return NonceState.UNKNOWN
        return NonceState.REPLAYED if row[0] is not None else NonceState.EXPIRED

    # --- policies and reference values --------------------------------------------------------------------

    def put_policy(self, name: str, document: str, now: int) -> None:
        self._write(
            "INSERT INTO policies(name, document, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at",
            (name, document, now),
        )

    def get_policy(self, name: str) -> StoredDocument | None:
        row = self._one("SELECT name, document, updated_at FROM policies WHERE name = ?", (name,))
        return None if row is None else StoredDocument(*row)

    def put_reference_values(self, name: str, values: Mapping[str, Sequence[bytes]], now: int) -> None:
        self._write(
            "INSERT INTO reference_values(name, document, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at",
            (name, encode_reference_values(values), now),
        )

    def get_reference_values(self, name: str) -> dict[str, list[bytes]] | None:
        row = self._one("SELECT document FROM reference_values WHERE name = ?", (name,))
        return None if row is None else decode_reference_values(row[0])

    # --- key-broker resources -----------------------------------------------------------------------------

    def put_resource(self, path: str, secret: bytes, policy: str, now: int) -> None:
        self._write(
            "INSERT INTO resources(path, secret, policy, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(path) DO UPDATE SET secret = excluded.secret, policy = excluded.policy, "
            "updated_at = excluded.updated_at",
            (path, secret, policy, now),
        )

    def get_resource(self, path: str) -> StoredResource | None:
        row = self._one("SELECT path, secret, policy, updated_at FROM resources WHERE path = ?", (path,))
        return None if row is None else StoredResource(row[0], bytes(row[1]), row[2], row[3])

    # --- audit log ----------------------------------------------------------------------------------------

    def audit(
        self, at_ms: int, action: str, outcome: str, reason: str, subject: str, detail: Mapping[str, Any]
    ) -> int:
        cur = self._write(
            "INSERT INTO audit(at_ms, action, outcome, reason, subject, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (at_ms, action, outcome, reason, subject, encode_detail(detail)),
        )
        return int(cur.lastrowid or 0)

    def audit_entries(self, after_id: int = 0, limit: int = 100) -> list[AuditRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, at_ms, action, outcome, reason, subject, detail FROM audit WHERE id > ? "
                "ORDER BY id LIMIT ?",
                (clamp_int64(after_id), clamp_int64(limit)),
            ).fetchall()
        return [AuditRecord(*row) for row in rows]

    # --- token signing keys -------------------------------------------------------------------------------

    def add_signing_key(self, kid: str, private_pem: bytes, now: int) -> None:
        self._write(
            "INSERT INTO signing_keys(kid, private_pem, created_at) VALUES (?, ?, ?)", (kid, private_pem, now)
        )

    def add_first_signing_key(self, kid: str, private_pem: bytes, now: int) -> bool:
        cur = self._write(
            "INSERT INTO signing_keys(kid, private_pem, created_at) "
            "SELECT ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM signing_keys)",
            (kid, private_pem, now),
        )
        return cur.rowcount == 1

    def signing_keys(self) -> list[tuple[str, bytes, int]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT kid, private_pem, created_at FROM signing_keys ORDER BY created_at, rowid"
            ).fetchall()
        return [(str(k), bytes(p), int(c)) for k, p, c in rows]

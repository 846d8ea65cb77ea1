"""Versioned schema migrations of the verifier's database, one list for both backends.

Each ``Migration`` has a version (1, 2, …, applied in order and never edited once released), what it does,
and its SQL for SQLite and for PostgreSQL. A starting verifier applies the ones its database lacks and
refuses a database whose version is newer than it knows (``StoreError``: it would misread it). Where the
version is kept: SQLite's ``PRAGMA user_version``; PostgreSQL's table ``schema_migrations`` (one row per
version applied, with when), written under a transaction-level advisory lock so replicas starting together
apply each migration once (docs/fleet.md "The database").

Version 1 is the schema of the first release (a SQLite file made then is at version 1 already and gets
nothing). PostgreSQL rows have no ``rowid``: its signing keys carry ``seq`` for their order of insertion.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "nonces, policies, reference values, resources, audit log, signing keys",
        sqlite=(
            """CREATE TABLE IF NOT EXISTS nonces (
                nonce BLOB PRIMARY KEY,
                issued_at REAL NOT NULL,
                expires_at REAL NOT NULL,
                used_at REAL
            )""",
            "CREATE INDEX IF NOT EXISTS nonces_by_expiry ON nonces(expires_at)",
            """CREATE TABLE IF NOT EXISTS policies (
                name TEXT PRIMARY KEY, document TEXT NOT NULL, updated_at INTEGER NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS reference_values (
                name TEXT PRIMARY KEY, document TEXT NOT NULL, updated_at INTEGER NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS resources (
                path TEXT PRIMARY KEY, secret BLOB NOT NULL, policy TEXT NOT NULL, updated_at INTEGER NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS audit (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                at_ms INTEGER NOT NULL,
                action TEXT NOT NULL,
                outcome TEXT NOT NULL,
                reason TEXT NOT NULL,
                subject TEXT NOT NULL,
                detail TEXT NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS signing_keys (
                kid TEXT PRIMARY KEY, private_pem BLOB NOT NULL, created_at INTEGER NOT NULL
            )""",
        ),
        postgresql=(
            """CREATE TABLE nonces (
                nonce BYTEA PRIMARY KEY,
                issued_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL,
                used_at DOUBLE PRECISION
            )""",
            "CREATE INDEX nonces_by_expiry ON nonces(expires_at)",
            """CREATE TABLE policies (
                name TEXT PRIMARY KEY, document TEXT NOT NULL, updated_at BIGINT NOT NULL
            )""",
            """CREATE TABLE reference_values (
                name TEXT PRIMARY KEY, document TEXT NOT NULL, updated_at BIGINT NOT NULL
            )""",
            """CREATE TABLE resources (
                path TEXT PRIMARY KEY, secret BYTEA NOT NULL, policy TEXT NOT NULL, updated_at BIGINT NOT NULL
            )""",
            """CREATE TABLE audit (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                at_ms BIGINT NOT NULL,
                action TEXT NOT NULL,
                outcome TEXT NOT NULL,
                reason TEXT NOT NULL,
                subject TEXT NOT NULL,
                detail TEXT NOT NULL
            )""",
            """CREATE TABLE signing_keys (
                kid TEXT PRIMARY KEY,
                private_pem BYTEA NOT NULL,
                created_at BIGINT NOT NULL,
                seq BIGINT GENERATED ALWAYS AS IDENTITY
            )""",
        ),
    ),
)

LATEST = MIGRATIONS[-1].version

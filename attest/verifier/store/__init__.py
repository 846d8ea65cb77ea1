"""The verifier's persistence: one ``Store`` interface, an embedded SQLite backend (the default, one process)
and a PostgreSQL backend that verifier replicas share (docs/fleet.md). ``open_store`` picks by the target."""

from pathlib import Path

from attest.verifier.store.base import (
    AuditRecord,
    NonceState,
    Store,
    StoredDocument,
    StoredResource,
    StoreError,
)
from attest.verifier.store.sqlite import SqliteStore


def is_database_url(target: str | Path) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) URL; anything else is a SQLite file path."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def open_store(target: str | Path) -> Store:
    """A PostgreSQL store for a ``postgresql://`` URL, else the SQLite file at ``target`` (created if
    missing). Missing schema migrations are applied; a database that cannot be used is a ``StoreError``."""
    if is_database_url(target):
        from attest.verifier.store.postgres import PostgresStore  # psycopg loads libpq: only when asked

        return PostgresStore(str(target))
    return SqliteStore(target)


__all__ = [
    "AuditRecord",
    "NonceState",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoredDocument",
    "StoredResource",
    "is_database_url",
    "open_store",
]

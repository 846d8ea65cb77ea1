"""SQLite persistence of the verifier service: a restart loses nothing."""

from attest.verifier.store.db import (
    AuditRecord,
    NonceState,
    Store,
    StoredDocument,
    StoredResource,
    StoreError,
)

__all__ = ["AuditRecord", "NonceState", "Store", "StoreError", "StoredDocument", "StoredResource"]

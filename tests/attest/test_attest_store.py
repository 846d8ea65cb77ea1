"""The verifier's store, on both backends (SQLite file, PostgreSQL server started by the test run): nonce
states, one winner under concurrency even across store instances (replicas), persistence across reopen,
versioned migrations, one first signing key; SQLite's file mode."""

from __future__ import annotations

import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from attest.verifier.store import NonceState, SqliteStore, Store, StoreError, open_store
from attest.verifier.store.base import NONCE_PURGE_BATCH
from attest.verifier.store.migrations import LATEST

OpenStore = Callable[[], Store]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_db(request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    """Opens (again) one database of the backend under test; every store it opened is closed at the end."""
    target = str(tmp_path / "v.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    opened: list[Store] = []

    def opener() -> Store:
        store = open_store(target)
        opened.append(store)
        return store

    request.addfinalizer(lambda: [s.close() for s in opened])
    return opener


def test_nonce_is_consumed_once_then_replayed(open_db: OpenStore) -> None:
    store = open_db()
    store.add_nonce(b"n" * 32, 100.0, 400.0)
    assert store.consume_nonce(b"n" * 32, 200.0) is NonceState.CONSUMED
    assert store.consume_nonce(b"n" * 32, 201.0) is NonceState.REPLAYED
    assert store.consume_nonce(b"x" * 32, 201.0) is NonceState.UNKNOWN


def test_expired_nonce_is_never_consumed(open_db: OpenStore) -> None:
    store = open_db()
    store.add_nonce(b"n" * 32, 100.0, 400.0)
    assert store.consume_nonce(b"n" * 32, 400.5) is NonceState.EXPIRED
    assert store.consume_nonce(b"n" * 32, 300.0) is NonceState.CONSUMED  # clock went back: still single use


@pytest.mark.parametrize("instances", [1, 2])
def test_one_of_many_concurrent_consumers_wins(open_db: OpenStore, instances: int) -> None:
    """Eight threads on one store, or split over two stores on one database (two replicas)."""
    stores = [open_db() for _ in range(instances)]
    results: list[NonceState] = []
    for trial in range(10):
        nonce = trial.to_bytes(32, "big")
        stores[0].add_nonce(nonce, 0.0, 1e12)
        barrier = threading.Barrier(8)

        def worker(store: Store, nonce: bytes = nonce, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            results.append(store.consume_nonce(nonce, 1.0))

        threads = [threading.Thread(target=worker, args=(stores[i % instances],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(r.value for r in results) == ["consumed"] * 10 + ["replayed"] * 70


def test_everything_survives_reopening(open_db: OpenStore) -> None:
    store = open_db()
    store.add_nonce(b"n" * 32, 0.0, 1e12)
    store.consume_nonce(b"n" * 32, 1.0)
    store.put_policy("p", '{"allow_debug": true}', 5)
    store.put_reference_values("img", {"mr_td": [b"\x01" * 48]}, 6)
    store.put_resource("a/b", b"secret", "{}", 7)
    store.audit(8000, "Attest", "ALLOWED", "OK", "p", {"k": 1})
    store.close()
    again = open_db()
    assert again.consume_nonce(b"n" * 32, 2.0) is NonceState.REPLAYED
    policy = again.get_policy("p")
    assert policy is not None and (policy.document, policy.updated_at) == ('{"allow_debug": true}', 5)
    assert again.get_reference_values("img") == {"mr_td": [b"\x01" * 48]}
    res = again.get_resource("a/b")
    assert res is not None and res.secret == b"secret" and res.updated_at == 7
    [entry] = again.audit_entries()
    assert (entry.action, entry.reason, entry.detail) == ("Attest", "OK", '{"k": 1}')
    assert again.audit_entries(after_id=2**64 - 1) == []  # an RPC's uint64 is clamped, not an error


def test_upserts_replace(open_db: OpenStore) -> None:
    store = open_db()
    store.put_policy("p", "{}", 1)
    store.put_policy("p", '{"a": 1}', 2)
    store.put_resource("r", b"one", "{}", 1)
    store.put_resource("r", b"two", '{"x": 1}', 2)
    assert store.get_policy("p") is not None and store.get_policy("p").document == '{"a": 1}'  # type: ignore[union-attr]
    res = store.get_resource("r")
    assert res is not None and (res.secret, res.policy, res.updated_at) == (b"two", '{"x": 1}', 2)
    assert store.get_policy("q") is None and store.get_resource("s") is None


def test_migrations_are_applied_once_and_recorded(open_db: OpenStore) -> None:
    first, second = open_db(), open_db()
    assert first.schema_version() == second.schema_version() == LATEST


def test_replicas_agree_on_the_first_signing_key(open_db: OpenStore) -> None:
    stores = [open_db() for _ in range(4)]
    won: list[bool] = []
    barrier = threading.Barrier(len(stores))

    def race(i: int) -> None:
        barrier.wait()
        won.append(stores[i].add_first_signing_key(f"kid{i}", b"pem%d" % i, 100))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert won.count(True) == 1
    [(kid, pem, created)] = stores[0].signing_keys()
    assert pem == b"pem" + kid.removeprefix("kid").encode() and created == 100
    stores[1].add_signing_key("rotated", b"newer", 200)  # rotation: the newest is last, at every replica
    assert [k for k, _, _ in stores[2].signing_keys()] == [kid, "rotated"]


def test_purge_deletes_only_nonces_expired_before_the_cutoff_oldest_first(open_db: OpenStore) -> None:
    store = open_db()
    for i in range(10):
        store.add_nonce(bytes([i]) * 32, 0.0, 100.0 + i)
    store.consume_nonce(bytes([0]) * 32, 50.0)  # used ones go too once expired
    assert store.purge_nonces(105.0, limit=3) == 3  # expiring at 100, 101, 102
    assert store.consume_nonce(bytes([0]) * 32, 50.0) is NonceState.UNKNOWN
    assert store.consume_nonce(bytes([3]) * 32, 50.0) is NonceState.CONSUMED
    assert store.purge_nonces(105.0) == 2  # 103, 104: expires_at 105 is not before the cutoff
    assert store.nonce_count() == 5


def test_each_insert_purges_a_bounded_batch(open_db: OpenStore) -> None:
    store = open_db()
    for i in range(NONCE_PURGE_BATCH * 2):
        store.add_nonce(i.to_bytes(32, "big"), 0.0, 1.0)
    assert store.add_nonce(b"n" * 32, 10.0, 20.0, purge_before=5.0) == NONCE_PURGE_BATCH
    assert store.nonce_count() == NONCE_PURGE_BATCH + 1
    assert store.add_nonce(b"m" * 32, 10.0, 20.0, purge_before=5.0) == NONCE_PURGE_BATCH
    assert store.nonce_count() == 2


def test_database_file_is_private(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "v.db").close()
    assert stat.S_IMODE((tmp_path / "v.db").stat().st_mode) == 0o600


def test_a_newer_sqlite_schema_is_refused(tmp_path: Path) -> None:
    import sqlite3

    with sqlite3.connect(tmp_path / "v.db") as db:
        db.execute(f"PRAGMA user_version={LATEST + 1}")
    with pytest.raises(StoreError, match=f"schema version {LATEST + 1} is newer than {LATEST}"):
        SqliteStore(tmp_path / "v.db")


def test_a_newer_postgresql_schema_is_refused(postgres_url: str) -> None:
    import psycopg

    open_store(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO schema_migrations(version, description) VALUES (%s, 'from the future')",
            (LATEST + 1,),
        )
    with pytest.raises(StoreError, match=f"schema version {LATEST + 1} is newer than {LATEST}"):
        open_store(postgres_url)


def test_an_unreachable_postgresql_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as caught:
        open_store(f"postgresql://nobody@/none?host={tmp_path}&connect_timeout=1")
    assert "\n" not in str(caught.value) and str(tmp_path) in str(caught.value)

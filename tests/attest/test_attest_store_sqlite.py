"""SQLite store: nonce states, single winner under concurrency, persistence across reopen, file mode."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

from attest.verifier.store import NonceState, Store
from attest.verifier.store.db import NONCE_PURGE_BATCH


def test_nonce_is_consumed_once_then_replayed(tmp_path: Path) -> None:
    store = Store(tmp_path / "v.db")
    store.add_nonce(b"n" * 32, 100.0, 400.0)
    assert store.consume_nonce(b"n" * 32, 200.0) is NonceState.CONSUMED
    assert store.consume_nonce(b"n" * 32, 201.0) is NonceState.REPLAYED
    assert store.consume_nonce(b"x" * 32, 201.0) is NonceState.UNKNOWN


def test_expired_nonce_is_never_consumed(tmp_path: Path) -> None:
    store = Store(tmp_path / "v.db")
    store.add_nonce(b"n" * 32, 100.0, 400.0)
    assert store.consume_nonce(b"n" * 32, 400.5) is NonceState.EXPIRED
    assert store.consume_nonce(b"n" * 32, 300.0) is NonceState.CONSUMED  # clock went back: still single use


def test_one_of_many_concurrent_consumers_wins(tmp_path: Path) -> None:
    store = Store(tmp_path / "v.db")
    store.add_nonce(b"n" * 32, 0.0, 1e12)
    results: list[NonceState] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(store.consume_nonce(b"n" * 32, 1.0))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.value for r in results) == ["consumed"] + ["replayed"] * 7


def test_everything_survives_reopening(tmp_path: Path) -> None:
    store = Store(tmp_path / "v.db")
    store.add_nonce(b"n" * 32, 0.0, 1e12)
    store.consume_nonce(b"n" * 32, 1.0)
    store.put_policy("p", '{"allow_debug": true}', 5)
    store.put_reference_values("img", {"mr_td": [b"\x01" * 48]}, 6)
    store.put_resource("a/b", b"secret", "{}", 7)
    store.audit(8000, "Attest", "ALLOWED", "OK", "p", {"k": 1})
    store.close()
    again = Store(tmp_path / "v.db")
    assert again.consume_nonce(b"n" * 32, 2.0) is NonceState.REPLAYED
    assert again.get_policy("p") is not None and again.get_policy("p").document == '{"allow_debug": true}'  # type: ignore[union-attr]
    assert again.get_reference_values("img") == {"mr_td": [b"\x01" * 48]}
    res = again.get_resource("a/b")
    assert res is not None and res.secret == b"secret" and res.updated_at == 7
    [entry] = again.audit_entries()
    assert (entry.action, entry.reason, entry.detail) == ("Attest", "OK", '{"k": 1}')


def test_database_file_is_private(tmp_path: Path) -> None:
    Store(tmp_path / "v.db").close()
    assert stat.S_IMODE((tmp_path / "v.db").stat().st_mode) == 0o600


def test_purge_deletes_only_nonces_expired_before_the_cutoff_oldest_first(tmp_path: Path) -> None:
    store = Store(tmp_path / "v.db")
    for i in range(10):
        store.add_nonce(bytes([i]) * 32, 0.0, 100.0 + i)
    store.consume_nonce(bytes([0]) * 32, 50.0)  # used ones go too once expired
    assert store.purge_nonces(105.0, limit=3) == 3  # expiring at 100, 101, 102
    assert store.consume_nonce(bytes([0]) * 32, 50.0) is NonceState.UNKNOWN
    assert store.consume_nonce(bytes([3]) * 32, 50.0) is NonceState.CONSUMED
    assert store.purge_nonces(105.0) == 2  # 103, 104: expires_at 105 is not before the cutoff
    assert store.nonce_count() == 5


def test_each_insert_purges_a_bounded_batch(tmp_path: Path) -> None:
    store = Store(tmp_path / "v.db")
    for i in range(NONCE_PURGE_BATCH * 2):
        store.add_nonce(i.to_bytes(32, "big"), 0.0, 1.0)
    assert store.add_nonce(b"n" * 32, 10.0, 20.0, purge_before=5.0) == NONCE_PURGE_BATCH
    assert store.nonce_count() == NONCE_PURGE_BATCH + 1
    assert store.add_nonce(b"m" * 32, 10.0, 20.0, purge_before=5.0) == NONCE_PURGE_BATCH
    assert store.nonce_count() == 2

"""The verifier's gRPC surface in process: hostile input and a failing database get named statuses.

One ``VerifierCore`` served by ``create_server`` on 127.0.0.1:0 and called through a real channel, so the
servicer's status table (conventions.md §7) is what the client sees.
"""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from attest_served import Served, served_verifier

from wire.rpc_status import error_info
from wire.v1 import attestation_pb2 as pb

DEEP = "[" * 2000  # json.loads raises RecursionError, not ValueError


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with served_verifier(tmp_path / "v.db") as served:
        yield served


def refusal(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    info = error_info(err.value)
    assert info is not None, err.value
    return err.value.code(), info.reason  # type: ignore[attr-defined]


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def test_deeply_nested_json_is_refused_with_a_named_status(served: Served) -> None:
    stub = served.stub
    assert refusal(lambda: served.admin.SetPolicy(pb.SetPolicyRequest(name="p", policy_json=DEEP))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "POLICY_INVALID",
    )
    put = pb.PutResourceRequest(path="default/key/disk", secret=b"s", policy_json=DEEP)
    assert refusal(lambda: served.admin.PutResource(put)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "RESOURCE_POLICY_INVALID",
    )
    bearer = (("authorization", f"Bearer {_b64(DEEP)}.{_b64('{}')}.AAAA"),)
    get = pb.GetResourceRequest(path="default/key/disk")
    assert refusal(lambda: stub.GetResource(get, metadata=bearer)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_INVALID",
    )


class _BrokenConnection:
    """A sqlite3 connection whose disk went away: every statement fails as SQLite reports it."""

    def execute(self, *args: Any) -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    def close(self) -> None:
        pass


def test_database_failure_is_unavailable_store_unavailable_with_one_stderr_line(
    served: Served, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(served.core.store, "_db", _BrokenConnection())
    stub = served.stub
    calls: list[Callable[[], object]] = [
        lambda: stub.GetNonce(pb.GetNonceRequest()),
        lambda: served.admin.SetPolicy(pb.SetPolicyRequest(name="p", policy_json="{}")),
        lambda: served.admin.GetAuditLog(pb.GetAuditLogRequest()),
        lambda: stub.Attest(pb.AttestRequest(quote=b"q")),
    ]
    for call in calls:
        assert refusal(call) == (grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE")
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "STORE_UNAVAILABLE" in line or "disk I/O" in line]
    assert len(lines) == len(calls), err
    assert all("disk I/O error" in line for line in lines)
    assert "Traceback" not in err


def test_read_only_database_file_is_unavailable(served: Served, tmp_path: Path) -> None:
    """A real SQLite failure, not a stand-in: the store reopened read-only refuses every write."""
    served.core.store._db.close()
    served.core.store._db = sqlite3.connect(
        f"file:{tmp_path / 'v.db'}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
    )
    assert refusal(lambda: served.stub.GetNonce(pb.GetNonceRequest())) == (
        grpc.StatusCode.UNAVAILABLE,
        "STORE_UNAVAILABLE",
    )


@pytest.mark.parametrize("after_id", [2**63 - 1, 2**63, 2**64 - 1])
def test_audit_log_after_an_id_beyond_sqlite_integers_is_empty(served: Served, after_id: int) -> None:
    served.stub.GetNonce(pb.GetNonceRequest())
    served.admin.SetPolicy(pb.SetPolicyRequest(name="p", policy_json="{}"))
    assert len(served.admin.GetAuditLog(pb.GetAuditLogRequest()).entries) >= 1
    assert list(served.admin.GetAuditLog(pb.GetAuditLogRequest(after_id=after_id)).entries) == []

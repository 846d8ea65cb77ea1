"""A fault below a servicer is the host's, not the caller's: INTERNAL with the error on stderr once, never
INVALID_ARGUMENT; a refused request keeps its precise status (docs/conventions.md §7)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from host.platform import PlatformConfig, build_platform
from host.rpc.server import create_server
from host.vmm.vmm import Vmm
from wire.credentials import with_bearer
from wire.rpc_status import error_info
from wire.v1 import host_pb2, host_pb2_grpc

ADMIN = "test-admin-credential"


@pytest.fixture
def host() -> Iterator[tuple[host_pb2_grpc.HostServiceStub, Vmm]]:
    platform = build_platform(PlatformConfig(phys_bytes=64 << 20))
    server, port, _ = create_server(
        "127.0.0.1:0", platform.vmm, lambda _reason: None, admin_credential=ADMIN, max_workers=2
    )
    channel = with_bearer(grpc.insecure_channel(f"127.0.0.1:{port}"), ADMIN)
    try:
        yield host_pb2_grpc.HostServiceStub(channel), platform.vmm
    finally:
        channel.close()
        server.stop(None)


@pytest.mark.parametrize("fault", [ValueError("bad arithmetic below"), KeyError(7), RuntimeError("bug")])
def test_unexpected_exception_below_a_servicer_is_internal_and_logged_once(
    host: tuple[host_pb2_grpc.HostServiceStub, Vmm],
    fault: Exception,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    stub, vmm = host

    def broken() -> object:
        raise fault

    monkeypatch.setattr(vmm, "td_statuses", broken)
    with pytest.raises(grpc.RpcError) as err:
        stub.ListTds(host_pb2.ListTdsRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    info = error_info(err.value)
    assert info is not None and info.reason == "INTERNAL"
    stderr = capfd.readouterr().err
    assert stderr.count("internal error") == 1
    assert f"ListTds: internal error: {type(fault).__name__}" in stderr
    assert "Traceback" in stderr


def test_bad_input_is_still_invalid_argument(host: tuple[host_pb2_grpc.HostServiceStub, Vmm]) -> None:
    stub, _ = host
    with pytest.raises(grpc.RpcError) as err:
        stub.HostRead(host_pb2.HostReadRequest(td_id=1, gpa=0, length=1 << 40), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(err.value)
    assert info is not None and info.reason == "INVALID_ARGUMENT"

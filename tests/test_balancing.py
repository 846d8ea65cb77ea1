"""Client-side load balancing over verifier replicas: targets from address lists, the service config (round
robin, retries of idempotent methods only), and a live channel that keeps working when one of two servers
dies."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from guest.connection import VERIFIER_IDEMPOTENT, VERIFIER_SERVICE, open_verifier_channel
from tests.conftest import ROOT
from wire.balancing import TargetError, balanced_target, service_config, split_addresses, tls_name


def test_targets_from_address_lists() -> None:
    assert split_addresses(["a:1,b:2", " c:3 ", ""]) == ["a:1", "b:2", "c:3"]
    assert balanced_target(["127.0.0.1:5"]) == "127.0.0.1:5"
    assert balanced_target(["127.0.0.1:5,127.0.0.2:6"]) == "ipv4:127.0.0.1:5,127.0.0.2:6"
    assert balanced_target(["127.0.0.1:5", "127.0.0.2:6", "127.0.0.1:5"]) == "ipv4:127.0.0.1:5,127.0.0.2:6"
    assert balanced_target(["[::1]:5", "[::1]:6"]) == "ipv6:[::1]:5,[::1]:6"
    assert balanced_target(["verifiers.example:50054"]) == "dns:///verifiers.example:50054"
    assert balanced_target(["dns:///v.example:1"]) == "dns:///v.example:1"
    assert balanced_target(["localhost:7", "127.0.0.2:8"]) == "ipv4:127.0.0.1:7,127.0.0.2:8"  # resolved once


@pytest.mark.parametrize(
    ("addresses", "message"),
    [
        ([], "no address"),
        (["nohost"], "not HOST:PORT"),
        (["a:99999"], "not HOST:PORT"),
        (["127.0.0.1:1", "[::1]:2"], "mix IPv4 and IPv6"),
        (["dns:///a:1", "127.0.0.1:2"], "cannot be combined"),
    ],
)
def test_addresses_that_make_no_target_are_refused(addresses: list[str], message: str) -> None:
    with pytest.raises(TargetError, match=message):
        balanced_target(addresses)


def test_service_config_balances_and_retries_only_idempotent_methods() -> None:
    config = json.loads(service_config(VERIFIER_SERVICE, VERIFIER_IDEMPOTENT))
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    [method] = config["methodConfig"]
    names = {n["method"] for n in method["name"]}
    assert "GetNonce" in names and "Attest" not in names and "SetPolicy" not in names
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert tls_name(["10.0.0.1:1", "10.0.0.2:1"]) == "10.0.0.1" and tls_name(["v:1"]) is None


def _health_server() -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.fixture
def two_servers() -> Iterator[list[tuple[grpc.Server, int]]]:
    servers = [_health_server(), _health_server()]
    yield servers
    for server, _ in servers:
        server.stop(None)


def test_a_balanced_channel_outlives_one_of_its_servers(two_servers: list[tuple[grpc.Server, int]]) -> None:
    channel = open_verifier_channel(",".join(f"127.0.0.1:{port}" for _, port in two_servers))
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        for _ in range(4):
            assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1
        two_servers[0][0].stop(None)
        answered = 0
        for _ in range(20):
            try:
                stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                answered += 1
            except grpc.RpcError as err:
                assert err.code() is grpc.StatusCode.UNAVAILABLE  # at most the calls in flight
        assert answered >= 19
    finally:
        channel.close()


def test_guest_refuses_attest_dash_without_verifier(tmp_path: Path) -> None:
    script = tmp_path / "w.tdx"
    script.write_text("attest - policy default\n")
    cmd = [sys.executable, "-m", "tdxsim.cli", "guest", "--host", "127.0.0.1:1", "--image"]
    done = subprocess.run(
        [*cmd, str(ROOT / "examples" / "image.json"), "run", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "tdxsim guest: workload line 1: 'attest -' needs --verifier ADDR"

"""The guest library's KBS client (``guest.kbs``) and the workload step
``kbs URL resource PATH [expect DATA]`` against a real ``tdxsim verifier --kbs-listen`` process, with TDs
launched on a real host (docs/kbs.md §7).

The resource is released only to the MRTD of ``examples/image.json`` (computed offline by ``tdxsim guest
mrtd``); an image one byte different attests (the default policy checks no MRTD) and is refused the
resource with 403.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from guest.errors import AttestationRefused, GuestError
from guest.image import load_image
from guest.kbs import KbsAttestation, KbsClient
from guest.td import Td
from guest.workload import WorkloadError, _write_evidence, parse_workload
from tests.conftest import ADMIN_CREDENTIAL, ADMIN_FILE, ROOT, HostProcess, make_pki, start_host
from wire.credentials import with_bearer
from wire.v1 import attestation_pb2, attestation_pb2_grpc

EXAMPLES = ROOT / "examples"
SECRET = b"kbs secret for the example image"


@dataclass
class World:
    host: HostProcess
    kbs_url: str
    tmp: Path


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tdxsim.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("kbs-guest")
    make_pki(tmp / "pki")
    mrtd = json.loads(_cli("guest", "--image", str(EXAMPLES / "image.json"), "--json", "mrtd").stdout)[
        "mr_td"
    ]
    host = start_host("--pki", str(tmp / "pki"))
    cmd = [
        sys.executable, "-m", "tdxsim.cli", "verifier",
        "--listen", "127.0.0.1:0", "--kbs-listen", "127.0.0.1:0",
        "--db", str(tmp / "v.db"), "--root", str(tmp / "pki" / "root_ca.pem"),
        "--collateral", str(tmp / "pki" / "collateral.json"), "--admin-credential-file", str(ADMIN_FILE),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    verifier = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    channel: grpc.Channel | None = None
    try:
        assert verifier.stdout is not None
        lines = [verifier.stdout.readline().strip() for _ in range(3)]
        assert lines[2].startswith("kbs listening on 127.0.0.1:"), lines
        channel = grpc.insecure_channel(lines[0].removeprefix("listening on "))
        admin = attestation_pb2_grpc.VerifierServiceStub(with_bearer(channel, ADMIN_CREDENTIAL))
        policy = json.dumps({"claims": {"mr_td": [mrtd]}})
        admin.PutResource(
            attestation_pb2.PutResourceRequest(path="default/key/disk", secret=SECRET, policy_json=policy),
            timeout=20,
        )
        yield World(host, "http://" + lines[2].removeprefix("kbs listening on "), tmp)
    finally:
        if channel is not None:
            channel.close()
        if verifier.poll() is None:
            verifier.send_signal(signal.SIGTERM)
        try:
            verifier.wait(10)
        except subprocess.TimeoutExpired:
            verifier.kill()
            verifier.wait(5)
        host.stop()


def _modified_image(tmp: Path) -> Path:
    """examples/image.json with one byte of its measured kernel changed."""
    tmp.mkdir(exist_ok=True)
    kernel = (EXAMPLES / "kernel.txt").read_bytes()
    (tmp / "kernel.txt").write_bytes(bytes([kernel[0] ^ 1]) + kernel[1:])
    doc = json.loads((EXAMPLES / "image.json").read_text())
    (tmp / "image.json").write_text(json.dumps(doc))
    return tmp / "image.json"


def _run(world: World, image: Path, script: str) -> tuple[int, dict[str, object]]:
    path = world.tmp / "kbs.tdx"
    path.write_text(script)
    done = _cli("guest", "--host", world.host.address, "--image", str(image), "--json", "run", str(path))
    return done.returncode, json.loads(done.stdout)


def test_kbs_step_gets_the_secret_and_a_modified_image_is_refused_403(world: World) -> None:
    code, report = _run(
        world,
        EXAMPLES / "image.json",
        f"kbs {world.kbs_url} resource default/key/disk expect 'text:{SECRET.decode()}'\n",
    )
    assert code == 0 and report["ok"], report
    step = report["steps"][0]  # type: ignore[index]
    assert "released" in step["detail"] and SECRET.decode()[:20] in step["detail"]

    modified = _modified_image(world.tmp / "modified")
    code, report = _run(world, modified, f"kbs {world.kbs_url} resource default/key/disk\n")
    step = report["steps"][0]  # type: ignore[index]
    assert code != 0 and not report["ok"]
    assert step["reason"] == "RESOURCE_POLICY_DENIED" and "403" in step["detail"], step
    code, report = _run(
        world,
        modified,
        f"kbs {world.kbs_url} resource default/key/disk expect-error RESOURCE_POLICY_DENIED\n",
    )
    assert code == 0 and report["ok"], report


def test_the_library_client_by_session_and_by_token(world: World) -> None:
    image = load_image(EXAMPLES / "image.json")
    td, _ = Td.launch(world.host.address, image.image, timeout=60)
    with td, KbsClient(world.kbs_url) as client:
        attestation = client.attest(td, rsa_key=True)
        assert client.get_resource("default/key/disk", attestation) == SECRET
        assert KbsClient(world.kbs_url).get_resource("default/key/disk", attestation, by_token=True) == SECRET
        with pytest.raises(AttestationRefused) as err:
            client.get_resource("default/key/absent", attestation)
        assert (err.value.code, err.value.reason) == ("HTTP 404", "RESOURCE_NOT_FOUND")
        with pytest.raises(AttestationRefused) as err:
            client.attest(td, policy="no-such-policy")
        assert (err.value.code, err.value.reason) == ("HTTP 401", "POLICY_NOT_FOUND")


@pytest.mark.parametrize(
    "line",
    [
        "kbs ftp://x resource a/b/c",
        "kbs http://x resource a/b",
        "kbs http://x resources a/b/c",
        "kbs http://x resource a/b/c expect",
        "kbs http://x resource a/b/c check text:x",
    ],
)
def test_malformed_kbs_steps_are_refused_when_the_workload_loads(line: str) -> None:
    with pytest.raises(WorkloadError, match="line 1: kbs URL resource"):
        parse_workload(line + "\n")


def test_an_unreachable_kbs_is_one_reason(world: World) -> None:
    code, report = _run(world, EXAMPLES / "image.json", "kbs http://127.0.0.1:9 resource a/b/c\n")
    assert code != 0 and report["steps"][0]["reason"] == "KBS_UNREACHABLE"  # type: ignore[index]


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every GET with ``reply`` (status, headers); counts the requests and their Authorization."""

    reply: tuple[int, dict[str, str]] = (200, {})
    seen: list[str | None]

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        status, headers = self.reply
        self.send_response(status)
        for name, value in {**headers, "Content-Length": "0"}.items():
            self.send_header(name, value)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def _http_server(reply: tuple[int, dict[str, str]]) -> Iterator[tuple[str, list[str | None]]]:
    seen: list[str | None] = []
    handler = type("Handler", (_Recorder,), {"reply": reply, "seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_redirect_is_refused_and_the_token_goes_nowhere_else() -> None:
    with (
        _http_server((200, {})) as (elsewhere, taken),
        _http_server((302, {"Location": elsewhere + "/steal"})) as (kbs, asked),
    ):
        attestation = KbsAttestation("the-bearer-token", ec.generate_private_key(ec.SECP256R1()), "nonce")
        with pytest.raises(GuestError) as err:
            KbsClient(kbs).get_resource("default/key/1", attestation, by_token=True)
    assert asked == ["Bearer the-bearer-token"] and taken == []
    assert "302" in str(err.value)


def test_evidence_files_are_private_and_never_written_through_a_symlink(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"untouched")
    folder = tmp_path / "evidence"
    folder.mkdir()
    (folder / "quote.bin").symlink_to(elsewhere)
    with pytest.raises(WorkloadError):
        _write_evidence(folder, {"quote.bin": b"q"})
    assert elsewhere.read_bytes() == b"untouched"
    _write_evidence(folder, {"token.jwt": b"t"})
    assert (folder / "token.jwt").read_bytes() == b"t"
    assert stat.S_IMODE((folder / "token.jwt").stat().st_mode) == 0o600

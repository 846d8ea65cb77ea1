"""Hostile clients against tdxsim's HTTP front doors, and a hostile PCCS against the verifier's client
(docs/conventions.md §6 "HTTP servers", docs/kbs.md, docs/attestation.md §17).

- ``tdxsim pcs serve`` and ``tdxsim verifier --kbs-listen`` as real processes on 127.0.0.1:0: malformed
  request lines and headers, oversized ones, traversal in paths (plain, percent-encoded, absolute), methods
  the protocol lacks, forged cookies, duplicate JSON members, deep nesting, wrong content types, clients that
  trickle headers or withhold bodies (more of them than the KBS has request slots), concurrent clients. Every
  refusal is a precise status with the protocol's error shape (trustee's ErrorInformation on the KBS port,
  one line of text on the PCS); afterwards the server still answers and its stderr holds no traceback.
- ``PccsClient`` against stand-in servers that trickle, flood, redirect, lie in headers or bodies, or speak
  plain HTTP on an https URL: every failure is ``PccsUnavailable`` within the fetch's deadline, never another
  exception and never a file or FTP read.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.client
import json
import socket
import subprocess
import threading
import time
import unicodedata
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk as jwcrypto_jwk

from attest.intel import Pki, PkiOptions, init_pki
from attest.intel import identity as P
from attest.intel.pcs_responses import PcsApi
from attest.jsonutil import loads_json
from attest.verifier.dcap.pccs_client import MAX_BODY, PccsClient, PccsCollateral, PccsUnavailable
from attest.verifier.service.core import CollateralIndex
from attest.verifier.service.errors import status_of
from attest.verifier.service.kbs_http import MAX_IN_FLIGHT, KbsHttpServer
from attest.verifier.service.kbs_protocol import KbsError, KbsProtocol
from tests.attest.attest_pcs_served import get, start_pcs
from tests.attest.attest_served import served_verifier
from tests.attest.test_attest_kbs_http import (
    ERRORS,
    MRTD,
    NOW,
    REQUEST,
    SECRET,
    Client,
    open_both,
    rcar,
    start_kbs,
    stop,
)
from tests.conftest import ADMIN_CREDENTIAL
from wire.credentials import with_bearer
from wire.v1 import attestation_pb2 as pb
from wire.v1 import attestation_pb2_grpc

TCB = f"/tdx/certification/v4/tcb?fmspc={P.FMSPC.hex().upper()}"
QE = "/tdx/certification/v4/qe/identity"
PCKCRL = "/sgx/certification/v4/pckcrl?ca=platform&encoding=der"
ROOTCRL = "/sgx/certification/v4/rootcacrl"
SLOW_CLIENTS = MAX_IN_FLIGHT + 16


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return init_pki(tmp_path_factory.mktemp("hostile-http") / "pki", PkiOptions(now=NOW, seed=b"kbs"))


# --- raw HTTP ---------------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def exchange(port: int, data: bytes, timeout: float = 20.0) -> Reply:
    """Send ``data`` as it is on a fresh connection and read one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock, method="HEAD" if data.startswith(b"HEAD ") else None)
        response.begin()
        return Reply(response.status, response.headers, response.read())


def request(method: str, target: str, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


MALFORMED = {
    "not http": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    "http 9.9": b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    "unknown method": b"FROB / HTTP/1.1\r\nHost: x\r\n\r\n",
    "request line of 20 KiB": b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header of 20 KiB": b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
    "200 headers": b"GET / HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-%d: a\r\n" % i for i in range(200))
    + b"\r\n",
    "raw bytes in the path": b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    "negative content-length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "content-length overflow": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 30 + b"\r\n\r\n",
    "chunked and content-length": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 5\r\n\r\n0\r\n\r\n",
    "bad chunk size": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
}


def assert_malformed_requests_are_400(port: int) -> None:
    for name, data in MALFORMED.items():
        reply = exchange(port, data)
        assert reply.status == 400, (name, reply.status, reply.body)


@contextlib.contextmanager
def slow_clients(port: int, body_path: str | None) -> Iterator[list[socket.socket]]:
    """``SLOW_CLIENTS`` connections that send headers (and, with ``body_path``, promise a body they never
    send) plus as many that trickle a header line without ending it; all closed afterwards."""
    held: list[socket.socket] = []
    try:
        for _ in range(SLOW_CLIENTS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            held.append(sock)
            if body_path is not None:
                head = f"POST {body_path} HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n{{"
                sock.sendall(head.encode())
        for _ in range(SLOW_CLIENTS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            held.append(sock)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Trickle: a")
        yield held
    finally:
        for sock in held:
            sock.close()


def clean_stderr(proc: subprocess.Popen[str], prefix: str) -> str:
    """What a process that has exited wrote to stderr (its pipes then closed): no traceback, every line
    starting with ``prefix``."""
    assert proc.stdout is not None and proc.stderr is not None
    text = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert "Traceback" not in text, text
    assert all(line.startswith(prefix) for line in text.splitlines()), text
    return text


# --- tdxsim pcs serve -------------------------------------------------------------------------------------


def test_pcs_serve_survives_a_hostile_barrage(pki: Pki) -> None:
    pcs = start_pcs(pki.directory)
    port = int(pcs.url.rsplit(":", 1)[1])
    try:
        assert_malformed_requests_are_400(port)

        for method in ("POST", "PUT", "DELETE", "PATCH"):
            reply = exchange(port, request(method, TCB.split("?")[0], b"{}"))
            assert reply.status == 405 and "GET" in reply.headers["Allow"], (method, reply)
            assert reply.body.count(b"\n") <= 1

        for target in (
            "/sgx/certification/v4/../../../../etc/passwd",
            "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
            "/sgx/certification/v4/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            "//etc/passwd",
            "/healthz/../../etc/passwd",
            "/%ff%fe",
        ):
            reply = exchange(port, request("GET", target))
            assert reply.status == 404, (target, reply)
            assert reply.body.startswith(b"Not found.") and reply.body.count(b"\n") == 1
            assert b"root:" not in reply.body

        for target in (
            "/tdx/certification/v4/tcb?fmspc=%ff%fe%00%zz",
            f"{TCB}&fmspc=00906ED50000",  # repeated
            f"{TCB}&update=" + "x" * 4000,
            "/sgx/certification/v4/pckcrl?ca=platform&encoding=" + "%00" * 500,
            f"{QE}?tcbEvaluationDataNumber=" + "9" * 5000,
        ):
            reply = exchange(port, request("GET", target))
            assert reply.status == 400, (target, reply)
            assert reply.body.startswith(b"Invalid request parameters.") and reply.body.count(b"\n") == 1

        # A GET that declares a body and never sends it, and the absolute form of the request target.
        reply = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        assert reply.status == 200 and json.loads(reply.body) == {"status": "SERVING"}
        reply = exchange(port, request("GET", f"http://elsewhere.invalid{QE}"))
        assert reply.status == 200 and reply.body == get(pcs.url + QE).body

        with slow_clients(port, None):
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda _: get(pcs.url + TCB), range(32)))
            assert {a.status for a in answers} == {200}
            assert len({a.body for a in answers}) == 1
            assert get(pcs.url + "/healthz").status == 200
        assert get(pcs.url + "/healthz").status == 200
    finally:
        code = pcs.stop()
    assert code == 0
    clean_stderr(pcs.proc, "tdxsim pcs: ")


# --- the KBS port -----------------------------------------------------------------------------------------


@dataclass
class KbsProcess:
    port: int
    url: str
    admin: attestation_pb2_grpc.VerifierServiceStub


@pytest.fixture(scope="module")
def kbs_process(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KbsProcess, Any]]:
    import grpc

    proc, lines = start_kbs(pki, tmp_path_factory.mktemp("kbs-hostile") / "verifier.db")
    channel = grpc.insecure_channel(lines[0].removeprefix("listening on "))
    try:
        grpc.channel_ready_future(channel).result(timeout=20)
        admin = attestation_pb2_grpc.VerifierServiceStub(with_bearer(channel, ADMIN_CREDENTIAL))
        policy = json.dumps({"claims": {"mr_td": [MRTD.hex()]}})
        admin.PutResource(pb.PutResourceRequest(path="default/key/disk", secret=SECRET, policy_json=policy))
        address = lines[2].removeprefix("kbs listening on ")
        yield KbsProcess(int(address.rsplit(":", 1)[1]), "http://" + address, admin), proc
    finally:
        channel.close()
        assert stop(proc) == 0
        clean_stderr(proc, "tdxsim verifier")


@pytest.fixture
def kbs(kbs_process: tuple[KbsProcess, Any]) -> KbsProcess:
    return kbs_process[0]


def error_information(reply: Reply) -> dict[str, str]:
    """trustee's ErrorInformation: exactly ``type`` and ``detail``, JSON, one line of detail."""
    assert reply.headers.get_content_type() == "application/json", reply
    info = json.loads(reply.body)
    assert set(info) == {"type", "detail"} and info["type"].startswith(ERRORS), info
    assert info["detail"] and "Traceback" not in info["detail"]
    assert not [ch for ch in info["detail"] if unicodedata.category(ch) in ("Cc", "Cf")], info
    return dict(info)


def test_kbs_refuses_malformed_http_and_other_methods(kbs: KbsProcess) -> None:
    assert_malformed_requests_are_400(kbs.port)
    for method, path in (
        ("PUT", "/kbs/v0/resource/default/key/disk"),
        ("DELETE", "/kbs/v0/resource/default/key/disk"),
        ("POST", "/kbs/v0/resource/default/key/disk"),
        ("GET", "/kbs/v0/auth"),
        ("OPTIONS", "/kbs/v0/attest"),
        ("PATCH", "/kbs/v0/auth"),
        ("HEAD", "/kbs/v0/resource/default/key/disk"),
    ):
        reply = exchange(kbs.port, request(method, path, b"{}" if method not in ("GET", "HEAD") else b""))
        assert reply.status == 405, (method, path, reply)
        if method != "HEAD":  # a HEAD answer has no body
            assert error_information(reply)["type"] == ERRORS + "InvalidRequestPath"


def test_kbs_resource_paths_never_leave_the_repository(kbs: KbsProcess, pki: Pki) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    client, _, token, _ = rcar(kbs, pki, key)  # type: ignore[arg-type]
    bearer = (("Authorization", f"Bearer {token}"),)
    for target in (
        "/kbs/v0/resource/../../../etc/passwd",
        "/kbs/v0/resource/default/../../passwd",
        "/kbs/v0/resource/default/key/..",
        "/kbs/v0/resource/%2e%2e/%2e%2e/passwd",
        "/kbs/v0/resource/default/%2e%2e/disk",
        "/kbs/v0/resource/default/key%2f..%2f..%2f..%2fetc/passwd",
        "/kbs/v0/resource//etc/passwd",
        "/kbs/v0/resource/default/key/disk%00.pem",
        "/kbs/v0/resource/default/key/a%0d%0aSet-Cookie:%20x=1%1b[31m%e2%80%ae",
        "/kbs/v0/%0aInjected%0d%0a",
        "/kbs/v0/resource/default/key/" + "a" * 4000,
        "/kbs/v0/resource/default/key",
        "/kbs/v0/resource/default/key/disk/extra",
        "/etc/passwd",
    ):
        reply = exchange(kbs.port, request("GET", target, headers=bearer))
        assert reply.status in (400, 404), (target, reply)
        assert error_information(reply)["type"] == ERRORS + "InvalidRequestPath"
        assert b"root:" not in reply.body
    # The same token still opens the real resource: the refusals above were about the paths.
    status, jwe, _ = client.call("GET", "/kbs/v0/resource/default/key/disk")
    assert status == 200 and open_both(jwe, key) == SECRET


def test_kbs_cookies_forged_malformed_or_unknown_are_401(kbs: KbsProcess) -> None:
    body = json.dumps({"runtime-data": {}, "tee-evidence": {}}).encode()
    for cookie in (
        "kbs-session-id=" + "0" * 32,
        "kbs-session-id=" + "f" * 31,
        "kbs-session-id=" + "A" * 32,
        'kbs-session-id="; ;;=;\\',
        "kbs-session-id=" + "z" * 4000,
        "; ".join(f"c{i}=v" for i in range(300)),
        "kbs-session-id=" + "0" * 32 + "; kbs-session-id=" + "1" * 32,
    ):
        reply = exchange(kbs.port, request("POST", "/kbs/v0/attest", body, (("Cookie", cookie),)))
        assert reply.status == 401, (cookie[:40], reply)
        assert error_information(reply)["type"] == ERRORS + "AttestationError"
        reply = exchange(
            kbs.port, request("GET", "/kbs/v0/resource/default/key/disk", b"", (("Cookie", cookie),))
        )
        assert reply.status == 401 and error_information(reply)["type"] == ERRORS + "TokenNotFound"


@pytest.mark.parametrize(
    ("body", "content_type", "detail"),
    [
        (b'{"version":"0.1.0","tee":"tdx","version":"0.4.0"}', "application/json", "appears twice"),
        (b'{"version":"0.4.0","tee":"tdx","tee":"snp"}', "application/json", "appears twice"),
        (
            b'{"version":"0.4.0","tee":"tdx","extra-params":{"a":1,"a":2}}',
            "application/json",
            "appears twice",
        ),
        (b'{"version":NaN,"tee":"tdx"}', "application/json", "NaN"),
        (b'{"version":"0.4.0","tee":"tdx","n":' + b"9" * 6000 + b"}", "application/json", "digits"),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "application/json", "nested too deeply"),
        (b"[" * 200_000, "application/json", "nested too deeply"),
        (json.dumps(REQUEST).encode("utf-16"), "application/json", "utf-8"),
        (b"\xef\xbb\xbf" + json.dumps(REQUEST).encode(), "application/json", "BOM"),
        (b"<Request version='0.4.0'/>", "application/xml", "not json"),
        (b"", "application/json", "not json"),
    ],
    ids=[
        "duplicate-version",
        "duplicate-tee",
        "duplicate-nested",
        "nan",
        "huge-integer",
        "deep-objects",
        "deep-arrays",
        "utf-16",
        "bom",
        "xml",
        "empty",
    ],
)
def test_kbs_auth_refuses_json_that_is_not_the_request(
    kbs: KbsProcess, body: bytes, content_type: str, detail: str
) -> None:
    reply = exchange(kbs.port, request("POST", "/kbs/v0/auth", body, (("Content-Type", content_type),)))
    assert reply.status == 401, reply
    info = error_information(reply)
    assert info["type"] == ERRORS + "SerdeError" and detail in info["detail"], info
    assert "Set-Cookie" not in reply.headers


def test_kbs_refusals_echo_no_control_characters(kbs: KbsProcess) -> None:
    """What a refusal repeats of the caller's input shows newlines, terminal escapes and bidirectional
    overrides as ``\\uXXXX``: a kbs-client printing the detail prints one harmless line."""
    body = json.dumps({"version": "0.4.0\r\n\u001b[31m\u202e", "tee": "tdx"}).encode()
    reply = exchange(kbs.port, request("POST", "/kbs/v0/auth", body))
    info = error_information(reply)
    assert reply.status == 401 and "0.4.0\\u000d\\u000a\\u001b[31m\\u202e" in info["detail"], info


def test_kbs_content_type_does_not_decide(kbs: KbsProcess) -> None:
    """The KBS reads the body's bytes as JSON whatever the Content-Type says (or if it says nothing)."""
    for headers in (
        (("Content-Type", "text/plain"),),
        (("Content-Type", "application/x-www-form-urlencoded"),),
        (),
    ):
        reply = exchange(kbs.port, request("POST", "/kbs/v0/auth", json.dumps(REQUEST).encode(), headers))
        assert reply.status == 200 and len(base64.b64decode(json.loads(reply.body)["nonce"])) == 32


def test_kbs_a_stolen_token_gets_only_a_jwe_for_the_attested_key(kbs: KbsProcess, pki: Pki) -> None:
    """The resource is encrypted to the ``tee-pubkey`` the token binds; whoever replays the token, cookie or
    attestation with a key of their own gets nothing they can open."""
    victim = ec.generate_private_key(ec.SECP256R1())
    attacker = ec.generate_private_key(ec.SECP256R1())
    _, nonce, token, sent = rcar(kbs, pki, victim)  # type: ignore[arg-type]
    thief = Client(kbs.url)
    status, jwe, _ = thief.call(
        "GET", "/kbs/v0/resource/default/key/disk", headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 200 and open_both(jwe, victim) == SECRET
    with pytest.raises(Exception):  # noqa: B017 - jwcrypto's error for a wrong key varies by version
        jwcrypto_jwe.JWE().deserialize(json.dumps(jwe), key=jwcrypto_jwk.JWK.from_pyca(attacker))

    # The victim's evidence with the attacker's key in the runtime data: REPORTDATA binds the victim's.
    status, challenge, _ = thief.call("POST", "/kbs/v0/auth", REQUEST)
    assert status == 200
    forged = json.loads(json.dumps(sent))
    forged["runtime-data"] = {"nonce": challenge["nonce"], "tee-pubkey": forged["runtime-data"]["tee-pubkey"]}
    attacker_jwk = json.loads(jwcrypto_jwk.JWK.from_pyca(attacker.public_key()).export_public())
    forged["runtime-data"]["tee-pubkey"] = {**attacker_jwk, "alg": "ECDH-ES+A256KW"}
    status, info, _ = thief.call("POST", "/kbs/v0/attest", forged)
    assert (status, info["type"]) == (401, ERRORS + "AttestationError")
    assert "REPORT_DATA_MISMATCH" in info["detail"]
    # The session's nonce was spent by that attempt (single use), and the victim's own attestation names
    # the victim's session's nonce, not this one.
    status, info, _ = thief.call("POST", "/kbs/v0/attest", forged)
    assert (status, info["type"]) == (401, ERRORS + "AttestationError") and "NONCE_REPLAYED" in info["detail"]
    status, info, _ = thief.call("POST", "/kbs/v0/attest", sent)
    assert (status, info["type"]) == (401, ERRORS + "AttestationError") and "nonce" in info["detail"]
    assert nonce != challenge["nonce"]


def test_kbs_slow_clients_do_not_starve_the_others_and_concurrent_clients_work(kbs: KbsProcess) -> None:
    with slow_clients(kbs.port, "/kbs/v0/auth"):

        def auth(_: int) -> str:
            status, challenge, headers = Client(kbs.url).call("POST", "/kbs/v0/auth", REQUEST)
            assert status == 200 and "kbs-session-id=" in headers["Set-Cookie"], challenge
            return str(challenge["nonce"])

        with ThreadPoolExecutor(8) as pool:
            nonces = list(pool.map(auth, range(32)))
        assert len(set(nonces)) == 32
    status, _, _ = Client(kbs.url).call("POST", "/kbs/v0/auth", REQUEST)
    assert status == 200


def test_kbs_body_limits_408_413_and_a_client_that_leaves(tmp_path: Path) -> None:
    """In process, with a short body deadline: a body that never completes is 408, one over the limit 413,
    a client that hangs up mid-body costs nothing; all ErrorInformation."""
    with served_verifier(tmp_path / "v.db") as served:
        server = KbsHttpServer(KbsProtocol(served.core), "127.0.0.1", 0, body_timeout=0.5)
        port = server.start()
        try:
            head = b"POST /kbs/v0/auth HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n{"
            reply = exchange(port, head)
            assert reply.status == 408 and error_information(reply)["type"] == ERRORS + "SerdeError"
            chunked = b"POST /kbs/v0/auth HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n"
            assert exchange(port, chunked).status == 408
            big = b"POST /kbs/v0/auth HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (25 << 20)
            with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
                sock.sendall(big)
                with contextlib.suppress(OSError):  # the server may answer and close before all is sent
                    for _ in range(25 << 4):
                        sock.sendall(b" " * (64 << 10))
                response = http.client.HTTPResponse(sock)
                response.begin()
                assert response.status == 413
            for _ in range(SLOW_CLIENTS):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(head)
            status = exchange(port, request("POST", "/kbs/v0/auth", json.dumps(REQUEST).encode())).status
            assert status == 200
        finally:
            server.stop()


# --- the verifier's PCCS client against a hostile PCCS ----------------------------------------------------

Route = tuple[int, dict[str, str], bytes]
Behaviour = Callable[[socket.socket, str], None]


def pcs_routes(pki: Pki) -> dict[str, Route]:
    api = PcsApi(pki)
    routes = {}
    for target in (PCKCRL, TCB, QE, ROOTCRL):
        url = urllib.parse.urlsplit(target)
        answer = api.answer(url.path, urllib.parse.parse_qsl(url.query))
        routes[target] = (answer.status, dict(answer.headers), answer.body)
    return routes


def answer(sock: socket.socket, route: Route) -> None:
    status, headers, body = route
    head = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers.items()]
    head += [f"Content-Length: {len(body)}", "Connection: close"]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)


@contextlib.contextmanager
def hostile_pccs(routes: dict[str, Route], behaviours: dict[str, Behaviour]) -> Iterator[str]:
    """A raw-socket PCCS: ``behaviours[target]`` answers that request target however it likes, ``routes``
    answer the rest honestly, anything else is 404."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # so the accept loop sees ``stop``
    stop = threading.Event()

    def serve(sock: socket.socket) -> None:
        with sock, contextlib.suppress(OSError):
            sock.settimeout(30)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                if not data and not chunk[:1].isalpha():  # a TLS ClientHello: answer in plain HTTP
                    sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    return
                data += chunk
            target = data.split(b" ", 2)[1].decode()
            if target in behaviours:
                behaviours[target](sock, target)
            else:
                answer(sock, routes.get(target, (404, {}, b"Not found.\n")))

    def accept() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(sock,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def trickle_headers(sock: socket.socket, target: str) -> None:
    sock.sendall(b"HTTP/1.1 200 OK\r\n")
    for _ in range(600):  # a minute of one byte every 0.1 s, each within any per-read timeout
        sock.sendall(b"X")
        time.sleep(0.1)


def trickle_body(sock: socket.socket, target: str) -> None:
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    for _ in range(600):
        sock.sendall(b"0")
        time.sleep(0.1)


def endless_chunked(sock: socket.socket, target: str) -> None:
    sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (64 << 10, b"0" * (64 << 10))
    for _ in range(4 * MAX_BODY // (64 << 10)):
        sock.sendall(chunk)


def cut_short(sock: socket.socket, target: str) -> None:
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nSGX-PCK-CRL-Issuer-Chain: x\r\n\r\n3082")


def raw_answer(data: bytes) -> Behaviour:
    return lambda sock, target: sock.sendall(data)


def redirect(location: str) -> Behaviour:
    def behave(sock: socket.socket, target: str) -> None:
        answer(sock, (302, {"Location": location}, b""))

    return behave


def replaced(route: Route) -> Behaviour:
    return lambda sock, target: answer(sock, route)


def root_with_distribution_point(url: str) -> str:
    """A self-signed certificate whose CRL distribution point is ``url``: what a hostile PCCS could put at
    the end of the QE Identity's issuer chain."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Intel SGX Root CA")])
    now = datetime.datetime.now(datetime.UTC)
    point = x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.CRLDistributionPoints([point]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def hostile_cases(pki: Pki) -> dict[str, tuple[dict[str, Behaviour], bool, str]]:
    """name -> (behaviours, whether the PCCS has a rootcacrl, what the refusal says)."""
    routes = pcs_routes(pki)
    _, tcb_headers, tcb_body = routes[TCB]
    _, qe_headers, qe_body = routes[QE]
    chain_name = "SGX-Enclave-Identity-Issuer-Chain"
    return {
        "headers trickled": ({PCKCRL: trickle_headers}, True, "timed out"),
        "body trickled": ({TCB: trickle_body}, True, "timed out"),
        "endless chunked body": ({QE: endless_chunked}, True, f"larger than {MAX_BODY} bytes"),
        "body cut short": ({PCKCRL: cut_short}, True, "IncompleteRead"),
        "redirect to file:": ({TCB: redirect("file:///etc/passwd")}, True, "redirects are not followed"),
        "redirect to ftp:": (
            {PCKCRL: redirect("ftp://127.0.0.1:21/crl")},
            True,
            "redirects are not followed",
        ),
        "redirect to itself": ({QE: redirect(QE)}, True, "redirects are not followed"),
        "garbage chain header": (
            {TCB: replaced((200, {"TCB-Info-Issuer-Chain": "%ff%00-----BEGIN%20junk"}, tcb_body))},
            True,
            "not a pem certificate chain",
        ),
        "html instead of json": (
            {TCB: replaced((200, {**tcb_headers, "Content-Type": "text/html"}, b"<html>maintenance</html>"))},
            True,
            "not json",
        ),
        "duplicate json members": (
            {QE: replaced((200, qe_headers, b'{"enclaveIdentity":{},"signature":"00","signature":"11"}'))},
            True,
            "appears twice",
        ),
        "200 headers": (
            {PCKCRL: raw_answer(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(200)))},
            True,
            "more than 100 headers",
        ),
        "header line of 100 KiB": (
            {PCKCRL: raw_answer(b"HTTP/1.1 200 OK\r\nX: " + b"a" * (100 << 10) + b"\r\n\r\n")},
            True,
            "LineTooLong: got more than 65536 bytes",
        ),
        "not http": (
            {TCB: raw_answer(b"SSH-2.0-OpenSSH_9.6\x1b[31m\r\n\r\n")},
            True,
            "BadStatusLine: SSH-2.0",
        ),
        "odd hex root crl": ({ROOTCRL: replaced((200, {}, b"abc"))}, True, "no usable root ca crl"),
        "distribution point file:": (
            {
                QE: replaced(
                    (
                        200,
                        {chain_name: urllib.parse.quote(root_with_distribution_point("file:///etc/passwd"))},
                        qe_body,
                    )
                )
            },
            False,
            "is not http(s)",
        ),
    }


CASES = [
    "headers trickled",
    "body trickled",
    "endless chunked body",
    "body cut short",
    "redirect to file:",
    "redirect to ftp:",
    "redirect to itself",
    "garbage chain header",
    "html instead of json",
    "duplicate json members",
    "200 headers",
    "header line of 100 KiB",
    "not http",
    "odd hex root crl",
    "distribution point file:",
]


@pytest.mark.parametrize("case", CASES)
def test_pccs_client_against_a_hostile_pccs(pki: Pki, case: str) -> None:
    behaviours, has_root_crl, says = hostile_cases(pki)[case]
    routes = pcs_routes(pki)
    if not has_root_crl:
        del routes[ROOTCRL]
    with hostile_pccs(routes, behaviours) as url, pytest.raises(PccsUnavailable) as raised:
        index = CollateralIndex((), PccsCollateral(PccsClient(url, timeout=1.5)))  # the verifier's path
        index.select(P.FMSPC, None, "platform")
    message = str(raised.value)
    assert says in message and message.isprintable(), message
    assert status_of(raised.value) == ("UNAVAILABLE", "PCCS_UNAVAILABLE", {"pccs": url})  # never INTERNAL


def test_pccs_client_honest_stand_in_and_wrong_content_type_still_fetch(pki: Pki) -> None:
    """The stand-in itself is honest (the cases above differ only in what they break), and the client reads
    bodies by their shape, not by Content-Type, as dcap-qvl does."""
    routes = pcs_routes(pki)
    with hostile_pccs(routes, {}) as url:
        assert PccsClient(url).fetch(P.FMSPC, "platform").collateral is not None
    status, headers, body = routes[TCB]
    routes[TCB] = (status, {**headers, "Content-Type": "application/octet-stream"}, body)
    with hostile_pccs(routes, {}) as url:
        assert PccsClient(url).fetch(P.FMSPC, "platform").collateral is not None


def test_pccs_client_https_url_at_a_plaintext_server_is_unavailable(pki: Pki) -> None:
    with hostile_pccs(pcs_routes(pki), {}) as url, pytest.raises(PccsUnavailable) as raised:
        PccsClient(url.replace("http://", "https://"), timeout=5).fetch(P.FMSPC, "platform")
    assert "SSL" in str(raised.value) or "ssl" in str(raised.value)


def test_loads_json_is_as_strict_as_serde_json() -> None:
    for text in (
        b'{"a":1,"a":1}',
        b"[NaN]",
        b"-Infinity",
        b"\xef\xbb\xbf{}",
        '"x"'.encode("utf-16-le"),
        b"1" * 4301,
    ):
        with pytest.raises(ValueError, match="is not json"):
            loads_json(text, "doc", ValueError)
    assert loads_json(b'{"a":{"a":1},"b":[{"a":2}]}', "doc", ValueError) == {"a": {"a": 1}, "b": [{"a": 2}]}
    assert loads_json("1" * 4300, "doc", ValueError) == int("1" * 4300)


def test_kbs_an_expired_session_is_401(tmp_path: Path) -> None:
    """A cookie outlives its session: once the session's nonce has expired, attest and resource on it are
    401, as for a session that never existed."""
    with served_verifier(tmp_path / "v.db") as served:
        now = [time.time()]
        served.core.clock = lambda: now[0]
        server = KbsHttpServer(KbsProtocol(served.core), "127.0.0.1", 0)
        port = server.start()
        try:
            reply = exchange(port, request("POST", "/kbs/v0/auth", json.dumps(REQUEST).encode()))
            assert reply.status == 200
            session = reply.headers["Set-Cookie"].split(";")[0]
            assert session.startswith("kbs-session-id=")
            body = json.dumps({"runtime-data": {}, "tee-evidence": {}}).encode()
            reply = exchange(port, request("POST", "/kbs/v0/attest", body, (("Cookie", session),)))
            assert reply.status == 401 and "no live kbs session" not in error_information(reply)["detail"]
            now[0] += served.core.config.nonce_ttl + 1
            reply = exchange(port, request("POST", "/kbs/v0/attest", body, (("Cookie", session),)))
            assert reply.status == 401 and "no live kbs session" in error_information(reply)["detail"]
            target = "/kbs/v0/resource/default/key/disk"
            reply = exchange(port, request("GET", target, headers=(("Cookie", session),)))
            assert reply.status == 401 and error_information(reply)["type"] == ERRORS + "TokenNotFound"
        finally:
            server.stop()


def test_kbs_bytes_of_bodies_held_at_once_are_bounded(tmp_path: Path) -> None:
    """Bodies count against one budget while they arrive and until answered: past it a body is 503; a small
    request that fits still passes, and the budget comes back when the holder leaves."""
    with served_verifier(tmp_path / "v.db") as served:
        server = KbsHttpServer(KbsProtocol(served.core), "127.0.0.1", 0, max_buffered=64 << 10)
        port = server.start()
        try:
            holder = socket.create_connection(("127.0.0.1", port), timeout=10)
            holder.sendall(b"POST /kbs/v0/auth HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
            holder.sendall(b" " * (60 << 10))
            padded = json.dumps(REQUEST).encode() + b" " * (10 << 10)
            deadline = time.monotonic() + 20
            while (reply := exchange(port, request("POST", "/kbs/v0/auth", padded))).status != 503:
                assert reply.status == 200 and time.monotonic() < deadline  # the holder's bytes not yet in
                time.sleep(0.05)
            assert "too many request bodies" in error_information(reply)["detail"]
            assert exchange(port, request("POST", "/kbs/v0/auth", json.dumps(REQUEST).encode())).status == 200
            holder.close()
            while (reply := exchange(port, request("POST", "/kbs/v0/auth", padded))).status != 200:
                assert reply.status == 503 and time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            server.stop()


@contextlib.contextmanager
def few_descriptors(pid: int, spare: int) -> Iterator[None]:
    """The process ``pid`` may open only ``spare`` more file descriptors until the block ends."""
    import os
    import resource

    before = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    used = len(os.listdir(f"/proc/{pid}/fd"))
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (used + spare, before[1]))
    try:
        yield
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, before)


def test_clients_holding_every_descriptor_cost_a_few_log_lines_not_the_server(pki: Pki) -> None:
    """With its descriptors exhausted a server cannot accept; asyncio reports each connection in the backlog
    (hundreds a second, each with a traceback by default). The servers report it in one line at most once a
    second and answer again as soon as the clients let go."""
    pcs = start_pcs(pki.directory)
    port = int(pcs.url.rsplit(":", 1)[1])
    try:
        with few_descriptors(pcs.proc.pid, 8):
            held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(100)]
            time.sleep(2)  # the server keeps failing to accept meanwhile
            for sock in held:
                sock.close()
            deadline = time.monotonic() + 20
            while True:
                with contextlib.suppress(OSError):
                    if get(pcs.url + "/healthz", timeout=2).status == 200:
                        break
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        code = pcs.stop()
    assert code == 0
    log = clean_stderr(pcs.proc, "tdxsim pcs: ")
    assert 1 <= log.count("out of system resource") <= 40 and "more like it not shown" in log, log


def test_kbs_auth_flood_gets_503_and_evicts_no_live_session(tmp_path: Path) -> None:
    """When every session slot holds a live session, a further Request is 503 (and writes no nonce); the
    sessions already given out keep working."""
    with served_verifier(tmp_path / "v.db") as served:
        kbs = KbsProtocol(served.core, max_sessions=3)
        body = json.dumps(REQUEST).encode()
        live = [kbs.auth(body)[0] for _ in range(3)]
        nonces_before = served.core.store.nonce_count()
        with pytest.raises(KbsError) as refused:
            kbs.auth(body)
        assert (refused.value.status, refused.value.kind) == (503, "AttestationError")
        assert "3 live sessions" in str(refused.value)
        assert [kbs.session(s.id) for s in live] == live
        assert served.core.store.nonce_count() == nonces_before == 3

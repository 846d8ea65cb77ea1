"""The KBS attestation protocol end to end against a real ``tdxsim verifier --kbs-listen`` process, driven
by a plain HTTP client (urllib and a cookie jar, not the guest library) the way trustee's kbs-client and
CoCo's attestation agent drive it (docs/kbs.md): auth → challenge, attest → token, resource → JWE.

Everything the client computes it computes here by hand from the protocol's definition (the runtime-data
binding, the TDX evidence JSON, the ``tee-pubkey`` JWK), so a mistake shared by tdxsim's client and server
cannot hide. The JWE is opened by jwcrypto and joserfc, the tokens verified by PyJWT and jwcrypto.
"""

from __future__ import annotations

import base64
import hashlib
import http.cookiejar
import json
import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwe as joserfc_jwe
from joserfc.jwk import ECKey, RSAKey
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk as jwcrypto_jwk

from attest.formats import binding
from attest.formats.eventlog import EventLog, SpecIdEvent, encode_event_log, measure, replay
from attest.formats.eventlog.ccel import EV_EFI_ACTION
from attest.intel import Pki, PkiOptions, init_pki
from attest.intel.quoting_enclave import QuotingEnclave
from attest.intel.td_report_builder import SEPT_VE_DISABLE, build_td_report
from tests.attest.test_attest_token_jose import verify_independently
from tests.conftest import ADMIN_CREDENTIAL, ADMIN_FILE
from wire.credentials import with_bearer
from wire.rpc_status import error_info
from wire.tls import mint_test_pki
from wire.v1 import attestation_pb2 as pb
from wire.v1 import attestation_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_780_000_000
MRTD = bytes.fromhex("6b" * 48)
LOG = EventLog(SpecIdEvent(), (measure(1, EV_EFI_ACTION, b"tdvf"), measure(3, EV_EFI_ACTION, b"kernel")))
SECRET = b"the disk encryption key, released by the kbs"
ERRORS = "https://github.com/confidential-containers/kbs/errors/"


@dataclass
class Kbs:
    proc: subprocess.Popen[str]
    url: str
    channel: grpc.Channel
    stub: attestation_pb2_grpc.VerifierServiceStub
    admin: attestation_pb2_grpc.VerifierServiceStub


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return init_pki(tmp_path_factory.mktemp("pki") / "pki", PkiOptions(now=NOW, seed=b"kbs"))


def start_kbs(pki: Pki, db: Path, *extra: str) -> tuple[subprocess.Popen[str], list[str]]:
    """A verifier process with ``--kbs-listen 127.0.0.1:0`` and its three start-up lines."""
    cmd = [
        sys.executable, "-m", "attest.verifier.service.main", "--listen", "127.0.0.1:0",
        "--kbs-listen", "127.0.0.1:0", "--db", str(db), "--root", str(pki.directory / "root_ca.pem"),
        "--collateral", str(pki.directory / "collateral.json"), "--at", str(NOW),
        "--admin-credential-file", str(ADMIN_FILE), *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    lines = [proc.stdout.readline().strip() for _ in range(3)]
    if not lines[2].startswith("kbs listening on 127.0.0.1:"):
        proc.kill()
        raise AssertionError(f"verifier did not start: {lines} {proc.communicate(timeout=5)[1]}")
    assert lines[0].startswith("listening on 127.0.0.1:") and lines[1].startswith("admin credential: ")
    return proc, lines


def stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def kbs(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kbs]:
    proc, lines = start_kbs(pki, tmp_path_factory.mktemp("kbs") / "verifier.db")
    channel: grpc.Channel | None = None
    try:
        channel = grpc.insecure_channel(lines[0].removeprefix("listening on "))
        grpc.channel_ready_future(channel).result(timeout=20)
        admin = attestation_pb2_grpc.VerifierServiceStub(with_bearer(channel, ADMIN_CREDENTIAL))
        for path, mr_td in (("default/key/disk", MRTD), ("default/key/other", bytes(48))):
            policy = json.dumps({"claims": {"mr_td": [mr_td.hex()]}})
            admin.PutResource(pb.PutResourceRequest(path=path, secret=SECRET, policy_json=policy), timeout=5)
        url = "http://" + lines[2].removeprefix("kbs listening on ")
        yield Kbs(proc, url, channel, attestation_pb2_grpc.VerifierServiceStub(channel), admin)
    finally:
        if channel is not None:
            channel.close()
        assert stop(proc) == 0


class Client:
    """A plain HTTP client with a cookie jar, as reqwest's cookie store behaves for the KBS client."""

    def __init__(self, url: str, context: ssl.SSLContext | None = None) -> None:
        self.url = url
        self.jar = http.cookiejar.CookieJar()
        handlers: list[Any] = [urllib.request.HTTPCookieProcessor(self.jar)]
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self.opener = urllib.request.build_opener(*handlers)

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self.opener.open(request, timeout=30) as reply:
                return reply.status, json.loads(reply.read()), dict(reply.headers)
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read()), dict(err.headers)


def tee_pubkey(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> dict[str, str]:
    """The ``tee-pubkey`` JWK the attestation agent sends, built from the key's numbers."""

    def b64(n: int, size: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes(size, "big")).rstrip(b"=").decode()

    if isinstance(key, ec.EllipticCurvePrivateKey):
        numbers = key.public_key().public_numbers()
        size = (key.curve.key_size + 7) // 8
        crv = {256: "P-256", 384: "P-384", 521: "P-521"}[key.curve.key_size]
        return {
            "kty": "EC",
            "crv": crv,
            "alg": "ECDH-ES+A256KW",
            "x": b64(numbers.x, size),
            "y": b64(numbers.y, size),
        }
    n = key.public_key().public_numbers()
    return {"kty": "RSA", "alg": "RSA-OAEP-256", "n": b64(n.n, key.key_size // 8), "e": b64(n.e, 3)}


def report_data(nonce: str, pubkey: dict[str, str]) -> bytes:
    """trustee's binding for tee "tdx": SHA-384 of the canonical primary runtime data, zero-padded. The
    members are ASCII strings, so sorted compact JSON is its RFC 8785 form."""
    runtime = {"tee-pubkey": pubkey, "nonce": nonce, "additional-evidence": ""}
    canonical = json.dumps(runtime, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha384(canonical).digest() + bytes(16)


def td_quote(pki: Pki, value: bytes, mr_td: bytes = MRTD) -> bytes:
    """A simulated TD's quote with REPORTDATA ``value``."""
    platform = pki.platform(0)
    report = build_td_report(
        report_data=value, mr_td=mr_td, td_attributes=SEPT_VE_DISABLE.to_bytes(8, "little"), rtmrs=replay(LOG)
    )
    return QuotingEnclave(platform.key, platform.chain_pem).quote(report)


def attestation(pki: Pki, nonce: str, pubkey: dict[str, str], mr_td: bytes = MRTD) -> dict[str, Any]:
    quote = td_quote(pki, report_data(nonce, pubkey), mr_td)
    evidence = {
        "cc_eventlog": base64.b64encode(encode_event_log(LOG)).decode(),
        "quote": base64.b64encode(quote).decode(),
    }
    return {
        "runtime-data": {"nonce": nonce, "tee-pubkey": pubkey},
        "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""},
    }


REQUEST = {"version": "0.4.0", "tee": "tdx", "extra-params": ""}


def rcar(kbs: Kbs, pki: Pki, key: Any, mr_td: bytes = MRTD) -> tuple[Client, str, str, dict[str, Any]]:
    """auth → attest on a fresh client: (client, nonce, token, the attestation sent)."""
    client = Client(kbs.url)
    status, challenge, headers = client.call("POST", "/kbs/v0/auth", REQUEST)
    assert status == 200 and "kbs-session-id=" in headers["Set-Cookie"]
    assert challenge["extra-params"] == "" and len(base64.b64decode(challenge["nonce"])) == 32
    sent = attestation(pki, challenge["nonce"], tee_pubkey(key), mr_td)
    status, reply, _ = client.call("POST", "/kbs/v0/attest", sent)
    assert status == 200, reply
    return client, challenge["nonce"], reply["token"], sent


def open_both(jwe: dict[str, str], key: Any) -> bytes:
    """The JWE's plaintext as jwcrypto and joserfc each open it with the TD's private key (they agree)."""
    theirs = jwcrypto_jwe.JWE()
    theirs.deserialize(json.dumps(jwe), key=jwcrypto_jwk.JWK.from_pyca(key))
    jose_key = (
        ECKey.import_key(key) if isinstance(key, ec.EllipticCurvePrivateKey) else RSAKey.import_key(key)
    )
    algorithms = ["ECDH-ES+A256KW", "RSA-OAEP-256", "A256GCM"]
    ours = joserfc_jwe.decrypt_json(jwe, jose_key, algorithms=algorithms).plaintext  # type: ignore[arg-type]
    assert theirs.payload == ours
    return bytes(ours or b"")


def test_rcar_releases_the_secret_as_a_jwe_two_libraries_open(kbs: Kbs, pki: Pki) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    client, nonce, token, _ = rcar(kbs, pki, key)
    jwks = json.loads(kbs.stub.GetJwks(pb.GetJwksRequest(), timeout=5).jwks_json)
    claims = verify_independently(token, jwks)
    assert claims["eat_nonce"] == base64.urlsafe_b64encode(base64.b64decode(nonce)).rstrip(b"=").decode()
    assert claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["tdx"]["mr_td"] == MRTD.hex()

    status, jwe, _ = client.call("GET", "/kbs/v0/resource/default/key/disk")  # by cookie
    assert status == 200 and SECRET not in json.dumps(jwe).encode()
    header = json.loads(base64.urlsafe_b64decode(jwe["protected"] + "=="))
    assert (header["alg"], header["enc"], header["epk"]["crv"]) == ("ECDH-ES+A256KW", "A256GCM", "P-256")
    assert open_both(jwe, key) == SECRET

    bare = Client(kbs.url)  # by bearer token, no cookie
    status, jwe, _ = bare.call(
        "GET", "/kbs/v0/resource/default/key/disk", headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 200 and open_both(jwe, key) == SECRET

    audit = kbs.admin.GetAuditLog(pb.GetAuditLogRequest(limit=1000), timeout=5).entries
    doors = [(e.action, e.reason, json.loads(e.detail_json).get("door")) for e in audit]
    assert ("Attest", "OK", "kbs") in doors and ("GetResource", "OK", "kbs") in doors


def test_rsa_tee_key_gets_rsa_oaep_256(kbs: Kbs, pki: Pki) -> None:
    key = rsa.generate_private_key(65537, 2048)
    client, _, _, _ = rcar(kbs, pki, key)
    status, jwe, _ = client.call("GET", "/kbs/v0/resource/default/key/disk")
    assert status == 200
    assert json.loads(base64.urlsafe_b64decode(jwe["protected"] + "=="))["alg"] == "RSA-OAEP-256"
    assert open_both(jwe, key) == SECRET


def test_refusals_401_403_404_and_replays(kbs: Kbs, pki: Pki) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    client, _, _, sent = rcar(kbs, pki, key)

    status, info, _ = Client(kbs.url).call("GET", "/kbs/v0/resource/default/key/disk")
    assert (status, info["type"]) == (401, ERRORS + "TokenNotFound")
    status, info, _ = Client(kbs.url).call(
        "GET", "/kbs/v0/resource/default/key/disk", headers={"Authorization": "Bearer not.a.token"}
    )
    assert status == 401 and info["type"] == ERRORS + "TokenVerifierError"
    status, info, _ = client.call("GET", "/kbs/v0/resource/default/key/other")
    assert (status, info["type"]) == (403, ERRORS + "PolicyDeny") and "RESOURCE_POLICY_DENIED" in info[
        "detail"
    ]
    status, info, _ = client.call("GET", "/kbs/v0/resource/default/key/missing")
    assert (status, info["type"]) == (404, ERRORS + "InvalidRequestPath")

    # The same Attestation again on its session: the nonce was used.
    status, info, _ = client.call("POST", "/kbs/v0/attest", sent)
    assert (status, info["type"]) == (401, ERRORS + "AttestationError") and "NONCE_REPLAYED" in info["detail"]
    # Captured and sent in a new session: not that session's nonce.
    other = Client(kbs.url)
    assert other.call("POST", "/kbs/v0/auth", REQUEST)[0] == 200
    status, info, _ = other.call("POST", "/kbs/v0/attest", sent)
    assert status == 401 and "nonce" in info["detail"]
    # Evidence bound to another key than the tee-pubkey sent: REPORTDATA does not match.
    status, challenge, _ = other.call("POST", "/kbs/v0/auth", REQUEST)
    swapped = attestation(pki, challenge["nonce"], tee_pubkey(ec.generate_private_key(ec.SECP256R1())))
    swapped["runtime-data"]["tee-pubkey"] = tee_pubkey(key)
    status, info, _ = other.call("POST", "/kbs/v0/attest", swapped)
    assert status == 401 and "REPORT_DATA_MISMATCH" in info["detail"]
    # No session at all.
    status, info, _ = Client(kbs.url).call("POST", "/kbs/v0/attest", sent)
    assert (status, info["type"]) == (401, ERRORS + "AttestationError")


@pytest.mark.parametrize(
    "request_body",
    [{**REQUEST, "version": "0.1.1"}, {**REQUEST, "version": "banana"}, {**REQUEST, "tee": "snp"}],
    ids=["old-version", "not-semver", "other-tee"],
)
def test_auth_refuses_with_error_information(kbs: Kbs, request_body: dict[str, Any]) -> None:
    status, info, headers = Client(kbs.url).call("POST", "/kbs/v0/auth", request_body)
    assert (status, info["type"]) == (401, ERRORS + "AttestationError") and info["detail"]
    assert "Set-Cookie" not in headers
    assert headers["Server"] == "tdxsim"  # not the Python and aiohttp versions


def test_malformed_bodies_are_refused_not_crashed(kbs: Kbs) -> None:
    client = Client(kbs.url)
    for body in (b"{", b"[]", b"\xff", b"[" * 5000):
        status, info, _ = client.call("POST", "/kbs/v0/auth", body)
        assert (status, info["type"]) == (401, ERRORS + "SerdeError")
    assert client.call("POST", "/kbs/v0/auth", REQUEST)[0] == 200
    for body in (
        b"{}",
        b'{"runtime-data": 1, "tee-evidence": {}}',
        json.dumps({"runtime-data": {}, "tee-evidence": {}}).encode(),
    ):
        status, info, _ = client.call("POST", "/kbs/v0/attest", body)
        assert status == 401 and info["type"].startswith(ERRORS)


def test_grpc_tokens_carry_the_audience_and_verify_with_two_libraries(kbs: Kbs, pki: Pki) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    nonce = kbs.stub.GetNonce(pb.GetNonceRequest(), timeout=5).nonce
    spki = binding.spki_der(key.public_key())
    request = pb.AttestRequest(
        quote=td_quote(pki, binding.report_data(nonce, spki)),
        event_log=encode_event_log(LOG),
        nonce=nonce,
        tee_public_key=spki,
        audience="https://relying-party.example",
    )
    token = kbs.stub.Attest(request, timeout=10).token
    jwks = json.loads(kbs.stub.GetJwks(pb.GetJwksRequest(), timeout=5).jwks_json)
    assert (
        verify_independently(token, jwks, "https://relying-party.example")["aud"]
        == "https://relying-party.example"
    )
    with pytest.raises(grpc.RpcError) as err:  # meant for another relying party: not for this key broker
        kbs.stub.GetResource(
            pb.GetResourceRequest(path="default/key/disk"),
            metadata=[("authorization", f"Bearer {token}")],
            timeout=5,
        )
    info = error_info(err.value)
    assert info is not None and info.reason == "TOKEN_AUDIENCE_MISMATCH"


def test_other_paths_methods_and_oversized_bodies_are_refused(kbs: Kbs) -> None:
    client = Client(kbs.url)
    assert client.call("GET", "/kbs/v0/auth")[:2] == (
        405,
        {"type": ERRORS + "InvalidRequestPath", "detail": "no GET /kbs/v0/auth in the kbs protocol"},
    )
    status, info, _ = client.call("GET", "/kbs/v0/attestation-policy")
    assert (status, info["type"]) == (404, ERRORS + "InvalidRequestPath")
    status, info, _ = client.call("POST", "/kbs/v0/auth", b"{" + b" " * (25 << 20) + b"}")
    assert (status, info["type"]) == (413, ERRORS + "SerdeError")
    assert client.call("POST", "/kbs/v0/auth", REQUEST)[0] == 200  # the server is unharmed


def test_the_kbs_port_serves_tls_with_the_verifiers_certificate(pki: Pki, tmp_path: Path) -> None:
    mint_test_pki(tmp_path / "tls")
    tls = [
        "--tls-cert",
        str(tmp_path / "tls" / "server.pem"),
        "--tls-key",
        str(tmp_path / "tls" / "server.key"),
    ]
    proc, lines = start_kbs(pki, tmp_path / "v.db", *tls)
    try:
        address = lines[2].removeprefix("kbs listening on ")
        context = ssl.create_default_context(cafile=str(tmp_path / "tls" / "ca.pem"))
        status, challenge, headers = Client(f"https://{address}", context).call(
            "POST", "/kbs/v0/auth", REQUEST
        )
        assert status == 200 and len(base64.b64decode(challenge["nonce"])) == 32
        assert "Secure" in headers["Set-Cookie"]
        with pytest.raises(urllib.error.URLError):  # a client that does not trust the CA
            Client(f"https://{address}").call("POST", "/kbs/v0/auth", REQUEST)
    finally:
        assert stop(proc) == 0

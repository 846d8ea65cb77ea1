"""TLS and mTLS channels between real processes: ``tdxsim tls init``, TLS / mTLS hosts and verifiers,
TLS guests.

A TLS host serves only clients trusting its CA (plaintext and other-CA clients get UNAVAILABLE); an mTLS
host or verifier also refuses clients without a certificate from its client CA; a ``tdxsim guest --tls-*``
process launches, runs and attests over TLS; unusable TLS options exit 2 with one line and no traceback.
"""

from __future__ import annotations

import datetime
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from guest.attestation import Verifier
from guest.connection import open_channel
from guest.errors import GuestError
from guest.td import Td
from tests.conftest import ADMIN_CREDENTIAL, ADMIN_FILE, ROOT
from wire.credentials import with_bearer
from wire.tls import CA_NAME, TlsConfig, TlsError, channel_for, handshake_reason, mint_test_pki
from wire.v1 import attestation_pb2, attestation_pb2_grpc, host_pb2, host_pb2_grpc

MIB = 1 << 20
SEPT_VE_DISABLE = 1 << 28
TIMEOUT = 10.0


def tdxsim(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tdxsim.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


class Server:
    """A ``tdxsim host`` or ``tdxsim verifier`` process on 127.0.0.1:0."""

    def __init__(self, *args: str) -> None:
        cmd = [
            *(sys.executable, "-m", "tdxsim.cli", *args),
            *("--listen", "127.0.0.1:0", "--admin-credential-file", str(ADMIN_FILE)),
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"{args[0]} did not start: {line!r}")
        self.address = line.removeprefix("listening on ")
        self.proc.stdout.readline()  # admin credential: the session's

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _self_signed(stem: Path, not_before: datetime.datetime, not_after: datetime.datetime) -> None:
    """``stem.pem`` + ``stem.key``: a server certificate valid from ``not_before`` to ``not_after`` only."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    stem.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    stem.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("tls")
    made = tdxsim("tls", "init", str(tmp / "tls"))
    assert made.returncode == 0, made.stderr
    mint_test_pki(tmp / "other")  # a second, unrelated test CA
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    _self_signed(tmp / "expired", now - 30 * day, now - day)
    _self_signed(tmp / "future", now + day, now + 30 * day)
    pcs = tdxsim("pki", "init", str(tmp / "pcs"))
    assert pcs.returncode == 0, pcs.stderr
    return {"tls": tmp / "tls", "other": tmp / "other", "pcs": tmp / "pcs", "tmp": tmp}


@pytest.fixture(scope="module")
def servers(dirs: dict[str, Path]) -> Iterator[dict[str, Server]]:
    """A TLS host, an mTLS host and an mTLS verifier, all with the same test PKI."""
    tls, pcs = dirs["tls"], dirs["pcs"]
    cert = ("--tls-cert", str(tls / "server.pem"), "--tls-key", str(tls / "server.key"))
    mutual = (*cert, "--tls-client-ca", str(tls / "ca.pem"))
    host = ("host", "--phys-mem", "256M", "--pki", str(pcs))
    verifier = ("verifier", "--db", str(dirs["tmp"] / "v.db"), "--root", str(pcs / "root_ca.pem"))
    started: dict[str, Server] = {}
    try:
        started["tls_host"] = Server(*host, *cert)
        started["mtls_host"] = Server(*host, *mutual)
        started["mtls_verifier"] = Server(*verifier, "--collateral", str(pcs / "collateral.json"), *mutual)
        yield started
    finally:
        for server in started.values():
            server.stop()


def client(dirs: dict[str, Path], ca: str = "tls", cert: str | None = None) -> TlsConfig:
    """A client config trusting ``ca``'s CA, presenting ``cert``'s client certificate if given."""
    if cert is None:
        return TlsConfig.client(dirs[ca] / "ca.pem")
    return TlsConfig.client(dirs[ca] / "ca.pem", dirs[cert] / "client.pem", dirs[cert] / "client.key")


def get_stats(address: str, cfg: TlsConfig | None) -> host_pb2.GetStatsResponse:
    with channel_for(address, cfg) as channel:
        admin = host_pb2_grpc.HostServiceStub(with_bearer(channel, ADMIN_CREDENTIAL))
        reply: host_pb2.GetStatsResponse = admin.GetStats(host_pb2.GetStatsRequest(), timeout=TIMEOUT)
        return reply


def refused(address: str, cfg: TlsConfig | None) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        get_stats(address, cfg)
    code: grpc.StatusCode = err.value.code()
    return code


def image() -> host_pb2.TdImage:
    kernel = b"tdxsim tls test kernel\n" * 200
    return host_pb2.TdImage(
        memory_bytes=32 * MIB,
        attributes=SEPT_VE_DISABLE,
        payload=[host_pb2.Payload(gpa=MIB, data=kernel, measure=True)],
    )


def test_tls_init_writes_a_test_ca_and_leaves_with_private_keys(dirs: dict[str, Path]) -> None:
    tls = dirs["tls"]
    ca = x509.load_pem_x509_certificate((tls / "ca.pem").read_bytes())
    assert CA_NAME in ca.subject.rfc4514_string() and "test CA" in CA_NAME
    server = x509.load_pem_x509_certificate((tls / "server.pem").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    for key in ("server.key", "client.key"):
        assert stat.S_IMODE((tls / key).stat().st_mode) == 0o600
    again = tdxsim("tls", "init", str(tls))  # never overwrites silently
    assert again.returncode == 2 and "already exists" in again.stderr


def test_tls_host_serves_clients_trusting_its_ca_only(
    dirs: dict[str, Path], servers: dict[str, Server]
) -> None:
    address = servers["tls_host"].address
    assert get_stats(address, client(dirs)).keyids_total > 0
    assert refused(address, None) is grpc.StatusCode.UNAVAILABLE  # plaintext client
    assert refused(address, client(dirs, ca="other")) is grpc.StatusCode.UNAVAILABLE


def test_mtls_host_requires_a_client_certificate_from_its_ca(
    dirs: dict[str, Path], servers: dict[str, Server]
) -> None:
    address = servers["mtls_host"].address
    assert refused(address, client(dirs)) is grpc.StatusCode.UNAVAILABLE  # no client certificate
    assert refused(address, client(dirs, cert="other")) is grpc.StatusCode.UNAVAILABLE  # another CA's
    assert get_stats(address, client(dirs, cert="tls")).keyids_total > 0


def test_td_over_mtls_attests_at_an_mtls_verifier(dirs: dict[str, Path], servers: dict[str, Server]) -> None:
    mutual = client(dirs, cert="tls")
    td, launched = Td.launch(servers["mtls_host"].address, image(), "tls", tls=mutual)
    with td:
        assert launched.td_id > 0 and len(td.report()) > 0
        with Verifier(servers["mtls_verifier"].address, tls=mutual) as verifier:
            attestation = verifier.attest(td)
        assert attestation.token and attestation.ear_status == "affirming"
        # Without a client certificate the verifier refuses the connection before any RPC.
        anonymous = Verifier(servers["mtls_verifier"].address, tls=client(dirs))
        with anonymous, pytest.raises(GuestError) as err:
            anonymous.attest(td)
        assert err.value.code == "UNAVAILABLE"
    with open_channel(servers["mtls_verifier"].address, mutual) as channel:
        stub = attestation_pb2_grpc.VerifierServiceStub(channel)
        assert len(stub.GetNonce(attestation_pb2.GetNonceRequest(), timeout=TIMEOUT).nonce) > 0


def test_guest_process_runs_and_attests_over_tls(dirs: dict[str, Path], servers: dict[str, Server]) -> None:
    tls = dirs["tls"]
    workload = dirs["tmp"] / "tls.tdx"
    workload.write_text(
        "accept 0x800000 2M\n"
        'write 0x800000 "text:over tls"\n'
        'read 0x800000 8 expect "text:over tls"\n'
        f"attest {servers['mtls_verifier'].address}\n"
    )
    result = tdxsim(
        "guest", "--host", servers["tls_host"].address, "--image", str(ROOT / "examples" / "image.json"),
        "--tls-ca", str(tls / "ca.pem"), "--tls-cert", str(tls / "client.pem"),
        "--tls-key", str(tls / "client.key"), "run", str(workload),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4/4 steps passed" in result.stdout


#: Command lines ({tls}, {pcs}, {image}, {workload} filled in) and what their one line of stderr says.
UNUSABLE = {
    "host-cert-no-key": ("host --tls-cert {tls}/server.pem", "--tls-cert and --tls-key go together"),
    "host-ca-alone": ("host --tls-client-ca {tls}/ca.pem", "--tls-client-ca needs --tls-cert and --tls-key"),
    "host-missing-file": ("host --tls-cert {tls}/missing.pem --tls-key {tls}/server.key", "missing.pem"),
    "host-wrong-key": ("host --tls-cert {tls}/server.pem --tls-key {tls}/client.key", "does not belong"),
    "verifier-key-as-cert": (
        "verifier --db :memory: --root {pcs}/root_ca.pem "
        "--tls-cert {tls}/server.key --tls-key {tls}/server.key",
        "server.key: not a PEM certificate file",
    ),
    "host-expired-cert": (
        "host --tls-cert {tmp}/expired.pem --tls-key {tmp}/expired.key",
        "expired.pem: certificate expired on ",
    ),
    "verifier-future-cert": (
        "verifier --db {tmp}/future.db --root {pcs}/root_ca.pem "
        "--tls-cert {tmp}/future.pem --tls-key {tmp}/future.key",
        "future.pem: certificate is not valid before ",
    ),
    "tls-init-days-huge": ("tls init {tmp}/days --days 99999999", "--days must be 1..36500, not 99999999"),
    "tls-init-days-zero": ("tls init {tmp}/days --days 0", "--days must be 1..36500, not 0"),
    "tls-init-host-space": ("tls init {tmp}/hosts --hosts 127.0.0.1,a%20b", "'a b' is neither an IP address"),
    "tls-init-host-star": ("tls init {tmp}/hosts --hosts *", "'*' is neither an IP address nor a DNS name"),
    "guest-cert-no-ca": (
        "guest --host 127.0.0.1:1 --image {image} --tls-cert {tls}/client.pem --tls-key {tls}/client.key "
        "run {workload}",
        "need --tls-ca",
    ),
}


@pytest.mark.parametrize(("command", "message"), UNUSABLE.values(), ids=UNUSABLE.keys())
def test_unusable_tls_options_exit_2_with_one_line(dirs: dict[str, Path], command: str, message: str) -> None:
    workload = dirs["tmp"] / "empty.tdx"
    workload.write_text("# nothing\n")
    values = {
        "tls": dirs["tls"],
        "pcs": dirs["pcs"],
        "image": ROOT / "examples/image.json",
        "workload": workload,
        "tmp": dirs["tmp"],
    }
    args = [arg.replace("%20", " ") for arg in command.format(**values).split()]
    listen = ["--listen", "127.0.0.1:0"] if args[0] in ("host", "verifier") else []  # never a fixed port
    result = tdxsim(*args, *listen, timeout=30)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_tls_config_names_the_unusable_file(dirs: dict[str, Path]) -> None:
    with pytest.raises(TlsError, match=r"nowhere\.pem: cannot read"):
        TlsConfig.client(dirs["tmp"] / "nowhere.pem")
    with pytest.raises(TlsError, match="give both or neither"):
        TlsConfig.client(dirs["tls"] / "ca.pem", cert=dirs["tls"] / "client.pem")


@pytest.mark.parametrize(
    "hosts",
    [["a b"], ["*"], ["*.com"], ["-x.example"], ["a..b"], ["ex_ample.com"], ["é.example"], ["a" * 64]],
)
def test_tls_init_refuses_hosts_that_are_neither_ip_addresses_nor_dns_names(
    tmp_path: Path, hosts: list[str]
) -> None:
    with pytest.raises(TlsError, match="is neither an IP address nor a DNS name"):
        mint_test_pki(tmp_path, hosts)
    assert not list(tmp_path.iterdir())  # nothing written


def test_tls_init_accepts_ip_addresses_dns_names_wildcards_and_100_years(tmp_path: Path) -> None:
    paths = mint_test_pki(tmp_path, ["::1", "10.0.0.1", "host-1.example", "*.svc.example"], days=36500)
    server = x509.load_pem_x509_certificate(paths["server.pem"].read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["host-1.example", "*.svc.example"]
    assert server.not_valid_after_utc.year >= datetime.datetime.now(datetime.UTC).year + 99


def test_server_config_refuses_its_own_certificate_outside_its_validity_window(dirs: dict[str, Path]) -> None:
    tmp = dirs["tmp"]
    with pytest.raises(TlsError, match=r"expired\.pem: certificate expired on \d{4}-\d\d-\d\d"):
        TlsConfig.server(tmp / "expired.pem", tmp / "expired.key")
    with pytest.raises(TlsError, match=r"future\.pem: certificate is not valid before \d{4}-"):
        TlsConfig.server(tmp / "future.pem", tmp / "future.key")


def test_handshake_reason_is_read_from_grpcs_error_strings() -> None:
    wrong_ca = (
        "UNAVAILABLE:failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:4: "
        "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL routines:"
        "OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate: OK"
    )
    assert handshake_reason(wrong_ca) == (
        "TLS handshake failed: CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate"
    )
    closed = "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:4: Socket closed"
    assert handshake_reason(closed) is None


def test_guest_at_a_host_of_another_ca_says_why_in_one_line(
    dirs: dict[str, Path], servers: dict[str, Server]
) -> None:
    other = dirs["other"]
    result = tdxsim(
        "guest", "--host", servers["tls_host"].address, "--image", str(ROOT / "examples" / "image.json"),
        "--tls-ca", str(other / "ca.pem"), "run", str(ROOT / "examples" / "workload.tdx"),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # no "Handshake failed" lines of gRPC's own
    assert "TLS handshake failed: CERTIFICATE_VERIFY_FAILED" in lines[0]


def test_a_server_refusing_handshakes_does_not_log_each_one(dirs: dict[str, Path]) -> None:
    tls = dirs["tls"]
    host = Server(
        "host", "--phys-mem", "64M", "--tls-client-ca", str(tls / "ca.pem"),
        "--tls-cert", str(tls / "server.pem"), "--tls-key", str(tls / "server.key"),
    )  # fmt: skip
    try:
        assert refused(host.address, client(dirs)) is grpc.StatusCode.UNAVAILABLE  # no client certificate
    finally:
        host.stop()
    assert host.proc.stderr is not None
    err = host.proc.stderr.read()
    assert "Handshake failed" not in err and len(err.strip().splitlines()) == 1, err

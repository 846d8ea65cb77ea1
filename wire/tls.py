"""TLS and mTLS for every tdxsim channel (docs/conventions.md §5): configuration, gRPC credentials, test PKI.

A :class:`TlsConfig` is either a server's (certificate chain + key, and a client CA that makes client
certificates mandatory: mTLS) or a client's (the CA that signed the server, and a certificate + key to present
to an mTLS server). Files are read and checked when the config is loaded, so a wrong path, a file that is not
PEM, a key that does not belong to its certificate or an own certificate that is expired or not yet valid is
one :class:`TlsError` naming the file, not a handshake failure later. ``None`` everywhere means plaintext, the
default on loopback. When a handshake does fail, :func:`handshake_failure` asks the channel why, so the
caller's one error line can say so (gRPC's own log lines are silenced by ``tdxsim.cli``).

``tdxsim tls init DIR`` mints a test PKI with :func:`mint_test_pki`: ``ca.pem`` (a CA that says it is a tdxsim
test CA), ``server.pem``/``server.key`` (SANs for the given hosts, 127.0.0.1 and localhost by default) and
``client.pem``/``client.key``; ECDSA P-256, keys readable by their owner only. ``--hosts`` takes IP addresses
and DNS names (RFC 1123 labels; a wildcard only as a whole left-most label of a longer name), ``--days``
1..36500.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import re
import ssl
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wire.crypto_input import MALFORMED

DEFAULT_HOSTS = ("127.0.0.1", "localhost")
CA_NAME = "tdxsim test CA (not for production)"
PKI_FILES = ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")
MAX_DAYS = 36500  # 100 years; beyond ~2.9 million days datetime overflows
DNS_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
#: What gRPC's client says about a failed TLS handshake, in a status's details or debug string.
HANDSHAKE_FAILED = re.compile(
    r"(?im)tls handshake failed[^:\n]*:(?: SSL_ERROR_\w+:)?(?: error:\w+:[^:\n]*:[^:\n]*:)? ?"
    r"(?P<why>[^\n\"]+?)(?:: OK)?(?=$|\")"
)


class TlsError(ValueError):
    """An unusable TLS file or combination of options; the message names the file or option."""


@dataclass(frozen=True)
class TlsConfig:
    """PEM material for one side of a TLS channel. Build with :meth:`server` / :meth:`client` (from files)."""

    #: Server: the CA whose client certificates are required (mTLS). Client: the CA that signed the server.
    root_certificates: bytes | None = None
    #: Our own certificate chain (leaf first) and its private key: required on a server, mTLS on a client.
    certificate_chain: bytes | None = None
    private_key: bytes | None = None

    @property
    def mutual(self) -> bool:
        """A server that requires client certificates, or a client that presents one."""
        return self.certificate_chain is not None and self.root_certificates is not None

    @classmethod
    def server(cls, cert: str | Path, key: str | Path, client_ca: str | Path | None = None) -> TlsConfig:
        """A server's config: ``cert`` (chain, leaf first) and its ``key``; ``client_ca`` requires clients
        to present a certificate it signed."""
        chain, private_key = _load_pair(cert, key)
        roots = _read_certs(client_ca) if client_ca is not None else None
        return cls(root_certificates=roots, certificate_chain=chain, private_key=private_key)

    @classmethod
    def client(
        cls, ca: str | Path, cert: str | Path | None = None, key: str | Path | None = None
    ) -> TlsConfig:
        """A client's config: trust servers signed by ``ca``; present ``cert`` and ``key`` if given (mTLS)."""
        if (cert is None) != (key is None):
            raise TlsError(
                "a client certificate needs its key and a key its certificate (give both or neither)"
            )
        roots = _read_certs(ca)
        if cert is None or key is None:
            return cls(root_certificates=roots)
        chain, private_key = _load_pair(cert, key)
        return cls(root_certificates=roots, certificate_chain=chain, private_key=private_key)


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise TlsError(f"{path}: cannot read: {err.strerror or err}") from None


def _read_certs(path: str | Path) -> bytes:
    data = _read(path)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except MALFORMED:
        raise TlsError(f"{path}: not a PEM certificate file") from None
    if not certs:
        raise TlsError(f"{path}: no certificate in it")
    return data


def _spki(public_key: Any) -> bytes:
    return bytes(
        public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _load_pair(cert: str | Path, key: str | Path) -> tuple[bytes, bytes]:
    chain = _read_certs(cert)
    key_pem = _read(key)
    try:
        private_key = serialization.load_pem_private_key(key_pem, password=None)
    except MALFORMED as err:
        raise TlsError(f"{key}: not an unencrypted PEM private key ({err})") from None
    leaf = x509.load_pem_x509_certificates(chain)[0]
    try:
        leaf_spki = _spki(leaf.public_key())
    except MALFORMED as err:
        raise TlsError(f"{cert}: its certificate's key cannot be used ({err})") from None
    if _spki(private_key.public_key()) != leaf_spki:
        raise TlsError(f"{key}: this key does not belong to the certificate in {cert}")
    _check_validity(leaf, cert)
    return chain, key_pem


def _check_validity(certificate: x509.Certificate, path: str | Path) -> None:
    """Our own certificate must be valid now: peers would refuse it at every handshake otherwise."""
    now = datetime.datetime.now(datetime.UTC)
    after, before = certificate.not_valid_after_utc, certificate.not_valid_before_utc
    if now > after:
        raise TlsError(f"{path}: certificate expired on {after:%Y-%m-%d %H:%M} UTC")
    if now < before:
        raise TlsError(f"{path}: certificate is not valid before {before:%Y-%m-%d %H:%M} UTC")


def describe(cfg: TlsConfig | None) -> str:
    """``plaintext``, ``TLS`` or ``mTLS``: for a server's startup line."""
    if cfg is None:
        return "plaintext"
    return "mTLS (client certificates required)" if cfg.mutual else "TLS"


# ---- gRPC ------------------------------------------------------------------------------------------------


def server_credentials(cfg: TlsConfig) -> grpc.ServerCredentials:
    """TLS server credentials; with ``cfg.root_certificates`` a client certificate is required (mTLS)."""
    if cfg.certificate_chain is None or cfg.private_key is None:
        raise TlsError("a TLS server needs a certificate and its key")
    return grpc.ssl_server_credentials(
        [(cfg.private_key, cfg.certificate_chain)],
        root_certificates=cfg.root_certificates,
        require_client_auth=cfg.root_certificates is not None,
    )


def channel_credentials(cfg: TlsConfig) -> grpc.ChannelCredentials:
    """TLS channel credentials trusting ``cfg.root_certificates``, with the client certificate if any."""
    return grpc.ssl_channel_credentials(
        root_certificates=cfg.root_certificates,
        private_key=cfg.private_key,
        certificate_chain=cfg.certificate_chain,
    )


def handshake_reason(text: str) -> str | None:
    """The TLS handshake failure a gRPC status's details or debug string names (``"TLS handshake failed:
    CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate"``), None if it names none."""
    match = HANDSHAKE_FAILED.search(text)
    return f"TLS handshake failed: {match['why']}" if match else None


def handshake_failure(channel: grpc.Channel, timeout: float = 2.0) -> str | None:
    """Why ``channel`` cannot complete its TLS handshake, or None (it can, or it fails for another reason).

    One call without wait-for-ready to a method any server knows or refuses: gRPC fails it with the last
    connection error, whose debug string names the handshake failure. For error lines only: it costs a call.
    """
    probe = channel.unary_unary("/grpc.health.v1.Health/Check")
    try:
        probe(b"", timeout=timeout)
    except grpc.RpcError as err:
        debug = getattr(err, "debug_error_string", None)
        text = str(debug()) if callable(debug) else ""
        details = err.details() if isinstance(err, grpc.Call) else ""
        return handshake_reason(text) or handshake_reason(details or "")
    return None


def add_port(server: grpc.Server, address: str, cfg: TlsConfig | None) -> int:
    """Bind ``address`` with TLS when ``cfg`` is given, plaintext otherwise; the bound port (0: failed)."""
    if cfg is None:
        return int(server.add_insecure_port(address))
    return int(server.add_secure_port(address, server_credentials(cfg)))


def channel_for(
    address: str, cfg: TlsConfig | None, options: Sequence[tuple[str, object]] = ()
) -> grpc.Channel:
    """A channel to ``address``: TLS with ``cfg``, plaintext without."""
    if cfg is None:
        return grpc.insecure_channel(address, options=list(options))
    return grpc.secure_channel(address, channel_credentials(cfg), options=list(options))


# ---- command-line options ----------------------------------------------------------------------------


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tls-cert PEM --tls-key PEM [--tls-client-ca PEM]`` for a server process."""
    group = parser.add_argument_group("TLS (default: plaintext)")
    group.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate chain (leaf first)")
    group.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    group.add_argument(
        "--tls-client-ca",
        metavar="PEM",
        help="require client certificates signed by this CA (mTLS); needs --tls-cert and --tls-key",
    )


def server_config_from_args(args: argparse.Namespace) -> TlsConfig | None:
    """The server's TLS config from :func:`add_server_arguments`' options, None for plaintext."""
    if args.tls_cert is None and args.tls_key is None:
        if args.tls_client_ca is not None:
            raise TlsError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise TlsError("--tls-cert and --tls-key go together (give both or neither)")
    return TlsConfig.server(args.tls_cert, args.tls_key, args.tls_client_ca)


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tls-ca PEM [--tls-cert PEM --tls-key PEM]`` for a client process."""
    group = parser.add_argument_group("TLS (default: plaintext)")
    group.add_argument("--tls-ca", metavar="PEM", help="connect with TLS, trusting servers signed by this CA")
    group.add_argument(
        "--tls-cert", metavar="PEM", help="client certificate for mTLS servers (needs --tls-ca)"
    )
    group.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")


def client_config_from_args(args: argparse.Namespace) -> TlsConfig | None:
    """The client's TLS config from :func:`add_client_arguments`' options, None for plaintext."""
    if args.tls_ca is None:
        if args.tls_cert is not None or args.tls_key is not None:
            raise TlsError("--tls-cert and --tls-key need --tls-ca")
        return None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise TlsError("--tls-cert and --tls-key go together (give both or neither)")
    return TlsConfig.client(args.tls_ca, args.tls_cert, args.tls_key)


# ---- test PKI ----------------------------------------------------------------------------------------


def _dns_name(host: str) -> bool:
    """An RFC 1123 host name (labels of 1..63 letters, digits and inner hyphens; 253 characters in all),
    optionally with ``*`` as the whole left-most label before two labels at least (``*.example.com``)."""
    if not host or len(host) > 253:
        return False
    labels = host.split(".")
    if labels[0] == "*" and len(labels) > 2:
        labels = labels[1:]
    return all(DNS_LABEL.match(label) for label in labels)


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not _dns_name(host):
                raise TlsError(f"--hosts: {host!r} is neither an IP address nor a DNS name") from None
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tdxsim"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, mode)  # an existing file keeps its old mode through O_CREAT


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def mint_test_pki(
    directory: str | Path, hosts: Sequence[str] = DEFAULT_HOSTS, *, days: int = 365, force: bool = False
) -> dict[str, Path]:
    """Write a test CA, a server leaf (SANs: ``hosts``) and a client leaf into ``directory``; their paths.

    Refuses to overwrite an existing PKI unless ``force``."""
    hosts = [h.strip() for h in hosts if h.strip()]
    if not hosts:
        raise TlsError("--hosts: give at least one host name or IP address")
    if not 1 <= days <= MAX_DAYS:
        raise TlsError(f"--days must be 1..{MAX_DAYS}, not {days}")
    san = _san(hosts)  # refuses a malformed host before anything is written
    out = Path(directory)
    paths = {name: out / name for name in PKI_FILES}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not force:
        raise TlsError(f"{existing[0]}: already exists (--force overwrites)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TlsError(f"{out}: cannot create: {err.strerror or err}") from None

    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(CA_NAME)
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(common_name: str, usage: x509.ObjectIdentifier) -> tuple[x509.Certificate, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
            )
        )
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(san, critical=False)
        return builder.sign(ca_key, hashes.SHA256()), _key_pem(key)

    server, server_key = leaf("tdxsim test server", ExtendedKeyUsageOID.SERVER_AUTH)
    client, client_key = leaf("tdxsim test client", ExtendedKeyUsageOID.CLIENT_AUTH)
    pem = serialization.Encoding.PEM
    try:
        _write(paths["ca.pem"], ca.public_bytes(pem), 0o644)
        _write(paths["server.pem"], server.public_bytes(pem), 0o644)
        _write(paths["server.key"], server_key, 0o600)
        _write(paths["client.pem"], client.public_bytes(pem), 0o644)
        _write(paths["client.key"], client_key, 0o600)
    except OSError as err:
        raise TlsError(f"{out}: cannot write: {err.strerror or err}") from None
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``tdxsim tls init DIR [--hosts H,H] [--days N] [--force]``."""
    sub = parser.add_subparsers(dest="tls_command", metavar="COMMAND", required=True)
    init = sub.add_parser(
        "init",
        help="mint a test CA, a server and a client certificate (ECDSA P-256) for --tls-* options",
        description="Write DIR/ca.pem, DIR/server.pem + server.key (SANs: --hosts), DIR/client.pem + "
        "client.key. For tests and demos: the CA says it is a tdxsim test CA.",
    )
    init.add_argument("directory", metavar="DIR", help="directory to write (created if missing)")
    init.add_argument(
        "--hosts",
        default=",".join(DEFAULT_HOSTS),
        help="comma-separated IP addresses and DNS names the server certificate is valid for "
        "(default: 127.0.0.1,localhost)",
    )
    init.add_argument("--days", type=int, default=365, help=f"validity in days, 1..{MAX_DAYS} (default 365)")
    init.add_argument("--force", action="store_true", help="overwrite an existing test PKI in DIR")
    init.set_defaults(func=run_init)


def run_init(args: argparse.Namespace) -> int:
    try:
        paths = mint_test_pki(args.directory, args.hosts.split(","), days=args.days, force=args.force)
    except TlsError as err:
        print(f"tdxsim tls init: {err}", file=sys.stderr)
        return 2
    print(f"test CA {paths['ca.pem']} (trust it with --tls-ca / --tls-client-ca)")
    print(f"server  {paths['server.pem']} + {paths['server.key']} (for {args.hosts})")
    print(f"client  {paths['client.pem']} + {paths['client.key']}")
    return 0


def _load_chain(context: ssl.SSLContext, chain: bytes, key: bytes) -> None:
    """``ssl`` loads a certificate and key only from files: write them to a private temporary folder, load,
    and remove them at once."""
    with tempfile.TemporaryDirectory(prefix="tdxsim-tls-") as folder:
        cert_path, key_path = Path(folder) / "chain.pem", Path(folder) / "key.pem"
        for path, data in ((cert_path, chain), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        context.load_cert_chain(cert_path, key_path)


def ssl_server_context(cfg: TlsConfig) -> ssl.SSLContext:
    """The same server TLS as :func:`server_credentials`, for an HTTP server (``ssl``): TLS 1.2 or later,
    client certificates from ``root_certificates`` required when it is set (mTLS)."""
    if cfg.certificate_chain is None or cfg.private_key is None:
        raise TlsError("a TLS server needs a certificate and its key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, cfg.certificate_chain, cfg.private_key)
    if cfg.root_certificates is not None:
        context.load_verify_locations(cadata=cfg.root_certificates.decode("ascii"))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def ssl_client_context(cfg: TlsConfig) -> ssl.SSLContext:
    """The same client TLS as :func:`channel_credentials`, for an HTTP client (``ssl``): the server must
    chain to ``root_certificates`` and match the host name; our certificate is presented when given."""
    context = ssl.create_default_context(cadata=(cfg.root_certificates or b"").decode("ascii") or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.certificate_chain is not None and cfg.private_key is not None:
        _load_chain(context, cfg.certificate_chain, cfg.private_key)
    return context

"""``tdxsim verifier``: run the remote verifier as a gRPC server process.

Prints ``listening on HOST:PORT`` as the first line of stdout (bind port 0 and read it back, like
``tdxsim host``) and ``admin credential: PATH`` as the second: the credential ``SetPolicy``,
``SetReferenceValues``, ``PutResource`` and ``GetAuditLog`` need (generated into a new 0600 file unless
``--admin-credential-file`` names one). Serves health and reflection, stops gracefully on SIGTERM/SIGINT.

Trust anchors (``--root``, required, repeatable, PEM or DER): Intel's SGX Root CA for real quotes,
``DIR/root_ca.pem`` of ``tdxsim pki init DIR`` for simulated ones, or both. Collateral (``--collateral``,
repeatable): dcap-qvl ``QuoteCollateralV3`` JSON files, chosen per quote by FMSPC; and/or ``--pccs URL``: a
PCCS or Intel's PCS (``tdxsim pcs serve`` for simulated PKIs) that collateral is fetched from per FMSPC on
demand and cached until its ``nextUpdate`` (a file matching the quote's FMSPC and root wins; a PCCS without an
answer is UNAVAILABLE ``PCCS_UNAVAILABLE``, docs/attestation.md §17). Verification time is now,
or ``--at UNIX`` to verify against archived collateral (nonce expiry and tokens keep using the wall clock).
Plaintext by default; ``--tls-cert`` and ``--tls-key`` serve TLS, and ``--tls-client-ca`` also requires client
certificates signed by that CA (mTLS); ``tdxsim tls init DIR`` mints a test PKI.
With ``--kbs-listen HOST:PORT`` the same verifier also speaks the KBS attestation protocol over HTTP
(trustee's RCAR, docs/kbs.md), TLS with the same ``--tls-*`` files, and prints ``kbs listening on
HOST:PORT`` after the other two lines.
With a PostgreSQL ``--db``, health answers NOT_SERVING while the database cannot be reached (probed every
second) and SERVING once it answers again (docs/fleet.md "The database").
Exit status: 0 after a graceful stop, 2 for unusable arguments or files (argparse's usage line when
``--root`` or ``--db`` is missing).
"""

from __future__ import annotations

import argparse
import sqlite3
import ssl
import sys
import threading
import time
from pathlib import Path

from attest.errors import AttestError
from attest.verifier.dcap.pccs_client import DEFAULT_TIMEOUT, PccsClient, PccsCollateral
from attest.verifier.dcap.quote_verifier import load_anchors
from attest.verifier.service.core import CollateralIndex, ServiceConfig, VerifierCore
from attest.verifier.service.grpc_server import create_server
from attest.verifier.service.kbs_http import KbsHttpServer
from attest.verifier.service.kbs_protocol import KbsProtocol
from attest.verifier.service.store_health import StoreHealth
from attest.verifier.store import StoreError, open_store
from wire import credentials, tls
from wire.serving import (
    address_in_use,
    announce,
    check_listen_address,
    check_server_arguments,
    stop_on_signals,
    wait_until_signalled,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default="127.0.0.1:50054", help="address to bind (port 0 picks one)")
    parser.add_argument(
        "--db",
        required=True,
        metavar="FILE|URL",
        help="where the state lives: a SQLite file (created if missing), or a postgresql://… URL that any "
        "number of verifier replicas share (e.g. postgresql:///verifier?host=/run/postgresql)",
    )
    parser.add_argument(
        "--rotate-signing-key",
        action="store_true",
        help="add a new token signing key at start; it signs from then on, older keys stay in the JWKS",
    )
    parser.add_argument(
        "--root",
        action="append",
        required=True,
        metavar="PEM|DER",
        help="trust anchor certificate file; required and repeatable: Intel's SGX Root CA for real quotes, "
        "DIR/root_ca.pem from 'tdxsim pki init DIR' for simulated ones, or both",
    )
    parser.add_argument(
        "--collateral",
        action="append",
        default=[],
        metavar="JSON",
        help="QuoteCollateralV3 JSON file, keyed by its FMSPC (repeatable)",
    )
    parser.add_argument(
        "--pccs",
        default=None,
        metavar="URL",
        help="fetch collateral per FMSPC from this PCCS or PCS (http(s)://HOST:PORT, as 'tdxsim pcs serve' "
        "prints it, or https://api.trustedservices.intel.com); cached until its nextUpdate",
    )
    parser.add_argument(
        "--pccs-ca", default=None, metavar="PEM", help="CA certificates trusted for an https --pccs"
    )
    parser.add_argument(
        "--pccs-timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"bound on one collateral fetch (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument("--at", type=int, default=None, metavar="UNIX", help="fixed DCAP verification time")
    parser.add_argument("--nonce-ttl", type=int, default=300, help="default nonce lifetime, seconds (300)")
    parser.add_argument("--token-ttl", type=int, default=300, help="default token lifetime, seconds (300)")
    parser.add_argument(
        "--kbs-listen",
        metavar="HOST:PORT",
        help="also serve the KBS attestation protocol (trustee's /kbs/v0 RCAR over HTTP, docs/kbs.md) there; "
        "TLS with the --tls-* files; port 0 picks one, printed as 'kbs listening on HOST:PORT'",
    )
    credentials.add_server_argument(parser)
    tls.add_server_arguments(parser)


def _build_core(args: argparse.Namespace, admin: str) -> VerifierCore:
    anchors = load_anchors([Path(p).read_bytes() for p in args.root])  # argparse requires one at least
    pccs = None
    if args.pccs is not None:
        if not 0 < args.pccs_timeout <= 300:
            raise ValueError("--pccs-timeout must be in (0, 300] seconds")
        try:
            pccs = PccsCollateral(PccsClient(args.pccs, timeout=args.pccs_timeout, ca_file=args.pccs_ca))
        except (ssl.SSLError, OSError) as err:
            raise ValueError(f"--pccs-ca {args.pccs_ca}: {getattr(err, 'strerror', None) or err}") from None
    collateral = CollateralIndex([Path(p).read_text() for p in args.collateral], pccs)
    if args.nonce_ttl < 1 or args.token_ttl < 1:
        raise ValueError("--nonce-ttl and --token-ttl must be positive")
    config = ServiceConfig(
        nonce_ttl=args.nonce_ttl, token_ttl=args.token_ttl, verify_at=args.at, admin_credential=admin
    )
    store = open_store(args.db)
    try:
        core = VerifierCore(store, anchors, collateral, config)
        if args.rotate_signing_key:
            core.keys.rotate(int(time.time()))
    except BaseException:
        store.close()
        raise
    return core


def _kbs_address(address: str) -> tuple[str, int, str]:
    """(host, port, "") for a usable ``--kbs-listen``, else ("", 0, the one-line reason)."""
    problem = check_listen_address(address)
    if not problem and address.startswith(("unix:", "unix-abstract:")):
        problem = "the kbs serves HTTP on HOST:PORT, not on a unix socket"
    if problem:
        return "", 0, f"--kbs-listen: {problem}"
    if address_in_use(address):
        return "", 0, f"cannot listen on {address}: address already in use"
    host, _, port = address.rpartition(":")
    return host, int(port), ""


def run(args: argparse.Namespace) -> int:
    tls_config, problem = check_server_arguments(args)
    kbs_host, kbs_port = "", 0
    if not problem and args.kbs_listen:
        kbs_host, kbs_port, problem = _kbs_address(args.kbs_listen)
    if problem:
        print(f"tdxsim verifier: {problem}", file=sys.stderr)
        return 2
    try:
        admin = credentials.server_admin_credential(args.admin_credential_file)
    except (credentials.CredentialError, OSError) as err:
        print(f"tdxsim verifier: {err}", file=sys.stderr)
        return 2
    try:
        core = _build_core(args, admin.credential)
    except (OSError, ValueError, AttestError, StoreError, sqlite3.Error) as err:
        print(f"tdxsim verifier: {err}", file=sys.stderr)
        credentials.discard_generated(admin)
        return 2
    try:
        server, port, health = create_server(args.listen, core, tls=tls_config)
    except (OSError, RuntimeError) as err:
        print(f"tdxsim verifier: cannot listen on {args.listen}: {err}", file=sys.stderr)
        credentials.discard_generated(admin)
        return 2
    kbs: KbsHttpServer | None = None
    if args.kbs_listen:
        kbs = KbsHttpServer(KbsProtocol(core), kbs_host, kbs_port, tls=tls_config)
        try:
            kbs.start()
        except (OSError, RuntimeError, ValueError) as err:
            print(f"tdxsim verifier: cannot listen on {args.kbs_listen}: {err}", file=sys.stderr)
            server.stop(None).wait(5)
            core.store.close()
            credentials.discard_generated(admin)
            return 2
    store_health = StoreHealth(core.store, health)
    store_health.start()
    stop = threading.Event()
    stop_on_signals(stop)
    announce(args.listen, port, admin.path)
    if kbs is not None:
        print(f"kbs listening on {kbs_host}:{kbs.port}", flush=True)
    fmspcs = ", ".join(f.hex().upper() for f in core.collateral.fmspcs) or "none"
    if core.collateral.pccs is not None:
        fmspcs += f", any fmspc from pccs {core.collateral.pccs.url}"
    print(
        f"tdxsim verifier: {len(core.anchors)} trust anchor(s), collateral for fmspc {fmspcs}, "
        f"db {core.store.location}, kid {core.keys.current_kid}, {tls.describe(tls_config)}",
        file=sys.stderr,
        flush=True,
    )
    wait_until_signalled(stop)
    health.enter_graceful_shutdown()
    store_health.stop()
    if kbs is not None:
        kbs.stop(2.0)
    server.stop(2.0).wait(5)
    core.store.close()
    credentials.discard_generated(admin)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tdxsim verifier", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

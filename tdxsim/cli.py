"""The ``tdxsim`` command line: one entry point, a subcommand per process or tool (docs/cli.md).

gRPC's C core logs every failed TLS handshake ("Handshake failed with error SSL_ERROR_SSL …", INFO level, once
per reconnect attempt) on both ends; GRPC_VERBOSITY defaults to ERROR here, set before any import of grpc
(they all happen in ``build_parser``), so a CLI's stderr carries its own one error line. Export
GRPC_VERBOSITY=INFO (or DEBUG) to see them again.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # before build_parser imports grpc (see the docstring)

DESCRIPTION = """\
tdxsim simulates an Intel TDX machine as separate processes talking gRPC (make demo shows all of them).

  tdxsim pki init DIR                       create a simulated Intel PCS (never Intel's root)
  tdxsim pcs serve --pki DIR --listen 127.0.0.1:0
                                            serve it over HTTP as a PCCS (Intel PCS API v4 URLs)
  tdxsim tls init DIR [--hosts 127.0.0.1,localhost]
                                            mint a test CA, server and client certificates (--tls-*)
  tdxsim host --listen 127.0.0.1:0 [--pki DIR]
                                            run a host (KVM + VMM + TDX module + quoting enclave)
  tdxsim verifier --listen 127.0.0.1:0 --db v.db --root DIR/root_ca.pem --collateral DIR/collateral.json
                                            run the verifier: nonces, DCAP checks, policy, tokens, secrets
  tdxsim guest --host ADDR --image IMG.json [run SCRIPT]
                                            launch a TD from an image and run its guest (a workload)
  tdxsim guest --image IMG.json mrtd        the MRTD a TD from this image will have (offline)
  tdxsim quote inspect QUOTE                decode a DCAP quote
  tdxsim quote verify QUOTE --collateral JSON [--at UNIX] [--root PEM] [--policy FILE]
                                            verify (and appraise) a DCAP quote, real or simulated, offline
  tdxsim bench [SUITE ...] [--quick] [--report DIR]
                                            every benchmark: ratios against limits measured in the same run
  tdxsim soak [--minutes N] [--json] [--seed S]
                                            the whole stack under hostile load, then a verdict
  tdxsim attack [--json] [--host ADDR]      host-side and physical attacks on a live TD, each beside what
                                            real TDX guarantees (exit 1 when one differs)
  tdxsim fleet up --hosts N --verifiers M --dir DIR [--postgres URL] [--tcb-mix]
                                            many platforms and verifier replicas on one PostgreSQL
  tdxsim fleet status|down --dir DIR        check or stop them
  tdxsim memmap --host ADDR --td ID [--svg FILE]
                                            a TD's GPA map: private, pending, shared, unbacked, poisoned
  tdxsim demo [--guests N] [--json] [--artifacts DIR]
                                            the whole story as processes (make demo), for people or tools

Every command takes --help.
"""


def _command(sub: Any, name: str, module: Any, help: str) -> None:
    """A subcommand whose module's docstring is its --help text and whose ``run`` it calls."""
    parser = sub.add_parser(
        name, help=help, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    module.add_arguments(parser)
    parser.set_defaults(func=module.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tdxsim", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    from host import main as host_main

    host = sub.add_parser("host", help="run a simulated TDX host process", description=host_main.__doc__)
    host_main.add_arguments(host)
    host.set_defaults(func=host_main.run)

    from attest.verifier.service import main as verifier_main

    verifier = sub.add_parser(
        "verifier", help="run the remote verifier service", description=verifier_main.__doc__
    )
    verifier_main.add_arguments(verifier)
    verifier.set_defaults(func=verifier_main.run)

    from attest.intel import cli as pki_cli

    pki = sub.add_parser("pki", help="create a simulated Intel PCS (root CA, PCK certificates, collateral)")
    pki_cli.add_arguments(pki)

    from attest.intel import pccs_server

    pcs = sub.add_parser(
        "pcs", help="serve a simulated PCS over HTTP, as a PCCS serves Intel's PCS API v4 (collateral by URL)"
    )
    pccs_server.add_arguments(pcs)

    from wire import tls as tls_cli

    tls = sub.add_parser("tls", help="mint a test PKI for TLS/mTLS channels (--tls-* options)")
    tls_cli.add_arguments(tls)

    from tdxsim import quote_commands as quote_cli

    quote = sub.add_parser("quote", help="inspect or verify a DCAP quote offline")
    quote_cli.add_arguments(quote)

    from guest import cli as guest_cli
    from tdxsim import attack, demo, fleet, memmap, soak
    from tdxsim.bench import cli as bench_cli

    _command(sub, "guest", guest_cli, "launch a TD from an image and run its guest process")
    bench = sub.add_parser(
        "bench", help="benchmarks: speed as ratios against limits measured in the same run"
    )
    bench_cli.add_arguments(bench)
    bench.set_defaults(func=bench_cli.run)
    _command(
        sub, "soak", soak, "run the whole stack under hostile load for minutes and check that nothing breaks"
    )
    _command(
        sub,
        "attack",
        attack,
        "run the host-side and physical attacks against a live TD and compare with what TDX guarantees",
    )
    _command(
        sub,
        "fleet",
        fleet,
        "start, check or stop a fleet: simulated platforms and verifier replicas sharing PostgreSQL",
    )
    _command(
        sub,
        "memmap",
        memmap,
        "draw a TD's GPA space: private accepted/pending, shared, unbacked, poisoned (terminal or SVG)",
    )
    _command(
        sub,
        "demo",
        demo,
        "the whole stack as processes: PCS, host, verifier, guests that attest; then legacy mode",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The ``tdxsim`` command line: one entry point, a subcommand per process or tool."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

DESCRIPTION = """\
tdxsim simulates an Intel TDX machine as separate processes talking gRPC.

  tdxsim host --listen 127.0.0.1:0          run a host (KVM + VMM + TDX module); prints its address
  tdxsim quote verify QUOTE --collateral JSON [--at UNIX] [--root PEM]
                                            verify a DCAP quote (real or simulated) offline
  tdxsim bench memory [--json FILE]         measure the memory-encryption engine and conversions

Every command takes --help.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tdxsim", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    from host import main as host_main

    host = sub.add_parser("host", help="run a simulated TDX host process", description=host_main.__doc__)
    host_main.add_arguments(host)
    host.set_defaults(func=host_main.run)

    from tdxsim import quote as quote_cli

    quote = sub.add_parser("quote", help="inspect or verify a DCAP quote offline")
    quote_cli.add_arguments(quote)

    from tdxsim.bench import cli as bench_cli

    bench = sub.add_parser(
        "bench", help="benchmarks: speed as ratios against limits measured in the same run"
    )
    bench_cli.add_arguments(bench)
    bench.set_defaults(func=bench_cli.run)
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

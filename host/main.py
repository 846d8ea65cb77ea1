"""``tdxsim host``: run one simulated TDX host machine as a gRPC server process (docs/cli.md
"``tdxsim host``", docs/conventions.md §4).

Prints ``listening on HOST:PORT`` as the first line of stdout (so launchers can bind port 0) and
``admin credential: PATH`` as the second (the file holding the credential ``HostService`` callers present;
generated into a new 0600 file unless ``--admin-credential-file`` names one), shuts down gracefully on
SIGTERM/SIGINT, and exits with status 3 after a simulated host
machine check ("host crashed"), as a real machine would go down.

Plaintext by default; ``--tls-cert`` and ``--tls-key`` serve TLS, and ``--tls-client-ca`` also requires
every client (guests and tools) to present a certificate that CA signed (mTLS). ``tdxsim tls init DIR``
mints a test PKI for them.
"""

from __future__ import annotations

import argparse
import sys
import threading

from attest.errors import AttestError
from host.platform import PlatformConfig, build_platform
from host.rpc.server import create_server
from host.tdx.dram import format_size
from wire import credentials, tls
from wire.serving import announce, check_server_arguments, stop_on_signals, wait_until_signalled

HOST_CRASH_EXIT = 3


def parse_size(text: str) -> int:
    """A byte count written as ``4G``, ``512M``, ``1T``, ``1.5GiB`` or plain bytes; ValueError otherwise."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
    body = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = 1
    if body and body[-1] in units:
        body, scale = body[:-1], units[body[-1]]
    value: float | None
    try:
        value = float(body) if "." in body else int(body)
    except ValueError:
        value = None
    if value is None or not 0 < value < 1 << 64 or int(value * scale) <= 0:
        raise ValueError(f"{text!r} is not a size (examples: 4G, 512M, 1T, 17179869184)")
    return int(value * scale)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen", default="127.0.0.1:50051", help="address to bind (port 0 picks a free port)"
    )
    parser.add_argument(
        "--memory-mode",
        choices=["gmem", "legacy"],
        default="gmem",
        help="gmem: private memory in guest_memfd, never mapped by the host (default); "
        "legacy: pre-2021 world where host userspace maps private memory too",
    )
    parser.add_argument(
        "--no-integrity",
        action="store_true",
        help="TD-owner bit only (Li mode) instead of a 28-bit MAC per cache line (Ci mode)",
    )
    parser.add_argument(
        "--phys-mem",
        default="4G",
        metavar="SIZE",
        help="simulated physical memory, e.g. 256M, 64G, 1T (default 4G); reserved lazily, so it costs only "
        "what TDs touch, whatever the machine's RAM",
    )
    parser.add_argument(
        "--keyids", type=int, default=48, help="number of TDX private KeyIDs (default 48: [16, 64))"
    )
    parser.add_argument(
        "--pki",
        metavar="DIR",
        help="simulated Intel PCS made by `tdxsim pki init DIR`: the quoting enclave signs with this "
        "platform's PCK from it (without it, GetQuote answers QGS_UNAVAILABLE)",
    )
    parser.add_argument("--pki-platform", type=int, default=0, help="which PCK leaf of --pki is this host's")
    parser.add_argument(
        "--map-gpa-retry-every",
        type=int,
        default=0,
        metavar="N",
        help="simulate pending vCPU events: every Nth 2 MiB MapGPA chunk ends the TDVMCALL with RETRY "
        "and R11 = the GPA to resume from, as KVM does; tests a guest's RETRY handling (default 0: never)",
    )
    credentials.add_server_argument(parser)
    tls.add_server_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        phys_bytes = parse_size(args.phys_mem)
    except ValueError as err:
        print(f"tdxsim host: --phys-mem {err}", file=sys.stderr)
        return 2
    config = PlatformConfig(
        phys_bytes=phys_bytes,
        memory_mode=args.memory_mode,
        integrity=not args.no_integrity,
        keyid_count=args.keyids,
        pki_dir=args.pki,
        pki_platform=args.pki_platform,
        map_gpa_retry_every=args.map_gpa_retry_every,
    )
    tls_config, problem = check_server_arguments(args)
    if problem:
        print(f"tdxsim host: {problem}", file=sys.stderr)
        return 2
    try:
        admin = credentials.server_admin_credential(args.admin_credential_file)
    except (credentials.CredentialError, OSError) as err:
        print(f"tdxsim host: {err}", file=sys.stderr)
        return 2
    try:
        platform = build_platform(config)
    except (ValueError, AttestError) as err:
        print(f"tdxsim host: {err}", file=sys.stderr)
        credentials.discard_generated(admin)
        return 2
    stop = threading.Event()
    crash: list[str] = []

    def on_host_crash(reason: str) -> None:
        crash.append(reason)
        stop.set()

    try:
        server, port, health = create_server(
            args.listen, platform.vmm, on_host_crash, admin_credential=admin.credential, tls=tls_config
        )
    except (OSError, RuntimeError) as err:
        print(f"tdxsim host: cannot listen on {args.listen}: {err}", file=sys.stderr)
        credentials.discard_generated(admin)
        return 2
    stop_on_signals(stop)
    announce(args.listen, port, admin.path)
    print(
        f"tdxsim host: memory mode {config.memory_mode}, integrity {'on' if config.integrity else 'off'}, "
        f"{config.keyid_count} TDX KeyIDs, {format_size(config.phys_bytes)} physical memory, "
        f"{tls.describe(tls_config)}",
        file=sys.stderr,
        flush=True,
    )

    wait_until_signalled(stop)
    health.enter_graceful_shutdown()
    if crash:
        print(f"tdxsim host: HOST CRASHED: {crash[0]}; every TD is dead", file=sys.stderr, flush=True)
        server.stop(0.5).wait(2)
        credentials.discard_generated(admin)
        return HOST_CRASH_EXIT
    server.stop(2.0).wait(5)
    platform.vmm.events.close()
    credentials.discard_generated(admin)
    return 0

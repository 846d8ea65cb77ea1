"""What every tdxsim server process shares: the listen address it accepts, its first line, its stop signals.

Servers bind loopback by default and print ``listening on HOST:PORT`` first (port 0 picks a free port),
then ``admin credential: PATH`` (docs/cli.md).
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from types import FrameType

from wire import tls


def check_listen_address(address: str) -> str | None:
    """Why ``address`` cannot be listened on, or None. Accepts ``HOST:PORT``, ``[V6]:PORT`` and
    ``unix:PATH``; the port must be 0..65535 (gRPC would silently wrap a larger one)."""
    if address.startswith(("unix:", "unix-abstract:")):
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        return f"{address!r} is not HOST:PORT"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        return f"port {port!r} is not 0..65535"
    return None


def announce(address: str, port: int, admin_credential: Path) -> None:
    """The first two lines of stdout: ``listening on HOST:PORT`` with the port actually bound, and
    ``admin credential: PATH``, the file holding the credential of the server's admin API."""
    host = address.rsplit(":", 1)[0]
    print(f"listening on {host}:{port}", flush=True)
    print(f"admin credential: {admin_credential}", flush=True)


def stop_on_signals(stop: threading.Event) -> None:
    """From now on SIGTERM and SIGINT (Ctrl-C) set ``stop`` instead of killing the process: servers call it
    before they announce themselves, so a launcher's early SIGTERM still gets a clean shutdown."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def wait_until_signalled(stop: threading.Event) -> None:
    """Block until SIGTERM or SIGINT arrives, or until ``stop`` is set by the server itself."""
    stop_on_signals(stop)
    while not stop.wait(0.5):
        pass


def check_server_arguments(args: argparse.Namespace) -> tuple[tls.TlsConfig | None, str]:
    """The ``--listen`` and ``--tls-*`` arguments every server takes, checked before anything binds:
    (TLS config or None for plaintext, "" or the one-line reason they are unusable)."""
    bad_address = check_listen_address(args.listen)
    if bad_address:
        return None, f"--listen: {bad_address}"
    try:
        return tls.server_config_from_args(args), ""
    except tls.TlsError as err:
        return None, str(err)

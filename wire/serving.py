"""What every tdxsim server process shares: the listen address it accepts, its first line, its stop signals.

Servers bind loopback by default and print ``listening on HOST:PORT`` first (port 0 picks a free port),
then ``admin credential: PATH`` (docs/cli.md). An address another process listens on is refused before
anything binds (docs/conventions.md §4): gRPC servers set ``SO_REUSEPORT`` unless told otherwise, and a second
server would silently take part of the first one's connections.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import socket
import stat
import threading
from pathlib import Path
from types import FrameType
from typing import Any

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


def address_in_use(address: str) -> bool:
    """Whether something already listens on ``address`` (``HOST:PORT``, ``[V6]:PORT``, ``unix:PATH``,
    ``unix-abstract:NAME``): a probe bind, or for a Unix socket path a probe connect (gRPC would unlink the
    other server's socket file and bind its own). Port 0 is never in use; an unresolvable host is left to
    gRPC to refuse."""
    if address.startswith("unix-abstract:"):
        return _bind_refused(socket.AF_UNIX, "\0" + address.removeprefix("unix-abstract:"))
    if address.startswith("unix:"):
        path = address.removeprefix("unix:").removeprefix("//")
        try:
            if not stat.S_ISSOCK(os.stat(path).st_mode):
                return False
        except OSError:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
            except OSError:
                return False
            return True
    host, _, port = address.rpartition(":")
    if not port.isdigit() or int(port) == 0:
        return False
    try:
        found = socket.getaddrinfo(
            host.strip("[]"), int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, UnicodeError):
        return False
    return any(_bind_refused(family, sockaddr) for family, _, _, _, sockaddr in found)


def _bind_refused(family: int, sockaddr: Any) -> bool:
    with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_STREAM) as probe:
        if family != socket.AF_UNIX:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds: TIME_WAIT is no use
        try:
            probe.bind(sockaddr)
        except OSError as err:
            return err.errno == errno.EADDRINUSE
    return False


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
    """The ``--listen`` and ``--tls-*`` arguments every server takes, checked before anything binds (an
    address in use included):
    (TLS config or None for plaintext, "" or the one-line reason they are unusable)."""
    bad_address = check_listen_address(args.listen)
    if bad_address:
        return None, f"--listen: {bad_address}"
    if address_in_use(args.listen):
        return None, f"cannot listen on {args.listen}: address already in use"
    try:
        return tls.server_config_from_args(args), ""
    except tls.TlsError as err:
        return None, str(err)

"""What every tdxsim server process shares: the listen address it accepts.

Servers bind loopback by default and print ``listening on HOST:PORT`` first; port 0 picks a free port.
"""

from __future__ import annotations


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

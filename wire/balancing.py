"""Client-side load balancing over server replicas: one gRPC channel to several addresses or a DNS name.

gRPC resolves a target to a list of addresses and a load-balancing policy picks one per call (gRPC's
"Load Balancing in gRPC" and "Service Config" documents; ``grpc/doc/naming.md`` for target schemes). Here:

- ``balanced_target(["10.0.0.1:50054", "10.0.0.2:50054"])`` is ``ipv4:10.0.0.1:50054,10.0.0.2:50054``
  (``ipv6:[…]:port,…`` for IPv6; host names are resolved once, when the target is built); one
  ``host:port`` with a DNS name stays ``dns:///host:port``, so every A/AAAA record is a backend and gRPC
  re-resolves when connections fail; a target already naming a scheme (``dns:``, ``ipv4:``, ``unix:`` …)
  is kept as it is. Addresses may be given as several arguments, comma-separated, or both.
- ``service_config(retry_methods)`` picks ``round_robin``: calls go to every ready backend in turn; a
  backend whose connection fails leaves the rotation until it reconnects, so after a replica dies only the
  calls that were in flight on it fail.
- Retries: only idempotent methods, listed by the caller, are retried by gRPC (``retryPolicy``: up to
  ``MAX_ATTEMPTS`` attempts on UNAVAILABLE, exponential backoff), and then on another backend when one is
  ready. A call that consumes something (``Attest`` consumes its nonce) is never retried by the channel:
  the caller starts over (a new nonce, a new quote) if it wants to (docs/conventions.md §6). gRPC still
  retries any call transparently when it never left the client (the connection failed before sending).

A TLS channel checks the server certificate against the first address's host name (every replica then
needs that name in its certificate's SANs, as behind a load balancer), unless the caller sets
``grpc.ssl_target_name_override``.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterable, Sequence

SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")
MAX_ATTEMPTS = 4
INITIAL_BACKOFF = "0.1s"
MAX_BACKOFF = "1s"


class TargetError(ValueError):
    """The addresses do not make one target (empty, unparsable, IPv4 mixed with IPv6, unresolvable)."""


def split_addresses(values: Iterable[str]) -> list[str]:
    """Every address in ``values``, each of which may be a comma-separated list; blanks dropped."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _host_port(address: str) -> tuple[str, str]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TargetError(f"{address!r} is not HOST:PORT")
    return host.removeprefix("[").removesuffix("]"), port


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _resolve(host: str, port: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except OSError as err:
        raise TargetError(f"cannot resolve {host}: {err.strerror or err}") from None
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            ip = ipaddress.ip_address(str(sockaddr[0]))
            if ip not in found:
                found.append(ip)
    return found


def balanced_target(addresses: Sequence[str]) -> str:
    """One gRPC target for ``addresses`` (see the module docstring)."""
    listed = split_addresses(addresses)
    if not listed:
        raise TargetError("no address given")
    if len(listed) == 1:
        only = listed[0]
        if only.startswith(SCHEMES):
            return only
        host, port = _host_port(only)
        return only if _ip(host) is not None else f"dns:///{host}:{port}"
    endpoints: list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, str]] = []
    for address in listed:
        if address.startswith(SCHEMES):
            raise TargetError(f"{address!r}: a target with a scheme cannot be combined with other addresses")
        host, port = _host_port(address)
        ip = _ip(host)
        ips = [ip] if ip is not None else _resolve(host, port)
        if ip is None and any(i.version == 4 for i in ips):
            ips = [i for i in ips if i.version == 4]
        endpoints += [(i, port) for i in ips if (i, port) not in endpoints]
    versions = {ip.version for ip, _ in endpoints}
    if len(versions) != 1:
        raise TargetError("the addresses mix IPv4 and IPv6: give one family")
    if versions == {4}:
        return "ipv4:" + ",".join(f"{ip}:{port}" for ip, port in endpoints)
    return "ipv6:" + ",".join(f"[{ip}]:{port}" for ip, port in endpoints)


def service_config(service: str, retry_methods: Sequence[str]) -> str:
    """Round-robin over every resolved address; ``retry_methods`` of ``service`` (a full proto name, e.g.
    ``tdxsim.v1.VerifierService``) retried on UNAVAILABLE."""
    config: dict[str, object] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if retry_methods:
        config["methodConfig"] = [
            {
                "name": [{"service": service, "method": m} for m in retry_methods],
                "retryPolicy": {
                    "maxAttempts": MAX_ATTEMPTS,
                    "initialBackoff": INITIAL_BACKOFF,
                    "maxBackoff": MAX_BACKOFF,
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    return json.dumps(config, separators=(",", ":"))


def channel_options(service: str, retry_methods: Sequence[str]) -> list[tuple[str, object]]:
    """Channel arguments for a balanced channel: the service config, retries on, and no channel-wide
    cap that would let one replica's failures starve retries to the others."""
    return [
        ("grpc.service_config", service_config(service, retry_methods)),
        ("grpc.enable_retries", 1),
    ]


def tls_name(addresses: Sequence[str]) -> str | None:
    """The host name a TLS channel to ``addresses`` should verify: the first address's host (None when the
    target is a single address gRPC already takes it from)."""
    listed = split_addresses(addresses)
    if len(listed) < 2 and not (listed and listed[0].startswith("dns:")):
        return None
    first = listed[0]
    if first.startswith("dns:"):
        first = first.removeprefix("dns:").lstrip("/")
        first = first.split("/", 1)[-1] if "/" in first else first
    return _host_port(first)[0] if ":" in first else first

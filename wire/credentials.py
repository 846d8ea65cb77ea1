"""Bearer credentials: how every caller of a tdxsim server says who it is (docs/grpc.md "Credentials").

Every credential travels the same way, as gRPC metadata ``authorization: Bearer <credential>``:

- a TD's credential (returned by ``HostService.LaunchTd``/``CreateTd``) binds a guest to that one TD;
- an attestation token (``VerifierService.Attest``) lets a TD fetch its secrets;
- an operator's admin credential authorizes a server's admin API (the host's ``HostService``, the
  verifier's policy, reference value, resource and audit RPCs).

Admin credentials live in files. A server started without one generates it into a fresh 0600 file and
prints ``admin credential: PATH``; a server or client given one refuses a file that is empty, holds only
whitespace, or that other users may read. Clients take ``--admin-credential FILE`` and otherwise read
the file named by ``TDXSIM_ADMIN_CREDENTIAL_FILE``.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import os
import secrets
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import grpc

ENV_ADMIN_CREDENTIAL_FILE = "TDXSIM_ADMIN_CREDENTIAL_FILE"
AUTHORIZATION = "authorization"
BEARER = "Bearer "
#: Longer credentials are refused unread (a credential is a short random string).
MAX_CREDENTIAL_BYTES = 4096


class CredentialError(Exception):
    """An admin credential file that cannot be used; the message is one line naming the file."""


def bearer_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The credential of ``authorization: Bearer <credential>`` in call metadata, or ``""``."""
    for key, value in metadata or ():
        if key.lower() == AUTHORIZATION and isinstance(value, str) and value.startswith(BEARER):
            return value.removeprefix(BEARER).strip()
    return ""


def bearer(context: grpc.ServicerContext) -> str:
    """The bearer credential the caller of this RPC presented, or ``""``."""
    return bearer_from_metadata(context.invocation_metadata())


def same(presented: str, expected: str) -> bool:
    """Constant-time comparison of two credentials."""
    return bool(presented) and hmac.compare_digest(presented.encode(), expected.encode())


def read_credential_file(path: str | Path) -> str:
    """The credential in ``path``; :class:`CredentialError` when the file is missing, not a regular file,
    readable or writable by group or others, too long, empty or whitespace only."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as err:
        raise CredentialError(f"admin credential {path}: {err.strerror or err}") from None
    if not stat.S_ISREG(info.st_mode):
        raise CredentialError(f"admin credential {path}: not a regular file")
    if info.st_mode & 0o077:
        raise CredentialError(
            f"admin credential {path}: mode {stat.S_IMODE(info.st_mode):04o} lets other users read it "
            f"(chmod 600 {path})"
        )
    if info.st_size > MAX_CREDENTIAL_BYTES:
        raise CredentialError(f"admin credential {path}: longer than {MAX_CREDENTIAL_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CredentialError(f"admin credential {path}: {err}") from None
    credential = text.strip()
    if not credential:
        raise CredentialError(f"admin credential {path}: empty (or whitespace only)")
    if any(c.isspace() or not c.isprintable() for c in credential):
        raise CredentialError(f"admin credential {path}: must be one printable word")
    return credential


def generate_credential_file(directory: str | Path | None = None, name: str = "admin-credential") -> Path:
    """A new random credential in a new 0600 file, in ``directory`` or a fresh private temporary folder."""
    folder = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="tdxsim-"))
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(secrets.token_urlsafe(32) + "\n")
    return path


class ServerCredential(NamedTuple):
    path: Path
    credential: str
    generated: bool


def server_admin_credential(path: str | None) -> ServerCredential:
    """A server's admin credential: read from ``path`` when given, else generated into a new 0600 file."""
    if path is not None:
        return ServerCredential(Path(path), read_credential_file(path), False)
    created = generate_credential_file()
    return ServerCredential(created, read_credential_file(created), True)


def discard_generated(credential: ServerCredential) -> None:
    """Remove a credential file the server generated itself (and its private folder), at a clean exit."""
    if credential.generated:
        credential.path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            credential.path.parent.rmdir()


def client_admin_credential(path: str | None) -> str:
    """A client's admin credential: from ``path`` (``--admin-credential``), else from the file named by
    ``TDXSIM_ADMIN_CREDENTIAL_FILE``; :class:`CredentialError` when neither is given or usable."""
    chosen = path or os.environ.get(ENV_ADMIN_CREDENTIAL_FILE)
    if not chosen:
        raise CredentialError(
            "this needs the server's admin credential: --admin-credential FILE or "
            f"{ENV_ADMIN_CREDENTIAL_FILE} (the server prints 'admin credential: PATH' when it starts)"
        )
    return read_credential_file(chosen)


def add_server_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--admin-credential-file",
        metavar="FILE",
        default=None,
        help="file (mode 0600) holding the credential admin RPCs must present as 'authorization: Bearer'; "
        "without it the server generates one into a new 0600 file and prints 'admin credential: PATH' "
        "as its second line",
    )


def add_client_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--admin-credential",
        metavar="FILE",
        default=None,
        help=f"the server's admin credential file (default: ${ENV_ADMIN_CREDENTIAL_FILE}); "
        "the server printed its path as 'admin credential: PATH'",
    )


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, credential: str) -> None:
        self._header = (AUTHORIZATION, f"{BEARER}{credential}")

    def _with_credential(self, details: Any) -> _CallDetails:
        metadata = [*(details.metadata or []), self._header]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._with_credential(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._with_credential(details), request)


def with_bearer(channel: grpc.Channel, credential: str) -> grpc.Channel:
    """``channel`` with ``authorization: Bearer <credential>`` on every call."""
    return grpc.intercept_channel(channel, _Bearer(credential))

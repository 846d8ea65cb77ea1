"""A throwaway PostgreSQL cluster from the machine's own binaries, for the test suite and ``tdxsim fleet``.

``initdb`` into a folder, ``pg_ctl start`` with only a Unix socket (``listen_addresses=''``, the socket in a
0700 folder beside the data, so only its owner, or root, reaches it: no TCP port, no password), databases
created on demand, ``pg_ctl stop -m fast`` at the end. PostgreSQL refuses to run as root: run as root, the
cluster belongs to the ``postgres`` user (never a shared account such as ``nobody``) and lives in a fresh
folder under the system's temporary directory that this user owns, since the caller's folder may be one the
user cannot enter; the binaries run through ``setpriv`` (util-linux) as that user. docs/fleet.md "The
database" says what a real deployment uses instead.

Binaries: ``$TDXSIM_PG_BIN`` if set, else the newest ``/usr/lib/postgresql/VERSION/bin`` (Debian's
``postgresql`` package), else ``initdb`` on the PATH. ``scripts/system-packages.sh`` installs the package
where it is missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg

ENV_BIN = "TDXSIM_PG_BIN"
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
SUPERUSER = "tdxsim"
PORT = 5432  # names the socket file (.s.PGSQL.5432) in the cluster's own folder; no TCP port is opened
START_TIMEOUT = 60


FOLDER_PREFIX = "tdxsim-pg-"


class ClusterError(RuntimeError):
    """The cluster cannot be made, started or stopped; the message is one line saying why."""


def find_binaries() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or None when this machine has none."""
    configured = os.environ.get(ENV_BIN)
    candidates = [Path(configured)] if configured else []

    def version(folder: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in folder.parent.name.split(".") if p.isdigit())

    candidates += sorted(Path("/").glob(DEBIAN_BIN_GLOB.lstrip("/")), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def missing_reason() -> str:
    return (
        f"no PostgreSQL binaries (initdb, pg_ctl) in ${ENV_BIN}, {DEBIAN_BIN_GLOB} or on the PATH: "
        "install Debian's postgresql package (scripts/system-packages.sh does)"
    )


@dataclass(frozen=True)
class _Owner:
    uid: int
    gid: int
    name: str


def _owner() -> _Owner | None:
    """The unprivileged user the cluster runs as when this process is root; None: run as ourselves."""
    if os.geteuid() != 0:
        return None
    # Only the postgres user (Debian's package creates it): under a shared account such as nobody, every other
    # process of that account would be superuser of a database that holds signing keys and secrets.
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise ClusterError(
            "running as root and no postgres user exists to run PostgreSQL as "
            "(install Debian's postgresql package, or run as an unprivileged user)"
        ) from None
    return _Owner(entry.pw_uid, entry.pw_gid, "postgres")


class LocalCluster:
    """One cluster: data in ``root/data``, the socket in ``root/socket``, the server log in ``root/log``."""

    def __init__(self, root: Path, binaries: Path, *, durable: bool = True) -> None:
        self.root = root
        self.binaries = binaries
        self.durable = durable
        self._owner = _owner()

    @classmethod
    def create(cls, parent: Path | None = None, *, durable: bool = True) -> LocalCluster:
        """``initdb`` a new cluster in a fresh folder under ``parent`` (as root: under the temporary
        directory, owned by the unprivileged user). Not started."""
        binaries = find_binaries()
        if binaries is None:
            raise ClusterError(missing_reason())
        owner = _owner()
        base = None if owner is not None else parent
        root = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=base))
        cluster = cls(root, binaries, durable=durable)
        for sub in ("data", "socket"):
            (root / sub).mkdir(mode=0o700)
        if owner is not None:
            for path in (root, root / "data", root / "socket"):
                os.chown(path, owner.uid, owner.gid)
        cluster._run(
            "initdb",
            "-D",
            str(root / "data"),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            *(() if durable else ("--no-sync",)),
        )
        return cluster

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log_file(self) -> Path:
        return self.root / "log"

    def url(self, dbname: str = "postgres") -> str:
        """A libpq URL for ``dbname`` through the cluster's Unix socket."""
        return f"postgresql://{SUPERUSER}@/{dbname}?host={self.socket_dir}&port={PORT}"

    def _run(self, tool: str, *args: str, timeout: float = START_TIMEOUT) -> str:
        command = [str(self.binaries / tool), *args]
        owner = self._owner
        if owner is not None:
            # setpriv, not subprocess's user/group arguments: those make Python fork() instead of vfork(),
            # and a fork() in a process with gRPC threads runs gRPC's fork handlers, which may crash it.
            command = [
                "setpriv",
                f"--reuid={owner.uid}",
                f"--regid={owner.gid}",
                "--clear-groups",
                "--",
                *command,
            ]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=self.root,
                check=False,
                env={**os.environ, "LC_ALL": "C"},
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise ClusterError(f"{tool}: {err}") from None
        if done.returncode != 0:
            lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            raise ClusterError(f"{tool} failed: {lines[-1] if lines else f'exit {done.returncode}'}")
        return str(done.stdout)

    def start(self) -> None:
        settings = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "unix_socket_permissions": "0700",
            "port": str(PORT),
            "shared_buffers": "16MB",
            "max_connections": "100",
            "dynamic_shared_memory_type": "posix",
        }
        if not self.durable:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        options = " ".join(f"-c {k}={v}" for k, v in settings.items())
        if self._owner is not None and not self.log_file.exists():
            self.log_file.touch(mode=0o600)
            os.chown(self.log_file, self._owner.uid, self._owner.gid)
        self._run(
            "pg_ctl", "start", "-D", str(self.root / "data"), "-l", str(self.log_file), "-w",
            "-t", str(START_TIMEOUT), "-o", options,
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the server (fast: active sessions are ended, what they committed stays); no-op if stopped."""
        if self.running():
            self._run("pg_ctl", "stop", "-D", str(self.root / "data"), "-m", "fast", "-w")

    def running(self) -> bool:
        return (self.root / "data" / "postmaster.pid").exists()

    def pid(self) -> int | None:
        try:
            return int((self.root / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def create_database(self, name: str) -> str:
        """Create database ``name`` (a plain identifier) and return its URL."""
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
        return self.url(name)

    def destroy(self) -> None:
        """Stop the server and delete its folder: only a folder ``create`` made (``tdxsim-pg-*`` holding
        ``data/``), so a hand-edited ``fleet.json`` cannot point this at any other folder."""
        if not (self.root.name.startswith(FOLDER_PREFIX) and (self.root / "data").is_dir()):
            raise ClusterError(f"{self.root} is not a cluster folder tdxsim made; left as it is")
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

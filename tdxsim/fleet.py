"""``tdxsim fleet``: many simulated platforms and verifier replicas on one machine, in one command.

    tdxsim fleet up --hosts N --verifiers M [--postgres URL] [--tcb-mix] [--no-pccs] --dir DIR [--json]
    tdxsim fleet status --dir DIR [--json]
    tdxsim fleet down --dir DIR

``up`` starts, on this machine, what a cluster of confidential nodes with one verification service has:

- one simulated Intel (``tdxsim pki init``): a platform model per host, each with its own FMSPC
  (``90C06F0000NN``) and PCK leaf, all under one root key; with ``--tcb-mix`` every second host is at
  TCB level OutOfDate and every fourth at SWHardeningNeeded (the verifier's default policy accepts only
  UpToDate, so their guests are refused with ``TCB_STATUS_NOT_ACCEPTED`` until a policy says otherwise);
- its PCCS (``tdxsim pcs serve``), one per platform model, unless ``--no-pccs``;
- a PostgreSQL database: ``--postgres URL``, or a throwaway cluster from the machine's binaries in a folder of
  its own (``tdxsim.pgcluster``: Unix socket only, as the ``postgres`` user when run as root), stopped and
  deleted by ``down``;
- N hosts (``tdxsim host --pki …/host-I --pki-platform I``) and M verifier replicas sharing the database
  (``tdxsim verifier --db postgresql://…``), trusting the root and holding every model's collateral;

then writes ``DIR/fleet.json``: every process's role, name, address, pid and log, the admin credential file
every host and verifier accepts (``DIR/admin-credential``), the database and the verifier target a guest
passes as ``--verifier`` (comma list: calls go round-robin, docs/fleet.md). Logs are ``DIR/logs/NAME.out``
and ``.err``. A process that fails to start stops everything started before it (one stderr line, exit 2).

``status`` checks every process: alive (its pid runs a tdxsim command) and answering (gRPC health for hosts
and verifiers, a TCP connect for a PCCS, a query for the database); exit 0 when all are healthy, else 1. A
verifier whose database cannot be reached is UNHEALTHY ``health NOT_SERVING``.
``down`` stops them (SIGTERM, then SIGKILL after 10 s), then the database it started; exit 0.

``start_verifiers`` and ``start_fleet`` are the reusable pieces: a benchmark starts replicas on one database
the same way (docs/fleet.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from attest.intel.pcs_directory import PkiError, PkiOptions, init_pki
from tdxsim.pgcluster import ClusterError, LocalCluster, find_binaries
from wire.credentials import generate_credential_file

FLEET_FILE = "fleet.json"
FORMAT = "tdxsim-fleet/1"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
DATABASE = "verifier"
#: Platform model I's FMSPC: the simulated model's family and model bytes, then I + 1.
FMSPC_PREFIX = "90C06F"


class FleetError(RuntimeError):
    """A fleet cannot be started, read or stopped; the message is one line saying why."""


@dataclass
class Member:
    """One process of the fleet, as ``fleet.json`` lists it."""

    role: str  # "host", "verifier", "pccs"
    name: str
    pid: int
    address: str
    log: str
    admin_credential: str = ""
    #: Role-specific facts: a host's platform (fmspc, tcb_status, pck serial), a PCCS's platform model.
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlatformModel:
    index: int
    pki: Path
    fmspc: str
    tcb_status: str


def _tcb_status(index: int, mix: bool) -> str:
    if not mix or index % 2 == 0:
        return "UpToDate"
    return "SWHardeningNeeded" if index % 4 == 3 else "OutOfDate"


def make_platforms(pki_root: Path, count: int, *, tcb_mix: bool = False) -> list[PlatformModel]:
    """``count`` platform models of one simulated Intel in ``pki_root/host-I``: one seed and anchor time (so
    one root key), FMSPC ``90C06F0000NN``, PCK leaf I of model I (each model issues I + 1 leaves, so host I's
    leaf is distinct from every other host's)."""
    seed = secrets.token_bytes(16)
    now = int(time.time())
    models = []
    for index in range(count):
        fmspc = f"{FMSPC_PREFIX}{index + 1:06X}"
        status = _tcb_status(index, tcb_mix)
        options = PkiOptions(now=now, seed=seed, platforms=index + 1, fmspc=fmspc, tcb_status=status)
        directory = pki_root / f"host-{index}"
        try:
            init_pki(directory, options)
        except PkiError as err:
            raise FleetError(f"pki for host {index}: {err}") from None
        models.append(PlatformModel(index, directory, fmspc, status))
    return models


def _alive(pid: int) -> bool:
    """True when ``pid`` runs a tdxsim command (not a stranger that reused a dead member's pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[-1].split()[0] == "Z":
                return False
    except OSError:
        return False
    return b"tdxsim" in cmdline


def spawn(role: str, name: str, arguments: Sequence[str], logs: Path, *, wants_credential: bool) -> Member:
    """Start ``python -m tdxsim.cli ARGUMENTS`` in a session of its own (it outlives this process), stdout
    and stderr to ``logs/NAME.out`` / ``.err``; wait for ``listening on HOST:PORT`` (and ``admin credential:
    PATH`` when ``wants_credential``). A process that exits or stays silent is a ``FleetError`` quoting the
    last line of its stderr."""
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / f"{name}.out", logs / f"{name}.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tdxsim.cli", *arguments],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    deadline = time.monotonic() + START_TIMEOUT
    needed = 2 if wants_credential else 1
    while True:
        lines = out_path.read_text().splitlines()
        if len(lines) >= needed and lines[0].startswith("listening on "):
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            last = [line for line in err_path.read_text().splitlines() if line.strip()]
            why = last[-1] if last else f"exit {proc.returncode}"
            raise FleetError(f"{name} did not start: {why}")
        time.sleep(0.05)
    credential = lines[1].removeprefix("admin credential: ") if wants_credential else ""
    return Member(role, name, proc.pid, lines[0].removeprefix("listening on "), str(out_path), credential)


def start_verifiers(
    count: int,
    *,
    db: str,
    roots: Sequence[Path],
    collaterals: Sequence[Path],
    logs: Path,
    admin_credential_file: Path,
    first_index: int = 0,
    extra: Sequence[str] = (),
) -> list[Member]:
    """``count`` verifier replicas on database ``db`` (a ``postgresql://`` URL, or one SQLite file for one
    replica), each on 127.0.0.1:0; the caller stops them (``stop_members``) even when this raises."""
    started: list[Member] = []
    for index in range(first_index, first_index + count):
        arguments = ["verifier", "--listen", "127.0.0.1:0", "--db", db]
        arguments += [a for root in roots for a in ("--root", str(root))]
        arguments += [a for coll in collaterals for a in ("--collateral", str(coll))]
        arguments += ["--admin-credential-file", str(admin_credential_file), *extra]
        started.append(spawn("verifier", f"verifier-{index}", arguments, logs, wants_credential=True))
    return started


def start_hosts(
    models: Sequence[PlatformModel], *, logs: Path, admin_credential_file: Path, phys_mem: str
) -> list[Member]:
    """One host per platform model: ``tdxsim host --pki MODEL --pki-platform INDEX``."""
    started: list[Member] = []
    for model in models:
        arguments = [
            "host", "--listen", "127.0.0.1:0", "--pki", str(model.pki), "--pki-platform", str(model.index),
            "--phys-mem", phys_mem, "--admin-credential-file", str(admin_credential_file),
        ]  # fmt: skip
        member = spawn("host", f"host-{model.index}", arguments, logs, wants_credential=True)
        member.details = {"fmspc": model.fmspc, "tcb_status": model.tcb_status, "pki": str(model.pki)}
        started.append(member)
    return started


def start_pccs(models: Sequence[PlatformModel], *, logs: Path) -> list[Member]:
    started: list[Member] = []
    for model in models:
        arguments = ["pcs", "serve", "--pki", str(model.pki), "--listen", "127.0.0.1:0"]
        member = spawn("pccs", f"pccs-{model.index}", arguments, logs, wants_credential=False)
        member.details = {"fmspc": model.fmspc, "url": f"http://{member.address}"}
        started.append(member)
    return started


def stop_members(members: Sequence[Member], timeout: float = STOP_TIMEOUT) -> list[str]:
    """SIGTERM every member that is alive, SIGKILL those still alive after ``timeout``; the names of those
    that had to be killed."""
    for member in members:
        if _alive(member.pid):
            _signal(member.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(m.pid) for m in members):
        _reap()
        time.sleep(0.05)
    killed = []
    for member in members:
        if _alive(member.pid):
            _signal(member.pid, signal.SIGKILL)
            killed.append(member.name)
    _reap()
    return killed


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap() -> None:
    """Collect exited children of this process (the members ``up`` started, when it is still running)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


@dataclass
class Fleet:
    """What ``fleet.json`` holds."""

    directory: str
    admin_credential: str
    members: list[Member]
    database: dict[str, Any]
    verifier_target: str
    format: str = FORMAT

    def save(self) -> None:
        path = Path(self.directory) / FLEET_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2) + "\n")
        temporary.replace(path)

    @classmethod
    def load(cls, directory: Path) -> Fleet:
        path = directory / FLEET_FILE
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise FleetError(f"{path}: no fleet here ({getattr(err, 'strerror', None) or err})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise FleetError(f"{path}: not a {FORMAT} file")
        try:
            members = [Member(**m) for m in doc["members"]]
            return cls(
                doc["directory"], doc["admin_credential"], members, doc["database"], doc["verifier_target"]
            )
        except (KeyError, TypeError) as err:
            raise FleetError(f"{path}: damaged ({err})") from None


def start_fleet(
    directory: Path,
    *,
    hosts: int,
    verifiers: int,
    postgres: str | None = None,
    tcb_mix: bool = False,
    pccs: bool = True,
    phys_mem: str = "1G",
) -> Fleet:
    """Start a whole fleet in ``directory`` and write its ``fleet.json`` (see the module docstring); on a
    failure everything started is stopped again and a ``FleetError`` says why."""
    if hosts < 1 or verifiers < 1:
        raise FleetError("--hosts and --verifiers must be at least 1")
    if (directory / FLEET_FILE).exists():
        raise FleetError(f"{directory / FLEET_FILE} exists: 'tdxsim fleet down --dir {directory}' first")
    if postgres is not None and _carries_password(postgres):
        raise FleetError(
            "--postgres: the url carries a password, which every verifier's command line would show to all "
            "local users: give it through PGPASSFILE or PGPASSWORD instead"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "logs").mkdir(exist_ok=True)
        admin = directory / "admin-credential"
        if not admin.exists():
            generate_credential_file(directory)
    except OSError as err:
        raise FleetError(f"{directory}: {err.strerror or err}") from None
    logs = directory / "logs"
    members: list[Member] = []
    cluster: LocalCluster | None = None
    try:
        if postgres is None:
            if find_binaries() is None:
                raise FleetError("no PostgreSQL binaries: give --postgres URL or install Debian's postgresql")
            cluster = LocalCluster.create(directory)
            cluster.start()
            url = cluster.create_database(DATABASE)
            database: dict[str, Any] = {
                "url": url,
                "managed": True,
                "cluster": str(cluster.root),
                "binaries": str(cluster.binaries),
                "pid": cluster.pid(),
            }
        else:
            url = postgres
            database = {"url": None, "managed": False, "location": _redacted(postgres)}
        models = make_platforms(directory / "pki", hosts, tcb_mix=tcb_mix)
        if pccs:
            members += start_pccs(models, logs=logs)
        members += start_hosts(models, logs=logs, admin_credential_file=admin, phys_mem=phys_mem)
        members += start_verifiers(
            verifiers,
            db=url,
            roots=[m.pki / "root_ca.pem" for m in models],
            collaterals=[m.pki / "collateral.json" for m in models],
            logs=logs,
            admin_credential_file=admin,
        )
    except BaseException as err:
        stop_members(members)
        if cluster is not None:
            cluster.destroy()
        if isinstance(err, ClusterError):
            raise FleetError(f"postgresql: {err}") from None
        raise
    target = ",".join(m.address for m in members if m.role == "verifier")
    fleet = Fleet(str(directory.resolve()), str(admin.resolve()), members, database, target)
    fleet.save()
    return fleet


def _redacted(url: str) -> str:
    from attest.verifier.store.postgres import redacted

    return redacted(url)


def _carries_password(url: str) -> bool:
    from attest.verifier.store.postgres import carries_password

    return carries_password(url)


# ---- health ------------------------------------------------------------------------------------------------


def _grpc_healthy(address: str) -> str:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
        except grpc.RpcError as err:
            return f"health check failed: {err.code().name}"
    statuses = health_pb2.HealthCheckResponse
    return "" if reply.status == statuses.SERVING else f"health {statuses.ServingStatus.Name(reply.status)}"


def _tcp_healthy(address: str) -> str:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            return ""
    except OSError as err:
        return f"connect failed: {err.strerror or err}"


def _database_healthy(url: str) -> str:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as err:
        return f"query failed: {str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}"
    return ""


def member_problem(member: Member) -> str:
    """ "" when ``member`` is healthy, else one line saying what is wrong."""
    if not _alive(member.pid):
        return "not running"
    if member.role in ("host", "verifier"):
        return _grpc_healthy(member.address)
    return _tcp_healthy(member.address)


def fleet_status(fleet: Fleet) -> list[dict[str, Any]]:
    rows = []
    for member in fleet.members:
        problem = member_problem(member)
        rows.append(
            {"role": member.role, "name": member.name, "pid": member.pid, "address": member.address,
             "healthy": not problem, "problem": problem}
        )  # fmt: skip
    db = fleet.database
    if db.get("managed"):
        pid = db.get("pid") or 0
        problem = "not running" if not (pid and _pid_exists(pid)) else _database_healthy(db["url"])
        rows.append(
            {"role": "postgres", "name": "postgres", "pid": pid, "address": db["url"], "healthy": not problem,
             "problem": problem}
        )  # fmt: skip
    return rows


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_fleet(fleet: Fleet) -> list[str]:
    """Stop every member, then the database cluster ``up`` started (and delete its folder); the names of
    members that had to be killed."""
    order = {"verifier": 0, "host": 1, "pccs": 2}
    killed = stop_members(sorted(fleet.members, key=lambda m: order.get(m.role, 3)))
    db = fleet.database
    if db.get("managed") and db.get("cluster"):
        cluster = LocalCluster(Path(db["cluster"]), Path(db["binaries"]))
        try:
            cluster.destroy()
        except ClusterError as err:
            raise FleetError(f"postgresql: {err}") from None
    return killed


# ---- command line ------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)
    up = sub.add_parser(
        "up",
        help="start a fleet: PCS, PCCS, PostgreSQL, hosts, verifier replicas",
        description="Start a fleet on this machine and write DIR/fleet.json (docs/fleet.md).",
    )
    up.add_argument("--dir", required=True, type=Path, help="where fleet.json, keys, PKI and logs go")
    up.add_argument(
        "--hosts", type=int, default=2, metavar="N", help="simulated platforms, one host process each (2)"
    )
    up.add_argument(
        "--verifiers", type=int, default=2, metavar="M", help="verifier replicas on one database (2)"
    )
    up.add_argument(
        "--postgres",
        metavar="URL",
        help="an existing PostgreSQL database (postgresql://…) instead of a throwaway cluster in a folder of "
        "its own",
    )
    up.add_argument(
        "--tcb-mix",
        action="store_true",
        help="every second host at TCB level OutOfDate, every fourth at SWHardeningNeeded",
    )
    up.add_argument("--no-pccs", action="store_true", help="do not start a PCCS per platform model")
    up.add_argument(
        "--phys-mem", default="1G", metavar="SIZE", help="each host's simulated physical memory (1G)"
    )
    up.add_argument("--json", action="store_true", help="print fleet.json instead of a summary")
    for name, text in (("status", "check every process of a fleet"), ("down", "stop a fleet")):
        action = sub.add_parser(name, help=text)
        action.add_argument("--dir", required=True, type=Path, help="the fleet's folder (fleet.json)")
        action.add_argument("--json", action="store_true", help="print JSON")


def _fail(message: str) -> int:
    print(f"tdxsim fleet: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    try:
        if args.fleet_command == "up":
            fleet = start_fleet(
                args.dir,
                hosts=args.hosts,
                verifiers=args.verifiers,
                postgres=args.postgres,
                tcb_mix=args.tcb_mix,
                pccs=not args.no_pccs,
                phys_mem=args.phys_mem,
            )
            if args.json:
                print(json.dumps(asdict(fleet), indent=2))
            else:
                for m in fleet.members:
                    print(f"{m.role:<9} {m.name:<12} {m.address:<22} pid {m.pid}")
                print(f"database  {fleet.database.get('url') or fleet.database.get('location')}")
                print(f"verifiers --verifier {fleet.verifier_target}")
                print(f"admin credential {fleet.admin_credential}; fleet.json in {fleet.directory}")
            return 0
        fleet = Fleet.load(args.dir)
        if args.fleet_command == "status":
            rows = fleet_status(fleet)
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                for row in rows:
                    state = "healthy" if row["healthy"] else f"UNHEALTHY: {row['problem']}"
                    print(f"{row['role']:<9} {row['name']:<12} pid {row['pid']:<8} {row['address']}  {state}")
            return 0 if all(row["healthy"] for row in rows) else 1
        killed = stop_fleet(fleet)
        (Path(fleet.directory) / FLEET_FILE).rename(Path(fleet.directory) / "fleet.stopped.json")
        summary = {"stopped": len(fleet.members), "killed": killed}
        print(json.dumps(summary) if args.json else f"stopped {len(fleet.members)} processes" + (
            f" (killed {', '.join(killed)})" if killed else ""))  # fmt: skip
        return 0
    except FleetError as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        return 130

"""``tdxsim soak``: the whole stack under hostile load for minutes, then a verdict (docs/cli.md
"``tdxsim soak``").

It starts its own simulated Intel PCS (``tdxsim pki init``), one host provisioned from it and one verifier,
each as a separate process with the admin credential it prints as its second line, and then, until the time
is up:

- several threads send hostile calls to every method of every service (``tdxsim.hostile``: edge values,
  every kind of credential, raw and undecodable bytes, stalled calls);
- guest processes launch TDs, work in private and shared memory and attest at the verifier for a secret
  (``tdxsim guest … run``), some of them SIGKILLed halfway;
- the verifier is SIGKILLed and restarted on the same database and credential: the attestation token issued
  before still fetches its secret, the used nonce stays used and a nonce issued before is still good;
- sentinel TDs hold unique markers in private memory (``tdxsim.arena``); one is retired and replaced now and
  then, so its frames are reused while its marker must stay secret.

It checks, all along and at the end: no call ends INTERNAL or UNKNOWN; no server process dies unexpectedly;
no invariant breaks (no response carries a marker or the secret in clear, sentinels keep their data and page
counts, the host cannot read private memory, a killed guest's TD goes with its lifeline, the counters agree
with the TDs, and once every TD is destroyed every KeyID and every physical frame is free); and the servers'
memory stays bounded: resident size at the end at most 1.5 times what it was after warm-up. Warm-up first
makes one TD accept the host's whole simulated physical memory and destroys it, so the baseline already
includes the simulated DRAM and later growth is the servers' own.

Progress goes to stderr every 10 s; the report to stdout, as a table or (``--json``) one JSON document.
Exit status: 0 everything held; 1 something did not (the report says what, with reproducers); 2 unusable
arguments or a stack that does not start; 130 interrupted (Ctrl-C or SIGTERM: everything it started is
stopped and the partial report printed). Every process it starts is gone when it ends.

    tdxsim soak                            five minutes, then a table
    tdxsim soak --minutes 30 --json        longer, one JSON document
    tdxsim soak --seconds 30 --seed 7      the same random choices as a run whose report named seed 7
                                           (the threads' interleaving differs from run to run)

Every INTERNAL/UNKNOWN and every violation comes with a reproducer: the method's path, the kind of credential
(none, own, other, admin, junk) and the request's bytes in hex; sending them again, e.g.
``channel.unary_unary(path)(bytes.fromhex(payload_hex), metadata=[("authorization", "Bearer …")])``, gets
the same answer.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import grpc

from guest.image import expected_mrtd, parse_image
from tdxsim.arena import Arena, Probe
from tdxsim.hostile import NEVER, Hostile, Outcome, breach, draw
from wire.credentials import read_credential_file, with_bearer
from wire.v1 import attestation_pb2, attestation_pb2_grpc, guest_pb2, guest_pb2_grpc, host_pb2

MIB = 1 << 20
PHYS_MEM = 512 * MIB
POLICY = "soak"
SECRET_PATH = "soak/key/disk"
GUEST_PREFIX = "soak-guest"
PROBE_NAME = "soak-probe"
PROGRESS_EVERY = 10.0
RECONCILE_EVERY = 2.0
SENTINEL_EVERY = 30.0
#: A killed guest's TD must be gone this long after its guest died (the Attach lifeline).
LIFELINE_GRACE = 20.0
RSS_BOUND = 1.5
START_TIMEOUT = 60.0
IMAGE = {
    "name": "soak",
    "memory": "64M",
    "attributes": {"debug": False, "sept_ve_disable": True},
    "xfam": "0x61ae7",
    "payload": [
        {"gpa": "0x100000", "text": "tdxsim soak kernel\n" * 200, "measure": True},
        {"gpa": "0x200000", "text": "console=hvc0 tdxsim.soak=1", "measure": False},
    ],
}
PRIVATE_TEXT = "soak guest private work"
WORKLOAD = f"""\
accept 0x800000 2M
write 0x800000 "text:{PRIVATE_TEXT}"
read 0x800000 {len(PRIVATE_TEXT)} expect "text:{PRIVATE_TEXT}"
convert shared 0x800000 2M
read shared:0x800000 16 expect fill:0*16
extend 3 "text:soak guest"
sleep 0.5
attest VERIFIER policy soak secret soak/key/disk expect "text:SECRET"
"""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM."""


def _tdxsim(*args: str) -> list[str]:
    command = [sys.executable, "-m", "tdxsim.cli", *args]
    # Children die with the soak even if it is SIGKILLed (PR_SET_PDEATHSIG; the soak starts every process
    # from its main thread, which lives as long as it does).
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *command] if setpriv else command


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---- processes ---------------------------------------------------------------------------------------------


@dataclass
class Server:
    role: str
    args: list[str]
    proc: subprocess.Popen[str]
    address: str
    admin_file: str
    log: Path
    #: Set when the soak itself stops or kills it (anything else is a crash).
    expected_exit: bool = False


class Processes:
    """Every process the soak starts: started from the main thread, in their own process group (a Ctrl-C at
    the terminal reaches the soak only, which stops them itself), stopped however the soak ends."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.env = {**os.environ, "TMPDIR": str(work), "PYTHONUNBUFFERED": "1", "GRPC_VERBOSITY": "ERROR"}
        self.env.pop("TDXSIM_ADMIN_CREDENTIAL_FILE", None)
        self.all: list[subprocess.Popen[str]] = []
        self._logs: list[IO[str]] = []

    def popen(
        self, command: list[str], log: Path, stdout: int | None = subprocess.PIPE
    ) -> subprocess.Popen[str]:
        err = log.open("a")
        self._logs.append(err)
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=err,
            text=True,
            env=self.env,
            start_new_session=True,
        )
        self.all.append(proc)
        return proc

    def start_server(self, role: str, args: list[str]) -> Server:
        log = self.work / f"{role}.stderr"
        proc = self.popen(_tdxsim(role, *args), log)
        lines = _first_lines(proc, 2, START_TIMEOUT)
        if len(lines) < 2 or not lines[0].startswith("listening on "):
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"tdxsim {role} did not start: {lines} {tail.strip()}")
        # Nothing else comes on stdout; drain it anyway so a write can never block the server.
        threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
        return Server(
            role,
            args,
            proc,
            lines[0].removeprefix("listening on "),
            lines[1].removeprefix("admin credential: "),
            log,
        )

    def stop(self, proc: subprocess.Popen[str], sig: int = signal.SIGTERM, wait: float = 10.0) -> int | None:
        if proc.poll() is None:
            try:
                proc.send_signal(sig)
                return proc.wait(wait)
            except subprocess.TimeoutExpired:
                proc.kill()
        try:
            return proc.wait(5)
        except subprocess.TimeoutExpired:
            return None

    def stop_all(self) -> None:
        for proc in self.all:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in self.all:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for log in self._logs:
            log.close()


def _first_lines(proc: subprocess.Popen[str], count: int, timeout: float) -> list[str]:
    """The first ``count`` stdout lines, or fewer when the process ends or ``timeout`` passes first."""
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for _ in range(count):
            line = proc.stdout.readline()
            if not line:
                return
            lines.append(line.strip())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return list(lines)


def _drain(stream: IO[str] | None) -> None:
    if stream is not None:
        for _ in stream:
            pass


# ---- statistics --------------------------------------------------------------------------------------------


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    modes: collections.Counter[str] = field(default_factory=collections.Counter)
    services: collections.Counter[str] = field(default_factory=collections.Counter)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    internal_unknown: int = 0
    #: INTERNAL/UNKNOWN by method and message: which fault each one is.
    internal_causes: collections.Counter[str] = field(default_factory=collections.Counter)
    examples: list[dict[str, object]] = field(default_factory=list)
    #: Statuses a client could not read: the refusal's trailers outgrew gRPC's metadata limit.
    lost_statuses: int = 0
    lost_examples: list[dict[str, object]] = field(default_factory=list)
    client_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    #: The slowest calls that were not stalled on purpose: (seconds, call, status).
    slowest: list[tuple[float, str, str]] = field(default_factory=list)

    def record(self, hostile: Hostile, outcome: Outcome, arena: Arena) -> None:
        why = breach(hostile, outcome)
        with self.lock:
            self.requests += 1
            self.modes[hostile.mode] += 1
            self.services[hostile.method.service.rsplit(".", 1)[-1]] += 1
            self.statuses[outcome.code.name] += 1
            if outcome.code in NEVER:
                self.internal_unknown += 1
                cause = f"{hostile.method.label} {hostile.mode}: {outcome.code.name} {outcome.details[:80]}"
                self.internal_causes[cause] += 1
                if len(self.examples) < 20:
                    self.examples.append({**hostile.reproducer(), "status": outcome.text()})
            if hostile.mode != "stall" and outcome.seconds > 1.0:
                self.slowest.append((round(outcome.seconds, 2), hostile.describe(), outcome.text()[:120]))
                self.slowest = sorted(self.slowest, reverse=True)[:5]
            lost = "metadata size exceeds" in outcome.details
            if lost:
                self.lost_statuses += 1
                if len(self.lost_examples) < 3:
                    self.lost_examples.append({**hostile.reproducer(), "status": outcome.text()[:300]})
        if why is not None and outcome.code not in NEVER:
            arena.finding("contract", f"{hostile.describe()}: {why}", hostile.reproducer())


# ---- the soak ----------------------------------------------------------------------------------------------


@dataclass
class Guest:
    number: int
    proc: subprocess.Popen[str]
    started: float
    kill_at: float | None
    out: Path


class Soak:
    def __init__(self, args: argparse.Namespace, seconds: float, seed: int, work: Path) -> None:
        self.args = args
        self.seconds = seconds
        self.seed = seed
        self.work = work
        self.chaos = random.Random(f"{seed}:chaos")
        self.procs = Processes(work)
        self.tally = Tally()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.host: Server | None = None
        self.verifier: Server | None = None
        self.arena: Arena | None = None
        self.probe: Probe | None = None
        self.secret = b"soak secret " + secrets.token_hex(16).encode()
        self.crashes: list[dict[str, object]] = []
        self.guests: list[Guest] = []
        self.guest_results: collections.Counter[str] = collections.Counter()
        self.guest_failures: collections.Counter[str] = collections.Counter()
        self.killed: dict[str, float] = {}
        self.verifier_restarts = 0
        self.sentinels_retired = 0
        self.rss: dict[str, dict[str, int]] = {"host": {}, "verifier": {}}
        self.end_state: dict[str, int] = {}
        self.started = time.monotonic()
        self.phase = "starting"
        self.interrupted = False
        self.notes: list[str] = []
        self._guest_number = 0

    # ---- setup ----------------------------------------------------------------------------------------

    def start_stack(self) -> None:
        pki = self.work / "pki"
        made = subprocess.run(
            [sys.executable, "-m", "tdxsim.cli", "pki", "init", str(pki)],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.procs.env,
        )
        if made.returncode:
            raise RuntimeError(f"tdxsim pki init failed: {made.stderr.strip()}")
        self.host = self.procs.start_server(
            "host", ["--listen", "127.0.0.1:0", "--pki", str(pki), "--phys-mem", str(PHYS_MEM)]
        )
        verifier_args = [
            "--db",
            str(self.work / "verifier.db"),
            "--root",
            str(pki / "root_ca.pem"),
            "--collateral",
            str(pki / "collateral.json"),
            "--nonce-ttl",
            "3600",
            "--token-ttl",
            "3600",
        ]
        self.verifier = self.procs.start_server("verifier", ["--listen", "127.0.0.1:0", *verifier_args])
        # Restarts reuse the credential the first verifier generated (its file goes when it stops cleanly,
        # so keep a copy) and the port it bound.
        kept = self.work / "verifier-admin-credential"
        kept.write_text(read_credential_file(self.verifier.admin_file) + "\n")
        kept.chmod(0o600)
        self.verifier.args = [
            "--listen",
            self.verifier.address,
            *verifier_args,
            "--admin-credential-file",
            str(kept),
        ]
        self.rss["host"]["start"] = rss_kib(self.host.proc.pid)
        self.rss["verifier"]["start"] = rss_kib(self.verifier.proc.pid)
        self.arena = Arena(
            self.host.address,
            read_credential_file(self.host.admin_file),
            self.verifier.address,
            read_credential_file(kept),
            fuzz_tds=4,
            sentinels=2,
            guest_prefixes=(GUEST_PREFIX, PROBE_NAME),
            protected={POLICY, SECRET_PATH},
        )

    def prepare(self) -> None:
        """Simulated DRAM touched once, the relying party's policy and secret, sentinels, the probe."""
        arena = self._arena()
        self.fill_memory()
        image = parse_image(IMAGE).image
        (self.work / "image.json").write_text(json.dumps(IMAGE))
        mrtd = expected_mrtd(image).hex()
        assert arena.verifier is not None
        admin = attestation_pb2_grpc.VerifierServiceStub(with_bearer(arena.verifier, arena.verifier_admin))
        policy = {"reference_values": {"mr_td": [mrtd]}, "accepted_tcb_statuses": ["UpToDate"]}
        admin.SetPolicy(
            attestation_pb2.SetPolicyRequest(name=POLICY, policy_json=json.dumps(policy)), timeout=30
        )
        resource = {"attestation_policies": [POLICY], "claims": {"mr_td": [mrtd]}}
        admin.PutResource(
            attestation_pb2.PutResourceRequest(
                path=SECRET_PATH, secret=self.secret, policy_json=json.dumps(resource)
            ),
            timeout=30,
        )
        arena.secrets.append(self.secret)
        self.write_workload()
        arena.setup()
        self.probe = Probe(self._host().address, arena.host_admin, image, PROBE_NAME)
        evidence = self.probe.attest(arena.verifier, POLICY)
        if self.probe.fetch(arena.verifier, SECRET_PATH) != self.secret:
            arena.finding("persistence", "the probe's secret does not open to the right value")
        arena.tokens.append(evidence.token)
        arena.corpus.update(
            quote=[evidence.quote],
            event_log=[evidence.event_log],
            nonce=[evidence.nonce],
            tee_public_key=[evidence.tee_public_key],
        )
        arena.reconcile()

    def fill_memory(self) -> None:
        """One TD accepts physical memory until there is none left, then is destroyed: afterwards every
        simulated frame has been touched once, so the RSS baseline includes the simulated DRAM."""
        arena = self._arena()
        stats = arena.stats()
        size = stats.phys_pages_total * 4096 // (2 * MIB) * (2 * MIB)
        td = arena.admin.CreateTd(host_pb2.CreateTdRequest(memory_bytes=size, name="soak-fill"), timeout=30)
        try:
            arena.admin.FinalizeTd(host_pb2.FinalizeTdRequest(td_id=td.td_id), timeout=30)
            guest = guest_pb2_grpc.TdGuestServiceStub(with_bearer(arena.host, td.credential))
            for gpa in range(0, size, 32 * MIB):
                request = guest_pb2.AcceptPagesRequest(
                    td_id=td.td_id, ranges=[guest_pb2.GpaRange(gpa=gpa, length=min(32 * MIB, size - gpa))]
                )
                try:
                    guest.AcceptPages(request, timeout=120)
                except grpc.RpcError:
                    break  # out of physical memory: every frame is in use
        finally:
            arena.destroy(td.td_id)

    def write_workload(self) -> None:
        text = WORKLOAD.replace("VERIFIER", self._verifier().address).replace("SECRET", self.secret.decode())
        (self.work / "attest.tdx").write_text(text)

    # ---- helpers --------------------------------------------------------------------------------------

    def _arena(self) -> Arena:
        assert self.arena is not None
        return self.arena

    def _host(self) -> Server:
        assert self.host is not None
        return self.host

    def _verifier(self) -> Server:
        assert self.verifier is not None
        return self.verifier

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        print(f"tdxsim soak: {text}", file=sys.stderr, flush=True)

    # ---- workers --------------------------------------------------------------------------------------

    def fuzz_worker(self, number: int, mode: str | None) -> None:
        rnd = random.Random(f"{self.seed}:{mode or 'mixed'}:{number}")
        arena = self._arena()
        while not self.stop.is_set():
            try:
                # Stalls have their own workers: a mixed worker sends messages and raw bytes, 3 to 1.
                hostile = draw(rnd, arena.world(), mode=mode or rnd.choices(("message", "raw"), (3, 1))[0])
                outcome = arena.run(hostile)
            except Exception as err:  # a fault of the soak itself: counted, never fatal
                with self.tally.lock:
                    self.tally.client_errors[f"{type(err).__name__}: {err}"[:200]] += 1
                time.sleep(0.1)
                continue
            self.tally.record(hostile, outcome, arena)

    def start_workers(self) -> None:
        for number in range(self.args.workers):
            self.threads.append(threading.Thread(target=self.fuzz_worker, args=(number, None), daemon=True))
        for number in range(2):  # two calls stalled at a time, on top of the mixed workers' own
            self.threads.append(
                threading.Thread(target=self.fuzz_worker, args=(number, "stall"), daemon=True)
            )
        for thread in self.threads:
            thread.start()

    def stop_workers(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    # ---- chaos (main thread) -----------------------------------------------------------------------------

    def spawn_guest(self) -> None:
        self._guest_number += 1
        number = self._guest_number
        out = self.work / f"guest-{number}.json"
        host = self._host()
        command = _tdxsim(
            "guest",
            "--host",
            host.address,
            "--admin-credential",
            host.admin_file,
            "--image",
            str(self.work / "image.json"),
            "--name",
            f"{GUEST_PREFIX}-{number}",
            "--json",
            "run",
            str(self.work / "attest.tdx"),
        )
        with out.open("w") as stdout:
            proc = self.procs.popen(command, self.work / "guests.stderr", stdout=stdout.fileno())
        kill_at = None
        if self.chaos.random() < 0.3:
            kill_at = time.monotonic() + self.chaos.choice((0.3, 1.0, 1.5, 2.0, 3.0))
        self.guests.append(Guest(number, proc, time.monotonic(), kill_at, out))
        self.guest_results["started"] += 1

    def tend_guests(self) -> None:
        now = time.monotonic()
        for guest in list(self.guests):
            if guest.kill_at is not None and now >= guest.kill_at and guest.proc.poll() is None:
                guest.proc.kill()
                guest.proc.wait(5)
                self.guest_results["killed"] += 1
                self.killed[f"{GUEST_PREFIX}-{guest.number}"] = now
                self.guests.remove(guest)
                continue
            status = guest.proc.poll()
            if status is None:
                if now - guest.started > 120:
                    guest.proc.kill()
                    guest.proc.wait(5)
                    self.guest_results["timed out"] += 1
                    self.guests.remove(guest)
                continue
            self.guests.remove(guest)
            if status == 0:
                self.guest_results["passed"] += 1
                continue
            self.guest_results["failed"] += 1
            self.guest_failures[self._guest_reason(guest, status)] += 1
        while not self.stop.is_set() and len(self.guests) < self.args.guests:
            self.spawn_guest()

    @staticmethod
    def _guest_reason(guest: Guest, status: int) -> str:
        try:
            report = json.loads(guest.out.read_text())
            failed = [s for s in report.get("steps", []) if not s.get("ok")]
            if failed:
                return f"{failed[-1].get('step', '?').split()[0]}: {failed[-1].get('reason') or 'failed'}"
        except (OSError, ValueError):
            pass
        return f"exit {status} (launch refused or no report)"

    def check_lifelines(self, listed: list[host_pb2.TdInfo]) -> None:
        names = {td.name for td in listed}
        now = time.monotonic()
        for name, when in list(self.killed.items()):
            if name not in names:
                del self.killed[name]
            elif now - when > LIFELINE_GRACE:
                del self.killed[name]
                self._arena().finding(
                    "lifeline", f"the TD of {name} outlived its SIGKILLed guest by {LIFELINE_GRACE:.0f} s"
                )

    def restart_verifier(self) -> None:
        """SIGKILL the verifier, start it again on the same database, credential and port, and check that
        what it promised survived."""
        arena, probe, verifier = self._arena(), self.probe, self._verifier()
        assert probe is not None and arena.verifier is not None
        stub = attestation_pb2_grpc.VerifierServiceStub(arena.verifier)
        try:
            before_kids = {
                k["kid"]
                for k in json.loads(stub.GetJwks(attestation_pb2.GetJwksRequest(), timeout=10).jwks_json)[
                    "keys"
                ]
            }
            pending_nonce = stub.GetNonce(attestation_pb2.GetNonceRequest(), timeout=10).nonce
        except grpc.RpcError as err:
            self.notes.append(f"verifier restart skipped: it did not answer first ({err.code().name})")
            return
        verifier.expected_exit = True
        self.procs.stop(verifier.proc, signal.SIGKILL)
        self.verifier_restarts += 1
        restarted = self.start_verifier_again(verifier)
        self.verifier = restarted
        arena.set_verifier(restarted.address)
        self.write_workload()
        assert arena.verifier is not None
        if not arena.healthy(timeout=15).get("verifier"):
            arena.finding("persistence", "the restarted verifier does not answer its health check")
            return
        stub = attestation_pb2_grpc.VerifierServiceStub(arena.verifier)
        try:
            after = {
                k["kid"]
                for k in json.loads(stub.GetJwks(attestation_pb2.GetJwksRequest(), timeout=10).jwks_json)[
                    "keys"
                ]
            }
            if not before_kids <= after:
                arena.finding(
                    "persistence", f"signing keys lost across a restart: {sorted(before_kids - after)}"
                )
            if probe.fetch(arena.verifier, SECRET_PATH) != self.secret:
                arena.finding("persistence", "after a restart the token's secret opened to another value")
            refusal = probe.replay_refusal(arena.verifier)
            if refusal != "NONCE_REPLAYED":
                what = "accepted" if not refusal else f"refused with {refusal}, not NONCE_REPLAYED"
                arena.finding("persistence", f"after a restart a replayed nonce was {what}")
            evidence = probe.attest(arena.verifier, POLICY, nonce=pending_nonce)
            arena.tokens.append(evidence.token)
        except grpc.RpcError as err:
            arena.finding("persistence", f"after a restart: {err.code().name}: {err.details()}")

    def start_verifier_again(self, old: Server) -> Server:
        """The verifier on its old port, database and credential; on any free port if the old one is
        taken (guests started later are told the new address)."""
        args = list(old.args)
        try:
            restarted = self.procs.start_server("verifier", args)
        except RuntimeError as err:
            self.notes.append(f"verifier restart on {old.address} failed, using a new port: {err}")
            at = args.index("--listen") + 1
            args[at] = "127.0.0.1:0"
            restarted = self.procs.start_server("verifier", args)
            args[at] = restarted.address
        restarted.args = args
        return restarted

    def watch_servers(self) -> bool:
        """Record servers that died unexpectedly; restart a dead verifier. False when the host is gone."""
        for server in (self.host, self.verifier):
            if server is None or server.expected_exit or server.proc.poll() is None:
                continue
            server.expected_exit = True
            tail = server.log.read_text()[-3000:] if server.log.exists() else ""
            self.crashes.append(
                {
                    "role": server.role,
                    "exit": server.proc.returncode,
                    "at_s": round(self.elapsed(), 1),
                    "stderr_tail": tail,
                }
            )
            self.say(f"the {server.role} died (exit {server.proc.returncode})")
            if server.role == "verifier":
                restarted = self.start_verifier_again(server)
                self.verifier = restarted
                self._arena().set_verifier(restarted.address)
                self.write_workload()
        return self.host is not None and self.host.proc.poll() is None

    def progress(self) -> None:
        t = self.tally
        with t.lock:
            requests, bad = t.requests, t.internal_unknown
        rate = requests / max(1.0, self.elapsed())
        host, verifier = self._host(), self._verifier()
        self.say(
            f"{self.phase} {self.elapsed():.0f}/{self.seconds:.0f} s: {requests} requests ({rate:.0f}/s), "
            f"INTERNAL/UNKNOWN {bad}, violations {len(self._arena().findings)}, crashes {len(self.crashes)}, "
            f"guests {self.guest_results['passed']} passed {self.guest_results['failed']} failed "
            f"{self.guest_results['killed']} killed, verifier restarts {self.verifier_restarts}, "
            f"RSS host {rss_kib(host.proc.pid) >> 10} MiB verifier {rss_kib(verifier.proc.pid) >> 10} MiB"
        )

    # ---- the run --------------------------------------------------------------------------------------

    def run(self) -> None:
        self.phase = "setup"
        self.start_stack()
        self.prepare()
        arena = self._arena()
        self.started = time.monotonic()
        warmup = self.args.warmup if self.args.warmup is not None else min(60.0, max(2.0, self.seconds * 0.2))
        warmup = min(warmup, self.seconds)
        restart_every = self.args.verifier_restart_every or max(self.seconds / 3, 5.0)
        next_restart = (
            min(warmup + (restart_every - warmup) / 2, self.seconds * 0.6) if restart_every else None
        )
        next_progress = next_reconcile = next_sentinel = 0.0
        next_sentinel = SENTINEL_EVERY
        self.phase = "warm-up"
        self.say(f"seed {self.seed}; {self.seconds:.0f} s, warm-up {warmup:.0f} s; work in {self.work}")
        self.start_workers()
        while (now := self.elapsed()) < self.seconds:
            if self.phase == "warm-up" and now >= warmup:
                self.phase = "soak"
                self.rss["host"]["warmup"] = rss_kib(self._host().proc.pid)
                self.rss["verifier"]["warmup"] = rss_kib(self._verifier().proc.pid)
            if not self.watch_servers():
                self.notes.append("the host died: the soak ends early")
                break
            self.tend_guests()
            if now >= next_reconcile:
                next_reconcile = now + RECONCILE_EVERY
                try:
                    arena.reconcile()
                    self.check_lifelines(arena.list_tds())
                except grpc.RpcError as err:
                    self.notes.append(f"reconcile at {now:.0f} s: {err.code().name}")
            if now >= next_sentinel:
                next_sentinel = now + SENTINEL_EVERY
                arena.retire_sentinel()
                self.sentinels_retired += 1
            if next_restart is not None and now >= next_restart:
                next_restart = now + restart_every
                self.restart_verifier()
            if now >= next_progress:
                if next_progress:
                    arena.check_sentinels()
                    for name, ok in arena.healthy().items():
                        if not ok:
                            arena.finding("health", f"the {name} did not answer a health check")
                    self.progress()
                next_progress = now + PROGRESS_EVERY
            time.sleep(0.2)
        if "warmup" not in self.rss["host"]:
            self.rss["host"]["warmup"] = rss_kib(self._host().proc.pid)
            self.rss["verifier"]["warmup"] = rss_kib(self._verifier().proc.pid)
        self.finish()

    def finish(self) -> None:
        """Stop the load, let guests end, check the quiet machine, destroy every TD and check that every
        KeyID and frame came back."""
        self.phase = "finish"
        self.stop_workers()
        deadline = time.monotonic() + 60
        while self.guests and time.monotonic() < deadline:
            self.tend_guests()
            time.sleep(0.2)
        for guest in self.guests:
            guest.proc.kill()
            self.guest_results["killed"] += 1
        self.guests.clear()
        if not self.watch_servers():
            return
        arena = self._arena()
        arena.check_sentinels()
        if self.probe is not None:
            self.probe.close()
            self.probe = None
        wait_until_quiet = time.monotonic() + LIFELINE_GRACE
        while time.monotonic() < wait_until_quiet:
            listed = arena.list_tds()
            self.check_lifelines(listed)
            if not any(td.name.startswith((GUEST_PREFIX, PROBE_NAME)) for td in listed):
                break
            time.sleep(0.5)
        orphans = [
            (t.td_id, t.name) for t in arena.list_tds() if t.name.startswith((GUEST_PREFIX, PROBE_NAME))
        ]
        if orphans:
            arena.finding("lifeline", f"TDs outlived their guest processes: {orphans}")
            for td_id, _ in orphans:
                arena.destroy(td_id)
        arena.accounting()
        arena.teardown()
        arena.wait_empty(15)
        arena.accounting(empty=True)
        stats = arena.stats()
        self.end_state = {
            "tds": stats.tds,
            "keyids_free": stats.keyids_free,
            "keyids_total": stats.keyids_total,
            "phys_pages_free": stats.phys_pages_free,
            "phys_pages_total": stats.phys_pages_total,
            "private_pages": stats.private_pages,
        }
        for name, ok in arena.healthy().items():
            if not ok:
                arena.finding("health", f"the {name} did not answer a health check at the end")

    def shutdown(self) -> None:
        """Stop every process the soak started; a server that does not stop cleanly is a crash."""
        self.stop.set()
        for thread in self.threads:
            thread.join(10)
        if self.probe is not None:
            with contextlib.suppress(Exception):  # the host may be gone
                self.probe.close()
        for server in (self.host, self.verifier):
            if server is None:
                continue
            self.rss[server.role]["end"] = self.rss[server.role].get("end") or rss_kib(server.proc.pid)
            if server.proc.poll() is None:
                server.expected_exit = True
                status = self.procs.stop(server.proc)
                if status not in (0, None) and not self.interrupted:
                    self.crashes.append(
                        {"role": server.role, "exit": status, "at_s": round(self.elapsed(), 1)}
                    )
        if self.arena is not None:
            self.arena.close()
        self.procs.stop_all()

    # ---- the report -----------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        t = self.tally
        findings = self.arena.findings if self.arena is not None else []
        rss: dict[str, Any] = {}
        for role, values in self.rss.items():
            entry: dict[str, Any] = dict(values)
            if values.get("warmup") and values.get("end"):
                entry["bounded"] = values["end"] <= RSS_BOUND * values["warmup"]
            rss[role] = entry
        end_ok = bool(self.end_state) and (
            self.end_state["tds"] == 0
            and self.end_state["keyids_free"] == self.end_state["keyids_total"]
            and self.end_state["phys_pages_free"] == self.end_state["phys_pages_total"]
        )
        ok = (
            not self.interrupted
            and t.internal_unknown == 0
            and not self.crashes
            and not findings
            and all(entry.get("bounded", False) for entry in rss.values())
            and end_ok
        )
        return {
            "ok": ok,
            "seed": self.seed,
            "seconds_planned": round(self.seconds, 1),
            "seconds_run": round(self.elapsed(), 1),
            "interrupted": self.interrupted,
            "requests": t.requests,
            "requests_by_mode": dict(t.modes),
            "requests_by_service": dict(t.services),
            "statuses": dict(t.statuses.most_common()),
            "internal_unknown": t.internal_unknown,
            "internal_unknown_by_cause": dict(t.internal_causes.most_common()),
            "internal_unknown_examples": t.examples,
            "crashes": self.crashes,
            "violations": len(findings),
            "violation_details": [f.as_dict() for f in findings[:50]],
            "statuses_lost_to_trailer_limit": t.lost_statuses,
            "statuses_lost_examples": t.lost_examples,
            "guests": dict(self.guest_results),
            "guest_failures": dict(self.guest_failures.most_common()),
            "verifier_restarts": self.verifier_restarts,
            "sentinels_retired": self.sentinels_retired,
            "end_state": self.end_state,
            "end_state_ok": end_ok,
            "rss_kib": rss,
            "client_errors": dict(t.client_errors),
            "slowest_calls": [{"seconds": s, "call": c, "status": st} for s, c, st in t.slowest],
            "notes": self.notes,
        }


# ---- the command -------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    length = parser.add_mutually_exclusive_group()
    length.add_argument(
        "--minutes",
        type=float,
        default=None,
        metavar="N",
        help="how long to run (default 5; fractions allowed)",
    )
    length.add_argument(
        "--seconds", type=float, default=None, metavar="S", help="how long to run, in seconds"
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON document")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="S",
        help="seed of every random choice (default: random; the report names it, so a run can be repeated)",
    )
    parser.add_argument(
        "--workers", type=int, default=3, metavar="N", help="threads sending hostile calls (default 3)"
    )
    parser.add_argument(
        "--guests", type=int, default=2, metavar="N", help="guest processes at a time (default 2)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        metavar="S",
        help="seconds of load before the RSS baseline (default: a fifth of the run, at most 60)",
    )
    parser.add_argument(
        "--verifier-restart-every",
        type=float,
        default=None,
        metavar="S",
        help="SIGKILL and restart the verifier this often (default: three times per run)",
    )


def _check(args: argparse.Namespace) -> tuple[float, str]:
    seconds = (
        args.seconds if args.seconds is not None else (args.minutes if args.minutes is not None else 5) * 60
    )
    if not seconds > 0 or seconds > 7 * 24 * 3600:
        return 0, "the run must last more than 0 s and at most a week"
    if not 1 <= args.workers <= 32:
        return 0, "--workers must be 1..32"
    if not 0 <= args.guests <= 16:
        return 0, "--guests must be 0..16"
    if args.warmup is not None and args.warmup < 0:
        return 0, "--warmup must not be negative"
    if args.verifier_restart_every is not None and args.verifier_restart_every <= 0:
        return 0, "--verifier-restart-every must be positive"
    return seconds, ""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted()


def run(args: argparse.Namespace) -> int:
    seconds, problem = _check(args)
    if problem:
        print(f"tdxsim soak: {problem}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    work = Path(tempfile.mkdtemp(prefix="tdxsim-soak-"))
    soak = Soak(args, seconds, seed, work)
    setup_failed = ""
    try:
        try:
            soak.run()
        except (KeyboardInterrupt, Interrupted):
            soak.interrupted = True
            soak.say("interrupted: stopping everything it started")
        except RuntimeError as err:
            setup_failed = str(err)
        except grpc.RpcError as err:
            setup_failed = f"{err.code().name}: {err.details()}"
        finally:
            try:
                soak.shutdown()
            except (KeyboardInterrupt, Interrupted):
                soak.procs.stop_all()
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(work, ignore_errors=True)
    if setup_failed and soak.phase == "setup":
        print(f"tdxsim soak: the stack did not start: {setup_failed}", file=sys.stderr)
        return 2
    if setup_failed:
        soak.notes.append(f"the soak stopped early: {setup_failed}")
    report = soak.report()
    if setup_failed:
        report["ok"] = False
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    if soak.interrupted:
        return 130
    return 0 if report["ok"] else 1


def format_report(report: dict[str, Any]) -> str:
    def counts(values: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in values.items()) or "-"

    rows = [
        ("result", "PASS" if report["ok"] else ("INTERRUPTED" if report["interrupted"] else "FAIL")),
        ("seed", str(report["seed"])),
        ("time", f"{report['seconds_run']} s of {report['seconds_planned']} s"),
        ("requests", f"{report['requests']} ({counts(report['requests_by_mode'])})"),
        ("by service", counts(report["requests_by_service"])),
        ("statuses", counts(report["statuses"])),
        ("INTERNAL/UNKNOWN", str(report["internal_unknown"])),
        ("crashes", str(len(report["crashes"]))),
        ("violations", str(report["violations"])),
        ("guests", counts(report["guests"])),
        ("guest failures", counts(report["guest_failures"])),
        ("verifier restarts", str(report["verifier_restarts"])),
        ("sentinels retired", str(report["sentinels_retired"])),
    ]
    end = report["end_state"]
    if end:
        rows.append(
            (
                "end state",
                f"TDs {end['tds']}, KeyIDs free {end['keyids_free']}/{end['keyids_total']}, "
                f"pages free {end['phys_pages_free']}/{end['phys_pages_total']}"
                + ("" if report["end_state_ok"] else "  (NOT all back)"),
            )
        )
    for role, rss in report["rss_kib"].items():
        bounded = {True: "bounded", False: "NOT bounded"}.get(rss.get("bounded"), "not measured")
        rows.append(
            (
                f"RSS {role} (MiB)",
                f"start {rss.get('start', 0) >> 10}, after warm-up {rss.get('warmup', 0) >> 10}, "
                f"end {rss.get('end', 0) >> 10} ({bounded}: end <= {RSS_BOUND} x after warm-up)",
            )
        )
    if report["statuses_lost_to_trailer_limit"]:
        rows.append(("statuses lost", f"{report['statuses_lost_to_trailer_limit']} (trailers over 16 KiB)"))
    width = max(len(name) for name, _ in rows)
    lines = [f"{name.ljust(width)}  {value}" for name, value in rows]
    for crash in report["crashes"]:
        lines.append(f"\ncrash: the {crash['role']} exited {crash['exit']} at {crash['at_s']} s")
        if crash.get("stderr_tail"):
            lines.append(str(crash["stderr_tail"]).rstrip())
    for example in report["internal_unknown_examples"][:10]:
        lines.append(f"\nINTERNAL/UNKNOWN: {json.dumps(example)}")
    for violation in report["violation_details"][:20]:
        lines.append(f"\nviolation ({violation['kind']}): {violation['what']}")
        if violation.get("reproducer"):
            lines.append(f"  reproducer: {json.dumps(violation['reproducer'])}")
    for note in report["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)

"""``tdxsim demo`` (``make demo``): the whole stack as separate processes, in one command (docs/cli.md
"tdxsim demo"; the flows it walks through are docs/architecture.md "Flows through the code").

1. A simulated Intel PCS (``tdxsim pki init``) served over HTTP as a PCCS (``tdxsim pcs serve``), a host
   whose quoting enclave is provisioned from it, and a remote verifier that trusts its root and fetches
   collateral from the PCCS (``--pccs``), as real verifiers do.
2. The relying party computes the MRTD of ``examples/image.json`` offline, writes a policy with it and
   stores a secret that only TDs satisfying that policy may receive.
3. Guest processes launch TDs from the image, work with private and shared memory, measure into an RTMR,
   attest and receive the secret as a JWE to their ephemeral key. While each guest holds its TD, the host
   operator looks at it: the first TD's GPA map after its conversions (``tdxsim memmap``), and for every TD
   its private and shared pages and conversions.
4. A guest from a modified image is refused; a table sums up every TD.
5. The pre-2021 world (``--memory-mode legacy``): the host can touch private memory, poisons a TD with one
   write, and takes itself down with a machine check when it reads the line back.

``--json`` prints one JSON event per line instead of the story (``event``: ``stage``, ``process``, ``policy``,
``guest``, ``memmap``, ``refused``, ``artifacts``, ``summary``, ``legacy``, ``error``, ``done``).
``--artifacts DIR`` leaves what other tools can check: ``DIR/root_ca.der`` (the simulated root CA),
``DIR/collateral.json`` (dcap-qvl's ``QuoteCollateralV3``), ``DIR/jwks.json`` (the verifier's keys) and per
guest ``DIR/<guest>/quote.bin``, ``eventlog.bin``, ``token.jwt`` and ``verify_at`` (the unix time at which the
collateral is valid for that quote); the refused guest's folder has no ``token.jwt``.

Every process is started with ``--listen 127.0.0.1:0`` and found through its first stdout line; the gRPC
servers' second line names the admin credential they generated, which the operator's calls (launching TDs,
setting policy) present. Each runs in its own session and dies with the demo (``PR_SET_PDEATHSIG``); all of
them are stopped at the end, on Ctrl-C or SIGTERM, and when one of them dies unexpectedly, the demo says which
and exits 1. Exit status: 0 every act went as told, 1 an act failed or a process died, 2 unusable options,
130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from attest.intel.pcs_directory import PkiError, init_pki
from guest.connection import td_channel
from guest.image import expected_mrtd, load_image
from tdxsim import memmap
from tdxsim.soak import Processes, Server
from wire.credentials import read_credential_file, with_bearer
from wire.v1 import (
    attestation_pb2,
    attestation_pb2_grpc,
    guest_pb2,
    guest_pb2_grpc,
    host_pb2,
    host_pb2_grpc,
)

MIB = 1 << 20
PAGE = 4096
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SECRET = "disk key 7c1f-payments-prod"
GUEST_TIMEOUT = 300.0
MAX_GUESTS = 16
PRIVATE_STATES = (host_pb2.GPA_STATE_PRIVATE_ACCEPTED, host_pb2.GPA_STATE_PRIVATE_PENDING)


class ProcessDied(Exception):
    """A process the demo started ended when it should not have."""


@dataclass
class GuestOutcome:
    name: str
    pid: int
    report: dict[str, Any]
    exit: int | None = None
    private_pages: int = 0
    shared_pages: int = 0
    conversions: int = 0

    @property
    def td_id(self) -> int:
        return int(self.report.get("td_id", 0))

    @property
    def verdict(self) -> str:
        attest = next(
            (s for s in self.report.get("steps", []) if str(s.get("step", "")).startswith("attest")), None
        )
        if attest is None:
            return "not attested"
        if attest.get("ok"):
            values = attest.get("values", {})
            return f"{values.get('ear_status', 'ok')} (TCB {values.get('tcb_status', '?')})"
        return f"refused ({attest.get('reason', attest.get('detail', ''))})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "td_id": self.td_id,
            "exit": self.exit,
            "ok": bool(self.report.get("ok")),
            "mrtd": self.report.get("mrtd", ""),
            "private_pages": self.private_pages,
            "shared_pages": self.shared_pages,
            "conversions": self.conversions,
            "verdict": self.verdict,
            "steps": self.report.get("steps", []),
        }


@dataclass
class Demo:
    work: Path
    as_json: bool
    artifacts: Path | None
    guests: int
    processes: Processes = field(init=False)
    #: pid → role of every process whose exit would be a failure.
    watched: dict[int, str] = field(default_factory=dict)
    died: str = ""
    outcomes: list[GuestOutcome] = field(default_factory=list)
    #: The legacy-mode host of act 5, started with the others in act 1.
    legacy_starting: Future[Server] | None = None
    _logs: list[IO[str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _starter: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4, "demo-start"))

    def __post_init__(self) -> None:
        self.processes = Processes(self.work)

    # ---- output --------------------------------------------------------------------------------------------
    def say(self, text: str = "") -> None:
        if not self.as_json:
            print(text, flush=True)

    def event(self, kind: str, **fields: Any) -> None:
        if self.as_json:
            print(json.dumps({"event": kind, "time": round(time.time(), 3), **fields}), flush=True)

    def stage(self, number: int, name: str, title: str) -> None:
        self.say(("\n" if number > 1 else "") + f"== {number}. {title}")
        self.event("stage", stage=name, number=number, title=title)

    # ---- processes -----------------------------------------------------------------------------------------
    def start(self, role: str, *args: str, admin: bool = True) -> Future[Server]:
        """Start a tdxsim server on a free loopback port; the future is done once it has printed its address,
        so servers that do not depend on each other start side by side."""
        if admin:
            return self._starter.submit(self.processes.start_server, role, [*args, "--listen", "127.0.0.1:0"])
        return self._starter.submit(self._public_server, role, list(args))

    def ready(self, name: str, starting: Future[Server], admin: bool = True) -> Server:
        """Wait for a started server, watch it until the demo stops it, and say where it listens."""
        started = starting.result()
        with self._lock:
            self.watched[started.proc.pid] = name
        note = f"admin credential {started.admin_file}" if admin else "public, read-only"
        self.say(f"  {name:<9} pid {started.proc.pid:<6} {started.address}  ({note})")
        self.event("process", name=name, pid=started.proc.pid, address=started.address, admin=admin)
        return started

    def _public_server(self, role: str, args: list[str]) -> Server:
        """A server that prints only its address (the PCCS has no admin API)."""
        log = self.work / f"{role}.stderr"
        proc = self.processes.popen(_tdxsim(*role.split(), *args, "--listen", "127.0.0.1:0"), log)
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise ProcessDied(f"{role} did not start: {log.read_text().strip()[-300:]}")
        threading.Thread(target=lambda: proc.stdout and proc.stdout.read(), daemon=True).start()
        return Server(role, args, proc, line.removeprefix("listening on "), "", log)

    def unwatch(self, pid: int) -> None:
        with self._lock:
            self.watched.pop(pid, None)

    def watchdog(self) -> None:
        """Stop the demo the moment a watched process ends: SIGINT to itself, which interrupts any wait."""
        while not self._stop.wait(0.2):
            with self._lock:
                procs = [(p, self.watched[p.pid]) for p in self.processes.all if p.pid in self.watched]
            for proc, name in procs:
                status = proc.poll()
                if status is not None:
                    with self._lock:
                        if proc.pid not in self.watched:
                            continue
                        self.died = f"the {name} (pid {proc.pid}) died with status {status}"
                    os.kill(os.getpid(), signal.SIGINT)
                    return

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self.watched.clear()
        self.processes.stop_all()
        self._starter.shutdown(wait=True, cancel_futures=True)
        for log in self._logs:
            log.close()

    # ---- guests --------------------------------------------------------------------------------------------
    def start_guest(self, name: str, host: Server, image: Path, workload: Path) -> subprocess.Popen[str]:
        args = [
            "guest",
            "--host",
            host.address,
            "--admin-credential",
            host.admin_file,
            "--image",
            str(image),
            "--name",
            name,
            "--json",
            "--hold",
        ]
        if self.artifacts is not None:
            args += ["--evidence", str(self.artifacts / name)]
        log = (self.work / f"{name}.stderr").open("w")
        self._logs.append(log)
        proc = subprocess.Popen(
            _tdxsim(*args, "run", str(workload)),
            stdin=subprocess.PIPE,  # the guest holds its TD until the demo closes this
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=self.processes.env,
            start_new_session=True,
        )
        self.processes.all.append(proc)
        return proc

    def held_report(self, name: str, proc: subprocess.Popen[str]) -> GuestOutcome:
        """The report a guest prints while it holds its TD; ProcessDied when it ends without one."""
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip():
            status = proc.wait(10)
            tail = (self.work / f"{name}.stderr").read_text().strip().splitlines()[-1:]
            raise ProcessDied(f"{name} (pid {proc.pid}) ended with status {status} before reporting: {tail}")
        try:
            return GuestOutcome(name, proc.pid, json.loads(line))
        except ValueError:
            raise ProcessDied(f"{name} (pid {proc.pid}) printed no report: {line.strip()[:200]}") from None

    def inspect(self, host: Server, outcome: GuestOutcome, show_map: bool) -> None:
        """The host operator's view of a held TD: its pages, conversions and, once, its GPA map."""
        with host_channel(host) as stub:
            gmap = memmap.fetch(stub, outcome.td_id)
            tds = stub.ListTds(host_pb2.ListTdsRequest(), timeout=30).tds
            info = next((td for td in tds if td.td_id == outcome.td_id), None)
        if info is None:
            raise ProcessDied(f"{outcome.name}'s TD {outcome.td_id} is gone while the guest should hold it")
        outcome.private_pages = sum(r.size for r in gmap.runs if r.state in PRIVATE_STATES) // PAGE
        outcome.shared_pages = sum(r.size for r in gmap.runs if r.state == host_pb2.GPA_STATE_SHARED) // PAGE
        outcome.conversions = info.conversions
        if show_map:
            self.say(
                f"  the host operator's view of {outcome.name}'s TD {outcome.td_id} after its conversions:"
            )
            picture = memmap.render_text(gmap, color=memmap.use_color(sys.stdout))
            self.say("\n".join(f"    {line}" if line else "" for line in picture.splitlines()))
            self.event("memmap", guest=outcome.name, **memmap.as_json(gmap))

    def release(self, outcome: GuestOutcome, proc: subprocess.Popen[str]) -> None:
        """Close the guest's stdin: it exits and the host destroys its TD."""
        if proc.stdin is not None:
            proc.stdin.close()
        outcome.exit = proc.wait(60)

    def report_guests(
        self, host: Server, procs: Sequence[tuple[str, subprocess.Popen[str]]], show_map: bool
    ) -> None:
        """Inspect every started guest's TD while it is held, then release them and tell their steps."""
        held = [(self.held_report(name, proc), proc) for name, proc in procs]
        for number, (outcome, _) in enumerate(held):
            self.inspect(host, outcome, show_map and number == 0)
        for outcome, proc in held:
            self.release(outcome, proc)
            self.outcomes.append(outcome)
            self.say(f"  {outcome.name} (pid {outcome.pid}, TD {outcome.td_id}, exit {outcome.exit}):")
            show_steps(self, outcome.report.get("steps", []))
            self.event("guest", **outcome.as_dict())


def _tdxsim(*args: str) -> list[str]:
    command = [sys.executable, "-m", "tdxsim.cli", *args]
    setpriv = shutil.which("setpriv")  # children die with the demo even if it is SIGKILLed
    return [setpriv, "--pdeathsig", "KILL", "--", *command] if setpriv else command


@contextmanager
def host_channel(server: Server) -> Iterator[Any]:
    with grpc.insecure_channel(server.address) as channel:
        yield host_pb2_grpc.HostServiceStub(with_bearer(channel, read_credential_file(server.admin_file)))


def show_steps(demo: Demo, steps: list[dict[str, Any]]) -> None:
    for step in steps:
        mark = "ok " if step["ok"] else "ERR"
        demo.say(f"    {mark} {str(step['step'])[:44]:<44} {step['detail']}")


# ---- the acts ----------------------------------------------------------------------------------------------


def attestation_story(demo: Demo) -> None:
    work = demo.work
    demo.stage(
        1, "servers", "a simulated Intel PCS served as a PCCS, a host provisioned from it, and a verifier"
    )
    pki = work / "pki"
    try:
        init_pki(pki)
    except PkiError as err:
        raise ProcessDied(f"tdxsim pki init failed: {err}") from None
    demo.say(f"  pki       {pki} (Intel's names marked 'tdxsim SIMULATED', tdxsim's own root key)")
    demo.event("pki", dir=str(pki))
    pcs_starting = demo.start("pcs serve", "--pki", str(pki), admin=False)
    host_starting = demo.start("host", "--phys-mem", "1G", "--pki", str(pki))
    demo.legacy_starting = demo.start("host", "--phys-mem", "256M", "--memory-mode", "legacy")
    pcs = demo.ready("pccs", pcs_starting, admin=False)
    verifier_starting = demo.start(
        "verifier",
        "--db",
        str(work / "verifier.db"),
        "--root",
        str(pki / "root_ca.pem"),
        "--pccs",
        f"http://{pcs.address}",
    )
    host = demo.ready("host", host_starting)
    verifier = demo.ready("verifier", verifier_starting)
    demo.say(
        f"  the verifier fetches collateral per FMSPC from http://{pcs.address} (Intel PCS API v4 paths)"
    )

    demo.stage(2, "policy", "the relying party: expected MRTD from the image, a policy, a secret")
    mrtd = expected_mrtd(load_image(EXAMPLES / "image.json").image).hex()
    demo.say(f"  tdxsim guest --image examples/image.json mrtd  ->  {mrtd[:32]}…")
    with grpc.insecure_channel(verifier.address) as plain:
        channel = with_bearer(plain, read_credential_file(verifier.admin_file))
        admin = attestation_pb2_grpc.VerifierServiceStub(channel)
        policy = {"reference_values": {"mr_td": [mrtd]}, "accepted_tcb_statuses": ["UpToDate"]}
        admin.SetPolicy(
            attestation_pb2.SetPolicyRequest(name="prod", policy_json=json.dumps(policy)), timeout=30
        )
        resource = {"attestation_policies": ["prod"], "claims": {"mr_td": [mrtd]}}
        admin.PutResource(
            attestation_pb2.PutResourceRequest(
                path="prod/key/disk", secret=SECRET.encode(), policy_json=json.dumps(resource)
            ),
            timeout=30,
        )
        jwks = admin.GetJwks(attestation_pb2.GetJwksRequest(), timeout=30).jwks_json
    demo.say(
        "  policy 'prod': MRTD must match, TCB UpToDate, no DEBUG; "
        "secret prod/key/disk released only under it"
    )
    demo.event("policy", name="prod", mrtd=mrtd, secret_path="prod/key/disk")

    workload = work / "attest.tdx"
    workload.write_text((EXAMPLES / "attest.tdx").read_text().replace("VERIFIER", verifier.address))
    kernel = (EXAMPLES / "kernel.txt").read_bytes()
    (work / "kernel.txt").write_bytes(kernel[:-1] + bytes([kernel[-1] ^ 1]))
    image = json.loads((EXAMPLES / "image.json").read_text())
    (work / "image.json").write_text(json.dumps(image))
    # Every guest starts now, the modified one too: each holds its TD until its act tells its story.
    good = [
        (name, demo.start_guest(name, host, EXAMPLES / "image.json", workload))
        for name in (f"guest-{n}" for n in range(1, demo.guests + 1))
    ]
    modified = [("modified", demo.start_guest("modified", host, work / "image.json", workload))]
    count = (
        "one guest process launches a TD" if demo.guests == 1 else f"{demo.guests} guest processes launch TDs"
    )
    demo.stage(3, "guests", f"{count} from the image, work, measure, attest, get the secret")
    demo.report_guests(host, good, show_map=True)

    demo.stage(4, "modified-image", "a guest from a modified image: one byte of the kernel differs")
    demo.report_guests(host, modified, show_map=False)
    refused = demo.outcomes[-1]
    demo.say(f"  the verifier refused it (exit {refused.exit}): its MRTD is not the policy's")
    demo.event("refused", guest=refused.name, td_id=refused.td_id, verdict=refused.verdict, exit=refused.exit)

    if demo.artifacts is not None:
        write_artifacts(demo, pki, jwks)
    summary(demo)


def write_artifacts(demo: Demo, pki: Path, jwks: str) -> None:
    folder = demo.artifacts
    assert folder is not None
    root = x509.load_pem_x509_certificate((pki / "root_ca.pem").read_bytes())
    (folder / "root_ca.der").write_bytes(root.public_bytes(Encoding.DER))
    shutil.copyfile(pki / "collateral.json", folder / "collateral.json")
    (folder / "jwks.json").write_text(jwks)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    demo.say(f"\n  artifacts in {folder}: {', '.join(files)}")
    demo.event("artifacts", dir=str(folder), files=files)


def summary(demo: Demo) -> None:
    demo.say("\n  TD summary")
    header = f"  {'guest':<10} {'TD':>3}  {'MRTD':<17} {'private':>8} {'shared':>7} {'conv':>5}  verdict"
    demo.say(header)
    for o in demo.outcomes:
        mrtd = str(o.report.get("mrtd", ""))[:16]
        demo.say(
            f"  {o.name:<10} {o.td_id:>3}  {mrtd:<17} {o.private_pages:>8} {o.shared_pages:>7} "
            f"{o.conversions:>5}  {o.verdict}"
        )
    demo.event(
        "summary",
        tds=[
            {
                "guest": o.name,
                "td_id": o.td_id,
                "mrtd_prefix": str(o.report.get("mrtd", ""))[:16],
                "private_pages": o.private_pages,
                "shared_pages": o.shared_pages,
                "conversions": o.conversions,
                "verdict": o.verdict,
            }
            for o in demo.outcomes
        ],
    )


def legacy_story(demo: Demo) -> None:
    demo.stage(
        5,
        "legacy",
        "why guest_memfd exists: the same host in legacy mode (private memory mapped by the host)",
    )
    assert demo.legacy_starting is not None, "the legacy host starts with the others"
    host = demo.ready("legacy host", demo.legacy_starting)
    with host_channel(host) as admin, grpc.insecure_channel(host.address) as channel:
        td = admin.CreateTd(host_pb2.CreateTdRequest(memory_bytes=64 * MIB, name="legacy"), timeout=10)
        admin.FinalizeTd(host_pb2.FinalizeTdRequest(td_id=td.td_id), timeout=10)
        guest = guest_pb2_grpc.TdGuestServiceStub(td_channel(channel, td.credential))
        guest.AcceptPages(
            guest_pb2.AcceptPagesRequest(td_id=td.td_id, ranges=[guest_pb2.GpaRange(gpa=0, length=MIB)]),
            timeout=10,
        )
        guest.WriteMemory(
            guest_pb2.WriteMemoryRequest(
                td_id=td.td_id, writes=[guest_pb2.GpaData(gpa=0, data=b"my TD secret")]
            ),
            timeout=10,
        )
        demo.say("  the TD wrote 'my TD secret' to private GPA 0x0")
        seen = admin.HostRead(host_pb2.HostReadRequest(td_id=td.td_id, gpa=0, length=12), timeout=10).data
        demo.say(f"  host reads GPA 0x0: {seen!r} (TD-owned lines read as zeros)")
        demo.event("legacy", step="host-read", data_hex=seen.hex())
        admin.HostWrite(host_pb2.HostWriteRequest(td_id=td.td_id, gpa=0, data=b"oops"), timeout=10)
        demo.say("  host writes 'oops' there: the line's TD-owner bit is cleared, silently")
        demo.event("legacy", step="host-write", code="OK")
        td_read = guest_pb2.ReadMemoryRequest(td_id=td.td_id, ranges=[guest_pb2.GpaRange(gpa=0, length=12)])
        host_read = host_pb2.HostReadRequest(td_id=td.td_id, gpa=0, length=12)
        demo.unwatch(host.proc.pid)  # the machine check that comes next takes this host down, as it should
        for step, label, call in (
            ("td-read", "the TD reads GPA 0x0", lambda: guest.ReadMemory(td_read, timeout=10)),
            ("host-read-again", "the host reads it again", lambda: admin.HostRead(host_read, timeout=10)),
        ):
            try:
                call()
                demo.event("legacy", step=step, code="OK")
            except grpc.RpcError as err:
                demo.say(f"  {label}: {err.code().name}: {err.details()}")
                demo.event("legacy", step=step, code=err.code().name, details=err.details())
    status = host.proc.wait(15)
    demo.say(f"  host process exited with status {status}: a machine check took the whole machine down")
    demo.event("legacy", step="host-exit", status=status)


# ---- command line ------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--guests", type=int, default=2, metavar="N", help="guest processes in act 3 (default 2)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON event per line instead of the story")
    parser.add_argument(
        "--artifacts",
        metavar="DIR",
        help="leave root_ca.der, collateral.json, jwks.json and per guest quote.bin, eventlog.bin, token.jwt "
        "and verify_at in DIR, for other tools to check",
    )


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.guests <= MAX_GUESTS:
        print(f"tdxsim demo: --guests must be 1..{MAX_GUESTS}, not {args.guests}", file=sys.stderr)
        return 2
    artifacts = Path(args.artifacts).resolve() if args.artifacts else None
    if artifacts is not None:
        try:
            artifacts.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            print(f"tdxsim demo: --artifacts {args.artifacts}: {err.strerror}", file=sys.stderr)
            return 2
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    status = 0
    with tempfile.TemporaryDirectory(prefix="tdxsim-demo-") as tmp:
        demo = Demo(Path(tmp), args.json, artifacts, args.guests)
        watchdog = threading.Thread(target=demo.watchdog, daemon=True)
        watchdog.start()
        try:
            attestation_story(demo)
            legacy_story(demo)
        except KeyboardInterrupt:
            status = 1 if demo.died else 130
        except ProcessDied as err:
            demo.died = str(err)
            status = 1
        except grpc.RpcError as err:
            demo.died = demo.died or f"a call failed: {err.code().name}: {err.details()}"
            status = 1
        finally:
            demo.stop()
            signal.signal(signal.SIGTERM, previous)
        if status == 1:
            message = f"{demo.died}; every other process is stopped"
            print(f"tdxsim demo: {message}", file=sys.stderr)
            demo.event("error", message=message)
        elif status == 130:
            demo.say("\ninterrupted: every process stopped")
            demo.event("error", message="interrupted")
    if status == 0:
        demo.say(
            "\nNext: `tdxsim attack`, `tdxsim memmap`, `make test`, `tdxsim --help`, examples/README.md."
        )
    demo.event("done", status=status)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tdxsim demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

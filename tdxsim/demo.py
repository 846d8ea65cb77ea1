"""``make demo``: the whole stack as separate processes, in one command.

1. A simulated Intel PCS (``tdxsim pki init``) served over HTTP as a PCCS (``tdxsim pcs serve``), a host
   whose quoting enclave is provisioned from it, and a remote verifier that trusts its root and fetches
   collateral from the PCCS (``--pccs``), as real verifiers do.
2. The relying party computes the MRTD of ``examples/image.json`` offline, writes a policy with it and
   stores a secret that only TDs satisfying that policy may receive.
3. Guest processes launch TDs from the image, work with private and shared memory, measure into an RTMR,
   attest and receive the secret sealed to their ephemeral key; a guest from a modified image is refused.
4. The pre-2021 world (``--memory-mode legacy``): the host can touch private memory, poisons a TD with one
   write, and takes itself down with a machine check when it reads the line back.

Every process is started with ``--listen 127.0.0.1:0`` and found through its first stdout line; the gRPC
servers' second line names the admin credential they generated, which the operator's calls (launching TDs,
setting policy) present. All of them are stopped on exit or Ctrl-C.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import NamedTuple

import grpc

from guest.connection import td_channel
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
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SECRET = "disk key 7c1f-payments-prod"


def say(text: str = "") -> None:
    print(text, flush=True)


def tdxsim(*args: str) -> list[str]:
    return [sys.executable, "-m", "tdxsim.cli", *args]


class Server(NamedTuple):
    proc: subprocess.Popen[str]
    address: str
    #: The file holding the server's admin credential (it printed the path as its second line).
    admin_file: str

    def admin_channel(self) -> grpc.Channel:
        """A channel to the server that presents its admin credential on every call."""
        return with_bearer(grpc.insecure_channel(self.address), read_credential_file(self.admin_file))


@contextmanager
def server(name: str, *args: str, admin: bool = True) -> Iterator[Server]:
    """A tdxsim server process on a free loopback port; stopped (SIGTERM, then SIGKILL) on exit. ``admin``:
    it prints an admin credential's path as its second line (the PCCS has no admin API)."""
    proc = subprocess.Popen(
        tdxsim(*args, "--listen", "127.0.0.1:0"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise SystemExit(f"{name} did not start")
        address = line.removeprefix("listening on ")
        admin_file = proc.stdout.readline().strip().removeprefix("admin credential: ") if admin else ""
        role = f"admin credential {admin_file}" if admin else "public, read-only"
        say(f"  {name:<9} pid {proc.pid:<6} {address}  ({role})")
        yield Server(proc, address, admin_file)
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def guest_command(host: Server, image: Path, workload: Path) -> list[str]:
    """``tdxsim guest … run WORKLOAD``: launching with the host's admin credential, then the TD's own."""
    return tdxsim(
        "guest",
        "--host",
        host.address,
        "--admin-credential",
        host.admin_file,
        "--image",
        str(image),
        "--json",
        "run",
        str(workload),
    )


def run_guest(host: Server, image: Path, workload: Path) -> tuple[int, list[dict[str, object]]]:
    """One guest process; returns its exit status and its steps."""
    done = subprocess.run(
        guest_command(host, image, workload),
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"guest failed: {done.stderr.strip()}") from None
    return done.returncode, report["steps"]


def show_steps(steps: list[dict[str, object]]) -> None:
    for step in steps:
        mark = "ok " if step["ok"] else "ERR"
        say(f"    {mark} {str(step['step'])[:44]:<44} {step['detail']}")


def attestation_story(work: Path) -> None:
    say("== 1. a simulated Intel PCS served as a PCCS, a host provisioned from it, and a remote verifier")
    made = subprocess.run(
        tdxsim("pki", "init", str(work / "pki")), capture_output=True, text=True, timeout=60
    )
    if made.returncode:
        raise SystemExit(made.stdout + made.stderr)
    say(f"  pki       {work / 'pki'} (Intel's names marked 'tdxsim SIMULATED', tdxsim's own root key)")
    pki = work / "pki"
    with ExitStack() as stack:
        pcs = stack.enter_context(server("pccs", "pcs", "serve", "--pki", str(pki), admin=False))
        host = stack.enter_context(server("host", "host", "--phys-mem", "1G", "--pki", str(pki)))
        verifier = stack.enter_context(
            server(
                "verifier",
                "verifier",
                "--db",
                str(work / "verifier.db"),
                "--root",
                str(pki / "root_ca.pem"),
                "--pccs",
                f"http://{pcs.address}",
            )
        )
        say(f"  the verifier fetches collateral per FMSPC from http://{pcs.address} (Intel PCS API v4 paths)")

        say("\n== 2. the relying party: expected MRTD from the image, a policy, a secret")
        mrtd = subprocess.run(
            tdxsim("guest", "--image", str(EXAMPLES / "image.json"), "mrtd"), capture_output=True, text=True
        ).stdout.strip()
        say(f"  tdxsim guest --image examples/image.json mrtd  ->  {mrtd[:32]}…")
        with verifier.admin_channel() as channel:
            admin = attestation_pb2_grpc.VerifierServiceStub(channel)
            policy = {"reference_values": {"mr_td": [mrtd]}, "accepted_tcb_statuses": ["UpToDate"]}
            admin.SetPolicy(attestation_pb2.SetPolicyRequest(name="prod", policy_json=json.dumps(policy)))
            resource = {"attestation_policies": ["prod"], "claims": {"mr_td": [mrtd]}}
            admin.PutResource(
                attestation_pb2.PutResourceRequest(
                    path="prod/key/disk", secret=SECRET.encode(), policy_json=json.dumps(resource)
                )
            )
        say(
            "  policy 'prod': MRTD must match, TCB UpToDate, no DEBUG; "
            "secret prod/key/disk released only under it"
        )

        workload = work / "attest.tdx"
        workload.write_text((EXAMPLES / "attest.tdx").read_text().replace("VERIFIER", verifier.address))
        say("\n== 3. two guest processes launch TDs from the image, work, measure, attest, get the secret")
        guests = [
            subprocess.Popen(
                guest_command(host, EXAMPLES / "image.json", workload),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for number, proc in enumerate(guests, 1):
            out, err = proc.communicate(timeout=300)
            if not out:
                raise SystemExit(f"guest {number} failed: {err.strip()}")
            report = json.loads(out)
            say(f"  guest {number} (pid {proc.pid}, TD {report['td_id']}, exit {proc.returncode}):")
            show_steps(report["steps"])

        say("\n== 4. a guest from a modified image: one byte of the kernel differs")
        kernel = (EXAMPLES / "kernel.txt").read_bytes()
        (work / "kernel.txt").write_bytes(kernel[:-1] + bytes([kernel[-1] ^ 1]))
        image = json.loads((EXAMPLES / "image.json").read_text())
        (work / "image.json").write_text(json.dumps(image))
        status, steps = run_guest(host, work / "image.json", workload)
        show_steps(steps[-1:])
        say(f"  the verifier refused it (exit {status}): its MRTD is not the policy's")


def legacy_story() -> None:
    say("\n== 5. why guest_memfd exists: the same host in legacy mode (private memory mapped by the host)")
    with server("host", "host", "--phys-mem", "256M", "--memory-mode", "legacy") as host:
        with host.admin_channel() as admin_channel, grpc.insecure_channel(host.address) as channel:
            admin = host_pb2_grpc.HostServiceStub(admin_channel)
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
            say("  the TD wrote 'my TD secret' to private GPA 0x0")
            seen = admin.HostRead(host_pb2.HostReadRequest(td_id=td.td_id, gpa=0, length=12), timeout=10).data
            say(f"  host reads GPA 0x0: {seen!r} (TD-owned lines read as zeros)")
            admin.HostWrite(host_pb2.HostWriteRequest(td_id=td.td_id, gpa=0, data=b"oops"), timeout=10)
            say("  host writes 'oops' there: the line's TD-owner bit is cleared, silently")
            td_read = guest_pb2.ReadMemoryRequest(
                td_id=td.td_id, ranges=[guest_pb2.GpaRange(gpa=0, length=12)]
            )
            host_read = host_pb2.HostReadRequest(td_id=td.td_id, gpa=0, length=12)
            for label, call in (
                ("the TD reads GPA 0x0", lambda: guest.ReadMemory(td_read, timeout=10)),
                ("the host reads it again", lambda: admin.HostRead(host_read, timeout=10)),
            ):
                try:
                    call()
                except grpc.RpcError as err:
                    say(f"  {label}: {err.code().name}: {err.details()}")
        status = host.proc.wait(15)
        say(f"  host process exited with status {status}: a machine check took the whole machine down")


def main() -> int:
    try:
        with tempfile.TemporaryDirectory(prefix="tdxsim-demo-") as tmp:
            attestation_story(Path(tmp))
        legacy_story()
    except KeyboardInterrupt:
        say("\ninterrupted: every process stopped")
        return 130
    say("\nNext: `make test`, `tdxsim --help`, examples/README.md.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

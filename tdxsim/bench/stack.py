"""The processes a benchmark runs against: a simulated PCS, hosts, verifiers and guest workers, each started
as a real ``tdxsim`` process on 127.0.0.1:0 and always stopped (docs/conventions.md §3, §4).

Also what a benchmark measures about processes: their CPU seconds and resident memory (``/proc``), and how
busy the machine's cores were over a window, so a row that misses its target can say why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from wire.credentials import read_credential_file

START_TIMEOUT = 60.0
_TICKS = os.sysconf("SC_CLK_TCK")


def tdxsim_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tdxsim.cli", *args]


@dataclass
class Server:
    """One server process: where it listens and its admin credential (its first two stdout lines)."""

    proc: subprocess.Popen[str]
    address: str
    admin_file: str

    @property
    def admin_credential(self) -> str:
        return read_credential_file(self.admin_file)


def stop(proc: subprocess.Popen[str], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; reaps the process."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextmanager
def server(role: str, *args: str) -> Iterator[Server]:
    """``tdxsim ROLE ARGS --listen 127.0.0.1:0``, stopped on exit. Its stderr goes to a temporary file, whose
    last line says why when it does not start."""
    with tempfile.TemporaryFile(mode="w+") as errors:
        proc = subprocess.Popen(
            tdxsim_command(role, *args, "--listen", "127.0.0.1:0"),
            stdout=subprocess.PIPE,
            stderr=errors,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if not line.startswith("listening on "):
                status = proc.wait(10)
                errors.seek(0)
                last = [text for text in errors.read().splitlines() if text.strip()]
                raise RuntimeError(f"tdxsim {role} did not start (exit {status}): {last[-1] if last else ''}")
            admin_file = proc.stdout.readline().strip().removeprefix("admin credential: ")
            yield Server(proc, line.removeprefix("listening on "), admin_file)
        finally:
            stop(proc)
            if proc.stdout is not None:
                proc.stdout.close()


def make_pki(directory: Path) -> Path:
    """``tdxsim pki init DIRECTORY``: a simulated Intel PCS; returns the directory."""
    done = subprocess.run(
        tdxsim_command("pki", "init", str(directory)), capture_output=True, text=True, timeout=120
    )
    if done.returncode:
        raise RuntimeError(f"tdxsim pki init failed: {done.stderr.strip()}")
    return directory


@contextmanager
def host_and_verifier(work: Path, *, phys_mem: str = "4G") -> Iterator[tuple[Server, Server]]:
    """A PCS in ``work/pki``, a host provisioned from it and one verifier on a SQLite file trusting it."""
    pki = make_pki(work / "pki")
    with ExitStack() as stack:
        host = stack.enter_context(server("host", "--phys-mem", phys_mem, "--pki", str(pki)))
        verifier = stack.enter_context(
            server(
                "verifier",
                "--db",
                str(work / "verifier.db"),
                "--root",
                str(pki / "root_ca.pem"),
                "--collateral",
                str(pki / "collateral.json"),
            )
        )
        yield host, verifier


# ---- what processes cost ------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15 of proc(5))


def with_children(pid: int) -> list[int]:
    """``pid`` and its child processes (a PostgreSQL postmaster and its backends)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return [pid, *children]


def rss_bytes(pid: int) -> int:
    """Resident memory (``VmRSS``) of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"process {pid} has no VmRSS")


class MachineLoad:
    """How busy the machine's cores were between :meth:`start` and :meth:`stop` (``/proc/stat``)."""

    def __init__(self) -> None:
        self._start = self._sample()
        self.busy_cores = 0.0

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        with open("/proc/stat", encoding="ascii") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        idle = values[3] + values[4]  # idle, iowait
        return time.monotonic(), (sum(values[:8]) - idle) / _TICKS, idle / _TICKS

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> float:
        """Cores kept busy on average over the window (0 .. os.cpu_count())."""
        end = self._sample()
        wall = end[0] - self._start[0]
        self.busy_cores = (end[1] - self._start[1]) / wall if wall > 0 else 0.0
        return self.busy_cores


def cores() -> int:
    return len(os.sched_getaffinity(0))


# ---- guest workers ------------------------------------------------------------------------------


@dataclass
class WindowResult:
    """What a set of workers did in one timed window."""

    seconds: float
    ops: int
    bytes: int
    errors: int
    first_error: str
    busy_cores: float
    #: CPU seconds each watched process spent in the window, by role.
    cpu_by_role: dict[str, float]

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6

    @property
    def cpu_per_op(self) -> float:
        """CPU seconds per operation over the watched processes (inf when none finished)."""
        return sum(self.cpu_by_role.values()) / self.ops if self.ops else float("inf")

    def cpu_ceiling(self) -> str:
        """CPU per operation over the watched processes, and the rate this machine's cores allow at it."""
        if not self.ops:
            return "no operation finished"
        per_op = sum(self.cpu_by_role.values()) / self.ops
        parts = ", ".join(f"{role} {cpu / self.ops * 1e3:.1f}" for role, cpu in self.cpu_by_role.items())
        return (
            f"{per_op * 1e3:.1f} ms of CPU per operation ({parts}), so {cores()} cores allow at most "
            f"{cores() / per_op:.0f}/s"
        )


class WorkerPool:
    """Guest worker processes (:mod:`tdxsim.bench.worker`), each with its own TD on one host."""

    def __init__(
        self, host: Server, count: int, *, mode: str = "write", verifiers: Sequence[str] = ()
    ) -> None:
        """``count`` workers; in attest mode each one spreads its calls over all ``verifiers`` (the guest
        library's client-side round robin over replicas)."""
        self.procs: list[subprocess.Popen[str]] = []
        try:
            for _ in range(count):
                cmd = [
                    sys.executable, "-m", "tdxsim.bench.worker", "--host", host.address,
                    "--admin-credential", host.admin_file, "--mode", mode,
                ]  # fmt: skip
                if verifiers:
                    cmd += ["--verifier", ",".join(verifiers)]
                self.procs.append(
                    subprocess.Popen(
                        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                    )
                )
            for proc in self.procs:
                self._answer(proc)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _answer(proc: subprocess.Popen[str]) -> dict[str, object]:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            assert proc.stderr is not None
            lines = (proc.stderr.read() or "no output").strip().splitlines()
            raise RuntimeError(f"bench worker {proc.pid} failed: {lines[-1] if lines else 'no output'}")
        answer: dict[str, object] = json.loads(line)
        return answer

    def _send(self, proc: subprocess.Popen[str], command: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(command + "\n")
        proc.stdin.flush()

    def quote(self) -> bytes:
        """One quote of the first worker's TD."""
        self._send(self.procs[0], "quote")
        return bytes.fromhex(str(self._answer(self.procs[0])["quote"]))

    def run(self, count: int, seconds: float, watch: dict[str, list[int]] | None = None) -> WindowResult:
        """The first ``count`` workers work for the same ``seconds`` window; ``watch`` names processes
        (role → pids) whose CPU time in the window is reported."""
        workers = self.procs[:count]
        watch = {**(watch or {}), "guests": [p.pid for p in workers]}
        start = time.time() + 0.3  # every worker has its command before the window opens
        for proc in workers:
            self._send(proc, f"run {start} {start + seconds}")
        time.sleep(max(0.0, start - time.time()))
        load = MachineLoad()
        cpu0 = {role: sum(cpu_seconds(p) for p in pids) for role, pids in watch.items()}
        time.sleep(max(0.0, start + seconds - time.time()))
        cpu1 = {role: sum(cpu_seconds(p) for p in pids) for role, pids in watch.items()}
        busy = load.stop()
        answers = [self._answer(proc) for proc in workers]
        errors = [str(a["error"]) for a in answers if a["error"]]
        return WindowResult(
            seconds=seconds,
            ops=sum(int(str(a["ops"])) for a in answers),
            bytes=sum(int(str(a["bytes"])) for a in answers),
            errors=sum(int(str(a["errors"])) for a in answers),
            first_error=errors[0] if errors else "",
            busy_cores=busy,
            cpu_by_role={role: cpu1[role] - cpu0[role] for role in watch},
        )

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None and not proc.stdin.closed:
                with suppress(OSError):
                    proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

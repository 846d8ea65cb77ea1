"""Shared fixtures: real host processes on 127.0.0.1:0, always cleaned up; where the real TDX vectors are."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tdxsim.pgcluster import LocalCluster
from tdxsim.pgcluster import find_binaries as find_pg_binaries
from tdxsim.pgcluster import missing_reason as pg_missing_reason
from wire.credentials import (
    ENV_ADMIN_CREDENTIAL_FILE,
    generate_credential_file,
    read_credential_file,
    with_bearer,
)

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0


def _session_admin_file() -> Path:
    """The operator's admin credential every server a test starts uses, and every client finds through
    ``TDXSIM_ADMIN_CREDENTIAL_FILE`` (``tdxsim guest``, ``Td.launch``): one 0600 file for the session, the
    same however often this module is imported (as ``conftest`` and as ``tests.conftest``)."""
    existing = os.environ.get(_SESSION_ADMIN_FILE)
    if existing:
        return Path(existing)
    folder = tempfile.mkdtemp(prefix="tdxsim-tests-")
    atexit.register(shutil.rmtree, folder, True)
    path = generate_credential_file(folder)
    os.environ[_SESSION_ADMIN_FILE] = os.environ[ENV_ADMIN_CREDENTIAL_FILE] = str(path)
    return path


_SESSION_ADMIN_FILE = "TDXSIM_TESTS_ADMIN_FILE"
ADMIN_FILE = _session_admin_file()
ADMIN_CREDENTIAL = read_credential_file(ADMIN_FILE)

#: Real TDX data (quotes, collateral and an event log from real hardware, with expected verdicts) lives
#: outside the repository: in the folder ``TDXSIM_VECTORS`` names, else in ``../shared/vectors`` beside the
#: repository. Every test finds it through :func:`real_vectors` and skips, naming what is missing, without it.
VECTORS_ENV = "TDXSIM_VECTORS"
VECTORS_PROBE = "real/tdx_v4_quote.bin"


def _find_vectors() -> tuple[Path | None, str]:
    """(the vectors folder, '') or (None, the one-line reason a test that needs it skips)."""
    configured = os.environ.get(VECTORS_ENV, "")
    if configured:
        folder = Path(configured).expanduser().resolve()
        if (folder / VECTORS_PROBE).is_file():
            return folder, ""
        return None, f"real TDX vectors not found: {VECTORS_ENV}={configured} has no {VECTORS_PROBE}"
    beside = ROOT.parent / "shared" / "vectors"
    if (beside / VECTORS_PROBE).is_file():
        return beside, ""
    return None, (
        f"real TDX vectors not found: set {VECTORS_ENV}=DIR (a folder with {VECTORS_PROBE}, "
        "real/expected.json, ...) or put them at ../shared/vectors beside the repository"
    )


VECTORS, VECTORS_MISSING = _find_vectors()


def real_vectors() -> Path:
    """The vectors' ``real/`` folder; skips the calling test (or fixture) when there are no vectors."""
    if VECTORS is None:
        pytest.skip(VECTORS_MISSING)
    return VECTORS / "real"


def pytest_report_header() -> str:
    return f"real TDX vectors: {VECTORS}" if VECTORS is not None else VECTORS_MISSING


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A skip for want of the vectors is reported at the test that skipped, not at :func:`real_vectors`."""
    report: pytest.TestReport = yield
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple) and longrepr[2] == f"Skipped: {VECTORS_MISSING}":
        path, line = item.reportinfo()[:2]
        report.longrepr = (str(path), (line or 0) + 1, VECTORS_MISSING)
    return report


@dataclass
class HostProcess:
    proc: subprocess.Popen[str]
    address: str
    #: A plain channel: TD calls add their own TD credential.
    channel: grpc.Channel
    #: The host's admin credential (what it printed as ``admin credential: PATH``).
    admin_credential: str
    #: ``channel`` presenting the admin credential: what ``HostService`` calls go through.
    admin_channel: grpc.Channel

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        self.channel.close()
        return stop_process(self.proc, sig, timeout)


def stop_process(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
    """Send ``sig`` to a process still running, wait ``timeout`` seconds, then kill it; its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


def start_server(*args: str) -> tuple[subprocess.Popen[str], str]:
    """``tdxsim ARGS`` as a process with its output piped, and the address of its first stdout line
    (``listening on HOST:PORT``); one that does not get there is killed and its stderr raised."""
    cmd = [sys.executable, "-m", "tdxsim.cli", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        _, err = proc.communicate(timeout=START_TIMEOUT)
        raise RuntimeError(f"{args[0]} did not start: {line!r} {err}")
    return proc, line.removeprefix("listening on ")


def start_host(*extra: str) -> HostProcess:
    """Start ``tdxsim host`` as a separate process and wait until it serves (with the session's admin
    credential unless ``extra`` names another)."""
    if "--admin-credential-file" not in extra:
        extra = (*extra, "--admin-credential-file", str(ADMIN_FILE))
    proc, address = start_server("host", "--listen", "127.0.0.1:0", "--phys-mem", "256M", *extra)
    assert proc.stdout is not None
    admin_file = proc.stdout.readline().strip().removeprefix("admin credential: ")
    admin = read_credential_file(admin_file)
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT)
    return HostProcess(proc, address, channel, admin, with_bearer(channel, admin))


@pytest.fixture
def host_factory() -> Iterator[Callable[..., HostProcess]]:
    started: list[HostProcess] = []

    def factory(*extra: str) -> HostProcess:
        host = start_host(*extra)
        started.append(host)
        return host

    yield factory
    for host in started:
        host.stop(signal.SIGKILL if host.proc.poll() is None else signal.SIGTERM)


@pytest.fixture(scope="module")
def module_host() -> Iterator[HostProcess]:
    """One default ``tdxsim host`` process shared by a test module's tests (stopped after the module)."""
    started = start_host()
    try:
        yield started
    finally:
        started.stop()


def make_pki(directory: Path) -> None:
    """``tdxsim pki init DIRECTORY`` as a user runs it: a simulated Intel PCS for a host's ``--pki``."""
    result = subprocess.run(
        [sys.executable, "-m", "tdxsim.cli", "pki", "init", str(directory), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["platforms"]


@contextlib.contextmanager
def running_postgres() -> Iterator[LocalCluster]:
    """A throwaway PostgreSQL server started from the machine's binaries (``tdxsim.pgcluster``: initdb into a
    temporary folder, as an unprivileged user when run as root, Unix socket only, fsync off); stopped and
    deleted on leaving. Skips with one line only when the machine has no PostgreSQL binaries."""
    if find_pg_binaries() is None:
        pytest.skip(pg_missing_reason())
    cluster = LocalCluster.create(durable=False)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[LocalCluster]:
    """One PostgreSQL server for the session (:func:`running_postgres`)."""
    with running_postgres() as cluster:
        yield cluster


_DATABASES = iter(range(1, 1 << 30))


@pytest.fixture
def postgres_url(postgres_cluster: LocalCluster) -> str:
    """A fresh, empty database on the session's server, for one test."""
    return postgres_cluster.create_database(f"test_{os.getpid()}_{next(_DATABASES)}")

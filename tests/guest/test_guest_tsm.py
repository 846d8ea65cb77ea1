"""configfs-tsm in a simulated TD (guest/tsm.py, docs/attestation.md §16).

The FUSE tests start a host with a simulated PCS and ``tdxsim guest … --tsm DIR`` as processes, then touch the
tree only with shell tools, as a client inside a TD would; they skip where /dev/fuse is absent. The report
subsystem's own rules (generations, the cached outblob, errnos) are checked directly without a mount.
"""

from __future__ import annotations

import errno
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from guest.errors import QuoteFailed, TdGone, TdxStatusError
from guest.tsm import GENERATION, PROVIDER_ATTRIBUTE, ReportSubsystem, TsmError
from tests.conftest import ROOT, HostProcess, make_pki, start_host

pytestmark = pytest.mark.timeout(120)

needs_fuse = pytest.mark.skipif(
    not os.path.exists("/dev/fuse"), reason="no /dev/fuse: FUSE is unavailable here"
)

IMAGE = {
    "memory": "48M",
    "attributes": {"sept_ve_disable": True},
    "payload": [{"gpa": "0x100000", "text": "guest kernel", "measure": True}],
}


# ---- the report subsystem, without a mount -----------------------------------------------------------------
def fake_quote(calls: list[bytes]) -> ReportSubsystem:
    def quote(report_data: bytes) -> bytes:
        calls.append(report_data)
        return b"quote:" + report_data

    return ReportSubsystem(quote)


def test_outblob_is_made_once_per_write_generation_and_needs_exactly_64_bytes() -> None:
    calls: list[bytes] = []
    reports = fake_quote(calls)
    entry = reports.make_item("r0")
    assert reports.show(entry, GENERATION) == b"0\n"
    assert reports.show(entry, PROVIDER_ATTRIBUTE) == b"tdx_guest\n"
    with pytest.raises(TsmError) as before_any_write:
        reports.read_outblob(entry)
    assert before_any_write.value.errno == errno.EINVAL
    reports.write_inblob(entry, bytes(range(64)))
    assert reports.read_outblob(entry) == reports.read_outblob(entry) == b"quote:" + bytes(range(64))
    assert len(calls) == 1, "no write since the report was made: the cached outblob is returned"
    reports.write_inblob(entry, bytes(range(64)))
    reports.read_outblob(entry)
    assert len(calls) == 2 and reports.show(entry, GENERATION) == b"2\n"
    reports.write_inblob(entry, bytes(32))
    with pytest.raises(TsmError) as short:
        reports.read_outblob(entry)
    assert short.value.errno == errno.EINVAL, "tdx-guest wants TDX_REPORTDATA_LEN bytes"
    with pytest.raises(TsmError) as exists:
        reports.make_item("r0")
    assert exists.value.errno == errno.EEXIST


def test_write_generation_may_not_wrap_onto_the_read_generation() -> None:
    reports = fake_quote([])
    entry = reports.make_item("r0")
    entry.write_generation = (1 << 64) - 1  # read_generation 0: one more write would make them equal
    with pytest.raises(TsmError) as busy:
        reports.write_inblob(entry, bytes(64))
    assert busy.value.errno == errno.EBUSY


@pytest.mark.parametrize(
    ("failure", "outcome"),
    [
        (QuoteFailed("no QGS", "QGS_UNAVAILABLE", 0x8000000000000001), b""),
        (QuoteFailed("refused", "GET_QUOTE_ERROR", 0x8000000000000000), b""),
        (QuoteFailed("30 s", "GET_QUOTE_TIMEOUT", 0), errno.ETIMEDOUT),
        (TdxStatusError("R10", "GET_QUOTE_TDVMCALL_FAILED", 1, 0), errno.EIO),
        (TdGone("host down", "HOST_UNREACHABLE", "UNAVAILABLE"), errno.EIO),
    ],
)
def test_quote_failures_read_as_the_tdx_guest_driver_reports_them(
    failure: Exception, outcome: bytes | int
) -> None:
    def quote(report_data: bytes) -> bytes:
        raise failure

    reports = ReportSubsystem(quote, log=io.StringIO())
    entry = reports.make_item("r0")
    reports.write_inblob(entry, bytes(64))
    if isinstance(outcome, bytes):
        assert reports.read_outblob(entry) == outcome  # the driver copies out_len (0) bytes
    else:
        with pytest.raises(TsmError) as err:
            reports.read_outblob(entry)
        assert err.value.errno == outcome


# ---- the tree through FUSE, with shell tools ---------------------------------------------------------------
@dataclass
class Tree:
    dir: Path
    proc: subprocess.Popen[str]
    pki: Path

    @property
    def report(self) -> Path:
        return self.dir / "report"


def mounted(path: Path) -> bool:
    with open("/proc/mounts") as mounts:
        return any(line.split()[1] == str(path) for line in mounts)


def sh(script: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", script, "sh", *args], cwd=cwd, capture_output=True, text=True, timeout=30
    )


def printf_bytes(data: bytes) -> str:
    """A printf format that writes ``data`` (no NUL bytes) through octal escapes."""
    assert 0 not in data
    return "".join(f"\\{byte:03o}" for byte in data)


def reportdata() -> bytes:
    return bytes(b or 1 for b in secrets.token_bytes(64))


@pytest.fixture(scope="module")
def pki_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HostProcess, Path]]:
    pki = tmp_path_factory.mktemp("pki")
    make_pki(pki)
    host = start_host("--pki", str(pki))
    yield host, pki
    host.stop()


@pytest.fixture
def tree(pki_host: tuple[HostProcess, Path], tmp_path: Path) -> Iterator[Tree]:
    host, pki = pki_host
    image = tmp_path / "image.json"
    image.write_text(json.dumps(IMAGE))
    mnt = tmp_path / "tsm"
    mnt.mkdir()
    cmd = [sys.executable, "-m", "tdxsim.cli", "guest", "--host", host.address, "--image", str(image)]
    proc = subprocess.Popen(
        [*cmd, "--json", "--tsm", str(mnt)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.communicate(timeout=10)[1]
        assert json.loads(line)["tsm"] == str(mnt)
        assert mounted(mnt)
        yield Tree(mnt, proc, pki)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for unmount in (["fusermount3", "-u", "-z", str(mnt)], ["umount", "-l", str(mnt)]):
            if mounted(mnt):
                subprocess.run(unmount, capture_output=True, timeout=10, check=False)
        assert not mounted(mnt), f"{mnt} is still mounted"


def verify(quote: bytes, pki: Path) -> dcap_qvl.VerifiedReport:
    collateral = dcap_qvl.QuoteCollateralV3.from_json((pki / "collateral.json").read_text())
    root = x509.load_pem_x509_certificate((pki / "root_ca.pem").read_bytes())
    root_der = root.public_bytes(serialization.Encoding.DER)
    return dcap_qvl.verify_with_root_ca(quote, collateral, root_der, int(time.time()))


@needs_fuse
def test_a_shell_gets_a_dcap_quote_of_its_inblob_from_the_tree(tree: Tree, tmp_path: Path) -> None:
    report = tree.report
    assert sh("mkdir r0 && ls r0 && cat r0/provider r0/generation", report).stdout.split() == [
        "generation",
        "inblob",
        "outblob",
        "provider",
        "tdx_guest",
        "0",
    ]
    first, second = reportdata(), reportdata()
    quote = tmp_path / "quote.bin"

    wrote = sh(f"printf '{printf_bytes(first)}' > r0/inblob && cat r0/generation", report)
    assert (wrote.returncode, wrote.stdout) == (0, "1\n"), wrote.stderr
    read = sh('cat r0/outblob > "$1" && cat r0/generation', report, str(quote))
    assert (read.returncode, read.stdout) == (0, "1\n"), read.stderr
    verified = verify(quote.read_bytes(), tree.pki)
    assert verified.status == "UpToDate"
    assert dcap_qvl.Quote.parse(quote.read_bytes()).report.report_data == first

    again = sh(f"printf '{printf_bytes(second)}' > r0/inblob && cat r0/generation", report)
    assert again.stdout == "2\n", "a second write advances the generation"
    sh('cat r0/outblob > "$1"', report, str(quote))
    assert dcap_qvl.Quote.parse(quote.read_bytes()).report.report_data == second
    assert verify(quote.read_bytes(), tree.pki).status == "UpToDate"

    assert sh("rmdir r0 && ls -A", report).stdout == ""


@needs_fuse
def test_an_inblob_over_64_bytes_is_refused_with_efbig(tree: Tree) -> None:
    report = tree.report
    sh("mkdir r1", report)
    refused = sh("env printf '%065d' 0 > r1/inblob", report)  # coreutils printf names the errno
    assert refused.returncode != 0
    assert os.strerror(errno.EFBIG) in refused.stderr, refused.stderr
    # configfs marks the file written before the size check, so closing it commits an empty inblob.
    after = sh("cat r1/generation; cat r1/outblob", report)
    assert after.stdout == "1\n"
    assert os.strerror(errno.EINVAL) in after.stderr


@needs_fuse
def test_the_tree_answers_as_configfs_does(tree: Tree) -> None:
    report = tree.report
    assert sh("mkdir r2", report).returncode == 0
    cases = {
        "cat r2/outblob": errno.EINVAL,  # no inblob yet
        "cat r2/inblob": errno.EACCES,  # write-only, for root too
        "echo x > r2/provider": errno.EACCES,
        "cat r2/privlevel_floor": errno.ENOENT,  # hidden by the TDX provider
        "cat r2/auxblob": errno.ENOENT,
        "mkdir r2": errno.EEXIST,
        "mkdir r2/sub": errno.EPERM,
        "mkdir ../elsewhere": errno.EPERM,
        "rmdir ../report": errno.EPERM,
        "rm r2/inblob": errno.EPERM,
        "touch r2/new": errno.EACCES,
    }
    for command, code in cases.items():
        result = sh(command, report)
        assert result.returncode != 0 and os.strerror(code) in result.stderr, (command, result.stderr)
    assert sh("rmdir r2 && ls -A", report).stdout == ""


@needs_fuse
def test_sigterm_unmounts_the_tree_and_ends_the_guest(tree: Tree) -> None:
    tree.proc.send_signal(signal.SIGTERM)
    assert tree.proc.wait(15) == 130
    assert not mounted(tree.dir)


@needs_fuse
def test_ctrl_c_unmounts_the_tree_and_ends_the_guest(tree: Tree) -> None:
    tree.proc.send_signal(signal.SIGINT)
    assert tree.proc.wait(15) == 130
    assert not mounted(tree.dir)


@needs_fuse
def test_concurrent_shell_writers_each_get_a_valid_quote_and_every_write_counts(
    tree: Tree, tmp_path: Path
) -> None:
    report = tree.report
    assert sh("mkdir r3", report).returncode == 0
    writers, writes_each = 3, 2
    inblobs = [[reportdata() for _ in range(writes_each)] for _ in range(writers)]

    def writer(index: int) -> subprocess.CompletedProcess[str]:
        blobs = inblobs[index]
        script = " && ".join(
            f"printf '{printf_bytes(data)}' > r3/inblob && cat r3/outblob > \"$1.{n}\""
            for n, data in enumerate(blobs)
        )
        return sh(script, report, str(tmp_path / f"quote{index}"))

    with ThreadPoolExecutor(writers) as pool:
        done = list(pool.map(writer, range(writers)))
    assert [(result.returncode, result.stderr) for result in done] == [(0, "")] * writers
    written = {data for blobs in inblobs for data in blobs}
    for index in range(writers):
        for n in range(writes_each):
            quote = (tmp_path / f"quote{index}.{n}").read_bytes()
            assert verify(quote, tree.pki).status == "UpToDate"
            # Writers share the entry, so a read may answer another writer's later inblob (the generation
            # tells a careful client so); it is always one that was written.
            assert dcap_qvl.Quote.parse(quote).report.report_data in written
    assert sh("cat r3/generation", report).stdout == f"{writers * writes_each}\n"
    assert sh("rmdir r3 && ls -A", report).stdout == ""

"""``tdxsim host --phys-mem``: hosts the size of real ones on any machine; an impossible size is one
stderr line and exit 2 (docs/memory-model.md §7.1)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import HostProcess
from tests.guest.guest_helpers import GIB, MIB, image, launch, stats

ROOT = Path(__file__).resolve().parents[2]
TIB = 1 << 40


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def test_a_tebibyte_host_serves_a_64_gib_td_and_holds_what_it_touched(
    host_factory: Callable[..., HostProcess],
) -> None:
    host = host_factory("--phys-mem", "1T")
    assert stats(host).phys_pages_total * 4096 > TIB - 2 * MIB  # all but the reserved first MiB
    before = rss_bytes(host.proc.pid)
    with launch(host, image(memory=64 * GIB)) as td:
        data = bytes(range(256)) * (MIB // 256)
        gpas = [td.alloc(MIB) for _ in range(4)]
        td.write_many([(gpa, data) for gpa in gpas])
        assert td.read_many([(gpa, MIB) for gpa in gpas]) == [data] * len(gpas)
        assert rss_bytes(host.proc.pid) - before < 256 * MIB
    assert host.proc.poll() is None


@pytest.mark.parametrize(
    ("size", "says"),
    [
        ("4P", "is more than the 64 TiB that 52-bit physical addresses reach"),
        ("12X", "is not a size"),
        ("1e400G", "is not a size"),
        ("0", "is not a size"),
        ("", "is not a size"),
    ],
)
def test_an_impossible_size_is_one_line_and_exit_2(size: str, says: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tdxsim.cli", "host", "--listen", "127.0.0.1:0", f"--phys-mem={size}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tdxsim host: ") and says in lines[0]

"""The guest path against the bare transport: what the guest library and the host's TD machinery (S-EPT walk,
per-KeyID AES-XTS, line MACs) add on top of one gRPC round trip (docs/conventions.md §8).

Starts its own ``tdxsim host`` process on 127.0.0.1:0, launches a TD through the guest library and, on the
same channel, interleaves:

- ``private_write_1mib`` / ``private_read_1mib``: MB/s of 1 MiB private writes/reads (one ``Run`` each) vs
  a bare ``Echo`` of the same 1 MiB payload; ratio = value / limit, target ≥ 0.7;
- ``small_read_p50``: p50 µs of a 64-byte private read vs a 64-byte unary ``Echo``; ratio = value / limit,
  target ≤ 1.3.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from guest.td import Td
from wire.credentials import read_credential_file
from wire.v1 import host_pb2

MIB = 1 << 20
Row = dict[str, object]


def _start_host() -> tuple[subprocess.Popen[str], str, str]:
    cmd = [sys.executable, "-m", "tdxsim.cli", "host", "--listen", "127.0.0.1:0", "--phys-mem", "256M"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"host did not start: {line!r}")
    admin_file = proc.stdout.readline().strip().removeprefix("admin credential: ")
    return proc, line.removeprefix("listening on "), read_credential_file(admin_file)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _row(name: str, value: float, unit: str, limit: float, limit_name: str, higher_is_better: bool) -> Row:
    ratio = value / limit
    target = 0.7 if higher_is_better else 1.3
    return {
        "name": name,
        "value": round(value, 1),
        "unit": unit,
        "limit": round(limit, 1),
        "limit_name": limit_name,
        "ratio": round(ratio, 3),
        "target": target,
        "met": ratio >= target if higher_is_better else ratio <= target,
    }


def bench_guest(big_rounds: int = 40, small_rounds: int = 1000) -> list[Row]:
    proc, address, admin = _start_host()
    try:
        image = host_pb2.TdImage(
            memory_bytes=64 * MIB, payload=[host_pb2.Payload(gpa=0, data=b"bench", measure=True)]
        )
        td, _ = Td.launch(address, image, name="bench", admin_credential=admin)
        with td:
            gpa = td.alloc(2 * MIB)
            payload = bytes(range(256)) * (MIB // 256)
            small = payload[:64]
            td.write(gpa, payload)
            for _ in range(5):  # warm up channel, caches and the host's cipher lanes
                td.echo(payload)
                td.write(gpa, payload)
                td.read(gpa, MIB)
            print(f"  1 MiB batches x {big_rounds} ...", file=sys.stderr, flush=True)
            echo, write, read = [], [], []
            for _ in range(big_rounds):
                echo.append(_timed(lambda: td.echo(payload)))
                write.append(_timed(lambda: td.write(gpa, payload)))
                read.append(_timed(lambda: td.read(gpa, MIB)))
            print(f"  64-byte accesses x {small_rounds} ...", file=sys.stderr, flush=True)
            echo_small, read_small = [], []
            for _ in range(small_rounds):
                echo_small.append(_timed(lambda: td.echo(small)))
                read_small.append(_timed(lambda: td.read(gpa, 64)))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    echo_mbs = big_rounds / sum(echo)
    echo_name = "bare Echo of the same 1 MiB payload, same channel"
    return [
        _row("private_write_1mib", big_rounds / sum(write), "MB/s", echo_mbs, echo_name, True),
        _row("private_read_1mib", big_rounds / sum(read), "MB/s", echo_mbs, echo_name, True),
        _row(
            "small_read_p50",
            statistics.median(read_small) * 1e6,
            "us",
            statistics.median(echo_small) * 1e6,
            "bare unary Echo of 64 bytes, p50",
            False,
        ),
    ]

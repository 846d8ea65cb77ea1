"""``make demo``: start a real host process and drive it with a scripted gRPC client.

Shows the two worlds the 2021 guest-private-memory RFC separates: in ``gmem`` mode the host
cannot touch TD-private memory at all; in ``legacy`` mode it can, reads zeros, and its write
poisons the TD and finally crashes the host machine.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from guest.connection import td_channel
from tdxsim.v1 import guest_pb2, guest_pb2_grpc, host_pb2, host_pb2_grpc

MIB = 1 << 20


def say(text: str) -> None:
    print(text, flush=True)


@contextmanager
def host_process(*extra: str) -> Iterator[tuple[subprocess.Popen[str], grpc.Channel]]:
    cmd = [
        sys.executable,
        "-m",
        "tdxsim.cli",
        "host",
        "--listen",
        "127.0.0.1:0",
        "--phys-mem",
        "256M",
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    address = proc.stdout.readline().strip().removeprefix("listening on ")
    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
        say(f"  host process {proc.pid} listening on {address} ({' '.join(extra) or 'gmem mode'})")
        yield proc, channel
    finally:
        channel.close()
        if proc.poll() is None:
            proc.terminate()
        proc.wait(10)


def _launch(channel: grpc.Channel) -> tuple[int, int, guest_pb2_grpc.TdGuestServiceStub]:
    admin = host_pb2_grpc.HostServiceStub(channel)
    td = admin.CreateTd(host_pb2.CreateTdRequest(memory_bytes=64 * MIB, name="demo"), timeout=10)
    guest = guest_pb2_grpc.TdGuestServiceStub(td_channel(channel, td.credential))
    admin.FinalizeTd(host_pb2.FinalizeTdRequest(td_id=td.td_id), timeout=10)
    say(
        f"  TD {td.td_id} created with HKID {td.hkid}, 64 MiB in guest memory, shared bit 0x{td.shared_bit:x}"
    )
    done = guest.AcceptPages(
        guest_pb2.AcceptPagesRequest(td_id=td.td_id, ranges=[guest_pb2.GpaRange(gpa=0, length=2 * MIB)]),
        timeout=30,
    )
    say(f"  guest accepted {done.pages_accepted} pages (TDG.MEM.PAGE.ACCEPT zeroes each with the TD key)")
    guest.WriteMemory(
        guest_pb2.WriteMemoryRequest(td_id=td.td_id, writes=[guest_pb2.GpaData(gpa=0, data=b"my TD secret")]),
        timeout=10,
    )
    say("  guest wrote 'my TD secret' to private GPA 0x0")
    return td.td_id, td.shared_bit, guest


def _attempt(label: str, call: grpc.UnaryUnaryMultiCallable, request: object) -> object:
    try:
        reply = call(request, timeout=10)
    except grpc.RpcError as err:
        say(f"  {label}: {err.code().name}: {err.details()}")
        return None
    return reply


def main() -> int:
    say("== gmem mode: private memory lives in guest_memfd, never mapped by the host")
    with host_process() as (_, channel):
        admin = host_pb2_grpc.HostServiceStub(channel)
        td_id, shared_bit, guest = _launch(channel)
        _attempt(
            "host reads GPA 0x0", admin.HostRead, host_pb2.HostReadRequest(td_id=td_id, gpa=0, length=12)
        )
        mapped = guest.MapGpa(guest_pb2.MapGpaRequest(td_id=td_id, gpa=shared_bit, size=4096), timeout=10)
        say(f"  guest MapGPA(0x0 -> shared): status {mapped.status}, {mapped.chunks} hypercall exit(s)")
        shared = guest.ReadMemory(
            guest_pb2.ReadMemoryRequest(td_id=td_id, ranges=[guest_pb2.GpaRange(gpa=shared_bit, length=12)]),
            timeout=10,
        )
        say(f"  guest reads the page as shared: {shared.data[0]!r} (conversion destroyed the contents)")
        stats = admin.GetStats(host_pb2.GetStatsRequest(), timeout=10)
        say(
            f"  host stats: {stats.tds} TD, {stats.keyids_free}/{stats.keyids_total} KeyIDs free, "
            f"{stats.exits} exits"
        )

    say("\n== legacy mode: the pre-2021 world, private memory also mapped in host userspace")
    with host_process("--memory-mode", "legacy") as (proc, channel):
        admin = host_pb2_grpc.HostServiceStub(channel)
        td_id, _, guest = _launch(channel)
        reply = _attempt(
            "host reads GPA 0x0", admin.HostRead, host_pb2.HostReadRequest(td_id=td_id, gpa=0, length=12)
        )
        if isinstance(reply, host_pb2.HostReadResponse):
            say(f"  host reads GPA 0x0: {reply.data!r} (TD-owned lines read as zeros)")
        _attempt(
            "host writes GPA 0x0",
            admin.HostWrite,
            host_pb2.HostWriteRequest(td_id=td_id, gpa=0, data=b"oops"),
        )
        say("  host wrote 'oops' over the TD's line: its TD-owner bit is now clear")
        _attempt(
            "guest reads GPA 0x0",
            guest.ReadMemory,
            guest_pb2.ReadMemoryRequest(td_id=td_id, ranges=[guest_pb2.GpaRange(gpa=0, length=12)]),
        )
        _attempt(
            "host reads GPA 0x0 again",
            admin.HostRead,
            host_pb2.HostReadRequest(td_id=td_id, gpa=0, length=12),
        )
        say(f"  host process exited with status {proc.wait(15)}: a machine check took the whole host down")
    say("\nThat is why guest_memfd exists. Next: `make test`, or `tdxsim host --help`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Helpers for the guest tests: launching TDs, independent measurements, host stats."""

from __future__ import annotations

import hashlib
from typing import Any

from guest.td import Td
from tests.conftest import HostProcess
from tests.conftest import make_pki as make_pki
from wire.v1 import host_pb2, host_pb2_grpc

PAGE = 4096
MIB = 1 << 20
GIB = 1 << 30
KERNEL = bytes(range(256)) * 24  # 6 KiB: two pages once padded


def image(
    memory: int = 64 * MIB,
    attributes: int | None = None,
    payload: list[tuple[int, bytes, bool]] | None = None,
    **fields: Any,
) -> host_pb2.TdImage:
    payload = payload if payload is not None else [(MIB, KERNEL, True)]
    img = host_pb2.TdImage(
        memory_bytes=memory,
        payload=[host_pb2.Payload(gpa=g, data=d, measure=m) for g, d, m in payload],
        **fields,
    )
    if attributes is not None:
        img.attributes = attributes
    return img


def launch(host: HostProcess, img: host_pb2.TdImage | None = None, name: str = "") -> Td:
    td, _ = Td.launch(host.address, img or image(), name=name, timeout=60)
    return td


def independent_mrtd(payload: list[tuple[int, bytes, bool]]) -> bytes:
    """MRTD from memory-model.md §8's 128-byte blocks, written without the simulator's code."""
    h = hashlib.sha384()
    for gpa, data, measure in payload:
        data = data + bytes(-len(data) % PAGE)
        for page in range(0, len(data), PAGE):
            h.update(b"MEM.PAGE.ADD".ljust(16, b"\0") + (gpa + page).to_bytes(8, "little") + bytes(104))
            if measure:
                for chunk in range(0, PAGE, 256):
                    where = (gpa + page + chunk).to_bytes(8, "little")
                    h.update(b"MR.EXTEND".ljust(16, b"\0") + where + bytes(104))
                    h.update(data[page + chunk : page + chunk + 256])
    return h.digest()


def stats(host: HostProcess) -> host_pb2.GetStatsResponse:
    reply: host_pb2.GetStatsResponse = host_pb2_grpc.HostServiceStub(host.admin_channel).GetStats(
        host_pb2.GetStatsRequest(), timeout=10
    )
    return reply

"""A guest pointed at an address where no host listens fails fast with a named reason."""

from __future__ import annotations

import socket

import pytest

from guest.errors import TdGone
from guest.td import Td
from wire.v1 import host_pb2


def test_launch_at_an_address_nobody_listens_on_is_host_unreachable() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and is closed now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TdGone) as err:
        Td.launch(f"127.0.0.1:{port}", host_pb2.TdImage(memory_bytes=1 << 20), connect_timeout=0.5)
    assert (err.value.code, err.value.reason) == ("UNAVAILABLE", "HOST_UNREACHABLE")

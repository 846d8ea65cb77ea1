"""``tdxsim memmap``: a TD after conversions, with every state class present, drawn in the terminal (80
columns, colour only on a terminal) and as SVG whose ranges a parser counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guest.errors import GuestError
from guest.td import Td
from tdxsim.memmap import STYLES, fetch, render_text
from tests.conftest import ROOT, HostProcess
from tests.guest.guest_helpers import image, launch
from wire.v1 import host_pb2, host_pb2_grpc

PAGE = 4096
MIB = 1 << 20
LINE = 64
SVG = "{http://www.w3.org/2000/svg}"
STATES = {"private accepted", "private pending", "shared", "unbacked", "poisoned"}


@pytest.fixture(scope="module")
def td(module_host: HostProcess) -> Iterator[Td]:
    """A TD (without SEPT_VE_DISABLE) after conversions: accepted pages, a pending page it touched, shared
    pages, untouched memory, and a page poisoned by a host-kernel store it then read."""
    with launch(module_host, image(memory=64 * MIB, attributes=0)) as target:
        target.accept(0, 8 * PAGE)
        target.write(0, b"accepted")
        target.convert_to_shared(4 * MIB, 4 * PAGE)
        target.write(target.shared(4 * MIB), b"shared")
        with pytest.raises(GuestError):  # an unaccepted page touched: augmented, PENDING, a #VE
            target.read(8 * MIB, 1)
        host_pb2_grpc.HostServiceStub(module_host.admin_channel).PhysicalWrite(
            host_pb2.PhysicalWriteRequest(
                path=host_pb2.PHYSICAL_PATH_HOST_KEYID,
                td_gpa=host_pb2.TdGpa(td_id=target.td_id, gpa=2 * PAGE),
                data=bytes(LINE),
            ),
            timeout=10,
        )
        with pytest.raises(GuestError):  # the TD consumes the poison: dead, its map stays until destroyed
            target.read(2 * PAGE, LINE)
        yield target


def memmap(host: HostProcess, td: Td, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tdxsim.cli", "memmap", "--host", host.address, "--td", str(td.td_id), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def host_runs(host: HostProcess, td: Td) -> list[Any]:
    return fetch(host_pb2_grpc.HostServiceStub(host.admin_channel), td.td_id).runs


def test_the_terminal_picture_shows_every_state_within_80_columns(module_host: HostProcess, td: Td) -> None:
    done = memmap(module_host, td)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "\x1b[" not in out, "no colour when stdout is not a terminal"
    assert all(len(line) <= 80 for line in out.splitlines())
    band = next(line for line in out.splitlines() if line.startswith("  |"))
    assert {STYLES[s].char for s in STYLES} <= set(band), band
    legend = out[out.index("legend:") :]
    for state in STATES:
        assert state in legend
    assert "guest_memfd" in out and "memslot 0: GPA 0x0-0x4000000 (64 MiB)" in out


def test_colour_only_on_a_terminal_and_never_with_no_color(module_host: HostProcess, td: Td) -> None:
    gmap = fetch(host_pb2_grpc.HostServiceStub(module_host.admin_channel), td.td_id)
    coloured = render_text(gmap, color=True)
    assert "\x1b[" in coloured
    visible = [line for line in coloured.splitlines() if "\x1b[" not in line]
    assert all(len(line) <= 80 for line in visible)
    assert "\x1b[" not in memmap(module_host, td, NO_COLOR="1").stdout


def test_the_svg_has_one_range_per_run_and_every_state(
    module_host: HostProcess, td: Td, tmp_path: Path
) -> None:
    path = tmp_path / "map.svg"
    done = memmap(module_host, td, "--svg", str(path))
    assert done.returncode == 0, done.stderr
    root = ET.parse(path).getroot()
    ranges = [r for r in root.iter(f"{SVG}rect") if "run" in r.get("class", "").split()]
    runs = host_runs(module_host, td)
    assert len(ranges) == len(runs)
    assert {r.get("data-state") for r in ranges} == {
        "private_accepted",
        "private_pending",
        "shared",
        "unbacked",
        "poisoned",
    }
    assert [int(r.get("data-size", "0")) for r in ranges] == [run.size for run in runs]
    assert sum(int(r.get("data-size", "0")) for r in ranges) == 64 * MIB
    poisoned = [r for r in ranges if r.get("data-state") == "poisoned"]
    assert [(r.get("data-gpa"), r.get("data-size")) for r in poisoned] == [("0x2000", str(PAGE))]


def test_json_lists_the_runs_with_guest_memfd_offsets(module_host: HostProcess, td: Td) -> None:
    done = memmap(module_host, td, "--json")
    doc = json.loads(done.stdout)
    assert {run["state"] for run in doc["runs"]} == STATES
    private = [run for run in doc["runs"] if run["private"]]
    assert all(run["guest_memfd"] == doc["memslots"][0]["guest_memfd"] for run in private)
    assert all(run["guest_memfd_offset"] == run["gpa"] for run in private)  # memslot 0 maps offset = GPA
    shared = [run for run in doc["runs"] if not run["private"]]
    assert shared and all(run["guest_memfd"] == -1 for run in shared)


def test_an_unknown_td_is_one_line(module_host: HostProcess) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tdxsim.cli", "memmap", "--host", module_host.address, "--td", "999999"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "999999" in done.stderr

"""``tdxsim memmap``: a picture of one TD's guest-physical address space (docs/memory-model.md §1.7).

It asks the host for the TD's GPA map (``HostService.GetGpaMap``, in pieces: the host answers in runs whose
cost follows what is populated, so a 64 GiB TD costs what it touched) and draws each memslot as a band of
cells, every cell showing the most telling state in its stretch of GPAs: poisoned, private pending, shared,
private accepted, unbacked. Below the bands: a legend with the pages in each state and the runs, with their
guest_memfd offsets. Colour when stdout is a terminal and ``NO_COLOR`` is unset; each state also has its own
character, so the picture reads the same without colour. ``--svg FILE`` writes the same picture as SVG for
documents: one ``<rect class="run ...">`` per run, with its GPA, size and state as attributes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import grpc

from wire import credentials
from wire.v1 import host_pb2, host_pb2_grpc

PAGE = 4096
WIDTH = 80
TIMEOUT = 30.0
#: Runs listed under the picture unless ``--all-runs``.
LISTED_RUNS = 24


@dataclass(frozen=True)
class Style:
    name: str
    char: str
    ansi: str  # SGR parameters of the cell's colour
    fill: str  # SVG colour


#: The states in the order a cell shows them when its stretch holds several: the rarest, most telling first.
STYLES: dict[int, Style] = {
    host_pb2.GPA_STATE_POISONED: Style("poisoned", "X", "97;41", "#d62728"),
    host_pb2.GPA_STATE_PRIVATE_PENDING: Style("private pending", "p", "30;43", "#f2c14e"),
    host_pb2.GPA_STATE_SHARED: Style("shared", "s", "30;46", "#5bc0de"),
    host_pb2.GPA_STATE_PRIVATE_ACCEPTED: Style("private accepted", "#", "97;42", "#2e8b57"),
    host_pb2.GPA_STATE_UNBACKED: Style("unbacked", ".", "90", "#e6e6e6"),
}
PRIORITY = list(STYLES)


@dataclass
class GpaMap:
    td_id: int
    memory_mode: str
    shared_bit: int
    memslots: list[host_pb2.MemslotInfo]
    runs: list[host_pb2.GpaRun]


def fetch(stub: Any, td_id: int) -> GpaMap:
    """The whole map, asking again from ``next_gpa`` until the host says it is complete."""
    runs: list[host_pb2.GpaRun] = []
    start = 0
    while True:
        piece = stub.GetGpaMap(host_pb2.GetGpaMapRequest(td_id=td_id, start_gpa=start), timeout=TIMEOUT)
        runs.extend(piece.runs)
        if piece.complete:
            return GpaMap(td_id, piece.memory_mode, piece.shared_bit, list(piece.memslots), _merge(runs))
        start = piece.next_gpa


def _merge(runs: list[host_pb2.GpaRun]) -> list[host_pb2.GpaRun]:
    """Runs split only by the pieces the host answered in, joined again."""
    out: list[host_pb2.GpaRun] = []
    for run in runs:
        last = out[-1] if out else None
        if (
            last is not None
            and last.gpa + last.size == run.gpa
            and (last.state, last.private, last.memslot, last.guest_memfd)
            == (run.state, run.private, run.memslot, run.guest_memfd)
            and (run.guest_memfd < 0 or last.guest_memfd_offset + last.size == run.guest_memfd_offset)
        ):
            merged = host_pb2.GpaRun()
            merged.CopyFrom(last)
            merged.size += run.size
            out[-1] = merged
        else:
            out.append(run)
    return out


def size_text(nbytes: int) -> str:
    """``nbytes`` in the largest binary unit it reaches: exact when it divides, else to four digits."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift:
            value = nbytes / (1 << shift)
            return f"{value:g} {unit}" if nbytes % (1 << shift) == 0 else f"{value:.4g} {unit}"
    return f"{nbytes} B"


def cell_bytes(size: int, cells: int) -> int:
    """The smallest power-of-two number of pages per cell that fits ``size`` bytes into ``cells`` cells."""
    cell = PAGE
    while -(-size // cell) > cells:
        cell *= 2
    return cell


def _cells(slot: host_pb2.MemslotInfo, runs: Sequence[host_pb2.GpaRun], cell: int) -> list[int]:
    """The state each ``cell``-byte cell of the slot shows: the first of :data:`PRIORITY` present in it."""
    width = -(-slot.memory_size // cell)
    present: list[set[int]] = [set() for _ in range(width)]
    start = slot.guest_phys_addr
    for run in runs:
        lo = (run.gpa - start) // cell
        hi = -(-(run.gpa + run.size - start) // cell)
        for index in range(max(lo, 0), min(hi, width)):
            present[index].add(run.state)
    return [next((s for s in PRIORITY if s in states), host_pb2.GPA_STATE_UNBACKED) for states in present]


def render_text(gmap: GpaMap, *, color: bool, width: int = WIDTH, all_runs: bool = False) -> str:
    band_width = width - 4
    lines = [f"TD {gmap.td_id}: GPA map ({gmap.memory_mode} mode, shared bit 0x{gmap.shared_bit:x})"]
    totals: dict[int, int] = dict.fromkeys(STYLES, 0)
    for run in gmap.runs:
        totals[run.state] = totals.get(run.state, 0) + run.size
    for slot in gmap.memslots:
        runs = [run for run in gmap.runs if run.memslot == slot.slot]
        end = slot.guest_phys_addr + slot.memory_size
        backing = (
            f"guest_memfd {slot.guest_memfd} @ 0x{slot.guest_memfd_offset:x}" if slot.guest_memfd >= 0 else ""
        )
        lines.append("")
        lines.append(
            f"memslot {slot.slot}: GPA 0x{slot.guest_phys_addr:x}-0x{end:x} ({size_text(slot.memory_size)})"
            + (f", {backing}" if backing else "")
        )
        cell = cell_bytes(slot.memory_size, band_width)
        cells = _cells(slot, runs, cell)
        band = "".join(_paint(STYLES[state], color) for state in cells)
        lines.append(f"  |{band}|")
        left, right = f"0x{slot.guest_phys_addr:x}", f"0x{end:x}"
        middle = f"one cell = {size_text(cell)}"
        gap = max(1, len(cells) + 2 - len(left) - len(right) - len(middle))
        lines.append(f"  {left}{' ' * (gap // 2)}{middle}{' ' * (gap - gap // 2)}{right}")
    lines.append("")
    legend = [
        f"{_paint(style, color)} {style.name} {size_text(totals[state]) if totals[state] else '0'}"
        for state, style in STYLES.items()
    ]
    lines.extend(_wrap("legend: ", legend, width))
    lines.append("")
    lines.append(f"{'GPA':>14} {'size':>10}  {'state':<17} {'slot':>4}  guest_memfd offset")
    shown = gmap.runs if all_runs else gmap.runs[:LISTED_RUNS]
    for run in shown:
        name = STYLES[run.state].name
        if run.state == host_pb2.GPA_STATE_UNBACKED and not run.private:
            name = "shared, unbacked"
        where = f"fd {run.guest_memfd} @ 0x{run.guest_memfd_offset:x}" if run.guest_memfd >= 0 else "-"
        lines.append(f"{hex(run.gpa):>14} {size_text(run.size):>10}  {name:<17} {run.memslot:>4}  {where}")
    if len(shown) < len(gmap.runs):
        lines.append(f"… {len(gmap.runs) - len(shown)} more runs (--all-runs lists them)")
    return "\n".join(lines) + "\n"


def _paint(style: Style, color: bool) -> str:
    return f"\x1b[{style.ansi}m{style.char}\x1b[0m" if color else style.char


def _wrap(prefix: str, items: list[str], width: int) -> list[str]:
    """Legend items on lines of at most ``width`` visible characters (colour codes take no room)."""
    lines, current, visible = [], prefix, len(prefix)
    for item in items:
        length = len(_strip(item))
        if visible + length + 3 > width and current.strip():
            lines.append(current.rstrip())
            current, visible = " " * len(prefix), len(prefix)
        current += item + "   "
        visible += length + 3
    lines.append(current.rstrip())
    return lines


def _strip(text: str) -> str:
    out, skipping = [], False
    for ch in text:
        if ch == "\x1b":
            skipping = True
        elif skipping and ch == "m":
            skipping = False
        elif not skipping:
            out.append(ch)
    return "".join(out)


def render_svg(gmap: GpaMap, width: int = 960) -> str:
    """The map as SVG: per memslot a band of ``<rect class="run STATE">``, one per run, and a legend."""
    band_h, left, top = 28, 10, 40
    inner = width - 2 * left
    parts: list[str] = []
    y = top
    for slot in gmap.memslots:
        end = slot.guest_phys_addr + slot.memory_size
        parts.append(
            f'<text x="{left}" y="{y - 6}" class="label">memslot {slot.slot}: '
            f"GPA 0x{slot.guest_phys_addr:x}-0x{end:x} ({escape(size_text(slot.memory_size))})</text>"
        )
        for run in gmap.runs:
            if run.memslot != slot.slot:
                continue
            x = left + (run.gpa - slot.guest_phys_addr) * inner / slot.memory_size
            w = max(run.size * inner / slot.memory_size, 1.0)
            style = STYLES[run.state]
            state = host_pb2.GpaState.Name(run.state).removeprefix("GPA_STATE_").lower()
            title = f"0x{run.gpa:x} +{size_text(run.size)}: {style.name}" + (
                f", guest_memfd {run.guest_memfd} @ 0x{run.guest_memfd_offset:x}"
                if run.guest_memfd >= 0
                else ""
            )
            parts.append(
                f'<rect class="run {state}" x="{x:.2f}" y="{y}" width="{w:.2f}" height="{band_h}" '
                f'fill="{style.fill}" data-gpa="0x{run.gpa:x}" data-size="{run.size}" data-state="{state}" '
                f'data-memslot="{run.memslot}" data-guest-memfd="{run.guest_memfd}" '
                f'data-guest-memfd-offset="0x{run.guest_memfd_offset:x}"><title>{escape(title)}</title></rect>'
            )
        parts.append(
            f'<rect class="frame" x="{left}" y="{y}" width="{inner}" height="{band_h}" '
            'fill="none" stroke="#333"/>'
        )
        y += band_h + 34
    x = left
    for style in STYLES.values():
        parts.append(f'<rect class="legend" x="{x}" y="{y}" width="14" height="14" fill="{style.fill}"/>')
        parts.append(f'<text x="{x + 18}" y="{y + 12}" class="label">{escape(style.name)}</text>')
        x += 30 + 8 * len(style.name)
    height = y + 30
    title = f"TD {gmap.td_id} GPA map ({gmap.memory_mode} mode)"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" data-td={quoteattr(str(gmap.td_id))}>\n'
        "<style>.label{font:12px sans-serif;fill:#222}</style>\n"
        f'<text x="{left}" y="18" class="label">{escape(title)}</text>\n' + "\n".join(parts) + "\n</svg>\n"
    )


def as_json(gmap: GpaMap) -> dict[str, Any]:
    return {
        "td_id": gmap.td_id,
        "memory_mode": gmap.memory_mode,
        "shared_bit": gmap.shared_bit,
        "memslots": [
            {
                "slot": s.slot,
                "gpa": s.guest_phys_addr,
                "size": s.memory_size,
                "guest_memfd": s.guest_memfd,
                "guest_memfd_offset": s.guest_memfd_offset,
            }
            for s in gmap.memslots
        ],
        "runs": [
            {
                "gpa": r.gpa,
                "size": r.size,
                "state": STYLES[r.state].name,
                "private": r.private,
                "memslot": r.memslot,
                "guest_memfd": r.guest_memfd,
                "guest_memfd_offset": r.guest_memfd_offset,
            }
            for r in gmap.runs
        ],
    }


def use_color(stream: Any) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", metavar="ADDR", required=True, help="the host the TD runs on")
    parser.add_argument("--td", metavar="ID", type=int, required=True, help="the TD's id (ListTds)")
    parser.add_argument("--svg", metavar="FILE", help="also write the picture as SVG to FILE")
    parser.add_argument(
        "--json", action="store_true", help="the map as one JSON document instead of a picture"
    )
    parser.add_argument(
        "--all-runs", action="store_true", help=f"list every run, not the first {LISTED_RUNS}"
    )
    credentials.add_client_argument(parser)


def run(args: argparse.Namespace) -> int:
    try:
        admin = credentials.client_admin_credential(args.admin_credential)
    except credentials.CredentialError as err:
        print(f"tdxsim memmap: {err}", file=sys.stderr)
        return 2
    try:
        with grpc.insecure_channel(args.host) as channel:
            stub = host_pb2_grpc.HostServiceStub(credentials.with_bearer(channel, admin))
            gmap = fetch(stub, args.td)
    except grpc.RpcError as err:
        print(f"tdxsim memmap: {args.host}: {err.code().name}: {err.details()}", file=sys.stderr)
        return 2 if err.code() != grpc.StatusCode.NOT_FOUND else 1
    if args.svg:
        try:
            Path(args.svg).write_text(render_svg(gmap))
        except OSError as err:
            print(f"tdxsim memmap: cannot write {args.svg}: {err.strerror}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(as_json(gmap)))
    else:
        sys.stdout.write(render_text(gmap, color=use_color(sys.stdout), all_runs=args.all_runs))
    return 0

"""``tdxsim bench SUITE``: each row compares a measured value with a limit measured in the same
run, because absolute speeds mean nothing across machines."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

Row = dict[str, object]


def _memory() -> list[Row]:
    from tdxsim.bench.conversion import bench_convert
    from tdxsim.bench.engine import bench_engine

    print("measuring the encryption engine ...", file=sys.stderr, flush=True)
    rows = bench_engine()
    print("measuring conversions of 2 MiB and 64 GiB ...", file=sys.stderr, flush=True)
    return rows + bench_convert()


def _verify() -> list[Row]:
    from tdxsim.bench.verify import bench_verify

    print("measuring DCAP verification, warm and cold, next to dcap-qvl ...", file=sys.stderr, flush=True)
    return bench_verify()


def _guest() -> list[Row]:
    from tdxsim.bench.guest import bench_guest

    print("measuring the guest path next to a bare echo, on a host process ...", file=sys.stderr, flush=True)
    return bench_guest()


SUITES: dict[str, Callable[[], list[Row]]] = {"memory": _memory, "verify": _verify, "guest": _guest}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "suite",
        choices=sorted(SUITES),
        help="memory: engine and conversions; verify: DCAP verification vs dcap-qvl; "
        "guest: guest library vs bare gRPC echo",
    )
    parser.add_argument(
        "--json", metavar="FILE", help="also write the rows as a JSON list to FILE ('-' = stdout)"
    )


def format_rows(rows: list[Row]) -> str:
    """A table: value and limit with their unit, the ratio, the target and whether it is met."""
    cells = [("name", "value", "limit", "ratio", "target", "met", "limit is")]
    for row in rows:
        target, met = row.get("target"), row.get("met")
        cells.append(
            (
                str(row["name"]),
                f"{row['value']} {row['unit']}",
                f"{row['limit']} {row['unit']}",
                str(row["ratio"]),
                "" if target is None else str(target),
                "-" if met is None else ("yes" if met else "NO"),
                str(row.get("limit_name", "")),
            )
        )
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    )


def _unwritable(path: str) -> str | None:
    """Why ``--json PATH`` cannot be written, checked before a benchmark runs for minutes; None if it can."""
    target = Path(path)
    if target.is_dir():
        return f"{path}: is a directory"
    parent = target.parent
    if not parent.is_dir():
        return f"{path}: {parent} is not a directory"
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        return f"{path}: not writable"
    return None


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every target is met, 1 when one is missed, 2 (one stderr line) for an unusable --json."""
    problem = _unwritable(args.json) if args.json and args.json != "-" else None
    if problem:
        print(f"tdxsim bench: --json {problem}", file=sys.stderr)
        return 2
    rows = SUITES[args.suite]()
    print(format_rows(rows))
    if args.json:
        text = json.dumps(rows, indent=2)
        if args.json == "-":
            print(text)
        else:
            try:
                with open(args.json, "w", encoding="utf-8") as out:
                    out.write(text + "\n")
            except OSError as err:
                print(f"tdxsim bench: cannot write {args.json}: {err.strerror}", file=sys.stderr)
                return 2
    return 0 if all(row.get("met") is not False for row in rows) else 1

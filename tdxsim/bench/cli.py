"""``tdxsim bench SUITE``: each row compares a measured value with a limit measured in the same
run, because absolute speeds mean nothing across machines."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

Row = dict[str, object]


def _memory() -> list[Row]:
    from tdxsim.bench.engine import bench_engine
    from tdxsim.bench.memory import bench_convert

    print("measuring the encryption engine ...", file=sys.stderr, flush=True)
    rows = bench_engine()
    print("measuring conversions of 2 MiB and 64 GiB ...", file=sys.stderr, flush=True)
    return rows + bench_convert()


SUITES: dict[str, Callable[[], list[Row]]] = {"memory": _memory}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", choices=sorted(SUITES), help="memory: engine throughput and conversion cost")
    parser.add_argument(
        "--json", metavar="FILE", help="also write the rows as a JSON list to FILE ('-' = stdout)"
    )


def format_rows(rows: list[Row]) -> str:
    lines = [f"{'name':<28} {'value':>12} {'unit':<6} {'limit':>12}  {'ratio':>8} {'target':>8}  met"]
    for row in rows:
        target = row.get("target")
        met = row.get("met")
        lines.append(
            f"{row['name']!s:<28} {row['value']!s:>12} {row['unit']!s:<6} {row['limit']!s:>12}  "
            f"{row['ratio']!s:>8} {'' if target is None else target!s:>8}  "
            f"{'-' if met is None else ('yes' if met else 'NO')}"
            + (f"   (limit: {row['limit_name']})" if row.get("limit_name") else "")
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    rows = SUITES[args.suite]()
    print(format_rows(rows))
    if args.json:
        text = json.dumps(rows, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w", encoding="utf-8") as out:
                out.write(text + "\n")
    return 0 if all(row.get("met") is not False for row in rows) else 1

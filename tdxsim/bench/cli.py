"""``tdxsim bench [SUITE ...] [--quick] [--json FILE] [--report DIR]``: every suite, or the ones named, as one
table. Each row compares a measured value with a limit measured in the same run, because absolute speeds
mean nothing across machines (docs/conventions.md §8); ``--report DIR`` also writes ``DIR/BENCHMARKS.md``
with plots (docs/cli.md, `tdxsim bench`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tdxsim.bench.rows import Row, SuiteResult, unmeasured

Suite = Callable[[bool], SuiteResult]


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _memory(quick: bool) -> SuiteResult:
    from tdxsim.bench.conversion import bench_convert
    from tdxsim.bench.engine import bench_engine

    _say("measuring the encryption engine ...")
    notes: dict[str, str] = {}
    rows = bench_engine(0.6 if quick else 3.0, notes)
    _say("measuring conversions of 2 MiB and 64 GiB ...")
    return SuiteResult(rows + bench_convert(3 if quick else 20), {}, notes)


def _verify(quick: bool) -> SuiteResult:
    from tdxsim.bench.verify import bench_verify

    _say("measuring DCAP verification, warm and cold, next to dcap-qvl ...")
    return SuiteResult(bench_verify(0.6 if quick else 3.0))


def _guest(quick: bool) -> SuiteResult:
    from tdxsim.bench.guest import bench_guest

    _say("measuring the guest path next to a bare echo, on a host process ...")
    return SuiteResult(bench_guest(5, 100) if quick else bench_guest())


def _scale(quick: bool) -> SuiteResult:
    from tdxsim.bench.scale import bench_guests, bench_sparse

    counts = [1, 2, 4] if quick else [1, 2, 4, 8, 16, 32]
    _say(f"measuring aggregate private writes of {counts[0]}..{counts[-1]} guest processes on one host ...")
    guests = bench_guests(counts, 0.5 if quick else 3.0, 1 if quick else 2)
    _say("measuring a 64 GiB TD that touches 16 MiB on a 1 TiB host ...")
    sparse = bench_sparse()
    return SuiteResult(guests.rows + sparse.rows, guests.series, {**guests.notes, **sparse.notes})


def _attest(quick: bool) -> SuiteResult:
    from tdxsim.bench.attest import bench_attestation

    _say("measuring attestation end to end, one verifier, then replicas on one PostgreSQL database ...")
    if quick:
        return bench_attestation(seconds=1.0, rounds=1, guests=2)
    return bench_attestation()


def _demo(quick: bool) -> SuiteResult:
    from tdxsim.bench.wall import LIMIT_NAME, NAME, bench_demo_wall

    if quick:
        skipped: Row = {
            "name": NAME, "value": None, "unit": "s", "limit": None, "limit_name": LIMIT_NAME,
            "ratio": None, "target": 1.0, "met": None,
        }  # fmt: skip
        return SuiteResult([skipped], {}, {NAME: "not run with --quick (the demo alone takes seconds)"})
    _say("timing the demo ...")
    return bench_demo_wall()


SUITES: dict[str, Suite] = {
    "memory": _memory,
    "verify": _verify,
    "guest": _guest,
    "scale": _scale,
    "attest": _attest,
    "demo": _demo,
}
HELP = {
    "memory": "the memory controller's encryption engine vs one AES-XTS call; converting 64 GiB vs 2 MiB",
    "verify": "DCAP verification, warm and cold, vs dcap-qvl on the same quote",
    "guest": "1 MiB private writes/reads and 64-byte reads vs a bare gRPC Echo",
    "scale": "1..32 guest processes on one host; a 64 GiB TD that touched 16 MiB (RSS, pages)",
    "attest": "attestations/s of 8 guests vs dcap-qvl; 2 verifier replicas on one PostgreSQL vs 1",
    "demo": "wall time of the whole demo vs 10 s",
}


DESCRIPTION = """\
Runs every benchmark suite (or the ones named) and prints one table. Each row compares a measured value with
a limit measured in the same run on this machine (absolute speeds mean nothing across machines), states its
target and whether it is met; a row that misses it is followed by what was measured around it (load, CPU per
process). Suites start their own processes on 127.0.0.1:0 and stop them.

  tdxsim bench                          every suite, full length (minutes)
  tdxsim bench --quick --report DIR     small versions of every suite; DIR/BENCHMARKS.md with plots
  tdxsim bench memory verify --json -   two suites, rows as JSON on stdout

Exit status: 0 every target met, 1 one missed or not measurable here, 2 unusable arguments."""


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of every CPU of the machine since boot (/proc/stat), None where unreadable."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _busy_cores(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)


def _run_suite(name: str, quick: bool) -> SuiteResult:
    """One suite; a suite that breaks (a process that does not start, a worker that dies) is one row that
    is not met, with the error as its note, and the other suites still run."""
    try:
        return SUITES[name](quick)
    except (Exception, SystemExit) as err:  # any failure of a suite becomes its row; the others still run
        row_name = f"{name}_suite"
        _say(f"suite {name} did not finish: {err}")
        failed = unmeasured(row_name, "", "the suite ran to its end", target=1.0)
        return SuiteResult([failed], {}, {row_name: f"the suite did not finish: {type(err).__name__}: {err}"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "suites:\n" + "\n".join(f"  {name:<8} {text}" for name, text in HELP.items())
    parser.add_argument(
        "suite", nargs="*", metavar="SUITE", help=f"suites to run: {', '.join(SUITES)} (default: all of them)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small, fast versions of every suite (checks that they run)"
    )
    parser.add_argument(
        "--json", metavar="FILE", help="also write the rows as a JSON list to FILE ('-' = stdout)"
    )
    parser.add_argument(
        "--report",
        metavar="DIR",
        help="also write DIR/BENCHMARKS.md, its PNG plots and DIR/bench.json (rows, curves, measured notes)",
    )


def format_rows(rows: list[Row]) -> str:
    """A table: value and limit with their unit, the ratio, the target and whether it is met."""
    from tdxsim.bench.report import target_text

    cells = [("name", "value", "limit", "ratio", "target", "met", "limit is")]
    for row in rows:
        met = row.get("met")
        cells.append(
            (
                str(row["name"]),
                "-" if row["value"] is None else f"{row['value']} {row['unit']}",
                "-" if row["limit"] is None else f"{row['limit']} {row['unit']}",
                "-" if row["ratio"] is None else str(row["ratio"]),
                target_text(row),
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


def _unusable_report_dir(path: str) -> str | None:
    """Why ``--report DIR`` cannot be written (it may not exist yet); None if it can."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        return f"{path}: not a directory"
    existing = target
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        return f"{path}: not writable"
    return None


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every target is met, 1 when one is missed or a row could not be measured, 2 (one stderr
    line) for an unusable --json or --report."""
    unknown = [name for name in args.suite if name not in SUITES]
    if unknown:
        print(f"tdxsim bench: no suite {unknown[0]!r} (suites: {', '.join(SUITES)})", file=sys.stderr)
        return 2
    problem = _unwritable(args.json) if args.json and args.json != "-" else None
    if problem:
        print(f"tdxsim bench: --json {problem}", file=sys.stderr)
        return 2
    problem = _unusable_report_dir(args.report) if args.report else None
    if problem:
        print(f"tdxsim bench: --report {problem}", file=sys.stderr)
        return 2
    names = list(dict.fromkeys(args.suite)) or list(SUITES)
    started = time.monotonic()
    rows: list[Row] = []
    series: dict[str, list[tuple[float, float]]] = {}
    notes: dict[str, str] = {}
    for name in names:
        before = _cpu_ticks()
        result = _run_suite(name, args.quick)
        busy = _busy_cores(before, _cpu_ticks())
        rows += result.rows
        series.update(result.series)
        notes.update(result.notes)
        for row in result.rows:  # a missed row always says what was measured around it
            if row.get("met") is False and str(row["name"]) not in notes and busy is not None:
                notes[str(row["name"])] = (
                    f"missed while {busy:.2f} of {os.cpu_count() or 1} cores were busy on average over the "
                    f"{name} suite (all processes on the machine, /proc/stat)"
                )
    print(format_rows(rows))
    for row in rows:
        if row.get("met") is False and str(row["name"]) in notes:
            print(f"{row['name']}: {notes[str(row['name'])]}")
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
    if args.report:
        from tdxsim.bench.report import write_report

        try:
            files = write_report(
                Path(args.report), rows, series, notes, quick=args.quick, seconds=time.monotonic() - started
            )
        except OSError as err:
            print(f"tdxsim bench: cannot write the report in {args.report}: {err}", file=sys.stderr)
            return 2
        _say("report: " + ", ".join(str(f) for f in files))
    return 0 if all(row.get("met") is not False for row in rows) else 1

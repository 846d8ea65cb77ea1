"""``tdxsim bench --report DIR``: the rows as ``DIR/BENCHMARKS.md``, the curves as PNG plots beside it, and
everything as ``DIR/bench.json`` (docs/cli.md, `tdxsim bench`).

The report says on what machine the numbers were taken (they mean nothing elsewhere, docs/conventions.md §8),
and for every row that missed its target, what was measured around it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

from tdxsim.bench.rows import LOWER_IS_BETTER, Row, Series

GUESTS_PLOT = "throughput_vs_guests.png"
REPLICAS_PLOT = "attestations_vs_replicas.png"


def target_text(row: Row) -> str:
    target = row.get("target")
    if target is None:
        return ""
    return f"{'≤' if row['name'] in LOWER_IS_BETTER else '≥'} {target}"


def _sentence(note: str) -> str:
    return note[:1].upper() + note[1:]


def _cell(value: object, unit: object) -> str:
    return "—" if value is None else f"{value} {unit}"


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(memory / (1 << 30), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit or "unknown",
    }


def write_report(
    directory: Path,
    rows: list[Row],
    series: dict[str, Series],
    notes: dict[str, str],
    *,
    quick: bool,
    seconds: float,
) -> list[Path]:
    """BENCHMARKS.md, the plots and bench.json in ``directory`` (created if missing); returns the files."""
    directory.mkdir(parents=True, exist_ok=True)
    info = machine()
    written = [directory / "bench.json"]
    (directory / "bench.json").write_text(
        json.dumps(
            {
                "machine": info,
                "quick": quick,
                "seconds": round(seconds, 1),
                "rows": rows,
                "series": series,
                "notes": notes,
            },
            indent=2,
        )
        + "\n"
    )
    plots = _plots(directory, series, rows, notes)
    written += plots
    lines = [
        "# tdxsim benchmarks",
        "",
        f"`tdxsim bench{' --quick' if quick else ''}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f", {seconds:.0f} s, commit {info['commit']}.",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, Linux {info['kernel']}, "
        f"Python {info['python']}.",
        "",
        "Every row compares a value with a limit measured in the same run on the same machine: absolute "
        "speeds mean nothing across machines, ratios do (docs/conventions.md §8). `met` says whether the "
        "ratio reaches the target.",
    ]
    if quick:
        lines += ["", "**Quick run**: short windows and few guests; the targets are meant for a full run."]
    lines += [
        "",
        "| row | value | limit | ratio | target | met | limit is |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        met = row.get("met")
        lines.append(
            f"| `{row['name']}` | {_cell(row['value'], row['unit'])} | {_cell(row['limit'], row['unit'])} | "
            f"{'—' if row['ratio'] is None else row['ratio']} | {target_text(row)} | "
            f"{'—' if met is None else ('yes' if met else '**no**')} | {row.get('limit_name', '')} |"
        )
    missed = [row for row in rows if row.get("met") is False]
    if missed:
        lines += ["", "## Rows not met, and what was measured", ""]
        for row in missed:
            why = _sentence(notes.get(str(row["name"]), "no measurement explains it"))
            if row["value"] is None:
                lines.append(f"- `{row['name']}` could not be measured. {why}.")
            else:
                lines.append(f"- `{row['name']}`: ratio {row['ratio']}, target {target_text(row)}. {why}.")
    others = [(name, note) for name, note in notes.items() if name not in {str(r["name"]) for r in missed}]
    if others:
        lines += ["", "## Measured around the other rows", ""]
        lines += [f"- `{name}`: {_sentence(note)}." for name, note in others]
    if plots:
        lines += ["", "## Plots", ""]
        for plot in plots:
            title = (
                "Aggregate private-write throughput against guests"
                if plot.name == GUESTS_PLOT
                else ("Attestations per second against verifier replicas")
            )
            lines += [f"![{title}]({plot.name})", ""]
    (directory / "BENCHMARKS.md").write_text("\n".join(lines).rstrip() + "\n")
    return [directory / "BENCHMARKS.md", *written]


def _plots(directory: Path, series: dict[str, Series], rows: list[Row], notes: dict[str, str]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display
    import matplotlib.pyplot as plt

    made: list[Path] = []
    guests = series.get("aggregate_vs_guests")
    if guests:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
        xs, ys = [x for x, _ in guests], [y for _, y in guests]
        ax.plot(xs, ys, marker="o")
        best = max(ys)
        ax.axhline(0.8 * best, linestyle="--", linewidth=1, color="grey", label="0.8 × best (target)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(int(x)) for x in xs])
        ax.set_xlabel("guest processes writing at once")
        ax.set_ylabel("aggregate private writes (MB/s)")
        ax.set_ylim(0, 1.15 * best)
        ax.set_title("One host, many guests: 1 MiB private writes")
        ax.legend(loc="lower right")
        fig.tight_layout()
        made.append(directory / GUESTS_PLOT)
        fig.savefig(made[-1])
        plt.close(fig)
    replicas = series.get("attest_vs_replicas")
    e2e = next((r for r in rows if r["name"] == "attest_e2e_per_s" and r["value"] is not None), None)
    if replicas or e2e is not None or any(r["name"] == "replicas_2_vs_1" for r in rows):
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
        if replicas:
            ax.plot(
                [x for x, _ in replicas],
                [y for _, y in replicas],
                marker="o",
                label="replicas on one PostgreSQL",
            )
            one = replicas[0][1]
            ax.axhline(1.3 * one, linestyle="--", linewidth=1, color="grey", label="1.3 × 1 replica (target)")
        else:
            why = notes.get("replicas_2_vs_1", "")
            ax.text(0.5, 0.5, f"replicas not measured:\n{why[:80]}", ha="center", transform=ax.transAxes)
        tops = [y for _, y in replicas or []]
        if e2e is not None:
            value = e2e["value"]
            assert isinstance(value, float | int)
            ax.plot([1], [value], marker="s", linestyle="none", label="1 verifier on SQLite")
            tops.append(float(value))
        ax.set_xticks([1, 2])
        ax.set_xlim(0.5, 2.5)
        ax.set_xlabel("verifier replicas")
        ax.set_ylabel("attestations per second, all guests")
        ax.set_ylim(0, 1.45 * max(tops) if tops else 1.0)
        ax.set_title("Attestation: nonce, quote, DCAP verify, appraise, token")
        if replicas or e2e is not None:
            ax.legend(loc="lower right")
        fig.tight_layout()
        made.append(directory / REPLICAS_PLOT)
        fig.savefig(made[-1])
        plt.close(fig)
    return made

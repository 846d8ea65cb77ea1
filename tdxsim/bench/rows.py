"""Benchmark rows and what a suite returns besides them (docs/cli.md, `tdxsim bench`).

A row is ``{"name", "value", "unit", "limit", "limit_name", "ratio", "target", "met"}``: ``ratio`` is
``value / limit``, the limit measured in the same run on the same machine (docs/conventions.md §8), and
``met`` says whether the ratio reaches ``target`` (None: informational). A row that could not be measured
has ``value``, ``limit`` and ``ratio`` None and ``met`` False; its suite's notes say why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Row = dict[str, object]
#: Plot data: (x, y) points of one curve.
Series = list[tuple[float, float]]


@dataclass
class SuiteResult:
    rows: list[Row]
    #: Curves for the report's plots, by name.
    series: dict[str, Series] = field(default_factory=dict)
    #: Per row name: what was measured around it (load, CPU per process), or why it could not run.
    notes: dict[str, str] = field(default_factory=dict)


def row(
    name: str,
    value: float,
    unit: str,
    limit: float,
    limit_name: str,
    *,
    target: float | None,
    higher_is_better: bool = True,
    digits: int = 1,
) -> Row:
    ratio = value / limit if limit else float("inf")
    met = None
    if target is not None:
        met = ratio >= target if higher_is_better else ratio <= target
    return {
        "name": name,
        "value": round(value, digits),
        "unit": unit,
        "limit": round(limit, digits),
        "limit_name": limit_name,
        "ratio": round(ratio, 3),
        "target": target,
        "met": met,
    }


def unmeasured(name: str, unit: str, limit_name: str, *, target: float | None) -> Row:
    """A row that could not be measured on this machine (its note says why): never met."""
    return {
        "name": name,
        "value": None,
        "unit": unit,
        "limit": None,
        "limit_name": limit_name,
        "ratio": None,
        "target": target,
        "met": False if target is not None else None,
    }


#: Rows whose ratio must stay at or below the target (all others: at or above).
LOWER_IS_BETTER = {
    "convert_64gib_vs_2mib",
    "small_read_p50",
    "sparse_64gib_rss",
    "launch_64gib_pages",
    "teardown_64gib_pages",
    "demo_wall",
}

"""``demo_wall``: the wall time of the whole demo (``python -m tdxsim.demo``: a PCS, a host, a verifier, guest
processes that attest, the legacy-mode story), against the budget of a first-time user's first command:
10 s; target ≤ 1 (docs/cli.md "``tdxsim bench``").
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time

from tdxsim.bench.rows import SuiteResult, row, unmeasured
from tdxsim.bench.stack import MachineLoad, cores

BUDGET = 10.0
NAME = "demo_wall"
LIMIT_NAME = "budget for the demo, 10 s"


def bench_demo_wall(timeout: float = 600.0) -> SuiteResult:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = MachineLoad()
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tdxsim.demo"], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        reason = f"the demo did not finish within {timeout:.0f} s"
        return SuiteResult([unmeasured(NAME, "s", LIMIT_NAME, target=1.0)], {}, {NAME: reason})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        reason = f"the demo failed (exit {done.returncode}): {lines[-1] if lines else 'no output'}"
        return SuiteResult([unmeasured(NAME, "s", LIMIT_NAME, target=1.0)], {}, {NAME: reason})
    busy = load.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(f"  demo: {wall:.1f} s", file=sys.stderr, flush=True)
    result = row(NAME, wall, "s", BUDGET, LIMIT_NAME, target=1.0, higher_is_better=False)
    others = max(0.0, busy * wall - cpu)
    note = (
        f"the demo's processes used {cpu:.1f} CPU seconds in {wall:.1f} s; {busy:.2f} of {cores()} cores "
        f"were busy on average, {others:.1f} CPU seconds of it other processes on the machine"
    )
    return SuiteResult([result], {}, {NAME: note})

"""The encryption engine's parallel lanes: one batch planner and one lane runner (docs/memory-model.md §7).

Real thing modelled: a memory controller's crypto pipelines, one per channel, which encrypt and
decrypt different lines at the same time. Every private access of the controller — writes, reads,
the read half of a read-modify-write, MOVDIR64B zeroing — is handed here as one batch of *jobs*
``(pa, src, dst)``: a physically contiguous run of whole 16-byte blocks at ``pa``, its input and
where its output goes. This module knows nothing of KeyIDs' rules (owner bit, poison, MAC: see
:mod:`host.tdx.access`); it only turns src into dst under one :class:`~host.tdx.xts.XtsKey`.

Cost model (docs/conventions.md §8): :func:`plan` cuts the batch, in order, into up to ``lanes``
parts of nearly equal size at line boundaries — one part when the batch is small, since a hand-off
to a worker thread costs more than a lane share below :data:`LANE_MIN` saves. Each part is one
lane's work: a CTR_K2 pass per job into the lane's scratch A, one ECB_K1 pass A → B over the whole
part, a CTR_K2 pass per job from B into dst (:mod:`host.tdx.xts`). The cipher library releases the
GIL inside those passes, so the lanes really run at once. A batch that is one short job
(≤ :data:`~host.tdx.xts.SMALL_RUN` bytes: RTMR data, REPORTDATA, small guest accesses) does the
three passes in one call with no cipher context at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from host.tdx.xts import LINE, SLACK, SMALL_RUN, XtsKey

__all__ = ["LANES", "LANE_MIN", "Job", "LaneRunner", "plan"]

#: Lanes of the default controller: a large batch is split in two halves that run at once.
LANES = 2
#: A lane's share below this costs more in hand-off than running it on another core saves.
LANE_MIN = 128 << 10

#: ``(pa, src, dst)``: a physically contiguous run of whole blocks at ``pa``; ``len(src) == len(dst)``.
Job = tuple[int, memoryview, memoryview]


def plan(jobs: Sequence[Job], total: int, lanes: int, lane_min: int = LANE_MIN) -> list[list[Job]]:
    """Cut ``jobs`` (``total`` bytes together) into consecutive lane parts, in order.

    As many parts as ``lanes`` allows with each at least about ``lane_min`` bytes (at least one
    part); the cuts fall on line boundaries of the batch, so a job crossing one is split in two
    jobs. Every byte of every job lands in exactly one part, and no part is empty."""
    count = max(1, min(lanes, total // max(lane_min, LINE)))
    if count == 1:
        return [list(jobs)]
    cuts = [total * k // count // LINE * LINE for k in range(1, count)]
    cuts.append(total)
    parts: list[list[Job]] = [[] for _ in range(count)]
    lane = 0
    off = 0  # batch offset of the current job's first byte
    for pa, src, dst in jobs:
        n = len(src)
        start = 0  # bytes of this job already placed
        while off + n > cuts[lane]:
            cut = cuts[lane] - off
            if cut > start:
                parts[lane].append((pa + start, src[start:cut], dst[start:cut]))
                start = cut
            lane += 1
        if start == 0:
            parts[lane].append((pa, src, dst))
        elif start < n:
            parts[lane].append((pa + start, src[start:], dst[start:]))
        off += n
    return parts


class LaneRunner:
    """Runs batches of jobs under one key over up to ``lanes`` lanes, the first on the calling thread.

    Holds each lane's scratch buffers and the worker threads. Every Python decision — the plan,
    each job's tweak streams, the buffers — is made on the calling thread before the lanes start,
    so the lanes only call into the cipher library. One batch at a time: callers hold the host lock.
    """

    def __init__(self, lanes: int = LANES, lane_min: int = LANE_MIN) -> None:
        if lanes < 1:
            raise ValueError(f"need at least one lane, got {lanes}")
        self.lanes = lanes
        self.lane_min = lane_min
        self._scratch = [(bytearray(), bytearray()) for _ in range(lanes)]
        self._pool: ThreadPoolExecutor | None = None

    def crypt(
        self, key: XtsKey, jobs: Sequence[Job], total: int, *, encrypt: bool, parallel: bool = True
    ) -> None:
        """Encrypt (or decrypt) every job's src into its dst; ``total`` is the jobs' byte count.

        Jobs are processed in order within a lane. Jobs whose dsts overlap need ``parallel=False``
        (one lane: the later write wins, as in program order)."""
        if not jobs:
            return
        if len(jobs) == 1 and total <= SMALL_RUN:  # one short run: all three passes in one call
            pa, src, dst = jobs[0]
            dst[:] = key.crypt_short(pa, src, encrypt=encrypt)
            return
        if not parallel or total < 2 * self.lane_min:  # too small to share: no plan needed
            _run(self._prepare(key, 0, jobs, encrypt))
            return
        parts = plan(jobs, total, self.lanes, self.lane_min)
        key.reserve_lanes(len(parts))
        lanes = [self._prepare(key, lane, part, encrypt) for lane, part in enumerate(parts)]
        if len(lanes) == 1:
            _run(lanes[0])
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.lanes - 1, thread_name_prefix="mktme-lane")
        others: list[Future[None]] = [self._pool.submit(_run, work) for work in lanes[1:]]
        try:
            _run(lanes[0])
        finally:  # no lane may still be using its scratch when the batch returns
            errors = [other.exception() for other in others]
        for error in errors:
            if error is not None:
                raise error

    def _prepare(self, key: XtsKey, lane: int, jobs: Sequence[Job], encrypt: bool) -> _LaneWork:
        """One lane's three passes: CTR_K2 per job into A, ECB_K1 over A into B, CTR_K2 per job
        from B into dst."""
        size = 0
        for _, src, _ in jobs:
            size += len(src)
        a, b = self._scratch[lane]
        if len(a) < size + SLACK:
            a, b = bytearray(size + SLACK), bytearray(size + SLACK)
            self._scratch[lane] = (a, b)
        av, bv = memoryview(a), memoryview(b)
        first: _Passes = []
        last: _Passes = []
        off = 0
        for pa, src, dst in jobs:
            n = len(src)
            tweak_in, tweak_out = key.tweak_streams(pa, n)
            first.append((tweak_in, src, av[off : off + n]))
            last.append((tweak_out, bv[off : off + n], dst))
            off += n
        return first, key.ecb(encrypt=encrypt, lane=lane), av[:size], bv, last


#: (stream, src, dst) XOR passes of one lane's jobs, each stream with ``update_into``.
_Passes = list[tuple[Any, memoryview, memoryview]]
#: (first tweak passes, ECB_K1 context, ECB input, ECB output, last tweak passes) of one lane.
_LaneWork = tuple[_Passes, Any, memoryview, memoryview, _Passes]


def _run(work: _LaneWork) -> None:
    first, ecb, a, b, last = work
    for stream, src, dst in first:
        stream.update_into(src, dst)
    ecb.update_into(a, b)
    for stream, src, dst in last:
        stream.update_into(src, dst)

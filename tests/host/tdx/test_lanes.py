"""The encryption engine's batch planner and lane runner (host/tdx/lanes.py)."""

from __future__ import annotations

import os
import random

import pytest

from host.tdx.lanes import LANE_MIN, Job, LaneRunner, plan
from host.tdx.xts import LINE, XtsKey, random_xts_key


def _jobs(sizes: list[int], *, seed: int = 0) -> tuple[list[Job], bytearray]:
    """Jobs at scattered, line-aligned addresses whose srcs are one random buffer, dsts another."""
    rnd = random.Random(seed)
    src = memoryview(bytearray(os.urandom(sum(sizes))))
    dst = bytearray(sum(sizes))
    out = memoryview(dst)
    jobs: list[Job] = []
    off = 0
    for n in sizes:
        jobs.append((rnd.randrange(0, 1 << 30, LINE), src[off : off + n], out[off : off + n]))
        off += n
    return jobs, dst


@pytest.mark.parametrize("lanes", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("sizes", [[LINE], [64 * LINE], [16, 48, LINE, 4096, 3 * LINE], [4096] * 9])
def test_plan_covers_every_byte_exactly_once_in_order(lanes: int, sizes: list[int]) -> None:
    jobs, coverage = _jobs(sizes)
    total = sum(sizes)
    parts = plan(jobs, total, lanes, lane_min=LINE)
    assert len(parts) == max(1, min(lanes, total // LINE))
    assert all(parts), "no lane is empty"
    # In order, the parts' jobs are the original jobs cut at lane boundaries: the same blocks at
    # the same addresses, and every byte of the batch's dst is some piece's dst exactly once.
    flat = [job for part in parts for job in part]

    def blocks(js: list[Job]) -> list[tuple[int, bytes]]:
        return [(pa + i, bytes(src[i : i + 16])) for pa, src, _ in js for i in range(0, len(src), 16)]

    assert blocks(flat) == blocks(jobs)
    for _, src, dst in flat:
        assert len(src) == len(dst) > 0 and len(src) % 16 == 0
        for i in range(len(dst)):
            dst[i] += 1
    assert coverage == bytes([1]) * total
    # Every lane but the last ends on a line boundary of the batch, and shares are near equal.
    sizes_per_lane = [sum(len(src) for _, src, _ in part) for part in parts]
    assert sum(sizes_per_lane) == total
    offset = 0
    for size in sizes_per_lane[:-1]:
        offset += size
        assert offset % LINE == 0
    assert max(sizes_per_lane) - min(sizes_per_lane) <= 2 * LINE or len(parts) == 1


def test_plan_keeps_small_batches_in_one_lane() -> None:
    jobs, _ = _jobs([4096] * 8)
    assert plan(jobs, 8 * 4096, 2) == [jobs]  # 32 KiB < 2 * LANE_MIN
    big, _ = _jobs([2 * LANE_MIN])
    assert len(plan(big, 2 * LANE_MIN, 2)) == 2
    assert len(plan(big, 2 * LANE_MIN, 8)) == 2  # a lane's share stays at least LANE_MIN


def _reference(key: XtsKey, jobs: list[Job]) -> bytes:
    return b"".join(key.encrypt(pa, bytes(src)) for pa, src, _ in jobs)


@pytest.mark.parametrize("lanes", [1, 2, 3, 7])
def test_many_lanes_equal_the_single_lane_result_both_ways(lanes: int) -> None:
    key = XtsKey(random_xts_key(128))
    sizes = [16, 48, LINE, 4096, 5 * LINE, 256, 272, 8192, 4096, LINE]
    jobs, dst = _jobs(sizes, seed=lanes)
    runner = LaneRunner(lanes, lane_min=LINE)
    runner.crypt(key, jobs, sum(sizes), encrypt=True)
    assert bytes(dst) == _reference(key, jobs)
    # Decrypting the ciphertext through the lanes gives the plaintext back.
    ct = memoryview(bytes(dst))
    back = bytearray(len(dst))
    view = memoryview(back)
    off = 0
    decrypt_jobs: list[Job] = []
    for pa, src, _ in jobs:
        decrypt_jobs.append((pa, ct[off : off + len(src)], view[off : off + len(src)]))
        off += len(src)
    runner.crypt(key, decrypt_jobs, len(dst), encrypt=False)
    assert back == b"".join(bytes(src) for _, src, _ in jobs)


def test_a_failing_lane_fails_the_batch_after_every_lane_finished() -> None:
    key = XtsKey(random_xts_key(128))
    jobs, _ = _jobs([4096] * 4)
    pa, src, dst = jobs[-1]
    jobs[-1] = (pa, src, dst[:16])  # the last lane's output buffer is too short
    with pytest.raises(ValueError):
        LaneRunner(4, lane_min=LINE).crypt(key, jobs, 4 * 4096, encrypt=True)


def test_serial_batch_lets_the_later_of_overlapping_jobs_win() -> None:
    key = XtsKey(random_xts_key(128))
    out = memoryview(bytearray(8192))
    first, second = memoryview(os.urandom(8192)), memoryview(os.urandom(8192))
    runner = LaneRunner(4, lane_min=LINE)
    runner.crypt(key, [(0, first, out), (0, second, out)], 16384, encrypt=True, parallel=False)
    assert bytes(out) == key.encrypt(0, bytes(second))


def test_runner_needs_a_lane() -> None:
    with pytest.raises(ValueError, match="at least one lane"):
        LaneRunner(0)

"""The memory controller: physical memory behind TME-MK encryption and integrity (docs/memory-model.md §7).

Real thing modelled: DRAM plus the memory controller's multi-key encryption engine. Every access
carries a KeyID (in hardware, the upper physical-address bits). :class:`MemoryController` owns the
DRAM and routes each batch of ``(pa, …)`` runs: the key of the KeyID and the owner/poison/MAC rules
come from :mod:`host.tdx.access`, and a private KeyID's cipher work goes to :mod:`host.tdx.lanes` as
one batch of whole-line jobs — physically adjacent runs merged, partial lines widened (a partial-line
private write is a read-modify-write of its end lines under the same key).
:meth:`MemoryController.zero` is MOVDIR64B: full-line stores that clear poison; with a private KeyID
they write encrypted zeros (TDG.MEM.PAGE.ACCEPT), with KeyID 0 plaintext zeros (page reclaim).

KeyID 0 is the host's shared KeyID. On a real platform it is encrypted with the platform TME key;
that key never changes and is never observable, so it is modelled as TME bypass (plaintext), which
keeps shared memory readable in :attr:`MemoryController.phys` for tests and debugging. DRAM is one
anonymous ``mmap`` reserved lazily (:mod:`host.tdx.dram`): a 1 TiB machine costs nothing until touched, and
then only the pages touched. Runs are processed in the order given; callers hold the host lock.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from itertools import pairwise, repeat
from operator import add, itemgetter, mod

from host.tdx.access import (
    KEYID_MAX,
    SHARED_KEYID,
    AccessRules,
    EncryptionAlgorithm,
    KeyNotProgrammed,
    MachineCheck,
)
from host.tdx.dram import reserve
from host.tdx.lanes import LANES, Job, LaneRunner
from host.tdx.xts import LINE, XtsKey

__all__ = [
    "KEYID_MAX",
    "LINE",
    "PAGE",
    "EncryptionAlgorithm",
    "KeyNotProgrammed",
    "MachineCheck",
    "MemoryController",
]

PAGE = 4096
_ZERO_CHUNK = 1 << 20  # zero() works through large ranges in batches of this size


class MemoryController:
    """Physical memory ``[0, phys_bytes)`` behind the TME-MK engine (see the module docstring).

    ``lanes`` is how many cipher lanes a large batch may be spread over (:mod:`host.tdx.lanes`).
    """

    phys: mmap.mmap

    def __init__(
        self, phys_bytes: int = 4 << 30, *, integrity: bool = True, xts_bits: int = 128, lanes: int = LANES
    ) -> None:
        if phys_bytes <= 0 or phys_bytes % PAGE:
            raise ValueError(f"physical memory must be a positive multiple of {PAGE} bytes, got {phys_bytes}")
        self.phys_bytes = phys_bytes
        self.phys = reserve(phys_bytes, "physical memory")
        self._pv = memoryview(self.phys)
        self.rules = AccessRules(self._pv, integrity=integrity, xts_bits=xts_bits)
        self.lanes = LaneRunner(lanes)
        self._stage = bytearray()  # decrypted whole lines of reads that want only part of them
        self._zeros = memoryview(bytes(_ZERO_CHUNK))

    # ---- keys (PCONFIG) -------------------------------------------------------------------------

    @property
    def integrity(self) -> bool:
        return self.rules.integrity

    @property
    def xts_bits(self) -> int:
        return self.rules.xts_bits

    @property
    def algorithm(self) -> EncryptionAlgorithm:
        """The algorithm every private key is programmed with (fixed at platform init)."""
        return self.rules.algorithm

    def program_key(self, keyid: int) -> None:
        """PCONFIG SET_KEY_RANDOM: a fresh random key for private ``keyid``; replaces any earlier key."""
        self.rules.program_key(keyid)

    def clear_key(self, keyid: int) -> None:
        """PCONFIG CLEAR_KEY: drop the key; later private accesses raise :class:`KeyNotProgrammed`."""
        self.rules.clear_key(keyid)

    def key_programmed(self, keyid: int) -> bool:
        return self.rules.key_programmed(keyid)

    # ---- accesses -----------------------------------------------------------------------------

    def write(self, keyid: int, runs: Sequence[tuple[int, bytes | memoryview]]) -> None:
        """Store each ``(pa, data)`` run, in order, with ``keyid`` (0 = shared, else private)."""
        pieces, segments, total, aligned = _gather(runs)
        for pa, n, _ in pieces:
            self._check_range(pa, n)
        if keyid == SHARED_KEYID:
            for pa, data in runs:
                self._write_shared(pa, _bytes_view(data))
            return
        key = self.rules.key(keyid)
        if not aligned:  # partial lines: read-modify-write, one run at a time, in order
            for pa, data in runs:
                self._write_partial(key, pa, _bytes_view(data))
            return
        if total:
            # One C-level join stages the batch; copying segment by segment from Python costs more.
            plain = memoryview(b"".join(segments) if len(segments) > 1 else segments[0])
            if plain.format != "B" or plain.ndim != 1:
                plain = plain.cast("B")
            pv = self._pv
            self._encrypt(key, [(pa, plain[off : off + n], pv[pa : pa + n]) for pa, n, off in pieces], total)

    def read(self, keyid: int, runs: Sequence[tuple[int, int]]) -> list[bytes]:
        """Load each ``(pa, length)`` run with ``keyid``; one ``bytes`` per run."""
        total = sum(n for _, n in runs)
        out = bytearray(total)
        self.read_into(keyid, runs, memoryview(out))
        result: list[bytes] = []
        off = 0
        for _, n in runs:
            result.append(bytes(out[off : off + n]))
            off += n
        return result

    def read_into(self, keyid: int, runs: Sequence[tuple[int, int]], out: memoryview) -> None:
        """Like :meth:`read`, with the runs concatenated into ``out`` (the allocation-free bulk path)."""
        out = _bytes_view(out)
        total = 0
        for pa, n in runs:
            self._check_range(pa, n)
            total += n
        if len(out) < total:
            raise ValueError(f"output buffer holds {len(out)} bytes, the runs need {total}")
        if keyid == SHARED_KEYID:
            off = 0
            for pa, n in runs:
                if n:
                    dst = out[off : off + n]
                    dst[:] = self._pv[pa : pa + n]
                    self.rules.check_shared_read(pa, dst)
                off += n
            return
        self._read_private(self.rules.key(keyid), runs, out)

    def zero(self, keyid: int, runs: Sequence[tuple[int, int]]) -> None:
        """MOVDIR64B-style zeroing of whole lines (``pa`` and ``length`` multiples of 64).

        Private KeyID: encrypted zeros, owner bit set (TDG.MEM.PAGE.ACCEPT). KeyID 0: plaintext
        zeros, owner bit and poison cleared (page reclaim).
        """
        merged: list[tuple[int, int]] = []
        for pa, n in runs:
            self._check_range(pa, n)
            if pa % LINE or n % LINE:
                raise ValueError(f"zero() takes whole 64-byte lines: pa={pa:#x} length={n}")
            if merged and sum(merged[-1]) == pa:
                merged[-1] = (merged[-1][0], merged[-1][1] + n)
            elif n:
                merged.append((pa, n))
        chunk = _ZERO_CHUNK
        pieces = [(pa + off, min(chunk, n - off)) for pa, n in merged for off in range(0, n, chunk)]
        zeros, pv = self._zeros, self._pv
        if keyid == SHARED_KEYID:
            for pa, n in pieces:
                pv[pa : pa + n] = zeros[:n]
                self.rules.written_shared(pa, n)
            return
        key = self.rules.key(keyid)
        batch: list[Job] = []
        size = 0
        for pa, n in pieces:  # batches of about _ZERO_CHUNK bytes bound the lanes' scratch
            batch.append((pa, zeros[:n], pv[pa : pa + n]))
            size += n
            if size >= _ZERO_CHUNK:
                self._encrypt(key, batch, size)
                batch, size = [], 0
        if batch:
            self._encrypt(key, batch, size)

    def line_state(self, pa: int) -> tuple[bool, bool]:
        """``(td_owner, poisoned)`` of the line containing ``pa``."""
        self._check_range(pa, 1)
        return self.rules.line_state(pa)

    @property
    def poisoned_lines(self) -> int:
        """Number of lines currently poisoned (poison is cleared only by full-line writes)."""
        return self.rules.poisoned_lines

    def dangerous_tamper(self, pa: int, xor_mask: bytes) -> None:
        """A physical attacker flipping DRAM bits: XOR ``xor_mask`` into the stored bytes at ``pa``.

        Bypasses the controller's rules (no owner bit, MAC or poison update). For tests only.
        """
        n = len(xor_mask)
        self._check_range(pa, n)
        self.rules.before_tamper(pa, n)
        cur = int.from_bytes(self.phys[pa : pa + n], "big")
        self.phys[pa : pa + n] = (cur ^ int.from_bytes(xor_mask, "big")).to_bytes(n, "big")

    def dram_read(self, pa: int, length: int) -> tuple[bytes, bytes]:
        """What a physical attacker reads from DRAM (docs/memory-model.md §7.2): the bytes stored in the whole
        lines ``[pa, pa+length)`` (ciphertext where a private KeyID wrote, plaintext where KeyID 0 did) and,
        in Ci mode, the MAC stored with each line (4 bytes per line). No rule applies and nothing changes."""
        self._check_lines(pa, length)
        return bytes(self.phys[pa : pa + length]), self.rules.stored_macs(pa, length) or b""

    def dram_write(self, pa: int, data: bytes, macs: bytes = b"") -> None:
        """A physical attacker storing whole lines straight into DRAM. Owner bits and poison stay; a line
        given no MAC keeps the one it was last written with (so new ciphertext fails its check), a line given
        one holds that MAC (old ciphertext replayed with its old MAC passes: no replay protection)."""
        self._check_lines(pa, len(data))
        if macs and (not self.rules.integrity or len(macs) != len(data) // LINE * 4):
            lines = len(data) // LINE
            raise ValueError(f"{lines} lines take {lines * 4} bytes of MAC, and only in Ci mode")
        self.rules.before_tamper(pa, len(data))
        self.phys[pa : pa + len(data)] = data
        if macs:
            self.rules.restore_macs(pa, macs)

    def _check_lines(self, pa: int, n: int) -> None:
        self._check_range(pa, n)
        if pa % LINE or n % LINE:
            raise ValueError(f"DRAM is accessed in whole 64-byte lines: pa={pa:#x} length={n}")

    # ---- private KeyIDs -------------------------------------------------------------------------

    def _encrypt(self, key: XtsKey, jobs: list[Job], total: int) -> None:
        """Encrypt whole-line jobs into DRAM (their dsts), then mark their lines written."""
        self.lanes.crypt(key, jobs, total, encrypt=True, parallel=len(jobs) == 1 or _disjoint(jobs))
        for pa, src, _ in jobs:
            self.rules.written_private(pa, len(src))

    def _read_private(self, key: XtsKey, runs: Sequence[tuple[int, int]], out: memoryview) -> None:
        """Check every line the runs touch, then decrypt them in one batch: whole-line runs straight
        into ``out``, the rest into the stage and the wanted bytes copied out."""
        spans = _widen(runs)
        staged = 0
        for start, size, inner, want, _ in spans:
            self.rules.check_private_read(start, size)
            if inner or size != want:
                staged += size
        if len(self._stage) < staged:
            self._stage = bytearray(staged)
        stage, pv = memoryview(self._stage), self._pv
        jobs: list[Job] = []
        copies: list[tuple[int, int, int]] = []
        total = s = 0
        for start, size, inner, want, o in spans:
            if inner or size != want:
                jobs.append((start, pv[start : start + size], stage[s : s + size]))
                copies.append((o, s + inner, want))
                s += size
            else:
                jobs.append((start, pv[start : start + size], out[o : o + size]))
            total += size
        self.lanes.crypt(key, jobs, total, encrypt=False)
        for o, s, want in copies:
            out[o : o + want] = stage[s : s + want]

    def _write_partial(self, key: XtsKey, pa: int, data: memoryview) -> None:
        """One private run that may cover lines partly: its end lines are read with the same key
        (their checks apply first), patched, and the whole lines written."""
        n = len(data)
        if n == 0:
            return
        start = pa - pa % LINE
        end = -(-(pa + n) // LINE) * LINE
        view = memoryview(bytearray(end - start))
        if pa != start:
            self._read_private(key, [(start, LINE)], view[:LINE])
        if (pa + n) % LINE and (end - LINE != start or pa == start):
            self._read_private(key, [(end - LINE, LINE)], view[-LINE:])
        view[pa - start : pa - start + n] = data
        self._encrypt(key, [(start, view, self._pv[start:end])], end - start)

    # ---- the shared KeyID -----------------------------------------------------------------------

    def _write_shared(self, pa: int, data: memoryview) -> None:
        n = len(data)
        if n == 0:
            return
        self.rules.check_shared_write(pa, n)
        self._pv[pa : pa + n] = data
        self.rules.written_shared(pa, n)

    def _check_range(self, pa: int, n: int) -> None:
        if pa < 0 or n < 0 or pa + n > self.phys_bytes:
            raise ValueError(f"physical range [{pa:#x}, {pa + n:#x}) outside [0, {self.phys_bytes:#x})")


def _gather(
    runs: Sequence[tuple[int, bytes | memoryview]],
) -> tuple[list[tuple[int, int, int]], list[bytes | memoryview], int, bool]:
    """One pass over ``(pa, data)`` runs: physically adjacent runs merged into (pa, length, offset)
    pieces, the data segments in order, the total length, and whether every run is whole lines."""
    if len(runs) > 1:
        whole = _gather_contiguous(runs)
        if whole is not None:
            return whole
    pieces: list[tuple[int, int, int]] = []
    segments: list[bytes | memoryview] = []
    total = 0
    aligned = True
    for pa, data in runs:
        n = data.nbytes if type(data) is memoryview else len(data)
        if not n:
            continue
        if pa % LINE or n % LINE:
            aligned = False
        if pieces and pieces[-1][0] + pieces[-1][1] == pa:
            last = pieces[-1]
            pieces[-1] = (last[0], last[1] + n, last[2])
        else:
            pieces.append((pa, n, total))
        segments.append(data)
        total += n
    return pieces, segments, total, aligned


def _gather_contiguous(
    runs: Sequence[tuple[int, bytes | memoryview]],
) -> tuple[list[tuple[int, int, int]], list[bytes | memoryview], int, bool] | None:
    """:func:`_gather` of whole-line runs that lie back to back in DRAM (what guest_memfd extents
    give): one piece, found by C-level passes over the batch instead of a Python loop per run.
    None when the runs are anything else."""
    pas = list(map(itemgetter(0), runs))
    segments: list[bytes | memoryview] = list(map(itemgetter(1), runs))
    sizes = [s.nbytes if type(s) is memoryview else len(s) for s in segments]
    if pas[0] % LINE or any(map(mod, sizes, repeat(LINE))) or pas[1:] != list(map(add, pas[:-1], sizes)):
        return None
    total = sum(sizes)
    return [(pas[0], total, 0)], segments, total, True


def _widen(runs: Sequence[tuple[int, int]]) -> list[tuple[int, int, int, int, int]]:
    """Each ``(pa, length)`` read run widened to whole lines: (line-aligned start, size, offset of the
    wanted bytes in it, wanted length, offset in the output). Whole-line runs adjacent both in DRAM
    and in the output are merged."""
    spans: list[tuple[int, int, int, int, int]] = []
    out_off = 0
    for pa, n in runs:
        if n:
            start = pa - pa % LINE
            end = -(-(pa + n) // LINE) * LINE
            last = spans[-1] if spans else None
            if (
                last is not None
                and start == pa
                and end == pa + n
                and last[0] + last[1] == start
                and last[2] == 0
                and last[1] == last[3]
                and last[4] + last[3] == out_off
            ):
                spans[-1] = (last[0], last[1] + n, 0, last[3] + n, last[4])
            else:
                spans.append((start, end - start, pa - start, n, out_off))
        out_off += n
    return spans


def _disjoint(jobs: list[Job]) -> bool:
    """Whether no two jobs write the same physical bytes (then they may run on different lanes)."""
    end = -1
    for pa, src, _ in jobs:
        if pa < end:
            break
        end = pa + len(src)
    else:
        return True  # ascending and disjoint: the common case, one pass
    spans = sorted((pa, pa + len(src)) for pa, src, _ in jobs)
    return all(a_end <= b_start for (_, a_end), (b_start, _) in pairwise(spans))


def _bytes_view(data: bytes | memoryview) -> memoryview:
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")

"""The memory controller: physical memory behind TME-MK encryption and integrity (docs/memory-model.md §7).

Real thing modelled: DRAM plus the memory controller's multi-key encryption engine. Every access
carries a KeyID (in hardware, the upper physical-address bits); the controller encrypts and decrypts
each 64-byte cache line with that KeyID's AES-XTS key and keeps, per line, a TD-owner bit and — in Ci
mode — a 28-bit MAC. The observable rules are those of docs/memory-model.md §7, "Access to a TD-owned line":

* **private write** (KeyID ≠ 0): encrypt, set the owner bit, (Ci) the MAC, clear poison of every fully
  written line. A partial-line write is a read-modify-write of the line under the same key, so the
  read checks below apply to that line first.
* **private read**: a poisoned line is consumed → :class:`MachineCheck` (``in_td=True``). A line whose
  owner bit is clear, or (Ci) whose MAC does not match, is poisoned first (sticky, counted) and then
  consumed. Li mode (``integrity=False``) checks only the owner bit: a flipped ciphertext bit
  decrypts to garbage, undetected.
* **shared write** (KeyID 0): stored as plaintext, owner bit cleared — how a host write silently
  corrupts a TD line. A full-line write clears poison; a partial-line write to a poisoned line
  consumes it → ``MachineCheck(in_td=False)``.
* **shared read** (KeyID 0): TD-owned lines read as all zeros (no new poison, which also stops MAC
  probing); poisoned lines are consumed → ``MachineCheck(in_td=False)``, the host machine check.
* :meth:`MemoryController.zero` is MOVDIR64B: full-line stores that clear poison; with a private
  KeyID they write encrypted zeros (TDG.MEM.PAGE.ACCEPT), with KeyID 0 plaintext zeros (page reclaim).

KeyID 0 is the host's shared KeyID. On a real platform it is encrypted with the platform TME key;
that key never changes and is never observable, so it is modelled as TME bypass (plaintext), which
keeps shared memory readable in :attr:`MemoryController.phys` for tests and debugging.

Storage: one anonymous ``mmap`` each for data and per-line metadata (bit 0 owner, bit 1 poison).
Anonymous mappings are lazily zero, so a 4 GiB machine costs nothing until touched.

**The MAC is evaluated lazily, with the same outcome as eager evaluation.** A TD-owned line's
ciphertext can change without a private write of that line in exactly two ways: a shared-KeyID
write (which clears the owner bit, so the owner check already fails) and a physical attack on
DRAM (:meth:`MemoryController.dangerous_tamper`). So instead of computing and storing a tag on
every private write, the controller computes the tag a line had when it was last written at the
moment its ciphertext is about to be tampered with (its content is still exactly what was
written), keeps it in a sparse table, and a private read recomputes and compares the tags of the
lines in that table. A read of an untampered line would have compared a tag with itself. Any full
private write of a line drops its stored tag, as a new write would replace it.

Cost model (docs/conventions.md §8): adjacent runs whose physical addresses are contiguous are merged;
a merged run costs three bulk AES passes (see :mod:`host.tdx.xts`) with cipher contexts made per
run, never per page; batches of 256 KiB and more are split in two lanes that run at once (the
cipher library releases the GIL); runs of at most 256 bytes (RTMR data, REPORTDATA, small guest
accesses) take a short path with no cipher context at all. Runs are processed in the order given.
Callers hold the host lock; nothing here locks except the lanes' hand-off.
"""

from __future__ import annotations

import enum
import mmap
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from host.tdx.xts import LANES, LINE, SLACK, SMALL_RUN, LineMac, XtsKey, random_xts_key

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
KEYID_MAX = (1 << 15) - 1  # PCONFIG's keyid field is 16 bits; KeyIDs above 2**15-1 never exist
SHARED_KEYID = 0

_OWNER = 0x01
_POISON = 0x02
_ZERO_CHUNK = 1 << 20  # zero() works through large ranges in pieces of this size
#: Below this, handing half a batch to the second lane costs more than it saves.
_PARALLEL_MIN = 256 << 10


class MachineCheck(Exception):
    """Poison was consumed: the #MC of docs/memory-model.md §7.

    ``in_td`` is True when a TD (or the TDX module on its behalf) consumed it with a private KeyID —
    the TD becomes FATAL; False when the host consumed it with KeyID 0 — a host machine check.
    ``pa`` is the physical address of the first consumed line.
    """

    def __init__(self, pa: int, *, in_td: bool) -> None:
        self.pa = pa
        self.in_td = in_td
        where = "in TD" if in_td else "in host"
        super().__init__(f"machine check {where}: poison consumed at line {pa:#x}")


class KeyNotProgrammed(Exception):
    """A private KeyID was used with no key programmed (never set, or cleared by CLEAR_KEY)."""

    def __init__(self, keyid: int) -> None:
        self.keyid = keyid
        super().__init__(f"KeyID {keyid} has no key programmed")


class EncryptionAlgorithm(enum.Enum):
    """TME-MK algorithms, valued as the PCONFIG ``keyid_ctrl.enc_algo`` bits (docs/memory-model.md §7)."""

    AES_XTS_128 = 0x1
    AES_XTS_128_WITH_INTEGRITY = 0x2
    AES_XTS_256 = 0x4
    AES_XTS_256_WITH_INTEGRITY = 0x8


class MemoryController:
    """Physical memory ``[0, phys_bytes)`` behind the TME-MK engine (see the module docstring)."""

    phys: mmap.mmap
    integrity: bool

    def __init__(self, phys_bytes: int = 4 << 30, *, integrity: bool = True, xts_bits: int = 128) -> None:
        if phys_bytes <= 0 or phys_bytes % PAGE:
            raise ValueError(f"physical memory must be a positive multiple of {PAGE} bytes, got {phys_bytes}")
        if xts_bits not in (128, 256):
            raise ValueError(f"xts_bits must be 128 or 256, got {xts_bits}")
        self.phys_bytes = phys_bytes
        self.integrity = integrity
        self.xts_bits = xts_bits
        self.phys = mmap.mmap(-1, phys_bytes)
        self._pv = memoryview(self.phys)
        self._meta = mmap.mmap(-1, phys_bytes // LINE)
        # Li mode has no MAC at all; the platform MAC key is made once, at "boot".
        self._linemac = LineMac() if integrity else None
        #: line → tag it had when last written, for lines whose ciphertext was tampered with since.
        self._tags: dict[int, bytes] = {}
        self._keys: dict[int, XtsKey] = {}
        self._poisoned = 0
        self._lane_buffers = [(bytearray(), bytearray()) for _ in range(LANES)]
        self._pool: ThreadPoolExecutor | None = None
        self._ones = b""
        self._zeros = bytes(_ZERO_CHUNK)

    # ---- keys (PCONFIG) -------------------------------------------------------------------------

    @property
    def algorithm(self) -> EncryptionAlgorithm:
        """The algorithm every private key is programmed with (fixed at platform init)."""
        if self.xts_bits == 128:
            return (
                EncryptionAlgorithm.AES_XTS_128_WITH_INTEGRITY
                if self.integrity
                else EncryptionAlgorithm.AES_XTS_128
            )
        return (
            EncryptionAlgorithm.AES_XTS_256_WITH_INTEGRITY
            if self.integrity
            else EncryptionAlgorithm.AES_XTS_256
        )

    def program_key(self, keyid: int) -> None:
        """PCONFIG SET_KEY_RANDOM: a fresh random key for private ``keyid``; replaces any earlier key."""
        _check_private_keyid(keyid)
        self._keys[keyid] = XtsKey(random_xts_key(self.xts_bits))

    def clear_key(self, keyid: int) -> None:
        """PCONFIG CLEAR_KEY: drop the key; later private accesses raise :class:`KeyNotProgrammed`."""
        _check_private_keyid(keyid)
        self._keys.pop(keyid, None)

    def key_programmed(self, keyid: int) -> bool:
        return keyid in self._keys

    def _key(self, keyid: int) -> XtsKey:
        _check_private_keyid(keyid)
        key = self._keys.get(keyid)
        if key is None:
            raise KeyNotProgrammed(keyid)
        return key

    # ---- public accessors -----------------------------------------------------------------------

    def write(self, keyid: int, runs: Sequence[tuple[int, bytes | memoryview]]) -> None:
        """Store each ``(pa, data)`` run, in order, with ``keyid`` (0 = shared, else private).

        One pass (:func:`_gather`) merges physically adjacent runs into pieces, the bulk path's
        unit; ranges are checked per piece."""
        pieces, segments, total, aligned = _gather(runs)
        for pa, n, _ in pieces:
            self._check_range(pa, n)
        if keyid == SHARED_KEYID:
            for pa, data in runs:
                self._write_shared(pa, _bytes_view(data))
            return
        key = self._key(keyid)
        if not aligned:  # partial lines: read-modify-write, one run at a time, in order
            for pa, data in runs:
                self._write_private_partial(key, pa, _bytes_view(data))
            return
        if total:
            self._write_private_lines(key, pieces, segments, total)

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
        out = out.cast("B") if out.format != "B" else out
        total = 0
        for pa, n in runs:
            self._check_range(pa, n)
            total += n
        if len(out) < total:
            raise ValueError(f"output buffer holds {len(out)} bytes, the runs need {total}")
        if keyid == SHARED_KEYID:
            off = 0
            for pa, n in runs:
                self._read_shared(pa, n, out[off : off + n])
                off += n
            return
        self._read_private(self._key(keyid), list(runs), out)

    def zero(self, keyid: int, runs: Sequence[tuple[int, int]]) -> None:
        """MOVDIR64B-style zeroing of whole lines (``pa`` and ``length`` multiples of 64).

        Private KeyID: encrypted zeros, owner bit and MAC set (TDG.MEM.PAGE.ACCEPT). KeyID 0:
        plaintext zeros, owner bit and poison cleared (page reclaim).
        """
        for pa, n in runs:
            self._check_range(pa, n)
            if pa % LINE or n % LINE:
                raise ValueError(f"zero() takes whole 64-byte lines: pa={pa:#x} length={n}")
        zeros = memoryview(self._zeros)
        pieces = [(pa + off, min(_ZERO_CHUNK, n - off)) for pa, n in runs for off in range(0, n, _ZERO_CHUNK)]
        if keyid == SHARED_KEYID:
            for pa, n in pieces:
                self._pv[pa : pa + n] = zeros[:n]
                self._forget_tags(pa // LINE, n // LINE)
                self._set_meta(pa // LINE, n // LINE, 0)
            return
        key = self._key(keyid)
        batch: list[tuple[int, memoryview]] = []
        size = 0
        for pa, n in pieces:
            batch.append((pa, zeros[:n]))
            size += n
            if size >= _ZERO_CHUNK:
                self._write_private_lines(key, *_gather(batch)[:3])
                batch, size = [], 0
        if batch:
            self._write_private_lines(key, *_gather(batch)[:3])

    def line_state(self, pa: int) -> tuple[bool, bool]:
        """``(td_owner, poisoned)`` of the line containing ``pa``."""
        self._check_range(pa, 1)
        m = self._meta[pa // LINE]
        return bool(m & _OWNER), bool(m & _POISON)

    @property
    def poisoned_lines(self) -> int:
        """Number of lines currently poisoned (poison is cleared only by full-line writes)."""
        return self._poisoned

    def dangerous_tamper(self, pa: int, xor_mask: bytes) -> None:
        """A physical attacker flipping DRAM bits: XOR ``xor_mask`` into the stored bytes at ``pa``.

        Bypasses the controller entirely (no owner bit, MAC or poison update). For tests only.
        """
        n = len(xor_mask)
        self._check_range(pa, n)
        if self._linemac is not None and n:
            first, last = pa // LINE, (pa + n - 1) // LINE
            for line in range(first, last + 1):
                if line not in self._tags and self._meta[line] & _OWNER:
                    start = line * LINE
                    self._tags[line] = self._linemac.tags(start, self._pv[start : start + LINE])
        cur = int.from_bytes(self.phys[pa : pa + n], "big")
        self.phys[pa : pa + n] = (cur ^ int.from_bytes(xor_mask, "big")).to_bytes(n, "big")

    # ---- private (KeyID != 0) paths -----------------------------------------------------------

    def _scratch(self, n: int, lane: int = 0) -> tuple[memoryview, memoryview]:
        a, b = self._lane_buffers[lane]
        if len(a) < n + SLACK:
            a, b = bytearray(n + SLACK), bytearray(n + SLACK)
            self._lane_buffers[lane] = (a, b)
        return memoryview(a), memoryview(b)

    def _in_lanes(
        self,
        total: int,
        work: Callable[[int, list[tuple[int, int, int]]], None],
        pieces: list[tuple[int, int, int]],
    ) -> None:
        """Run ``work(lane, pieces)`` over (pa, length, offset) pieces, split across two lanes
        when the batch is large enough to pay for the hand-off."""
        lanes = self._split(pieces, total)
        if len(lanes) == 1:
            work(0, pieces)
            return
        first, second = lanes
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mktme-lane")
        other = self._pool.submit(work, 1, second)
        work(0, first)
        other.result()

    def _write_private_lines(
        self,
        key: XtsKey,
        pieces: list[tuple[int, int, int]],
        segments: list[bytes | memoryview],
        total: int,
    ) -> None:
        """Encrypt whole-line pieces: CTR_K2 into A, ECB_K1 into B, CTR_K2 into DRAM, per lane."""
        if not total:
            return
        # One C-level join stages the batch; copying segment by segment from Python costs more.
        plain = memoryview(b"".join(segments) if len(segments) > 1 else segments[0])
        pv = self._pv
        if len(pieces) == 1 and total <= SMALL_RUN:  # a few lines: one short-run call
            pa = pieces[0][0]
            pv[pa : pa + total] = key.crypt_short(pa, plain, encrypt=True)
            self._mark_owned(pa, pa + total)
            return
        lanes = self._split(pieces, total)
        if len(lanes) == 1:  # small batch: no plans, and short runs take the cheap tweak path
            a, b = self._scratch(total)
            for pa, n, off in pieces:
                key.tweak_xor(pa, plain[off : off + n], a[off : off + n])
            key.ecb_encrypt(a[:total], b)
            for pa, n, off in pieces:
                key.tweak_xor(pa, b[off : off + n], pv[pa : pa + n])
                self._mark_owned(pa, pa + n)
            return
        plans: list[_LanePlan] = []
        for lane, part in enumerate(lanes):
            base = part[0][2]
            size = part[-1][2] + part[-1][1] - base
            a, b = self._scratch(size, lane)
            tweak_in = [
                (key.tweak_context(pa), plain[off : off + n], a[off - base : off - base + n])
                for pa, n, off in part
            ]
            tweak_out = [
                (key.tweak_context(pa), b[off - base : off - base + n], pv[pa : pa + n])
                for pa, n, off in part
            ]
            plans.append((tweak_in, key.ecb_encryptor(lane), a[:size], b, tweak_out))
        self._run_lanes(plans)
        for pa, n, _ in pieces:
            self._mark_owned(pa, pa + n)

    def _split(self, pieces: list[tuple[int, int, int]], total: int) -> list[list[tuple[int, int, int]]]:
        """One lane for small batches; else two halves of (pa, length, offset) pieces."""
        if total < _PARALLEL_MIN:
            return [pieces]
        half = total // 2 // LINE * LINE
        first: list[tuple[int, int, int]] = []
        second: list[tuple[int, int, int]] = []
        for pa, n, off in pieces:
            if off + n <= half:
                first.append((pa, n, off))
            elif off >= half:
                second.append((pa, n, off))
            else:
                cut = half - off
                first.append((pa, cut, off))
                second.append((pa + cut, n - cut, half))
        return [first, second]

    def _run_lanes(self, plans: list[_LanePlan]) -> None:
        """Run each lane's three passes; every Python decision was made before, so the lanes
        only call into the cipher library (which releases the GIL)."""
        if len(plans) == 1:
            _run_plan(plans[0])
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mktme-lane")
        other = self._pool.submit(_run_plan, plans[1])
        _run_plan(plans[0])
        other.result()

    def _mark_owned(self, start: int, end: int) -> None:
        line, lines = start // LINE, (end - start) // LINE
        self._forget_tags(line, lines)
        self._set_meta(line, lines, _OWNER)

    def _write_private_partial(self, key: XtsKey, pa: int, data: memoryview) -> None:
        n = len(data)
        if n == 0:
            return
        start = pa - pa % LINE
        end = -(-(pa + n) // LINE) * LINE
        buf = bytearray(end - start)
        view = memoryview(buf)
        if pa != start:  # the head line is read with the same key: its checks apply first
            self._read_private(key, [(start, LINE)], view[:LINE])
        if (pa + n) % LINE and (end - LINE != start or pa == start):
            self._read_private(key, [(end - LINE, LINE)], view[-LINE:])
        view[pa - start : pa - start + n] = data
        self._write_private_lines(key, *_gather([(start, view)])[:3])

    def _read_private(self, key: XtsKey, runs: list[tuple[int, int]], out: memoryview) -> None:
        """Check, then decrypt per lane: CTR_K2 from DRAM into B, ECB-decrypt_K1 into A, CTR_K2 out."""
        # Each run widened to whole lines: (line-aligned pa, length, offset of the wanted bytes,
        # wanted length, offset in out).
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
        for start, size, *_ in spans:
            self._check_private_lines(start // LINE, size // LINE)
        if len(spans) == 1 and spans[0][1] <= SMALL_RUN:  # a few lines: one short-run call
            start, size, inner, want, o = spans[0]
            out[o : o + want] = key.crypt_short(start, self._pv[start : start + size], encrypt=False)[
                inner : inner + want
            ]
            return
        if all(inner == 0 and size == want for _, size, inner, want, _ in spans):
            # The bulk path: whole lines decrypt straight into out, split across lanes.
            pieces = [(start, size, o) for start, size, _, _, o in spans]
            pv = self._pv
            total = sum(size for _, size, *_ in spans)

            def work(lane: int, part: list[tuple[int, int, int]]) -> None:
                if not part:
                    return
                base = part[0][2]
                size = part[-1][2] + part[-1][1] - base
                a, b = self._scratch(size, lane)
                for pa, n, off in part:
                    key.tweak_xor(pa, pv[pa : pa + n], b[off - base : off - base + n])
                key.ecb_decrypt(b[:size], a, lane)
                for pa, n, off in part:
                    key.tweak_xor(pa, a[off - base : off - base + n], out[off : off + n])

            if total < _PARALLEL_MIN:
                work(0, pieces)
            else:
                self._in_lanes(total, work, pieces)
            return
        for start, size, inner, want, o in spans:  # sub-line pieces: small, one at a time
            a, b = self._scratch(size)
            key.tweak_xor(start, self._pv[start : start + size], b[:size])
            key.ecb_decrypt(b[:size], a)
            key.tweak_xor(start, a[:size], b[:size])
            out[o : o + want] = b[inner : inner + want]

    def _check_private_lines(self, line: int, lines: int) -> None:
        """Owner bit and (Ci) MAC of every line, in address order; the first bad line is poisoned
        and consumed."""
        meta = self._meta[line : line + lines]
        tampered = self._tampered(line, lines)
        if meta.count(_OWNER) == lines and not tampered:
            return
        for i in range(lines):  # slow path: find the first bad line, in address order
            pa = (line + i) * LINE
            if meta[i] & _POISON:
                raise MachineCheck(pa, in_td=True)
            bad = not meta[i] & _OWNER
            if not bad and line + i in tampered:
                assert self._linemac is not None
                bad = self._linemac.tags(pa, self._pv[pa : pa + LINE]) != self._tags[line + i]
            if bad:
                self._poison(line + i)
                raise MachineCheck(pa, in_td=True)

    def _tampered(self, line: int, lines: int) -> set[int]:
        if not self._tags:
            return set()
        if lines > len(self._tags):
            return {t for t in self._tags if line <= t < line + lines}
        return {t for t in range(line, line + lines) if t in self._tags}

    def _forget_tags(self, line: int, lines: int) -> None:
        for t in self._tampered(line, lines):
            del self._tags[t]

    # ---- shared (KeyID 0) paths ---------------------------------------------------------------

    def _write_shared(self, pa: int, data: memoryview) -> None:
        n = len(data)
        if n == 0:
            return
        first, last = pa // LINE, (pa + n - 1) // LINE
        for line in sorted({first, last}):
            partial = not (line * LINE >= pa and (line + 1) * LINE <= pa + n)
            if partial and self._meta[line] & _POISON:
                raise MachineCheck(line * LINE, in_td=False)
        self._pv[pa : pa + n] = data
        self._forget_tags(first, last - first + 1)
        self._set_meta(first, last - first + 1, 0)

    def _read_shared(self, pa: int, n: int, out: memoryview) -> None:
        if n == 0:
            return
        first, last = pa // LINE, (pa + n - 1) // LINE
        meta = self._meta[first : last + 1]
        out[:] = self._pv[pa : pa + n]
        if meta.count(0) == len(meta):
            return
        for i, m in enumerate(meta):
            if m & _POISON:
                raise MachineCheck((first + i) * LINE, in_td=False)
        zeros = memoryview(self._zeros)
        for i, m in enumerate(meta):
            if m & _OWNER:  # TD-owned: the host sees zeros, not ciphertext
                lo = max(pa, (first + i) * LINE)
                hi = min(pa + n, (first + i + 1) * LINE)
                out[lo - pa : hi - pa] = zeros[: hi - lo]

    # ---- metadata -----------------------------------------------------------------------------

    def _set_meta(self, line: int, lines: int, value: int) -> None:
        """Full-line stores: set every line's metadata to ``value`` (clearing poison), keep the count."""
        old = self._meta[line : line + lines]
        clean = old.count(0) + old.count(_OWNER)
        if clean != lines:
            self._poisoned -= lines - clean
        if value == 0:
            self._meta[line : line + lines] = self._zeros[:lines] if lines <= _ZERO_CHUNK else bytes(lines)
        else:
            if len(self._ones) < lines:
                self._ones = bytes([_OWNER]) * max(lines, 2 * len(self._ones), 4096)
            self._meta[line : line + lines] = self._ones[:lines]

    def _poison(self, line: int) -> None:
        m = self._meta[line]
        if not m & _POISON:
            self._meta[line] = m | _POISON
            self._poisoned += 1

    def _check_range(self, pa: int, n: int) -> None:
        if pa < 0 or n < 0 or pa + n > self.phys_bytes:
            raise ValueError(f"physical range [{pa:#x}, {pa + n:#x}) outside [0, {self.phys_bytes:#x})")


_CipherOps = list[tuple[Any, memoryview, memoryview]]
#: (first CTR pass, ECB context, ECB input, ECB output, second CTR pass) of one lane.
_LanePlan = tuple[_CipherOps, Any, memoryview, memoryview, _CipherOps]


def _run_plan(plan: _LanePlan) -> None:
    first, ecb, a, b, last = plan
    for ctx, src, dst in first:
        ctx.update_into(src, dst)
    ecb.update_into(a, b)
    for ctx, src, dst in last:
        ctx.update_into(src, dst)


def _gather(
    runs: Sequence[tuple[int, bytes | memoryview]],
) -> tuple[list[tuple[int, int, int]], list[bytes | memoryview], int, bool]:
    """One pass over ``(pa, data)`` runs: physically adjacent runs merged into (pa, length, offset)
    pieces, the data segments in order, the total length, and whether every run is whole lines."""
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


def _bytes_view(data: bytes | memoryview) -> memoryview:
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _check_private_keyid(keyid: int) -> None:
    if not 1 <= keyid <= KEYID_MAX:
        raise ValueError(f"private KeyID must be in [1, {KEYID_MAX}], got {keyid}")

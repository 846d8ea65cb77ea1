"""TME-MK access rules: the key of each KeyID and the state kept beside every line (docs/memory-model.md §7).

Real thing modelled: the memory controller's key table (filled by PCONFIG) and the metadata it keeps
per 64-byte line of DRAM — a TD-owner bit, poison, and in Ci mode a 28-bit MAC — with the checks of
docs/memory-model.md §7, "Access to a TD-owned line". The controller (:mod:`host.tdx.memctl`) asks
these rules before and tells them after every access; the cipher work itself is :mod:`host.tdx.lanes`.

* **private write** (KeyID ≠ 0): set the owner bit, (Ci) the MAC, clear poison of every fully written
  line. A partial-line write is a read-modify-write, so the read checks apply to that line first.
* **private read**: a poisoned line is consumed → :class:`MachineCheck` (``in_td=True``). A line whose
  owner bit is clear, or (Ci) whose MAC does not match, is poisoned first (sticky, counted) and then
  consumed. Li mode (``integrity=False``) checks only the owner bit: a flipped ciphertext bit decrypts
  to garbage, undetected.
* **shared write** (KeyID 0): owner bit cleared — how a host write silently corrupts a TD line. A
  full-line write clears poison; a partial-line write to a poisoned line consumes it →
  ``MachineCheck(in_td=False)``.
* **shared read** (KeyID 0): TD-owned lines read as all zeros (no new poison, which also stops MAC
  probing); poisoned lines are consumed → ``MachineCheck(in_td=False)``, the host machine check.

**The MAC is evaluated lazily, with the same outcome as eager evaluation.** A TD-owned line's
ciphertext can change without a private write of that line in exactly two ways: a shared-KeyID write
(which clears the owner bit, so the owner check already fails) and a physical attack on DRAM
(:meth:`AccessRules.before_tamper`). So instead of a tag per private write, the rules compute the tag
a line had when it was last written at the moment its ciphertext is about to be tampered with (its
content is still exactly what was written), keep it in a sparse table, and a private read recomputes
and compares the tags of the lines in that table. A read of an untampered line would have compared a
tag with itself. Any full private write of a line drops its stored tag, as a new write would replace it.
"""

from __future__ import annotations

import enum

from host.tdx.dram import reserve
from host.tdx.xts import LINE, LineMac, XtsKey, random_xts_key

__all__ = [
    "KEYID_MAX",
    "SHARED_KEYID",
    "AccessRules",
    "EncryptionAlgorithm",
    "KeyNotProgrammed",
    "MachineCheck",
]

KEYID_MAX = (1 << 15) - 1  # PCONFIG's keyid field is 16 bits; KeyIDs above 2**15-1 never exist
SHARED_KEYID = 0

_OWNER = 0x01
_POISON = 0x02
_ZERO_LINE = bytes(LINE)


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


class AccessRules:
    """The key table and per-line metadata of the DRAM ``dram`` (see the module docstring).

    Addresses are physical and already range-checked by the controller. Metadata lives in one
    anonymous ``mmap`` (bit 0 owner, bit 1 poison), reserved lazily like the DRAM it describes
    (:mod:`host.tdx.dram`): only the metadata of touched lines costs memory.
    """

    def __init__(self, dram: memoryview, *, integrity: bool, xts_bits: int) -> None:
        if xts_bits not in (128, 256):
            raise ValueError(f"xts_bits must be 128 or 256, got {xts_bits}")
        self.integrity = integrity
        self.xts_bits = xts_bits
        self._dram = dram
        self._meta = reserve(len(dram) // LINE, "line metadata")
        # Li mode has no MAC at all; the platform MAC key is made once, at "boot".
        self._linemac = LineMac() if integrity else None
        #: line → tag it had when last written, for lines whose ciphertext was tampered with since.
        self._tags: dict[int, bytes] = {}
        self._keys: dict[int, XtsKey] = {}
        self._poisoned = 0
        self._owned = self._unowned = b""  # runs of one metadata byte, grown on demand

    # ---- the key table (PCONFIG) ---------------------------------------------------------------

    @property
    def algorithm(self) -> EncryptionAlgorithm:
        """The algorithm every private key is programmed with (fixed at platform init)."""
        if self.xts_bits == 128:
            if self.integrity:
                return EncryptionAlgorithm.AES_XTS_128_WITH_INTEGRITY
            return EncryptionAlgorithm.AES_XTS_128
        if self.integrity:
            return EncryptionAlgorithm.AES_XTS_256_WITH_INTEGRITY
        return EncryptionAlgorithm.AES_XTS_256

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

    def key(self, keyid: int) -> XtsKey:
        """The key of private ``keyid``, or :class:`KeyNotProgrammed`."""
        _check_private_keyid(keyid)
        key = self._keys.get(keyid)
        if key is None:
            raise KeyNotProgrammed(keyid)
        return key

    # ---- private KeyIDs -----------------------------------------------------------------------

    def check_private_read(self, start: int, size: int) -> None:
        """Before a private read of the whole lines ``[start, start+size)``: owner bit and (Ci) MAC of
        every line, in address order; the first bad line is poisoned and consumed."""
        line, lines = start // LINE, size // LINE
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
                bad = self._linemac.tags(pa, self._dram[pa : pa + LINE]) != self._tags[line + i]
            if bad:
                self._poison(line + i)
                raise MachineCheck(pa, in_td=True)

    def written_private(self, start: int, size: int) -> None:
        """After a private write of the whole lines ``[start, start+size)``: owned, unpoisoned, MAC fresh."""
        line, lines = start // LINE, size // LINE
        self._forget_tags(line, lines)
        self._set_meta(line, lines, owned=True)

    # ---- the shared KeyID 0 ---------------------------------------------------------------------

    def check_shared_write(self, pa: int, n: int) -> None:
        """Before a shared write of ``[pa, pa+n)``: a poisoned line it only partly covers is consumed."""
        first, last = pa // LINE, (pa + n - 1) // LINE
        for line in (first, last) if first != last else (first,):
            partial = not (line * LINE >= pa and (line + 1) * LINE <= pa + n)
            if partial and self._meta[line] & _POISON:
                raise MachineCheck(line * LINE, in_td=False)

    def written_shared(self, pa: int, n: int) -> None:
        """After a shared write of ``[pa, pa+n)``: every line it touched is host-owned and unpoisoned."""
        first, last = pa // LINE, (pa + n - 1) // LINE
        self._forget_tags(first, last - first + 1)
        self._set_meta(first, last - first + 1, owned=False)

    def check_shared_read(self, pa: int, out: memoryview) -> None:
        """After copying ``[pa, pa+len(out))`` into ``out``: poison is consumed (host #MC), TD-owned
        lines read as zeros."""
        n = len(out)
        first, last = pa // LINE, (pa + n - 1) // LINE
        meta = self._meta[first : last + 1]
        if meta.count(0) == len(meta):
            return
        for i, m in enumerate(meta):
            if m & _POISON:
                raise MachineCheck((first + i) * LINE, in_td=False)
        for i, m in enumerate(meta):
            if m & _OWNER:  # TD-owned: the host sees zeros, not ciphertext
                lo = max(pa, (first + i) * LINE)
                hi = min(pa + n, (first + i + 1) * LINE)
                out[lo - pa : hi - pa] = _ZERO_LINE[: hi - lo]

    # ---- state and attacks ----------------------------------------------------------------------

    def line_state(self, pa: int) -> tuple[bool, bool]:
        """``(td_owner, poisoned)`` of the line containing ``pa``."""
        m = self._meta[pa // LINE]
        return bool(m & _OWNER), bool(m & _POISON)

    @property
    def poisoned_lines(self) -> int:
        """Number of lines currently poisoned (poison is cleared only by full-line writes)."""
        return self._poisoned

    def before_tamper(self, pa: int, n: int) -> None:
        """Before DRAM bits in ``[pa, pa+n)`` change behind the controller's back: (Ci) keep the tags
        the owned lines there had when written, for later private reads to compare with."""
        if self._linemac is None or not n:
            return
        for line in range(pa // LINE, (pa + n - 1) // LINE + 1):
            if line not in self._tags and self._meta[line] & _OWNER:
                start = line * LINE
                self._tags[line] = self._linemac.tags(start, self._dram[start : start + LINE])

    def stored_macs(self, start: int, size: int) -> bytes | None:
        """(Ci) The MAC each whole line of ``[start, start+size)`` holds beside its ciphertext, 4 bytes per
        line: the tag of its last write, or the one a physical write stored; None in Li mode (no MACs)."""
        if self._linemac is None:
            return None
        fresh = self._linemac.tags(start, self._dram[start : start + size])
        first = start // LINE
        return b"".join(self._tags.get(first + i, fresh[4 * i : 4 * i + 4]) for i in range(size // LINE))

    def restore_macs(self, start: int, macs: bytes) -> None:
        """(Ci) A physical attacker writing the MAC bits of the lines from ``start`` (4 bytes per line)."""
        first = start // LINE
        for i in range(len(macs) // 4):
            self._tags[first + i] = bytes(macs[4 * i : 4 * i + 4])

    # ---- metadata -----------------------------------------------------------------------------

    def _set_meta(self, line: int, lines: int, *, owned: bool) -> None:
        """Full-line stores: every line owned (or not) and unpoisoned; the poison count follows."""
        old = self._meta[line : line + lines]
        clean = old.count(0) + old.count(_OWNER)
        if clean != lines:
            self._poisoned -= lines - clean
        fill = self._owned if owned else self._unowned
        if len(fill) < lines:
            fill = bytes([_OWNER if owned else 0]) * max(lines, 2 * len(fill), 4096)
            if owned:
                self._owned = fill
            else:
                self._unowned = fill
        self._meta[line : line + lines] = fill[:lines]

    def _poison(self, line: int) -> None:
        m = self._meta[line]
        if not m & _POISON:
            self._meta[line] = m | _POISON
            self._poisoned += 1

    def _tampered(self, line: int, lines: int) -> set[int]:
        if not self._tags:
            return set()
        if lines > len(self._tags):
            return {t for t in self._tags if line <= t < line + lines}
        return {t for t in range(line, line + lines) if t in self._tags}

    def _forget_tags(self, line: int, lines: int) -> None:
        for t in self._tampered(line, lines):
            del self._tags[t]


def _check_private_keyid(keyid: int) -> None:
    if not 1 <= keyid <= KEYID_MAX:
        raise ValueError(f"private KeyID must be in [1, {KEYID_MAX}], got {keyid}")

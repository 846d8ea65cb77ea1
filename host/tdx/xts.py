"""The TME-MK cipher engine: per-KeyID AES-XTS and the per-line integrity MAC (docs/memory-model.md §7).

Real thing modelled: the memory controller's encryption engine. It encrypts every cache line with
the key of the KeyID carried in the upper physical-address bits, using AES-XTS whose tweak is
"generated from the physical address encrypted with the per-HKID tweak key", and in Ci mode stores a
28-bit MAC per 64-byte line next to the data.

**XTS with 128-bit data units.** Key ``K1 || K2`` (16 + 16 bytes for XTS-128, 32 + 32 for XTS-256,
halves distinct). Every 16-byte block is its own data unit; the block at physical address ``pa`` has
tweak ``T = E_K2((pa >> 4).to_bytes(16, "big"))`` and ciphertext ``C = E_K1(P ^ T) ^ T``. That is
IEEE 1619 XTS applied to one block with tweak value ``pa >> 4`` (pinned against ``cryptography``'s
``modes.XTS`` in tests/host/tdx/test_xts.py). Because consecutive blocks of a physically
contiguous run have consecutive tweak values, ``T`` over the run is exactly the AES-CTR keystream of
``K2`` starting at counter ``pa >> 4``, so a run costs three bulk C passes: CTR_K2, ECB_K1, CTR_K2
(decryption: CTR_K2, ECB-decrypt_K1, CTR_K2). Cipher objects cost ~12 µs each (docs/conventions.md §8),
so the ECB contexts live as long as the key and a CTR context is made per contiguous run only.

**MAC (Ci mode).** Hardware uses a SHA-3-based MAC over {512-bit ciphertext, tweak, TD-owner bit}
truncated to 28 bits, keyed by a platform MAC key. Hashing 64-byte lines one at a time from Python
costs ~1 µs per line, so :class:`LineMac` is a bulk keyed construction built only from AES passes
that run at C speed, and like the hardware MAC it needs only the platform key, never a TD key:

1. ``A_k = E_Kb(C_k ^ E_Ka(pa_k >> 4))`` — an AES-CTR pass with the MAC address key binds every
   block to its physical address (moving a line changes its tag), and an ECB pass makes every
   bit of the block matter to every bit of ``A_k``.
2. Three AES-CBC-*decrypt* passes with the MAC key ``Km``. CBC decryption gives
   ``D_Km(x_k) ^ x_{k-1}`` for every block in one call, so after three passes the block at
   position 3 of each line depends on exactly the line's four blocks (chaining state carried
   between calls only reaches positions 0-2).
3. The tag is the low 28 bits (little-endian) of that block's first 32-bit word, picked with one
   strided ``array`` slice and one ``bytes.translate``.

The TD-owner bit is always 1 for a MAC'd line (a line with the bit clear fails before its MAC is
looked at), so it enters as a constant. How the memory controller avoids paying for the MAC on
every write without changing what a TD observes is explained in :mod:`host.tdx.access`; how a batch
of runs is spread over parallel lanes, in :mod:`host.tdx.lanes`.
"""

from __future__ import annotations

import array
import os
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 16
LINE = 64
TAG_BYTES = 4  # storage per line; the tag value is 28 bits
TAG_BITS = 28
#: Runs up to this many bytes take the short-run tweak path of :meth:`XtsKey.tweak_streams`.
SMALL_RUN = 256
_COUNTER_MASK = (1 << 128) - 1
# Clears the high nibble of the tag's most significant byte: 32 stored bits -> 28-bit tag.
_TOP_NIBBLE_CLEAR = bytes(b & 0x0F for b in range(256))
# ``update_into`` on block modes wants an output buffer 15 bytes longer than the input.
SLACK = BLOCK


def tweak_counter(pa: int) -> bytes:
    """The 128-bit tweak value (before encryption with K2) of the block at ``pa``: ``pa >> 4``."""
    return ((pa >> 4) & _COUNTER_MASK).to_bytes(BLOCK, "big")


def random_xts_key(bits: int) -> bytes:
    """A fresh XTS key ``K1 || K2`` for XTS-128 (32 bytes) or XTS-256 (64 bytes), halves distinct.

    Models PCONFIG SET_KEY_RANDOM: the key comes from the CPU's entropy source and is never exposed.
    """
    if bits not in (128, 256):
        raise ValueError(f"AES-XTS key size must be 128 or 256 bits, got {bits}")
    half = bits // 8
    while True:
        key = os.urandom(2 * half)
        if key[:half] != key[half:]:  # XTS requires distinct halves (as cryptography enforces)
            return key


class XtsKey:
    """One KeyID's AES-XTS key with per-block (128-bit) data units.

    Methods take whole 16-byte blocks at 16-byte aligned physical addresses; buffers are
    memoryviews so that no pass allocates. Only :meth:`ecb` with different ``lane`` numbers may run
    at once (each lane has its own ECB_K1 contexts); everything else is called from one thread.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) not in (32, 64):
            raise ValueError(f"AES-XTS key must be 32 or 64 bytes, got {len(key)}")
        half = len(key) // 2
        if key[:half] == key[half:]:
            raise ValueError("AES-XTS key halves must differ")
        self.bits = half * 8
        self._k1 = algorithms.AES(key[:half])
        self._k2 = algorithms.AES(key[half:])
        # ECB has no state between blocks, so long-lived contexts serve every call: one ECB_K2 for
        # the short-run tweaks, and per lane one ECB_K1 for each direction.
        self._ecb_k2 = Cipher(self._k2, modes.ECB()).encryptor()
        self._ecb_enc: list[Any] = []
        self._ecb_dec: list[Any] = []
        self.reserve_lanes(1)

    def reserve_lanes(self, lanes: int) -> None:
        """Make the ECB_K1 contexts of lanes ``0 .. lanes-1`` (before those lanes run)."""
        while len(self._ecb_enc) < lanes:
            self._ecb_enc.append(Cipher(self._k1, modes.ECB()).encryptor())
            self._ecb_dec.append(Cipher(self._k1, modes.ECB()).decryptor())

    def tweak_streams(self, pa: int, n: int) -> tuple[Any, Any]:
        """Two objects whose ``update_into(src, dst)`` stores ``src ^ T`` over the ``n``-byte run of
        blocks at ``pa``: one for each XOR pass of the run, usable from any thread.

        Long runs get two CTR_K2 contexts (~12 µs each). Short runs (≤ :data:`SMALL_RUN` bytes: RTMR
        data, REPORTDATA, small guest accesses) skip them: their tweaks come from one call on the
        long-lived ECB_K2 context, made here, and the XOR is a Python integer XOR, cheap at that
        size; both passes share that one object. Same bytes either way."""
        if n <= SMALL_RUN:
            short = _ShortTweak(self._ecb_k2.update(_counters(pa, n)))
            return short, short
        counter = modes.CTR(tweak_counter(pa))
        return Cipher(self._k2, counter).encryptor(), Cipher(self._k2, counter).encryptor()

    def crypt_short(self, pa: int, data: bytes | memoryview, *, encrypt: bool) -> bytes:
        """Encrypt or decrypt a short run (≤ :data:`SMALL_RUN` bytes) in one go on lane 0: the tweak
        stream is computed once for both XORs, and no cipher context is made. Same bytes as the
        bulk path."""
        n = len(data)
        tweaks = int.from_bytes(self._ecb_k2.update(_counters(pa, n)), "little")
        whitened = (int.from_bytes(data, "little") ^ tweaks).to_bytes(n, "little")
        ecb = self._ecb_enc[0] if encrypt else self._ecb_dec[0]
        return (int.from_bytes(ecb.update(whitened), "little") ^ tweaks).to_bytes(n, "little")

    def ecb(self, *, encrypt: bool, lane: int = 0) -> Any:
        """Lane ``lane``'s ECB_K1 context (encrypt or decrypt): ``update_into(src, dst)`` stores the
        blocks of ``src`` through the cipher; ``dst`` needs :data:`SLACK` spare bytes."""
        return (self._ecb_enc if encrypt else self._ecb_dec)[lane]

    def encrypt(self, pa: int, plaintext: bytes) -> bytes:
        """Encrypt one contiguous run at ``pa`` (convenience, allocates; used by tests)."""
        return self._crypt_run(pa, plaintext, encrypt=True)

    def decrypt(self, pa: int, ciphertext: bytes) -> bytes:
        """Decrypt one contiguous run at ``pa`` (convenience, allocates; used by tests)."""
        return self._crypt_run(pa, ciphertext, encrypt=False)

    def _crypt_run(self, pa: int, data: bytes, *, encrypt: bool) -> bytes:
        n = len(data)
        _check_blocks(pa, n)
        a = memoryview(bytearray(n + SLACK))
        b = memoryview(bytearray(n + SLACK))
        out = bytearray(n)
        first, last = self.tweak_streams(pa, n)
        first.update_into(memoryview(data), a[:n])
        self.ecb(encrypt=encrypt).update_into(a[:n], b)
        last.update_into(b[:n], memoryview(out))
        return bytes(out)


class _ShortTweak:
    """``update_into(src, dst)``: ``dst = src ^ T`` for a short run whose tweak bytes ``T`` are known."""

    __slots__ = ("_n", "_tweaks")

    def __init__(self, tweaks: bytes) -> None:
        self._n = len(tweaks)
        self._tweaks = int.from_bytes(tweaks, "little")

    def update_into(self, src: memoryview, dst: memoryview) -> None:
        n = self._n
        dst[:n] = (int.from_bytes(src, "little") ^ self._tweaks).to_bytes(n, "little")


class LineMac:
    """The per-platform 28-bit line MAC over stored ciphertext and its physical address (module docstring)."""

    def __init__(self, key: bytes | None = None) -> None:
        key = os.urandom(48) if key is None else key
        if len(key) != 48:
            raise ValueError(f"MAC key must be 48 bytes (address, block and chaining keys), got {len(key)}")
        self._address_key = algorithms.AES(key[:16])
        self._block = Cipher(algorithms.AES(key[32:]), modes.ECB()).encryptor()
        # One long-lived CBC-decrypt context: the chaining value it carries from the previous call
        # only reaches block positions 0-2 of the first line, never the tag position 3.
        self._cbc = Cipher(algorithms.AES(key[16:32]), modes.CBC(bytes(BLOCK))).decryptor()
        # The last pass lands in an array of uint32 so that the tag pick is one strided array slice.
        self._x = array.array("I")
        self._y = bytearray()

    def _scratch(self, n: int) -> tuple[memoryview, memoryview]:
        if len(self._y) < n + SLACK:
            self._x = array.array("I", bytes(n + SLACK))
            self._y = bytearray(n + SLACK)
        return memoryview(self._x).cast("B"), memoryview(self._y)

    def tags(self, pa: int, ciphertext: memoryview) -> bytes:
        """Tags (4 bytes per line, 28 significant bits) of the whole lines stored at ``pa``."""
        n = len(ciphertext)
        if n % LINE or pa % LINE:
            raise ValueError(f"MAC input must be whole 64-byte lines, got {n} bytes at {pa:#x}")
        if n == 0:
            return b""
        x, y = self._scratch(n)
        Cipher(self._address_key, modes.CTR(tweak_counter(pa))).encryptor().update_into(ciphertext, x)
        self._block.update_into(x[:n], y)
        self._cbc.update_into(y[:n], x)
        self._cbc.update_into(x[:n], y)
        self._cbc.update_into(y[:n], x)
        # Block 3 of each line starts at byte 48 = uint32 index 12 of 16; keep its low 28 bits
        # (little-endian: clear the top nibble of byte 3).
        picked = self._x[12 : n // 4 : 16].tobytes()
        out = bytearray(picked)
        out[3::4] = picked[3::4].translate(_TOP_NIBBLE_CLEAR)
        return bytes(out)


def _counters(pa: int, n: int) -> bytes:
    """The tweak values of the ``n // 16`` blocks from ``pa`` on, concatenated (the input of ECB_K2)."""
    first = pa >> 4
    return b"".join(((first + i) & _COUNTER_MASK).to_bytes(BLOCK, "big") for i in range(n // BLOCK))


def _check_blocks(pa: int, n: int) -> None:
    if pa % BLOCK or n % BLOCK:
        raise ValueError(f"XTS runs are whole 16-byte blocks at 16-byte aligned addresses: pa={pa:#x} n={n}")

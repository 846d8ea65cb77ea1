"""The TME-MK cipher engine: XTS with 128-bit data units and the bulk line MAC (host/tdx/xts.py)."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from host.tdx.xts import LineMac, XtsKey, random_xts_key, tweak_counter


def _standard_xts_block(key: bytes, pa: int, block: bytes) -> bytes:
    """IEEE 1619 XTS over one 16-byte data unit whose tweak value is ``pa >> 4``."""
    return Cipher(algorithms.AES(key), modes.XTS((pa >> 4).to_bytes(16, "big"))).encryptor().update(block)


@pytest.mark.parametrize("bits", [128, 256])
def test_one_block_equals_standard_xts_with_pa_tweak(bits: int) -> None:
    key = random_xts_key(bits)
    block = os.urandom(16)
    pa = 0x1234_5670
    assert XtsKey(key).encrypt(pa, block) == _standard_xts_block(key, pa, block)


def test_multi_page_run_equals_block_by_block_definition() -> None:
    key = random_xts_key(128)
    pa = 0x7_F000  # three pages straddling a counter byte carry
    data = os.urandom(3 * 4096)
    expected = b"".join(
        _standard_xts_block(key, pa + off, data[off : off + 16]) for off in range(0, len(data), 16)
    )
    assert XtsKey(key).encrypt(pa, data) == expected


def test_decrypt_inverts_encrypt_and_depends_on_address() -> None:
    k = XtsKey(random_xts_key(128))
    data = os.urandom(4096)
    ct = k.encrypt(0x10000, data)
    assert k.decrypt(0x10000, ct) == data
    assert k.decrypt(0x11000, ct) != data
    assert k.encrypt(0x11000, data) != ct


def test_key_halves_must_differ_and_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match="halves"):
        XtsKey(bytes(32))
    with pytest.raises(ValueError, match="32 or 64"):
        XtsKey(os.urandom(48))
    with pytest.raises(ValueError, match="128 or 256"):
        random_xts_key(192)
    key = random_xts_key(256)
    assert len(key) == 64 and key[:32] != key[32:]


def test_tweak_counter_is_big_endian_pa_over_16() -> None:
    assert tweak_counter(0x1230) == (0x123).to_bytes(16, "big")


def _tag(k: XtsKey, mac: LineMac, pa: int, ciphertext: bytes) -> bytes:
    return mac.tags(pa, memoryview(ciphertext))


def test_mac_changes_on_every_single_bit_flip_of_a_line() -> None:
    k, mac = XtsKey(random_xts_key(128)), LineMac()
    pa = 0x4000
    ct = bytearray(k.encrypt(pa, os.urandom(64)))
    good = _tag(k, mac, pa, bytes(ct))
    for bit in range(512):
        ct[bit // 8] ^= 1 << (bit % 8)
        assert _tag(k, mac, pa, bytes(ct)) != good, f"bit {bit}"
        ct[bit // 8] ^= 1 << (bit % 8)


def test_mac_binds_the_physical_address() -> None:
    k, mac = XtsKey(random_xts_key(128)), LineMac()
    ct = k.encrypt(0x4000, os.urandom(64))
    assert _tag(k, mac, 0x4000, ct) != _tag(k, mac, 0x4040, ct)
    assert _tag(k, mac, 0x4000, ct) != _tag(k, mac, 0x8000, ct)


def test_mac_is_28_bits_per_line_and_independent_of_neighbours() -> None:
    k, mac = XtsKey(random_xts_key(128)), LineMac()
    data = os.urandom(4 * 64)
    ct = k.encrypt(0, data)
    tags = mac.tags(0, memoryview(ct))
    assert len(tags) == 16
    assert all(tags[i + 3] < 0x10 for i in range(0, 16, 4))
    # Each line's tag alone equals its tag inside the batch, whatever came before.
    for line in range(4):
        pa = line * 64
        assert _tag(k, mac, pa, ct[pa : pa + 64]) == tags[line * 4 : line * 4 + 4]


def test_mac_rejects_partial_lines() -> None:
    with pytest.raises(ValueError, match="whole 64-byte lines"):
        LineMac().tags(0, memoryview(bytes(48)))


def test_short_runs_encrypt_to_the_same_bytes_as_the_standard() -> None:
    key_bytes = random_xts_key(128)
    k = XtsKey(key_bytes)
    for pa, n in ((0x4000, 16), (0x4040, 64), (0x1230, 48), (0x7FC0, 256)):
        data = os.urandom(n)
        expected = b"".join(
            Cipher(algorithms.AES(key_bytes), modes.XTS(tweak_counter(pa + i)))
            .encryptor()
            .update(data[i : i + 16])
            for i in range(0, n, 16)
        )
        assert k.crypt_short(pa, data, encrypt=True) == expected
        assert k.crypt_short(pa, expected, encrypt=False) == data


def test_short_and_ctr_tweak_streams_give_the_same_bytes() -> None:
    k = XtsKey(random_xts_key(128))
    data = os.urandom(512)
    # 256 bytes take the short-run tweak path, 512 the CTR_K2 contexts: the overlap must agree.
    assert k.encrypt(0x9FC0, data[:256]) == k.encrypt(0x9FC0, data)[:256]
    short_in, short_out = k.tweak_streams(0x9FC0, 256)
    assert short_in is short_out  # one tweak computation serves both passes
    ctr_in, _ = k.tweak_streams(0x9FC0, 512)
    a, b = bytearray(256), bytearray(512)
    short_in.update_into(memoryview(data)[:256], memoryview(a))
    ctr_in.update_into(memoryview(data), memoryview(b))
    assert a == b[:256]


def test_every_lane_has_its_own_ecb_contexts_with_the_same_key() -> None:
    k = XtsKey(random_xts_key(256))
    k.reserve_lanes(3)
    block = memoryview(os.urandom(64))
    outs = []
    for lane in range(3):
        assert k.ecb(encrypt=True, lane=lane) is not k.ecb(encrypt=True, lane=(lane + 1) % 3)
        out = bytearray(64 + 16)
        k.ecb(encrypt=True, lane=lane).update_into(block, out)
        outs.append(bytes(out[:64]))
    assert outs[0] == outs[1] == outs[2]

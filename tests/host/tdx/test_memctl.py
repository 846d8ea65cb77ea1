"""The memory controller's access rules (memory-model.md §7, "Access to a TD-owned line")."""

from __future__ import annotations

import os
from typing import Any

import pytest

from host.tdx import lanes
from host.tdx.lanes import Job
from host.tdx.memctl import (
    LINE,
    PAGE,
    EncryptionAlgorithm,
    KeyNotProgrammed,
    MachineCheck,
    MemoryController,
)

PHYS = 64 << 20
TD = 17  # a private KeyID
PATTERN = b"TDX-SECRET-PLAINTEXT-" * 200  # 4200 recognisable bytes


@pytest.fixture
def mc() -> MemoryController:
    m = MemoryController(PHYS)
    m.program_key(TD)
    return m


def test_private_round_trip_of_contiguous_and_scattered_pages(mc: MemoryController) -> None:
    pages = [os.urandom(PAGE) for _ in range(6)]
    pas = [0x10000, 0x11000, 0x12000, 0x40000, 0x30000, 0x31000]
    mc.write(TD, list(zip(pas, pages, strict=True)))
    assert mc.read(TD, [(pa, PAGE) for pa in pas]) == pages
    out = bytearray(6 * PAGE)
    mc.read_into(TD, [(pa, PAGE) for pa in pas], memoryview(out))
    assert bytes(out) == b"".join(pages)


def test_private_plaintext_never_in_physical_memory(mc: MemoryController) -> None:
    mc.zero(TD, [(0x20000, 2 * PAGE)])  # accepted first: the 4200-byte write ends mid-line
    mc.write(TD, [(0x20000, PATTERN), (0x80000, PATTERN[:PAGE])])
    used = bytes(mc.phys[0:0x100000])
    assert used.find(b"TDX-SECRET") == -1
    assert mc.read(TD, [(0x20000, len(PATTERN))]) == [PATTERN]


def test_same_plaintext_at_two_addresses_gives_different_ciphertext(mc: MemoryController) -> None:
    page = os.urandom(PAGE)
    mc.write(TD, [(0x1000, page), (0x3000, page)])
    assert mc.phys[0x1000:0x2000] != mc.phys[0x3000:0x4000]


def test_each_keyid_has_its_own_key(mc: MemoryController) -> None:
    mc.program_key(18)
    page = os.urandom(PAGE)
    mc.write(TD, [(0x1000, page)])
    ct_td = bytes(mc.phys[0x1000:0x2000])
    mc.write(18, [(0x1000, page)])
    assert bytes(mc.phys[0x1000:0x2000]) != ct_td


def test_host_read_of_td_owned_line_is_zeros(mc: MemoryController) -> None:
    mc.write(0, [(0x5000, b"\xaa" * 256)])
    mc.write(TD, [(0x5040, os.urandom(64))])  # one TD line between shared lines
    got = mc.read(0, [(0x5000, 256)])[0]
    assert got == b"\xaa" * 64 + bytes(64) + b"\xaa" * 128
    assert mc.poisoned_lines == 0
    assert mc.line_state(0x5040) == (True, False)


def test_shared_write_is_plaintext_and_clears_owner(mc: MemoryController) -> None:
    mc.write(TD, [(0x6000, os.urandom(PAGE))])
    mc.write(0, [(0x6000, b"host data")])
    assert bytes(mc.phys[0x6000:0x6009]) == b"host data"
    assert mc.line_state(0x6000) == (False, False)
    assert mc.line_state(0x6040) == (True, False)


def test_host_write_clears_owner_bit_and_td_read_poisons(mc: MemoryController) -> None:
    mc.write(TD, [(0x7000, os.urandom(PAGE))])
    mc.write(0, [(0x7080, b"\x01")])  # a one-byte legacy host write into a TD line
    with pytest.raises(MachineCheck) as exc:
        mc.read(TD, [(0x7000, PAGE)])
    assert exc.value.pa == 0x7080 and exc.value.in_td is True
    assert mc.line_state(0x7080) == (False, True)
    assert mc.poisoned_lines == 1
    assert mc.read(TD, [(0x7000, 0x80)])[0] != b""  # lines before the bad one still read


def test_poison_is_sticky_and_host_read_machine_checks(mc: MemoryController) -> None:
    mc.write(TD, [(0x8000, os.urandom(PAGE))])
    mc.write(0, [(0x8000, bytes(LINE))])
    with pytest.raises(MachineCheck):
        mc.read(TD, [(0x8000, LINE)])
    for _ in range(2):  # sticky: consumed again, not re-counted
        with pytest.raises(MachineCheck) as exc:
            mc.read(TD, [(0x8000, 16)])
        assert exc.value.in_td is True
    assert mc.poisoned_lines == 1
    with pytest.raises(MachineCheck) as host:
        mc.read(0, [(0x7FF0, 32)])
    assert host.value.pa == 0x8000 and host.value.in_td is False


def test_partial_host_write_to_poisoned_line_machine_checks_full_line_clears(mc: MemoryController) -> None:
    mc.write(TD, [(0x9000, os.urandom(LINE))])
    mc.write(0, [(0x9000, bytes(LINE))])
    with pytest.raises(MachineCheck):
        mc.read(TD, [(0x9000, LINE)])
    with pytest.raises(MachineCheck) as exc:
        mc.write(0, [(0x9008, b"xx")])
    assert exc.value.in_td is False
    mc.write(0, [(0x9000, b"\x55" * LINE)])  # MOVDIR64B-like full line
    assert mc.line_state(0x9000) == (False, False)
    assert mc.poisoned_lines == 0
    assert mc.read(0, [(0x9000, LINE)]) == [b"\x55" * LINE]


def test_full_private_write_clears_poison(mc: MemoryController) -> None:
    mc.write(0, [(0xA000, b"x")])
    with pytest.raises(MachineCheck):
        mc.read(TD, [(0xA000, 1)])  # never written privately: owner clear -> poison
    assert mc.poisoned_lines == 1
    mc.write(TD, [(0xA000, b"y" * LINE)])
    assert mc.poisoned_lines == 0
    assert mc.read(TD, [(0xA000, LINE)]) == [b"y" * LINE]


def test_partial_private_write_is_read_modify_write(mc: MemoryController) -> None:
    base = os.urandom(3 * LINE)
    mc.write(TD, [(0xB000, base)])
    mc.write(TD, [(0xB030, b"0123456789abcdefXYZ" * 4), (0xB0BF, b"!")])  # spans lines 0-2, then last byte
    expected = bytearray(base)
    expected[0x30 : 0x30 + 76] = b"0123456789abcdefXYZ" * 4
    expected[0xBF] = ord("!")
    assert mc.read(TD, [(0xB000, 3 * LINE)]) == [bytes(expected)]


def test_partial_private_write_to_unowned_line_poisons(mc: MemoryController) -> None:
    with pytest.raises(MachineCheck) as exc:
        mc.write(TD, [(0xC010, b"48 bytes of rtmr data..........................")])
    assert exc.value.pa == 0xC000 and exc.value.in_td is True
    assert mc.line_state(0xC000) == (False, True)


def test_byte_granular_private_reads(mc: MemoryController) -> None:
    data = os.urandom(PAGE)
    mc.write(TD, [(0xD000, data)])
    runs = [(0xD007, 48), (0xD040, 64), (0xD0FF, 1), (0xDFFE, 2)]
    assert mc.read(TD, runs) == [data[7:55], data[64:128], data[255:256], data[-2:]]


def test_li_mode_flip_goes_undetected_ci_mode_poisons() -> None:
    for integrity in (False, True):
        m = MemoryController(PHYS, integrity=integrity)
        m.program_key(TD)
        data = os.urandom(LINE)
        m.write(TD, [(0x1000, data)])
        m.dangerous_tamper(0x1020, b"\x80")
        if integrity:
            with pytest.raises(MachineCheck) as exc:
                m.read(TD, [(0x1000, LINE)])
            assert exc.value.pa == 0x1000
            assert m.poisoned_lines == 1
        else:
            got = m.read(TD, [(0x1000, LINE)])[0]
            assert got != data and got[:0x20] == data[:0x20]  # only the flipped block is garbage
            assert m.poisoned_lines == 0


def test_relocated_ciphertext_fails_the_mac(mc: MemoryController) -> None:
    mc.write(TD, [(0xE000, os.urandom(LINE)), (0xF000, os.urandom(LINE))])
    moved = bytes(mc.phys[0xE000:0xE040])
    mask = bytes(x ^ y for x, y in zip(moved, mc.phys[0xF000:0xF040], strict=True))
    mc.dangerous_tamper(0xF000, mask)  # DRAM at 0xF000 now holds 0xE000's ciphertext
    with pytest.raises(MachineCheck) as exc:
        mc.read(TD, [(0xF000, LINE)])
    assert exc.value.pa == 0xF000


def test_accept_zero_with_private_key(mc: MemoryController) -> None:
    mc.write(0, [(0x20000, b"\xff" * PAGE)])
    mc.zero(TD, [(0x20000, PAGE)])
    assert mc.read(TD, [(0x20000, PAGE)]) == [bytes(PAGE)]
    assert mc.line_state(0x20FC0) == (True, False)
    assert bytes(mc.phys[0x20000:0x21000]) != bytes(PAGE)  # encrypted zeros
    assert mc.read(0, [(0x20000, PAGE)]) == [bytes(PAGE)]  # host sees zeros, not ciphertext


def test_reclaim_zero_with_shared_key_clears_owner_and_poison(mc: MemoryController) -> None:
    mc.write(TD, [(0x30000, os.urandom(2 * PAGE))])
    mc.write(0, [(0x30000, b"z")])
    with pytest.raises(MachineCheck):
        mc.read(TD, [(0x30000, 1)])
    mc.zero(0, [(0x30000, 2 * PAGE)])
    assert mc.poisoned_lines == 0
    assert mc.line_state(0x30000) == (False, False)
    assert bytes(mc.phys[0x30000:0x32000]) == bytes(2 * PAGE)
    with pytest.raises(ValueError, match="whole 64-byte lines"):
        mc.zero(0, [(0x30010, 64)])


def test_cleared_key_cannot_read(mc: MemoryController) -> None:
    mc.write(TD, [(0x1000, b"k" * LINE)])
    mc.clear_key(TD)
    with pytest.raises(KeyNotProgrammed) as exc:
        mc.read(TD, [(0x1000, LINE)])
    assert exc.value.keyid == TD
    with pytest.raises(KeyNotProgrammed):
        mc.write(TD, [(0x1000, b"k" * LINE)])


def test_reprogrammed_key_decrypts_old_lines_to_garbage(mc: MemoryController) -> None:
    # The line MAC is keyed per platform, not per KeyID (memory-model.md §7), so a line written
    # under an old key still passes its checks and decrypts to garbage. (TDX never lets this
    # happen: reclaim clears every page before a KeyID is reused, and ACCEPT zeroes.)
    mc.write(TD, [(0x1000, b"k" * LINE)])
    mc.program_key(TD)
    (garbage,) = mc.read(TD, [(0x1000, LINE)])
    assert garbage != b"k" * LINE
    assert mc.poisoned_lines == 0


def test_keyid_and_range_validation(mc: MemoryController) -> None:
    with pytest.raises(ValueError, match="private KeyID"):
        mc.program_key(0)
    with pytest.raises(ValueError, match="private KeyID"):
        mc.program_key(1 << 15)
    with pytest.raises(ValueError, match="outside"):
        mc.read(TD, [(PHYS - 8, 16)])
    with pytest.raises(ValueError, match="outside"):
        mc.write(0, [(-1, b"x")])
    with pytest.raises(ValueError, match="output buffer"):
        mc.read_into(TD, [(0, 64)], memoryview(bytearray(32)))


def test_algorithm_reflects_platform_configuration() -> None:
    assert MemoryController(PAGE).algorithm is EncryptionAlgorithm.AES_XTS_128_WITH_INTEGRITY
    assert MemoryController(PAGE, integrity=False, xts_bits=256).algorithm is EncryptionAlgorithm.AES_XTS_256
    m = MemoryController(PHYS, xts_bits=256)
    m.program_key(TD)
    m.write(TD, [(0, PATTERN[:PAGE])])
    assert m.read(TD, [(0, PAGE)]) == [PATTERN[:PAGE]]


def test_large_default_machine_is_lazy() -> None:
    m = MemoryController()  # 4 GiB: anonymous mappings, nothing committed until touched
    m.program_key(TD)
    m.write(TD, [((4 << 30) - PAGE, PATTERN[:PAGE])])
    assert m.read(TD, [((4 << 30) - PAGE, PAGE)]) == [PATTERN[:PAGE]]


def test_tampered_line_poisons_even_after_later_reads_of_other_lines(mc: MemoryController) -> None:
    # The tag a line had when written is what its later reads are checked against, however many
    # reads and writes of other lines come in between; a rewrite of the line itself starts afresh.
    mc.write(TD, [(0x30000, os.urandom(PAGE))])
    mc.dangerous_tamper(0x30040, b"\x01")
    assert mc.read(TD, [(0x30000, LINE)])[0]  # line 0 is untouched
    mc.write(TD, [(0x31000, os.urandom(PAGE))])
    with pytest.raises(MachineCheck) as exc:
        mc.read(TD, [(0x30000, PAGE)])
    assert exc.value.pa == 0x30040
    fresh = os.urandom(LINE)
    mc.write(TD, [(0x30080, fresh)])
    mc.dangerous_tamper(0x30080, b"\x00")  # a no-op flip keeps the tag valid
    assert mc.read(TD, [(0x30080, LINE)]) == [fresh]


def test_small_and_bulk_paths_read_each_others_bytes(mc: MemoryController) -> None:
    page = os.urandom(PAGE)
    mc.write(TD, [(0x40000, page)])  # bulk path
    for off, n in ((0, 64), (64, 48), (1000, 24), (4032, 64), (128, 256)):
        assert mc.read(TD, [(0x40000 + off, n)]) == [page[off : off + n]]  # short path
    line = os.urandom(LINE)
    mc.write(TD, [(0x40000 + 2048, line)])  # short path
    assert mc.read(TD, [(0x40000, PAGE)]) == [page[:2048] + line + page[2048 + LINE :]]  # bulk path


# ---- batches spread over lanes (host/tdx/lanes.py) ------------------------------------------------

BIG = 4 << 20  # large enough for every lane of a 4-lane controller to get a share


@pytest.fixture
def wide() -> MemoryController:
    m = MemoryController(PHYS, lanes=4)
    m.program_key(TD)
    return m


@pytest.fixture
def lane_counts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many lanes each planned batch was spread over."""
    counts: list[int] = []
    plan = lanes.plan

    def counting(*args: Any, **kwargs: Any) -> list[list[Job]]:
        parts = plan(*args, **kwargs)
        counts.append(len(parts))
        return parts

    monkeypatch.setattr(lanes, "plan", counting)
    return counts


def test_writes_and_reads_through_many_lanes_equal_the_single_lane_result(
    wide: MemoryController, lane_counts: list[int]
) -> None:
    data = os.urandom(BIG)
    pages = [data[i : i + PAGE] for i in range(0, BIG, PAGE)]
    # Scattered frames, walking downwards, plus one contiguous stretch: several jobs per lane.
    pas = [0x2000000 - 2 * PAGE * (i + 1) for i in range(len(pages) // 2)]
    pas += [0x2000000 + PAGE * i for i in range(len(pages) - len(pas))]
    wide.write(TD, list(zip(pas, pages, strict=True)))  # one batch, four lanes
    ciphertext = [bytes(wide.phys[pa : pa + PAGE]) for pa in pas]
    for pa, page in zip(pas, pages, strict=True):
        wide.write(TD, [(pa, page)])  # page by page: one lane each
    assert [bytes(wide.phys[pa : pa + PAGE]) for pa in pas] == ciphertext
    # One batched read (four lanes) and page-sized reads (one lane) agree with what was written.
    out = bytearray(BIG)
    wide.read_into(TD, [(pa, PAGE) for pa in pas], memoryview(out))
    assert bytes(out) == data
    assert wide.read(TD, [(pas[7], PAGE), (pas[-1] + 100, 200)]) == [pages[7], pages[-1][100:300]]
    assert lane_counts == [4, 4]  # the batched write and read; the small accesses were not planned


def test_unaligned_runs_in_a_batch_spread_over_lanes(wide: MemoryController) -> None:
    data = os.urandom(BIG)
    wide.write(TD, [(0x100000, data)])
    runs = [(0x100000 + off + 8, 1000) for off in range(0, BIG - PAGE, 4 * PAGE)]
    runs += [(0x100000, BIG)]  # whole lines after sub-line pieces, all in one batch
    got = wide.read(TD, runs)
    assert got[:-1] == [data[pa - 0x100000 : pa - 0x100000 + n] for pa, n in runs[:-1]]
    assert got[-1] == data


def test_integrity_checks_fire_in_a_batch_spread_over_lanes(
    wide: MemoryController, lane_counts: list[int]
) -> None:
    base = 0x400000
    wide.write(TD, [(base, os.urandom(BIG))])
    bad = base + BIG - 5 * LINE  # in the last lane's share
    wide.dangerous_tamper(bad + 3, b"\x10")
    with pytest.raises(MachineCheck) as exc:
        wide.read(TD, [(base, BIG)])
    assert exc.value.pa == bad and exc.value.in_td is True
    assert wide.poisoned_lines == 1
    wide.write(0, [(base + LINE, b"host")])  # a host write clears an owner bit in lane 0's share
    with pytest.raises(MachineCheck) as exc:
        wide.read_into(TD, [(base, BIG // 2), (base + BIG // 2, BIG // 2)], memoryview(bytearray(BIG)))
    assert exc.value.pa == base + LINE
    assert wide.poisoned_lines == 2
    with pytest.raises(MachineCheck) as host:
        wide.read(0, [(base, BIG)])
    assert host.value.pa == base + LINE and host.value.in_td is False
    fresh = os.urandom(BIG)
    wide.write(TD, [(base, fresh)])  # a full private write through every lane clears the poison
    assert wide.poisoned_lines == 0
    assert wide.read(TD, [(base, BIG)]) == [fresh]
    assert lane_counts == [4, 4, 4]  # the checks fail before any lane starts


def test_overlapping_runs_in_one_large_write_keep_program_order(wide: MemoryController) -> None:
    first, second = os.urandom(BIG // 2), os.urandom(BIG // 2)
    wide.write(TD, [(0x800000, first), (0x800000 + BIG // 4, second)])
    assert wide.read(TD, [(0x800000, BIG // 4 + BIG // 2)]) == [first[: BIG // 4] + second]


def test_large_private_zero_spreads_over_lanes(wide: MemoryController) -> None:
    wide.write(0, [(0x1000000, b"\xff" * BIG)])
    wide.zero(TD, [(0x1000000 + off, PAGE) for off in range(0, BIG, PAGE)])  # adjacent runs merge
    assert wide.read(TD, [(0x1000000, BIG)]) == [bytes(BIG)]
    assert wide.line_state(0x1000000 + BIG - LINE) == (True, False)

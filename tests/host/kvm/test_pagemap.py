"""PageMap: a dict of page index → pa whose range queries cost what is populated
(docs/memory-model.md §1.3)."""

from __future__ import annotations

import random
import time

import pytest

from host.kvm.pagemap import BLOCK, PageMap

TIB_PAGES = (1 << 40) >> 12


def test_pagemap_behaves_as_a_dict_and_answers_range_queries_like_a_scan() -> None:
    rnd = random.Random(7)
    pm, ref = PageMap(), {}
    for _ in range(4000):
        index = rnd.choice([rnd.randrange(0, 4 * BLOCK), rnd.randrange(0, 1 << 34)])
        if rnd.random() < 0.6:
            pm[index] = ref[index] = rnd.randrange(1 << 30)
        elif index in ref:
            assert pm.pop(index) == ref.pop(index)
        else:
            assert pm.pop(index, -1) == -1
    assert pm == ref and len(pm) == len(ref)
    for _ in range(300):
        start = rnd.randrange(0, 1 << 34)
        end = start + rnd.choice([1, BLOCK - 1, BLOCK, 3 * BLOCK + 5, 1 << 33])
        expected = sorted(i for i in ref if start <= i < end)
        assert pm.keys_in(start, end) == expected
        assert pm.count_in(start, end) == len(expected)
    for index in list(ref):
        del pm[index]
    assert pm == {} and pm.keys_in(0, 1 << 40) == [] and pm.count_in(0, 1 << 40) == 0


def test_pagemap_refuses_mutators_that_would_bypass_its_index() -> None:
    pm = PageMap()
    pm[5] = 1
    for call in (lambda: pm.update({6: 2}), lambda: pm.setdefault(6, 2), pm.popitem):
        with pytest.raises(TypeError):
            call()
    pm.clear()
    assert pm == {} and pm.keys_in(0, BLOCK) == []


def test_a_range_query_over_terabytes_costs_the_populated_pages() -> None:
    pm = PageMap()
    for i in range(10):
        pm[i * 1_000_003] = i
    start = time.perf_counter()
    for _ in range(100):
        assert len(pm.keys_in(0, 64 * TIB_PAGES)) == 10
        assert pm.count_in(0, 64 * TIB_PAGES) == 10
    assert time.perf_counter() - start < 1.0  # a scan of 2^34 indices would take hours

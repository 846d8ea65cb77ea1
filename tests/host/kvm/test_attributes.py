"""KVM_SET_MEMORY_ATTRIBUTES rules and the range-based AttributeMap (memory-model.md §1.5)."""

from __future__ import annotations

import random

import pytest

from host.kvm.attributes import KVM_MEMORY_ATTRIBUTE_PRIVATE, AttributeMap
from host.kvm.errors import KvmError
from host.kvm.vm import KVM_X86_TDX_VM, KvmVm
from host.platform import PlatformConfig, build_platform

PAGE = 4096
PRIVATE = KVM_MEMORY_ATTRIBUTE_PRIVATE
GIB = 1 << 30


@pytest.fixture
def vm() -> KvmVm:
    return build_platform(PlatformConfig(phys_bytes=64 << 20)).vmm.kvm.create_vm(KVM_X86_TDX_VM)


def attr_errno(vm: KvmVm, address: int, size: int, attributes: int, flags: int) -> str:
    with pytest.raises(KvmError) as err:
        vm.set_memory_attributes(address, size, attributes, flags)
    return err.value.errno


def test_private_attribute_value_is_bit_3() -> None:
    assert PRIVATE == 1 << 3


@pytest.mark.parametrize("flags", [1, 2, 1 << 63])
def test_nonzero_flags_are_einval(vm: KvmVm, flags: int) -> None:
    assert attr_errno(vm, 0, PAGE, PRIVATE, flags) == "EINVAL"
    assert vm.attributes.get(0) == 0


@pytest.mark.parametrize("attributes", [1 << 0, 1 << 1, 1 << 2, 1 << 4, PRIVATE | 1, 1 << 63])
def test_unknown_attribute_is_einval(vm: KvmVm, attributes: int) -> None:
    assert attr_errno(vm, 0, PAGE, attributes, 0) == "EINVAL"
    assert vm.attributes.get(0) == 0


def test_size_zero_is_einval(vm: KvmVm) -> None:
    assert attr_errno(vm, 0, 0, PRIVATE, 0) == "EINVAL"


@pytest.mark.parametrize(("address", "size"), [(1, PAGE), (PAGE, 1), (2048, PAGE), (0, PAGE + 512)])
def test_unaligned_address_or_size_is_einval(vm: KvmVm, address: int, size: int) -> None:
    assert attr_errno(vm, address, size, PRIVATE, 0) == "EINVAL"
    assert len(vm.attributes) == 1


def test_range_overflowing_gpa_space_is_einval(vm: KvmVm) -> None:
    assert attr_errno(vm, (1 << 52) - PAGE, 2 * PAGE, PRIVATE, 0) == "EINVAL"


def test_all_memory_is_shared_by_default(vm: KvmVm) -> None:
    for gfn in (0, 1, 255, 1 << 20, (1 << 40) - 1):
        assert vm.attributes.get(gfn) == 0
    assert len(vm.attributes) == 1


def test_setting_shared_on_fresh_vm_is_a_noop(vm: KvmVm) -> None:
    assert vm.set_memory_attributes(0, 64 * PAGE, 0, 0) is False
    assert len(vm.attributes) == 1


def test_already_uniform_range_is_a_noop(vm: KvmVm) -> None:
    assert vm.set_memory_attributes(4 * PAGE, 8 * PAGE, PRIVATE, 0) is True
    assert vm.set_memory_attributes(4 * PAGE, 8 * PAGE, PRIVATE, 0) is False
    assert vm.set_memory_attributes(6 * PAGE, 2 * PAGE, PRIVATE, 0) is False
    # Partly private: not uniform, so it changes.
    assert vm.set_memory_attributes(0, 8 * PAGE, PRIVATE, 0) is True
    assert [vm.attributes.get(g) for g in range(14)] == [PRIVATE] * 12 + [0, 0]


def test_converting_64_gib_and_back_keeps_few_boundaries(vm: KvmVm) -> None:
    assert vm.set_memory_attributes(0, 64 * GIB, PRIVATE, 0) is True
    assert len(vm.attributes) <= 2
    assert vm.attributes.get(0) == PRIVATE
    assert vm.attributes.get(64 * GIB // PAGE - 1) == PRIVATE
    assert vm.attributes.get(64 * GIB // PAGE) == 0
    assert vm.set_memory_attributes(2 * GIB, 2 << 20, 0, 0) is True
    assert len(vm.attributes) <= 4
    assert vm.set_memory_attributes(0, 64 * GIB, 0, 0) is True
    assert len(vm.attributes) == 1
    assert vm.attributes.uniform(0, 64 * GIB // PAGE, 0)


def test_runs_describe_the_range_in_order() -> None:
    amap = AttributeMap()
    amap.set(10, 20, PRIVATE)
    assert amap.runs(0, 30) == [(0, 10, 0), (10, 20, PRIVATE), (20, 30, 0)]
    assert amap.runs(12, 15) == [(12, 15, PRIVATE)]
    assert amap.uniform(10, 20, PRIVATE)
    assert not amap.uniform(9, 20, PRIVATE)
    assert not amap.uniform(10, 21, PRIVATE)


@pytest.mark.parametrize("seed", range(8))
def test_attribute_map_matches_a_per_gfn_model(seed: int) -> None:
    rng = random.Random(seed)
    span = 96
    amap = AttributeMap()
    model = dict.fromkeys(range(span + 1), 0)
    for _ in range(300):
        start = rng.randrange(span)
        end = rng.randrange(start + 1, span + 1)
        value = rng.choice((0, PRIVATE))
        amap.set(start, end, value)
        for gfn in range(start, end):
            model[gfn] = value
        got = [amap.get(g) for g in range(span + 1)]
        assert got == [model[g] for g in range(span + 1)], (start, end, value)
        a, b = sorted(rng.sample(range(span + 1), 2))
        runs = amap.runs(a, b)
        assert [g for s, e, v in runs for g in range(s, e) if v == model[g]] == list(range(a, b))
        for v in (0, PRIVATE):
            assert amap.uniform(a, b, v) == all(model[g] == v for g in range(a, b))
        # Canonical: exactly one boundary per change of value (no redundant entries).
        changes = sum(1 for g in range(1, span + 1) if model[g] != model[g - 1])
        assert len(amap) == 1 + changes

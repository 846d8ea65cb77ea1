"""The Secure-EPT leaf state machine (memory-model.md §4.2, intel/tdx-module
``sept_state_lookup.h``): encodings, allowed source states per leaf and the exact error."""

from __future__ import annotations

import pytest

from host.tdx.sept import (
    BLOCKED_STATES,
    PENDING_STATES,
    TRANSITIONS,
    Leaf,
    SecureEpt,
    SeptEntry,
    SeptState,
)
from host.tdx.status import TdxError
from wire.tdx_abi import OperandId, TdxStatus

S = SeptState
PA = 0x40_0000
STATE_INCORRECT = TdxStatus.EPT_ENTRY_STATE_INCORRECT | OperandId.RCX

#: The leaf table of memory-model.md §4.2, restricted to the non-migration states the simulator
#: drives (FREE and REMOVED mean "no page mapped").
EXPECTED: dict[Leaf, dict[SeptState, SeptState]] = {
    Leaf.PAGE_ADD: {S.FREE: S.MAPPED},
    Leaf.PAGE_AUG: {S.FREE: S.PENDING, S.REMOVED: S.PENDING},
    Leaf.RANGE_BLOCK: {S.MAPPED: S.BLOCKED, S.PENDING: S.PENDING_BLOCKED},
    Leaf.RANGE_UNBLOCK: {S.BLOCKED: S.MAPPED, S.PENDING_BLOCKED: S.PENDING},
    Leaf.PAGE_REMOVE: {S.MAPPED: S.FREE, S.BLOCKED: S.FREE, S.PENDING: S.FREE, S.PENDING_BLOCKED: S.FREE},
    Leaf.MR_EXTEND: {S.MAPPED: S.MAPPED},
    Leaf.PAGE_ACCEPT: {S.PENDING: S.MAPPED},
}
DRIVEN = (S.FREE, S.MAPPED, S.PENDING, S.BLOCKED, S.PENDING_BLOCKED)


def sept_in(state: SeptState, gfn: int = 5) -> SecureEpt:
    """A Secure-EPT whose ``gfn`` is in ``state``, reached through legal leaves only."""
    sept = SecureEpt()
    paths: dict[SeptState, list[Leaf]] = {
        S.FREE: [],
        S.MAPPED: [Leaf.PAGE_ADD],
        S.PENDING: [Leaf.PAGE_AUG],
        S.BLOCKED: [Leaf.PAGE_ADD, Leaf.RANGE_BLOCK],
        S.PENDING_BLOCKED: [Leaf.PAGE_AUG, Leaf.RANGE_BLOCK],
    }
    for leaf in paths[state]:
        sept.transition(leaf, gfn, PA)
    assert sept.state(gfn) is state
    return sept


def test_state_encodings_match_the_module() -> None:
    assert {s.name: s.value for s in SeptState} == {
        "FREE": 0xE,
        "REMOVED": 0xC,
        "NL_MAPPED": 0x0,
        "NL_BLOCKED": 0x8,
        "MAPPED": 0x60,
        "BLOCKED": 0x68,
        "BLOCKEDW": 0x64,
        "EXPORTED_BLOCKEDW": 0x66,
        "PENDING": 0x70,
        "PENDING_BLOCKED": 0x78,
        "PENDING_BLOCKEDW": 0x74,
        "PENDING_EXPORTED_BLOCKEDW": 0x76,
        "PENDING_EXPORTED_DIRTY": 0x73,
        "PENDING_EXPORTED_DIRTY_BLOCKEDW": 0x77,
        "EXPORTED_DIRTY": 0x63,
        "EXPORTED_DIRTY_BLOCKEDW": 0x67,
    }


def test_ept_entry_state_incorrect_value() -> None:
    assert STATE_INCORRECT == 0xC0000B0D00000001


def test_absent_gfn_is_free() -> None:
    sept = SecureEpt()
    assert sept.state(123) is S.FREE
    assert sept.get(123) is None
    assert len(sept) == 0


def test_blocked_and_pending_state_sets() -> None:
    assert {S.BLOCKED, S.PENDING_BLOCKED, S.NL_BLOCKED} <= BLOCKED_STATES
    assert S.MAPPED not in BLOCKED_STATES and S.PENDING not in BLOCKED_STATES
    assert {S.PENDING, S.PENDING_BLOCKED} <= PENDING_STATES
    assert S.MAPPED not in PENDING_STATES and S.BLOCKED not in PENDING_STATES


@pytest.mark.parametrize("leaf", list(EXPECTED))
def test_transition_table_contains_the_reference_transitions(leaf: Leaf) -> None:
    for source, target in EXPECTED[leaf].items():
        assert TRANSITIONS[leaf].get(source) is target, (leaf, source)


@pytest.mark.parametrize("state", DRIVEN, ids=[s.name for s in DRIVEN])
@pytest.mark.parametrize("leaf", list(EXPECTED), ids=[leaf.name for leaf in EXPECTED])
def test_each_leaf_from_each_state(leaf: Leaf, state: SeptState) -> None:
    sept = sept_in(state)
    target = EXPECTED[leaf].get(state)
    if target is None:
        with pytest.raises(TdxError) as err:
            sept.transition(leaf, 5, PA + 0x1000)
        assert err.value.status == STATE_INCORRECT
        assert sept.state(5) is state  # unchanged
        return
    entry = sept.transition(leaf, 5, PA + 0x1000)
    assert sept.state(5) is target
    if target is S.FREE:
        assert sept.get(5) is None
        assert entry.pa == PA
    else:
        # A mapped entry keeps its backing page; ADD/AUG onto FREE take the one given.
        assert sept.get(5) is entry
        assert entry.pa == (PA + 0x1000 if state is S.FREE else PA)


def test_page_aug_from_removed_is_pending() -> None:
    sept = SecureEpt()
    sept._entries[9] = SeptEntry(S.REMOVED, PA)  # no leaf produces REMOVED in this model
    sept.transition(Leaf.PAGE_AUG, 9, PA)
    assert sept.state(9) is S.PENDING


def test_accept_error_message_names_leaf_and_state() -> None:
    sept = sept_in(S.MAPPED)
    with pytest.raises(TdxError) as err:
        sept.transition(Leaf.PAGE_ACCEPT, 5)
    assert "TDG.MEM.PAGE.ACCEPT" in err.value.message
    assert "MAPPED" in err.value.message
    assert "0x5000" in err.value.message


def test_items_is_a_snapshot_safe_to_mutate_during_iteration() -> None:
    sept = SecureEpt()
    for gfn in range(4):
        sept.transition(Leaf.PAGE_AUG, gfn, PA + gfn * 0x1000)
    for gfn, _ in sept.items():
        sept.transition(Leaf.PAGE_REMOVE, gfn)
    assert len(sept) == 0

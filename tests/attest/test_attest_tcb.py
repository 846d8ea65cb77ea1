"""TCB status merge and level matching (attestation.md §8)."""

from __future__ import annotations

import pytest

from attest.errors import TcbLevelNotFound
from attest.formats.collateral import IsvTcbLevel, TcbLevel
from attest.verifier.dcap.tcb import TcbStatus, match_isv_level, match_platform_level, merge_all


def test_tcb_status_merge_takes_worse_and_unions_advisories() -> None:
    a = TcbStatus("SWHardeningNeeded", ("INTEL-SA-1", "INTEL-SA-2"))
    b = TcbStatus("OutOfDate", ("INTEL-SA-2", "INTEL-SA-3"))
    merged = a.merge(b)
    assert merged.status == "OutOfDate"
    assert merged.advisory_ids == ("INTEL-SA-1", "INTEL-SA-2", "INTEL-SA-3")
    assert b.merge(a).status == "OutOfDate"
    assert (
        merge_all([TcbStatus("UpToDate"), TcbStatus("ConfigurationNeeded")]).status == "ConfigurationNeeded"
    )
    assert merge_all([TcbStatus("Revoked"), TcbStatus("OutOfDateConfigurationNeeded")]).status == "Revoked"


def test_isv_level_picks_highest_level_not_above_svn() -> None:
    levels = [
        IsvTcbLevel(2, "2023", "OutOfDate", ("SA-1",)),
        IsvTcbLevel(4, "2024", "UpToDate", ()),
    ]
    assert match_isv_level(5, levels, "qe").status == "UpToDate"
    assert match_isv_level(3, levels, "qe") == TcbStatus("OutOfDate", ("SA-1",), "2023")
    with pytest.raises(TcbLevelNotFound, match="no qe tcb level matches isvsvn 1"):
        match_isv_level(1, levels, "qe")


def _level(sgx: list[int], pce: int, tdx: list[int], status: str) -> TcbLevel:
    return TcbLevel(
        tuple(sgx + [0] * (16 - len(sgx))), pce, tuple(tdx + [0] * (16 - len(tdx))), "d", status, ()
    )


LEVELS = [
    _level([2, 2, 2, 2, 3, 1, 0, 5], 5, [5, 0, 2], "OutOfDate"),
    _level([2, 2, 2, 2, 3, 1, 0, 5], 11, [5, 0, 2], "UpToDate"),
]


def test_platform_level_requires_every_sgx_component_and_pcesvn() -> None:
    pck = [3, 3, 2, 2, 4, 1, 0, 5] + [0] * 8
    svn = bytes([6, 1, 3] + [0] * 13)
    assert match_platform_level(LEVELS, pck, 11, svn).status == "UpToDate"
    assert match_platform_level(LEVELS, pck, 10, svn).status == "OutOfDate"
    low = [3, 3, 2, 2, 4, 1, 0, 3] + [0] * 8  # component 8 below 5 (the outdated v5 vector)
    with pytest.raises(TcbLevelNotFound, match="no tcb level matches the platform"):
        match_platform_level(LEVELS, low, 13, svn)


def test_platform_level_skips_module_svns_when_major_version_set() -> None:
    pck = [3, 3, 2, 2, 4, 1, 0, 5] + [0] * 8
    # TEE_TCB_SVN[0]=4 < 5 but [1]=1 > 0: indexes 0-1 belong to the module identity, not the platform level.
    assert match_platform_level(LEVELS, pck, 11, bytes([4, 1, 2] + [0] * 13)).status == "UpToDate"
    # Major version 0: all 16 are compared.
    with pytest.raises(TcbLevelNotFound):
        match_platform_level(LEVELS, pck, 11, bytes([4, 0, 2] + [0] * 13))
    with pytest.raises(TcbLevelNotFound):
        match_platform_level(LEVELS, pck, 11, bytes([6, 1, 1] + [0] * 13))

"""TCB statuses, their merge, and TCB level matching (docs/attestation.md §8, §7 steps 6, 9, 11, 13).

Statuses are Intel's strings. Merge follows dcap-qvl ``TcbStatusWithAdvisory::merge``: the worse status (by
the severity column of §8) wins and advisory IDs are unioned in first-seen order.

Platform level matching is Intel QVL's (``TcbLevelCheck.cpp``): levels sorted by SGX components, then PCESVN,
then TDX components, all descending; the first level whose 16 SGX components and PCESVN are <= the PCK
certificate's and whose TDX components are <= TEE_TCB_SVN matches. When TEE_TCB_SVN[1] (module major version)
is > 0, TDX components 0–1 are skipped and the module's own ISVSVN is matched against its module identity's
``tcbLevels`` instead (dcap-qvl compares all 16; on every real vector both give the same level).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from attest.errors import TcbLevelNotFound
from attest.formats.collateral import IsvTcbLevel, TcbLevel

SEVERITY: dict[str, int] = {
    "UpToDate": 0,
    "SWHardeningNeeded": 1,
    "ConfigurationNeeded": 2,
    "ConfigurationAndSWHardeningNeeded": 3,
    "OutOfDate": 4,
    "OutOfDateConfigurationNeeded": 5,
    "Revoked": 6,
}
UP_TO_DATE = "UpToDate"
REVOKED = "Revoked"


@dataclass(frozen=True)
class TcbStatus:
    """A status with its advisories and, when it came from a level, that level's ``tcbDate``."""

    status: str
    advisory_ids: tuple[str, ...] = ()
    tcb_date: str | None = None

    def merge(self, other: TcbStatus) -> TcbStatus:
        """The worse status wins; advisories are unioned (self's first)."""
        worse = self if SEVERITY[self.status] >= SEVERITY[other.status] else other
        advisories = tuple(dict.fromkeys((*self.advisory_ids, *other.advisory_ids)))
        return TcbStatus(worse.status, advisories, worse.tcb_date)


def merge_all(statuses: Iterable[TcbStatus]) -> TcbStatus:
    out = TcbStatus(UP_TO_DATE)
    for status in statuses:
        out = out.merge(status)
    return out


def match_isv_level(isv_svn: int, levels: Sequence[IsvTcbLevel], what: str) -> TcbStatus:
    """First level (highest ISVSVN first) with ``isvsvn <= isv_svn`` (QE identity, TDX module identity)."""
    for level in sorted(levels, key=lambda lv: lv.isv_svn, reverse=True):
        if isv_svn >= level.isv_svn:
            return TcbStatus(level.status, level.advisory_ids, level.tcb_date)
    raise TcbLevelNotFound(f"no {what} tcb level matches isvsvn {isv_svn}")


def match_platform_level(
    levels: Sequence[TcbLevel], sgx_components: Sequence[int], pce_svn: int, tee_tcb_svn: bytes
) -> TcbStatus:
    """First platform level the PCK TCB (SGX components, PCESVN) and TEE_TCB_SVN reach (see module doc)."""
    skip = 2 if tee_tcb_svn[1] > 0 else 0
    ordered = sorted(levels, key=lambda lv: (lv.sgx_components, lv.pce_svn, lv.tdx_components), reverse=True)
    for level in ordered:
        if pce_svn < level.pce_svn:
            continue
        if any(have < need for have, need in zip(sgx_components, level.sgx_components, strict=True)):
            continue
        tdx = zip(tee_tcb_svn[skip:], level.tdx_components[skip:], strict=True)
        if any(have < need for have, need in tdx):
            continue
        return TcbStatus(level.status, level.advisory_ids, level.tcb_date)
    raise TcbLevelNotFound("no tcb level matches the platform")

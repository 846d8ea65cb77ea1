"""Helpers for the simulated-evidence tests: a simulated PCS in a temporary directory and a quote from it.

A uniquely named module (not conftest.py), like ``attest_vectors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dcap_qvl

from attest.intel import Pki, PkiOptions, QuotingEnclave, build_td_report, init_pki
from attest.verifier.dcap import Collateral, VerifiedQuote, Verifier, parse_collateral

NOW = 1_780_000_000  # 2026-05-28T20:26:40Z: every simulated window is anchored here
REPORT_DATA = bytes(range(64))
MR_TD = bytes.fromhex("ab" * 48)


@dataclass(frozen=True)
class Evidence:
    pki: Pki
    qe: QuotingEnclave
    td_report: bytes
    quote: bytes

    @property
    def collateral(self) -> Collateral:
        return parse_collateral(self.pki.collateral_json)

    def dcap_qvl(self, now: int = NOW, root_der: bytes | None = None) -> dcap_qvl.VerifiedReport:
        coll = dcap_qvl.QuoteCollateralV3.from_json(self.pki.collateral_json)
        return dcap_qvl.verify_with_root_ca(self.quote, coll, root_der or self.pki.root_der, now)

    def ours(self, now: int = NOW) -> VerifiedQuote:
        return Verifier([self.pki.root_der], cache_size=0).verify(self.quote, self.collateral, now)


def make_evidence(
    directory: Path, options: PkiOptions | None = None, *, version: int = 4, body_type: int | None = None
) -> Evidence:
    pki = init_pki(directory, options or PkiOptions(now=NOW))
    pck = pki.platform(0)
    qe = QuotingEnclave(pck.key, pck.chain_pem)
    report = build_td_report(report_data=REPORT_DATA, mr_td=MR_TD)
    return Evidence(pki, qe, report, qe.quote(report, version=version, body_type=body_type))

"""DCAP verification speed against dcap-qvl on the same quote, in the same run.

A fresh simulated PCS and quoting enclave make one quote; ``verify_warm`` is tdxsim's verifier with
its per-platform caches (collateral and PCK-chain checks reused within their validity window) and
``verify_cold`` the same verification with caching off. The limit of both rows is dcap-qvl's
``verify_with_root_ca`` on the same quote and collateral (target: warm faster than dcap-qvl;
docs/attestation.md §14, docs/cli.md "``tdxsim bench``").
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from attest.formats.collateral import parse_collateral
from attest.intel import QuotingEnclave, build_td_report, init_pki
from attest.verifier.dcap.quote_verifier import Verifier

Row = dict[str, object]


def calls_per_second(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` in this thread over about ``seconds``: the best of five rounds of repeated
    calls (also the dcap-qvl limit of ``tdxsim bench attest``)."""
    fn()
    best = float("inf")
    for _ in range(5):
        reps, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 5 or reps < 5:
            fn()
            reps += 1
        best = min(best, elapsed / reps)
    return 1.0 / best


def _row(name: str, value: float, limit: float, target: float | None) -> Row:
    ratio = value / limit
    return {
        "name": name,
        "value": round(value, 1),
        "unit": "verifications/s",
        "limit": round(limit, 1),
        "limit_name": "dcap-qvl verify_with_root_ca, same quote",
        "ratio": round(ratio, 3),
        "target": target,
        "met": None if target is None else ratio >= target,
    }


def bench_verify(seconds: float = 3.0) -> list[Row]:
    try:
        import dcap_qvl
    except ImportError as err:  # pragma: no cover - a test dependency, installed by `make test`
        raise SystemExit("bench verify compares with dcap-qvl: pip install dcap-qvl==0.7.0") from err
    with tempfile.TemporaryDirectory() as tmp:
        pki = init_pki(Path(tmp) / "pki")
    pck = pki.platform(0)
    quote = QuotingEnclave(pck.key, pck.chain_pem).quote(build_td_report(report_data=bytes(range(64))))
    now = int(time.time())
    root_der = pki.root_der
    theirs_collateral = dcap_qvl.QuoteCollateralV3.from_json(pki.collateral_json)
    ours_collateral = parse_collateral(pki.collateral_json)
    warm = Verifier([root_der])
    cold = Verifier([root_der], cache_size=0)
    share = seconds / 3
    limit = calls_per_second(
        lambda: dcap_qvl.verify_with_root_ca(quote, theirs_collateral, root_der, now), share
    )
    warm_rate = calls_per_second(lambda: warm.verify(quote, ours_collateral, now), share)
    cold_rate = calls_per_second(lambda: cold.verify(quote, ours_collateral, now), share)
    return [_row("verify_warm", warm_rate, limit, 1.0), _row("verify_cold", cold_rate, limit, None)]

"""The large and the attested paths: a 1 GiB conversion + ACCEPT in a few batched requests on a 2 GiB host,
and quotes through GetQuote on a host with a simulated PCS (a TDREPORT altered by one bit is refused)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from guest_helpers import GIB, MIB, image, launch, make_pki, stats

from attest.formats.tdreport import decode_tdreport
from guest.errors import QuoteFailed
from tests.conftest import HostProcess
from wire import tdx_abi as abi

pytestmark = pytest.mark.timeout(90)


def test_converting_1_gib_and_accepting_it_takes_three_requests_and_no_per_page_rpcs(
    host_factory: Callable[..., HostProcess],
) -> None:
    host = host_factory("--phys-mem", "2G")
    with launch(host, image(memory=GIB + 64 * MIB, payload=[(GIB, b"kernel", True)])) as td:
        exits = stats(host).exits
        before = td.rpc_counts
        start = time.perf_counter()
        chunks = td.convert_to_shared(0, GIB)
        outcome = td.convert_to_private(0, GIB)
        elapsed = time.perf_counter() - start
        assert chunks == 512  # the VMM handled ≤ 2 MiB chunks, not the guest
        assert outcome.pages == GIB // 4096
        assert td.rpc_counts - before == {"Run": 3}  # MapGPA shared, MapGPA private, ACCEPT
        td.write(GIB - 4096, b"last page")
        assert td.read(GIB - 4096, 9) == b"last page"
        print(f"1 GiB convert+accept: {elapsed:.2f} s, 3 requests, {stats(host).exits - exits} TD exits")


def test_quote_carries_the_reportdata_and_an_altered_tdreport_is_refused(
    host_factory: Callable[..., HostProcess], tmp_path: Path
) -> None:
    make_pki(tmp_path / "pki")
    host = host_factory("--pki", str(tmp_path / "pki"))
    with launch(host) as td:
        report_data = bytes(range(64))
        quote = td.quote(report_data)
        assert len(quote) > 1024 and report_data in quote
        raw = td.report(report_data)
        assert decode_tdreport(raw).body.report_data == report_data
        altered = bytearray(raw)
        altered[600] ^= 0x01  # one bit of MRTD
        with pytest.raises(QuoteFailed) as err:
            td.quote_tdreport(bytes(altered))
        assert (err.value.reason, err.value.status) == ("GET_QUOTE_ERROR", abi.GetQuoteStatus.ERROR)
        assert td.quote_tdreport(raw)  # the unaltered one still quotes

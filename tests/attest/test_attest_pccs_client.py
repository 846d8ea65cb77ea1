"""Collateral by URL (docs/attestation.md §17): the verifier's PCCS client against ``tdxsim pcs serve`` and
against stand-in servers that answer as Intel's PCS does, fail, stall or lie; the cache until ``nextUpdate``
with one fetch per key however many requests wait for it.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from attest_pcs_served import start_pcs
from attest_sim_evidence import NOW

from attest.formats.collateral import Collateral, parse_collateral
from attest.intel import Pki, PkiOptions, init_pki
from attest.intel import identity as P
from attest.intel.pcs_responses import PcsApi
from attest.verifier.dcap.pccs_client import (
    EXPIRED_RETRY,
    MAX_BODY,
    CollateralNotFound,
    FetchedCollateral,
    PccsClient,
    PccsCollateral,
    PccsUnavailable,
    _Flight,
)

Route = tuple[int, dict[str, str], bytes]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return init_pki(tmp_path_factory.mktemp("pccs-client") / "pki", PkiOptions(now=NOW))


def _pcs_routes(pki: Pki) -> dict[str, Route]:
    """Every answer ``PcsApi`` gives the client's requests, keyed by path and query."""
    api = PcsApi(pki)
    fmspc = P.FMSPC.hex().upper()
    routes = {}
    for target in (
        "/sgx/certification/v4/pckcrl?ca=platform&encoding=der",
        f"/tdx/certification/v4/tcb?fmspc={fmspc}",
        "/tdx/certification/v4/qe/identity",
        "/sgx/certification/v4/rootcacrl",
    ):
        url = urllib.parse.urlsplit(target)
        answer = api.answer(url.path, urllib.parse.parse_qsl(url.query))
        routes[target] = (answer.status, dict(answer.headers), answer.body)
    return routes


@contextmanager
def stand_in(routes: dict[str, Route], stall: threading.Event | None = None) -> Iterator[str]:
    """An HTTP server answering ``routes`` (path with query -> status, headers, body), 404 otherwise; with
    ``stall`` it sends nothing until the event is set."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if stall is not None:
                stall.wait(30)
            status, headers, body = routes.get(self.path, (404, {}, b"Not found.\n"))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that stopped reading
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        if stall is not None:
            stall.set()
        server.shutdown()
        server.server_close()


def test_fetch_from_the_served_pcs_is_the_pki_collateral(pki: Pki) -> None:
    pcs = start_pcs(pki.directory)
    try:
        expected = parse_collateral(pki.collateral_json)
        for url in (pcs.url, pcs.url + "/", pcs.url + "/sgx/certification/v4"):
            fetched = PccsClient(url).fetch(P.FMSPC, "platform")
            assert fetched.collateral == expected
            assert parse_collateral(fetched.json_text) == expected
            assert fetched.next_update == pki.tcb_info_window[1]
        with pytest.raises(CollateralNotFound, match="fmspc 00906ED50000"):
            PccsClient(pcs.url).fetch(bytes.fromhex("00906ED50000"), "platform")
        with pytest.raises(CollateralNotFound, match="processor"):
            PccsClient(pcs.url).fetch(P.FMSPC, "processor")
    finally:
        assert pcs.stop() == 0


def test_intel_pcs_shapes_are_read_alike(pki: Pki) -> None:
    """Intel's v3 header name, a TCB Info body with whitespace around its members, a DER root CRL."""
    routes = _pcs_routes(pki)
    fmspc = P.FMSPC.hex().upper()
    status, headers, _ = routes[f"/tdx/certification/v4/tcb?fmspc={fmspc}"]
    chain = headers.pop("TCB-Info-Issuer-Chain")
    spaced = f'{{ "tcbInfo" : {pki.tcb_info.text} ,\n "signature" : "{pki.tcb_info.signature.hex()}" }}'
    routes[f"/tdx/certification/v4/tcb?fmspc={fmspc}"] = (
        status,
        {**headers, "SGX-TCB-Info-Issuer-Chain": chain},
        spaced.encode(),
    )
    routes["/sgx/certification/v4/rootcacrl"] = (200, {}, pki.root_ca_crl)
    with stand_in(routes) as url:
        fetched = PccsClient(url).fetch(P.FMSPC, "platform")
    assert fetched.collateral == parse_collateral(pki.collateral_json)


@pytest.mark.parametrize(
    "damage",
    [
        "status 500",
        "no chain header",
        "tcb not json",
        "no signature",
        "tcb info of another shape",
        "huge body",
    ],
)
def test_a_pccs_that_answers_wrong_is_unavailable(pki: Pki, damage: str) -> None:
    routes = _pcs_routes(pki)
    tcb = f"/tdx/certification/v4/tcb?fmspc={P.FMSPC.hex().upper()}"
    status, headers, body = routes[tcb]
    if damage == "status 500":
        routes[tcb] = (500, {}, b"Internal server error occurred.\n")
    elif damage == "no chain header":
        routes[tcb] = (status, {}, body)
    elif damage == "tcb not json":
        routes[tcb] = (status, headers, b"<html>maintenance</html>")
    elif damage == "no signature":
        routes[tcb] = (status, headers, json.dumps({"tcbInfo": json.loads(pki.tcb_info.text)}).encode())
    elif damage == "tcb info of another shape":
        routes[tcb] = (status, headers, b'{"tcbInfo":{"id":"TDX"},"signature":"' + b"00" * 64 + b'"}')
    else:
        routes[tcb] = (status, headers, b" " * (MAX_BODY + 1))
    with stand_in(routes) as url, pytest.raises(PccsUnavailable) as raised:
        PccsClient(url).fetch(P.FMSPC, "platform")
    assert raised.value.reason == "PCCS_UNAVAILABLE"
    assert raised.value.metadata["pccs"] == url
    assert "\n" not in str(raised.value)


def test_no_root_crl_and_an_unreachable_distribution_point_is_unavailable(pki: Pki) -> None:
    routes = _pcs_routes(pki)
    del routes["/sgx/certification/v4/rootcacrl"]
    with stand_in(routes) as url, pytest.raises(PccsUnavailable, match=r"tdxsim\.invalid"):
        PccsClient(url, timeout=5).fetch(P.FMSPC, "platform")


def test_unreachable_or_stalled_pccs_is_unavailable_within_the_timeout() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(PccsUnavailable, match="refused"):
        PccsClient(f"http://127.0.0.1:{port}", timeout=2).fetch(P.FMSPC, "platform")
    stall = threading.Event()
    with stand_in({}, stall) as url, pytest.raises(PccsUnavailable, match="timed out"):
        PccsClient(url, timeout=0.5).fetch(P.FMSPC, "platform")
    for bad in ("ftp://example.com", "127.0.0.1:8081", "http://", "http://h/?q=1"):
        with pytest.raises(ValueError, match="pccs url"):
            PccsClient(bad)


class FakeClient(PccsClient):
    """Answers from a list (a FetchedCollateral or an exception each), optionally waiting on ``gate``."""

    def __init__(
        self, answers: list[FetchedCollateral | Exception], gate: threading.Event | None = None
    ) -> None:
        super().__init__("http://pccs.invalid", timeout=5)
        self.answers = answers
        self.gate = gate
        self.calls = 0

    def fetch(self, fmspc: bytes, pck_ca: str, tee: str = "tdx") -> FetchedCollateral:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(10)
        answer = self.answers[min(self.calls, len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer


def _fetched(pki: Pki, next_update: int) -> FetchedCollateral:
    return FetchedCollateral(parse_collateral(pki.collateral_json), pki.collateral_json, next_update)


def test_cache_holds_until_next_update_then_refetches_and_an_outage_after_it_is_unavailable(pki: Pki) -> None:
    now = [1000.0]
    outage = PccsUnavailable("pccs.invalid: connection refused", pccs="http://pccs.invalid")
    client = FakeClient([_fetched(pki, 2000), _fetched(pki, 3000), outage])
    cache = PccsCollateral(client, clock=lambda: now[0])
    first = cache.get(P.FMSPC, "platform")
    now[0] = 1999
    assert cache.get(P.FMSPC, "platform") is first
    assert client.calls == 1
    now[0] = 2000
    cache.get(P.FMSPC, "platform")
    assert client.calls == 2
    assert cache.cached() == {(P.FMSPC, "platform"): 3000}
    now[0] = 3000
    with pytest.raises(PccsUnavailable, match="refused"):
        cache.get(P.FMSPC, "platform")  # expired and the pccs is gone: no stale answer


def test_expired_collateral_is_kept_briefly(pki: Pki) -> None:
    now = [5000.0]
    client = FakeClient([_fetched(pki, 100)])
    cache = PccsCollateral(client, clock=lambda: now[0])
    cache.get(P.FMSPC, "platform")
    now[0] += EXPIRED_RETRY - 1
    cache.get(P.FMSPC, "platform")
    assert client.calls == 1
    now[0] += 1
    cache.get(P.FMSPC, "platform")
    assert client.calls == 2


@pytest.mark.parametrize("succeeds", [True, False])
def test_concurrent_requests_for_one_fmspc_fetch_once(pki: Pki, succeeds: bool) -> None:
    gate = threading.Event()
    answer: FetchedCollateral | Exception = (
        _fetched(pki, NOW + 86_400) if succeeds else PccsUnavailable("down", pccs="http://pccs.invalid")
    )
    client = FakeClient([answer], gate)
    waiting = threading.Semaphore(0)

    class Counted(PccsCollateral):
        def _follow(self, flight: _Flight) -> Collateral:
            waiting.release()
            return super()._follow(flight)

    cache = Counted(client, clock=lambda: float(NOW))
    results: list[object] = []

    def request() -> None:
        try:
            results.append(cache.get(P.FMSPC, "platform"))
        except PccsUnavailable as err:
            results.append(err)

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for _ in range(7):  # the other seven wait for the first one's fetch
        assert waiting.acquire(timeout=30)
    gate.set()
    for thread in threads:
        thread.join(30)
    assert client.calls == 1
    assert len(results) == 8
    if succeeds:
        assert all(r is results[0] for r in results)
    else:
        assert all(isinstance(r, PccsUnavailable) and r.reason == "PCCS_UNAVAILABLE" for r in results)


def test_verifier_cli_refuses_a_bad_pccs_url(tmp_path: Path, pki: Pki) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    cmd = [
        sys.executable, "-m", "tdxsim.cli", "verifier", "--listen", "127.0.0.1:0",
        "--db", str(tmp_path / "v.db"), "--root", str(pki.directory / "root_ca.pem"),
        "--pccs", "pccs.example:8081",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "pccs url" in done.stderr and done.stderr.count("\n") == 1


def test_quote_verify_fetches_its_collateral_from_a_pccs(tmp_path: Path) -> None:
    import subprocess
    import sys

    from attest_pcs_served import foreign_fmspc_quote
    from attest_sim_evidence import make_evidence

    from tests.conftest import ROOT

    evidence = make_evidence(tmp_path / "pki")
    (tmp_path / "q.bin").write_bytes(evidence.quote)
    (tmp_path / "foreign.hex").write_text(foreign_fmspc_quote(evidence.pki).hex())
    pcs = start_pcs(evidence.pki.directory)

    def verify(quote: str, url: str) -> subprocess.CompletedProcess[str]:
        cmd = [
            sys.executable, "-m", "tdxsim.cli", "quote", "verify", str(tmp_path / quote), "--pccs", url,
            "--root", str(evidence.pki.directory / "root_ca.pem"), "--at", str(NOW), "--json",
        ]  # fmt: skip
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)

    try:
        done = verify("q.bin", pcs.url)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert (result["verdict"], result["tcb_status"]) == ("accepted", "UpToDate")
        done = verify("foreign.hex", pcs.url)
        assert done.returncode == 2
        assert json.loads(done.stdout)["verdict"] == "unusable"
        assert "404" in done.stderr and done.stderr.count("\n") == 1
    finally:
        assert pcs.stop() == 0
    done = verify("q.bin", pcs.url)  # the PCCS is gone
    assert done.returncode == 2
    assert "refused" in done.stderr and done.stderr.count("\n") == 1


def test_https_pccs_with_a_ca_file(tmp_path: Path, pki: Pki) -> None:
    """``pcs serve --tls-cert/--tls-key`` and a client trusting that CA (``--pccs-ca``); a client trusting
    only the system's CAs is refused at the handshake: UNAVAILABLE, not a verdict."""
    from wire.tls import mint_test_pki

    mint_test_pki(tmp_path / "tls")
    tls = tmp_path / "tls"
    pcs = start_pcs(
        pki.directory, "--tls-cert", str(tls / "server.pem"), "--tls-key", str(tls / "server.key")
    )
    url = pcs.url.replace("http://", "https://")
    try:
        fetched = PccsClient(url, ca_file=str(tls / "ca.pem")).fetch(P.FMSPC, "platform")
        assert fetched.collateral == parse_collateral(pki.collateral_json)
        with pytest.raises(PccsUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            PccsClient(url).fetch(P.FMSPC, "platform")
    finally:
        assert pcs.stop() == 0


def test_real_intel_collateral_in_pcs_shape_reads_back_and_verifies() -> None:
    """Intel's own collateral (the real v4 vector's), served as Intel's PCS shapes it (DER PCK CRL, compact
    signed members, URL-encoded chains), comes out of the client item for item and verifies the real quote."""
    from attest_vectors import AVAILABLE, V4, expected_for, intel_root_pem, read_collateral, read_quote

    from attest.formats.quote import decode_quote
    from attest.intel.pcs_responses import url_encoded
    from attest.verifier import offline
    from attest.verifier.dcap.pck_platform import pck_platform
    from tests.conftest import VECTORS_MISSING

    if not AVAILABLE:
        pytest.skip(VECTORS_MISSING)
    quote, text = read_quote(V4), read_collateral(V4)
    real = parse_collateral(text)
    platform = pck_platform(decode_quote(quote))
    fmspc, ca = platform.fmspc, platform.pck_ca
    routes: dict[str, Route] = {
        f"/sgx/certification/v4/pckcrl?ca={ca}&encoding=der": (
            200,
            {"SGX-PCK-CRL-Issuer-Chain": url_encoded(real.pck_crl_issuer_chain)},
            real.pck_crl,
        ),
        f"/tdx/certification/v4/tcb?fmspc={fmspc.hex().upper()}": (
            200,
            {"TCB-Info-Issuer-Chain": url_encoded(real.tcb_info_issuer_chain)},
            f'{{"tcbInfo":{real.tcb_info_text},"signature":"{real.tcb_info_signature.hex()}"}}'.encode(),
        ),
        "/tdx/certification/v4/qe/identity": (
            200,
            {"SGX-Enclave-Identity-Issuer-Chain": url_encoded(real.qe_identity_issuer_chain)},
            f'{{"enclaveIdentity":{real.qe_identity_text},"signature":"{real.qe_identity_signature.hex()}"}}'.encode(),
        ),
        "/sgx/certification/v4/rootcacrl": (200, {}, real.root_ca_crl.hex().encode()),
    }
    with stand_in(routes) as url:
        fetched = PccsClient(url).fetch(fmspc, ca)
    assert fetched.collateral == real
    at = int(expected_for(V4)["verify_at_unix"])
    out = offline.verify(quote, fetched.json_text, at, [intel_root_pem()])
    assert (out["verdict"], out["tcb_status"]) == ("accepted", expected_for(V4)["dcap_qvl_0_7_0"]["status"])

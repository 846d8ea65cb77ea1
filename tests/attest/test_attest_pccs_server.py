"""The simulated PCS over HTTP (``tdxsim pcs serve``, docs/attestation.md §17): Intel PCS v4 / PCCS URLs,
headers and status codes, signed bodies byte for byte, and dcap-qvl fetching collateral from it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dcap_qvl
import pytest
from attest_pcs_served import FOREIGN_FMSPC, foreign_fmspc_quote, get, start_pcs
from attest_sim_evidence import NOW
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from attest.formats.collateral import parse_qe_identity, parse_tcb_info, slice_json_member
from attest.intel import Pki, PkiOptions, init_pki, load_pki
from attest.intel import identity as P
from attest.intel.pcs_responses import PcsApi, PcsResponse, simulated_encrypted_ppid
from tests.conftest import ROOT, HostProcess
from tests.guest.guest_helpers import launch

FMSPC = P.FMSPC.hex().upper()
TCB = "/tdx/certification/v4/tcb"
QE = "/tdx/certification/v4/qe/identity"
PCKCRL = "/sgx/certification/v4/pckcrl"
PCKCERT = "/sgx/certification/v4/pckcert"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return init_pki(tmp_path_factory.mktemp("pcs") / "pki", PkiOptions(now=NOW, platforms=2))


def _answer(api: PcsApi, target: str) -> PcsResponse:
    url = urllib.parse.urlsplit(target)
    return api.answer(url.path, urllib.parse.parse_qsl(url.query, keep_blank_values=True))


def _header(response: PcsResponse, name: str) -> str:
    found = [value for key, value in response.headers if key == name]
    assert len(found) == 1, (name, response.headers)
    return found[0]


def _chain(value: str) -> list[x509.Certificate]:
    """A URL-encoded PEM header value back to its certificates."""
    assert "\n" not in value and " " not in value
    return x509.load_pem_x509_certificates(urllib.parse.unquote(value).encode())


def _signed_member(body: bytes, member: str, signer: x509.Certificate) -> str:
    """The signed member's exact text out of a PCS response body, after checking its signature."""
    text = body.decode()
    signed = slice_json_member(text, member)
    raw = bytes.fromhex(json.loads(text)["signature"])
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key = signer.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(der, signed.encode(), ec.ECDSA(hashes.SHA256()))
    return signed


def test_tcb_info_and_qe_identity_are_the_signed_bytes_with_their_issuer_chain(pki: Pki) -> None:
    api = PcsApi(pki)
    signer = pki.tcb_signing.certificate
    tcb = _answer(api, f"{TCB}?fmspc={FMSPC}")
    assert (tcb.status, tcb.content_type) == (200, "application/json")
    assert tcb.body == pki.tcb_info.pcs_response("tcbInfo").encode()
    assert _signed_member(tcb.body, "tcbInfo", signer) == pki.tcb_info.text
    assert [c.subject for c in _chain(_header(tcb, "TCB-Info-Issuer-Chain"))] == [
        signer.subject,
        pki.root.certificate.subject,
    ]
    qe = _answer(api, f"{QE}?update=standard")
    assert qe.status == 200
    assert _signed_member(qe.body, "enclaveIdentity", signer) == pki.qe_identity.text
    assert _chain(_header(qe, "SGX-Enclave-Identity-Issuer-Chain"))[0] == signer
    # lower-case hex FMSPC is the same FMSPC; the evaluation data number the PCS holds is served
    number = pki.options.tcb_evaluation_data_number
    assert _answer(api, f"{TCB}?fmspc={FMSPC.lower()}&tcbEvaluationDataNumber={number}").body == tcb.body


def test_sgx_variants_are_sgx_documents_signed_alike(pki: Pki) -> None:
    api = PcsApi(pki)
    signer = pki.tcb_signing.certificate
    tcb = _answer(api, f"/sgx/certification/v4/tcb?fmspc={FMSPC}")
    doc = json.loads(_signed_member(tcb.body, "tcbInfo", signer))
    assert (doc["id"], doc["version"], doc["fmspc"]) == ("SGX", 3, FMSPC)
    assert "tdxModule" not in doc and all("tdxtcbcomponents" not in lv["tcb"] for lv in doc["tcbLevels"])
    assert [c["svn"] for c in doc["tcbLevels"][0]["tcb"]["sgxtcbcomponents"]] == list(P.SGX_TCB_COMPONENTS)
    assert _header(tcb, "TCB-Info-Issuer-Chain")
    qe = _answer(api, "/sgx/certification/v4/qe/identity")
    doc = json.loads(_signed_member(qe.body, "enclaveIdentity", signer))
    assert (doc["id"], doc["isvprodid"]) == ("QE", 1)


def test_tcb_status_puts_the_platform_level_at_that_status(pki: Pki) -> None:
    for status in ("OutOfDate", "SWHardeningNeeded"):
        served = _answer(PcsApi(pki, status), f"{TCB}?fmspc={FMSPC}")
        text = _signed_member(served.body, "tcbInfo", pki.tcb_signing.certificate)
        info = parse_tcb_info(text)
        assert info.tcb_levels[0].status == status
        own = parse_tcb_info(pki.tcb_info.text)
        assert (info.issue_date, info.next_update) == (own.issue_date, own.next_update)
        assert info.tcb_levels[0].sgx_components == own.tcb_levels[0].sgx_components
    assert (
        _answer(PcsApi(pki, "UpToDate"), f"{TCB}?fmspc={FMSPC}").body
        == pki.tcb_info.pcs_response("tcbInfo").encode()
    )
    parse_qe_identity(pki.qe_identity.text)


def test_pck_crl_and_root_crl_encodings(pki: Pki) -> None:
    api = PcsApi(pki)
    hexed = _answer(api, f"{PCKCRL}?ca=platform")
    assert hexed.body == pki.pck_crl.hex().encode()
    chain = _chain(_header(hexed, "SGX-PCK-CRL-Issuer-Chain"))
    assert chain == [pki.pck_ca.certificate, pki.root.certificate]
    der = _answer(api, f"{PCKCRL}?ca=PLATFORM&encoding=der")
    assert (der.body, der.content_type) == (pki.pck_crl, "application/pkix-crl")
    pem = _answer(api, f"{PCKCRL}?ca=platform&encoding=pem")
    assert x509.load_pem_x509_crl(pem.body) == x509.load_der_x509_crl(pki.pck_crl)
    root = _answer(api, "/sgx/certification/v4/rootcacrl")
    assert (root.status, bytes.fromhex(root.body.decode())) == (200, pki.root_ca_crl)


def test_pck_certificate_by_encrypted_ppid(pki: Pki) -> None:
    api = PcsApi(pki)
    platform = pki.platform(1)
    ppid = simulated_encrypted_ppid(platform.ppid).hex()
    pcesvn = P.PCESVN.to_bytes(2, "little").hex()
    query = f"encrypted_ppid={ppid}&cpusvn={P.CPUSVN.hex()}&pcesvn={pcesvn}&pceid=0000"
    found = _answer(api, f"{PCKCERT}?{query}&qeid={'ab' * 16}")
    assert found.status == 200
    assert x509.load_pem_x509_certificate(found.body) == platform.certificate
    assert _chain(_header(found, "SGX-PCK-Certificate-Issuer-Chain")) == [
        pki.pck_ca.certificate,
        pki.root.certificate,
    ]
    assert _header(found, "SGX-TCBm") == (P.CPUSVN + P.PCESVN.to_bytes(2, "little")).hex().upper()
    assert _header(found, "SGX-FMSPC") == FMSPC
    assert _header(found, "SGX-PCK-Certificate-CA-Type") == "platform"
    higher = bytes(c + 1 for c in P.CPUSVN).hex()
    assert _answer(api, f"{PCKCERT}?{query.replace(P.CPUSVN.hex(), higher)}").status == 200
    lower = (P.PCESVN - 1).to_bytes(2, "little").hex()
    assert _answer(api, f"{PCKCERT}?{query.replace('pcesvn=' + pcesvn, 'pcesvn=' + lower)}").status == 404
    stranger = simulated_encrypted_ppid(bytes(16)).hex()
    assert _answer(api, f"{PCKCERT}?{query.replace(ppid, stranger)}").status == 404
    assert _answer(api, f"{PCKCERT}?{query.replace('pceid=0000', 'pceid=0100')}").status == 404
    for bad in (query.replace(ppid, ppid[:-2]), query.replace("pceid=0000", "pceid=zz00"), query[:-12]):
        assert _answer(api, f"{PCKCERT}?{bad}").status == 400, bad


@pytest.mark.parametrize(
    ("target", "status"),
    [
        (TCB, 400),
        (f"{TCB}?fmspc=90C06F", 400),
        (f"{TCB}?fmspc=90C06F00000G", 400),
        (f"{TCB}?fmspc={FMSPC}&fmspc={FMSPC}", 400),
        (f"{TCB}?fmspc={FMSPC}&update=weekly", 400),
        (f"{TCB}?fmspc={FMSPC}&update=early&tcbEvaluationDataNumber=18", 400),
        (f"{TCB}?fmspc={FMSPC}&tcbEvaluationDataNumber=x", 400),
        (f"{TCB}?fmspc={FOREIGN_FMSPC.hex()}", 404),
        (f"{TCB}?fmspc={FMSPC}&tcbEvaluationDataNumber=1", 404),
        (f"{QE}?update=sometimes", 400),
        (PCKCRL, 400),
        (f"{PCKCRL}?ca=root", 400),
        (f"{PCKCRL}?ca=platform&encoding=base64", 400),
        (f"{PCKCRL}?ca=processor", 404),
        (PCKCERT, 400),
        ("/sgx/certification/v3/tcb?fmspc=90C06F000000", 404),
        ("/tdx/certification/v4/pckcrl?ca=platform", 404),
        ("/", 404),
    ],
)
def test_bad_parameters_are_400_and_what_the_pcs_lacks_404(pki: Pki, target: str, status: int) -> None:
    answer = _answer(PcsApi(pki), target)
    assert answer.status == status
    assert answer.content_type.startswith("text/plain")
    assert answer.body.count(b"\n") == 1 and len(answer.body) < 300


def test_served_over_http_concurrently_then_sigterm_exits_0(pki: Pki) -> None:
    pcs = start_pcs(pki.directory)
    try:
        health = get(f"{pcs.url}/healthz")
        assert (health.status, json.loads(health.body)) == (200, {"status": "SERVING"})
        assert health.headers["Server"] == "tdxsim"  # not the Python and aiohttp versions
        targets = [
            f"{TCB}?fmspc={FMSPC}",
            QE,
            f"{PCKCRL}?ca=platform&encoding=der",
            "/sgx/certification/v4/rootcacrl",
        ]
        expected = {t: _answer(PcsApi(pki), t).body for t in targets if "identity" not in t}
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda t: (t, get(pcs.url + t)), targets * 8))
        for target, answer in answers:
            assert answer.status == 200
            assert answer.headers["Request-ID"]
            if target in expected:
                assert answer.body == expected[target]
        assert len({a.headers["Request-ID"] for _, a in answers}) == len(answers)
        tcb = next(a for t, a in answers if t.startswith(TCB))
        assert _chain(tcb.headers["TCB-Info-Issuer-Chain"])[0] == pki.tcb_signing.certificate
        assert get(f"{pcs.url}/nothing/here").status == 404
        assert get(f"{pcs.url}{TCB}?fmspc=zz").status == 400
        assert get(f"{pcs.url}{TCB}?fmspc={'A' * 20_000}").status == 400  # aiohttp's own limit
        host, port = pcs.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(b"NOT HTTP\r\n\r\n")
            assert raw.recv(64).split(b"\r\n")[0].endswith(b" 400 Bad Request")
        assert get(f"{pcs.url}/healthz").status == 200
    finally:
        code = pcs.stop(signal.SIGTERM)
    assert code == 0
    assert pcs.proc.stderr is not None
    log = pcs.proc.stderr.read()
    assert "Traceback" not in log and log.count("\n") == 1, log  # the start-up line only


def test_unusable_arguments_exit_2_with_one_line(tmp_path: Path, pki: Pki) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = [
            ["--pki", str(tmp_path / "missing")],
            ["--pki", str(pki.directory), "--listen", f"127.0.0.1:{port}"],
            ["--pki", str(pki.directory), "--listen", "127.0.0.1:99999"],
            ["--pki", str(pki.directory), "--tls-cert", str(tmp_path / "none.pem")],
        ]
        for args in cases:
            cmd = [sys.executable, "-m", "tdxsim.cli", "pcs", "serve", "--listen", "127.0.0.1:0", *args]
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert done.returncode == 2, (args, done.stderr)
            assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr


async def _fetch(url: str, quote: bytes) -> dcap_qvl.QuoteCollateralV3:
    return await asyncio.wait_for(dcap_qvl.get_collateral(url, quote), timeout=60)


def test_dcap_qvl_fetches_collateral_from_the_served_pcs_and_verifies(
    host_factory: Callable[..., HostProcess], tmp_path: Path
) -> None:
    """A TD's quote, dcap-qvl's own fetch from ``tdxsim pcs serve`` of the host's PKI, dcap-qvl's verdict."""
    pki_dir = tmp_path / "pki"
    init_pki(pki_dir)
    pki = load_pki(pki_dir)
    host = host_factory("--pki", str(pki_dir))
    quote = launch(host).quote(bytes(range(64)))
    for extra, status in (((), "UpToDate"), (("--tcb-status", "OutOfDate"), "OutOfDate")):
        pcs = start_pcs(pki_dir, *extra)
        try:
            collateral = asyncio.run(_fetch(pcs.url, quote))
            verified = dcap_qvl.verify_with_root_ca(quote, collateral, pki.root_der, int(time.time()))
            assert verified.status == status
            if not extra:
                assert collateral.tcb_info == pki.tcb_info.text
                assert collateral.qe_identity == pki.qe_identity.text
            # a quote of a family the PCS does not know: 404 on the wire, a clean error from dcap-qvl
            foreign = foreign_fmspc_quote(pki)
            assert get(f"{pcs.url}{TCB}?fmspc={FOREIGN_FMSPC.hex().upper()}").status == 404
            with pytest.raises(ValueError, match="404"):
                asyncio.run(_fetch(pcs.url, foreign))
        finally:
            assert pcs.stop() == 0

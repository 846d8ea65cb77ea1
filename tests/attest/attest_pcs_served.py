"""Helpers for the PCCS tests: ``tdxsim pcs serve`` as a real process, plain HTTP GETs, and a quote whose PCK
leaf names an FMSPC the simulated PCS has no collateral for.

A uniquely named helper module (not conftest.py), like ``attest_vectors``.
"""

from __future__ import annotations

import signal
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

from attest.formats.pck_extension import SCALABLE_CONFIGURATION, PckExtension
from attest.formats.pck_names import PCK_CN
from attest.intel import Pki, QuotingEnclave, build_td_report
from attest.intel import certificates as ca
from attest.intel import identity as P
from attest.intel.ecdsa_keys import KeySource
from tests.conftest import start_server, stop_process

FOREIGN_FMSPC = bytes.fromhex("00906ED50000")


@dataclass
class PcsProcess:
    proc: subprocess.Popen[str]
    url: str

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        return stop_process(self.proc, sig, timeout)


def start_pcs(pki_dir: Path, *extra: str) -> PcsProcess:
    """``tdxsim pcs serve --pki DIR --listen 127.0.0.1:0`` as a process; its URL from the first line."""
    proc, address = start_server("pcs", "serve", "--pki", str(pki_dir), "--listen", "127.0.0.1:0", *extra)
    return PcsProcess(proc, "http://" + address)


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: Message
    body: bytes


def get(url: str, timeout: float = 10.0) -> HttpAnswer:
    """A GET that returns error statuses instead of raising them."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return HttpAnswer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as err:
        return HttpAnswer(err.code, err.headers, err.read())


def foreign_fmspc_quote(pki: Pki, fmspc: bytes = FOREIGN_FMSPC) -> bytes:
    """A quote signed under ``pki``'s PCK CA by a leaf whose SGX extension names ``fmspc``: a platform of a
    family this PCS has no TCB Info for."""
    src = KeySource(b"foreign platform")
    extension = PckExtension(
        ppid=bytes(16),
        tcb_components=P.SGX_TCB_COMPONENTS,
        pce_svn=P.PCESVN,
        cpu_svn=P.CPUSVN,
        pce_id=P.PCEID,
        fmspc=fmspc,
        sgx_type=P.SGX_TYPE,
        platform_instance_id=bytes(16),
        configuration=SCALABLE_CONFIGURATION,
    )
    not_before = int(pki.pck_ca.certificate.not_valid_before_utc.timestamp())
    leaf = ca.issue(
        subject=ca.name(PCK_CN),
        key=src.private_key("pck"),
        issuer=pki.pck_ca,
        serial=src.serial("pck"),
        not_before=not_before,
        not_after=not_before + 5 * 365 * 86_400,
        ca_path_length=None,
        is_ca=False,
        crl_url=ca.pck_crl_url(pki.pck_ca_kind),
        sgx_extension=extension,
    )
    chain = leaf.pem + pki.pck_ca.pem + pki.root.pem
    return QuotingEnclave(leaf.key, chain).quote(build_td_report(report_data=bytes(64)))

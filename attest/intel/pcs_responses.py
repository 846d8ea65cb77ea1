"""What the simulated Intel PCS answers over HTTP: the responses of Intel's PCS API v4, as a PCCS serves them,
for one PKI directory (docs/attestation.md §17).

``PcsApi(pki).answer(path, query)`` returns status, headers and the exact body bytes; the HTTP server
(``attest.intel.pccs_server``) only moves them. Every body is built once, when the API is made, so a request
costs a lookup and the checks of its parameters.

- ``GET /sgx/certification/v4/pckcert?encrypted_ppid=&cpusvn=&pcesvn=&pceid=`` (``qeid`` tolerated): the PCK
  leaf (PEM); headers ``SGX-PCK-Certificate-Issuer-Chain``, ``SGX-TCBm``, ``SGX-FMSPC``,
  ``SGX-PCK-Certificate-CA-Type``;
- ``GET /sgx/certification/v4/pckcrl?ca=platform|processor``: hex of the DER CRL as a PCCS answers, DER with
  ``encoding=der``, PEM with ``encoding=pem``; header ``SGX-PCK-CRL-Issuer-Chain``;
- ``GET /sgx/certification/v4/rootcacrl``: hex of the root CA's DER CRL (a PCCS's answer);
- ``GET /tdx/certification/v4/tcb?fmspc=`` and ``/sgx/…/tcb``: ``{"tcbInfo":…,"signature":…}``; header
  ``TCB-Info-Issuer-Chain`` (v4's name; v3 said ``SGX-TCB-Info-Issuer-Chain``);
- ``GET /tdx/certification/v4/qe/identity`` and ``/sgx/…/qe/identity``: ``{"enclaveIdentity":…,
  "signature":…}``; header ``SGX-Enclave-Identity-Issuer-Chain``.

Issuer chains travel URL-encoded (percent-encoding of the PEM text, as Intel's). ``tcb`` and
``qe/identity`` take ``update=standard|early`` or ``tcbEvaluationDataNumber=N`` (not both). A malformed,
missing or repeated parameter is 400, an FMSPC, CA, platform or evaluation number the PCS has nothing for is
404, any other path 404 (the PCCS's status codes; the body is one line of text saying why).

Simulated, not Intel: the simulated platform has no PCE key, so its "encrypted PPID" is
``simulated_encrypted_ppid(ppid)``, a 384-byte value derived from the PPID (the size of Intel's RSA-3072
ciphertext), which the PCS looks its platforms up by. The SGX variants of ``tcb`` and ``qe/identity`` are the
SGX TCB Info (id ``SGX``, v3) and QE Identity (id ``QE``) derived from the TDX ones and signed alike.
``tcb_status`` re-signs the TDX and SGX TCB Info with the platform's level at that status; otherwise the
TCB Info is the PKI's, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attest.formats.collateral import TCB_STATUSES
from attest.intel import identity as P
from attest.intel.pcs_directory import Pki, PkiError, PlatformPck
from attest.intel.signed_collateral import (
    CollateralSpec,
    SignedJson,
    sign_json,
    tcb_info_text,
)

API = "/certification/v4/"
SGX, TDX = "sgx", "tdx"
ENCRYPTED_PPID_SIZE = 384  # RSA-3072 OAEP ciphertext, Intel's encrypted PPID
QEID_MAX_HEX = 260  # the PCCS's bound on qeid
UPDATE_TYPES = ("standard", "early")
INVALID_REQUEST = "Invalid request parameters."  # the PCCS's messages (pccs_status_code.js)
NO_DATA = "No cache data for this platform."
NOT_FOUND = "Not found."
HEX = re.compile(r"[0-9A-Fa-f]*")
PEM_FILE = "application/x-pem-file"
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class PcsResponse:
    """One HTTP answer: status, Content-Type, the other headers and the exact body bytes."""

    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def url_encoded(pem: str) -> str:
    """A PEM chain as an Intel PCS header value: every byte outside ``A-Za-z0-9-_.~`` percent-encoded."""
    return urllib.parse.quote(pem, safe="")


def simulated_encrypted_ppid(ppid: bytes) -> bytes:
    """The simulated platform's stand-in for its encrypted PPID: 384 bytes derived from the PPID (no PCE key
    exists in the simulation, so nothing is encrypted); what ``pckcert``'s ``encrypted_ppid`` names."""
    return hashlib.shake_256(b"tdxsim simulated encrypted ppid\x00" + ppid).digest(ENCRYPTED_PPID_SIZE)


def request_id() -> str:
    """A ``Request-ID`` header value: random, for matching a response with the server's log."""
    return secrets.token_hex(16)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _crl_pem(der: bytes) -> bytes:
    return x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM)


def sgx_tcb_info_text(tdx_tcb_info: str) -> str:
    """The SGX TCB Info (id ``SGX``, version 3) of the platform a TDX TCB Info describes: its fields without
    the TDX module and TDX components, in Intel's order, compact."""
    doc = json.loads(tdx_tcb_info)
    levels = []
    for level in doc["tcbLevels"]:
        tcb = level["tcb"]
        out: dict[str, Any] = {
            "tcb": {"sgxtcbcomponents": tcb["sgxtcbcomponents"], "pcesvn": tcb["pcesvn"]},
            "tcbDate": level["tcbDate"],
            "tcbStatus": level["tcbStatus"],
        }
        if "advisoryIDs" in level:
            out["advisoryIDs"] = level["advisoryIDs"]
        levels.append(out)
    sgx = {
        "id": "SGX",
        "version": doc["version"],
        "issueDate": doc["issueDate"],
        "nextUpdate": doc["nextUpdate"],
        "fmspc": doc["fmspc"],
        "pceId": doc["pceId"],
        "tcbType": doc["tcbType"],
        "tcbEvaluationDataNumber": doc["tcbEvaluationDataNumber"],
        "tcbLevels": levels,
    }
    return json.dumps(sgx, separators=(",", ":"))


def sgx_qe_identity_text(td_qe_identity: str) -> str:
    """The SGX QE Identity (id ``QE``, ISVPRODID 1, Intel's) beside a TD_QE identity: the same fields."""
    doc = json.loads(td_qe_identity)
    doc["id"] = "QE"
    doc["isvprodid"] = 1
    return json.dumps(doc, separators=(",", ":"))


@dataclass(frozen=True)
class _Signed:
    """A signed document's response body and its issuer-chain header."""

    body: bytes
    chain_header: tuple[str, str]
    evaluation_data_number: int


class PcsApi:
    """The PCS of one loaded PKI. ``tcb_status`` (one of ``TCB_STATUSES``) puts the platform's TCB level at
    that status in the served TCB Info; None serves the PKI's own."""

    def __init__(self, pki: Pki, tcb_status: str | None = None) -> None:
        if tcb_status is not None and tcb_status not in TCB_STATUSES:
            raise PkiError(f"unknown tcb status {tcb_status!r}")
        self.pki = pki
        self.tcb_status = tcb_status or pki.options.tcb_status
        self.fmspc = pki.options.fmspc.upper()
        key = pki.tcb_signing.key
        tcb_info = pki.tcb_info
        if tcb_status is not None and tcb_status != pki.options.tcb_status:
            issue, next_update = pki.tcb_info_window
            spec = CollateralSpec(
                issue_date=issue,
                next_update=next_update,
                tcb_status=tcb_status,
                advisory_ids=pki.options.advisory_ids,
                qe_tcb_status=pki.options.qe_tcb_status,
                tcb_evaluation_data_number=pki.options.tcb_evaluation_data_number,
                fmspc=bytes.fromhex(pki.options.fmspc),
            )
            tcb_info = sign_json(tcb_info_text(spec), key)
        signing_chain = ("TCB-Info-Issuer-Chain", url_encoded(pki.tcb_signing_chain_pem))
        identity_chain = ("SGX-Enclave-Identity-Issuer-Chain", url_encoded(pki.tcb_signing_chain_pem))
        number = pki.options.tcb_evaluation_data_number

        def signed(doc: SignedJson, member: str, chain: tuple[str, str]) -> _Signed:
            return _Signed(doc.pcs_response(member).encode(), chain, number)

        self._tcb = {
            TDX: signed(tcb_info, "tcbInfo", signing_chain),
            SGX: signed(sign_json(sgx_tcb_info_text(tcb_info.text), key), "tcbInfo", signing_chain),
        }
        self._qe = {
            TDX: signed(pki.qe_identity, "enclaveIdentity", identity_chain),
            SGX: signed(
                sign_json(sgx_qe_identity_text(pki.qe_identity.text), key), "enclaveIdentity", identity_chain
            ),
        }
        ca_chain = _pem(pki.pck_ca.certificate) + _pem(pki.root.certificate)
        self._pck_crl_chain = ("SGX-PCK-CRL-Issuer-Chain", url_encoded(ca_chain))
        self._pck_crl_pem = _crl_pem(pki.pck_crl)
        self._platforms = {simulated_encrypted_ppid(p.ppid): p for p in pki.platforms}
        self._routes = {
            f"/{SGX}{API}pckcert": self._pckcert,
            f"/{SGX}{API}pckcrl": self._pckcrl,
            f"/{SGX}{API}rootcacrl": self._rootcacrl,
            f"/{SGX}{API}tcb": lambda q: self._tcb_info(SGX, q),
            f"/{TDX}{API}tcb": lambda q: self._tcb_info(TDX, q),
            f"/{SGX}{API}qe/identity": lambda q: self._qe_identity(SGX, q),
            f"/{TDX}{API}qe/identity": lambda q: self._qe_identity(TDX, q),
        }

    @property
    def paths(self) -> list[str]:
        return list(self._routes)

    def answer(self, path: str, query: Sequence[tuple[str, str]]) -> PcsResponse:
        """The response to ``GET path?query`` (``query`` as decoded pairs, repeats kept)."""
        route = self._routes.get(path)
        try:
            if route is None:
                raise _Refused(404, f"{NOT_FOUND} {path[:200]!r} is not a PCS v4 endpoint")
            names = [name for name, _ in query]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise _Refused(400, f"{INVALID_REQUEST} repeated parameter {repeated[0][:64]!r}")
            return route(dict(query))
        except _Refused as refused:
            return PcsResponse(refused.status, TEXT, (str(refused) + "\n").encode())

    # --- endpoints ----------------------------------------------------------------------------------------

    def _pckcert(self, query: dict[str, str]) -> PcsResponse:
        encrypted_ppid = _hex_param(query, "encrypted_ppid", 2 * ENCRYPTED_PPID_SIZE)
        cpusvn = _hex_param(query, "cpusvn", 32)
        pcesvn = int.from_bytes(_hex_param(query, "pcesvn", 4), "little")
        pceid = _hex_param(query, "pceid", 4)
        qeid = query.get("qeid")
        if qeid is not None and (len(qeid) > QEID_MAX_HEX or not HEX.fullmatch(qeid)):
            raise _Refused(400, f"{INVALID_REQUEST} qeid must be at most {QEID_MAX_HEX} hex digits")
        platform = self._platforms.get(encrypted_ppid)
        if platform is None or pceid != P.PCEID:
            raise _Refused(404, f"{NO_DATA} no platform has this encrypted_ppid and pceid")
        if pcesvn < P.PCESVN or any(r < c for r, c in zip(cpusvn, P.SGX_TCB_COMPONENTS, strict=True)):
            raise _Refused(404, f"{NO_DATA} no PCK certificate at or below this cpusvn and pcesvn")
        return self._pck_response(platform)

    def _pck_response(self, platform: PlatformPck) -> PcsResponse:
        chain = _pem(self.pki.pck_ca.certificate) + _pem(self.pki.root.certificate)
        tcbm = (P.CPUSVN + P.PCESVN.to_bytes(2, "little")).hex().upper()
        headers = (
            ("SGX-PCK-Certificate-Issuer-Chain", url_encoded(chain)),
            ("SGX-TCBm", tcbm),
            ("SGX-FMSPC", self.fmspc),
            ("SGX-PCK-Certificate-CA-Type", self.pki.pck_ca_kind),
        )
        return PcsResponse(200, PEM_FILE, _pem(platform.certificate).encode(), headers)

    def _pckcrl(self, query: dict[str, str]) -> PcsResponse:
        ca = query.get("ca")
        if ca is None or ca.lower() not in ("platform", "processor"):
            raise _Refused(400, f"{INVALID_REQUEST} ca must be platform or processor")
        encoding = query.get("encoding")
        if encoding is not None and encoding.lower() not in ("der", "pem"):
            raise _Refused(400, f"{INVALID_REQUEST} encoding must be der or pem")
        if ca.lower() != self.pki.pck_ca_kind:
            raise _Refused(404, f"{NO_DATA} this PCS has no PCK {ca.lower()} CA")
        if encoding is None:
            body, kind = self.pki.pck_crl.hex().encode(), PEM_FILE
        elif encoding.lower() == "der":
            body, kind = self.pki.pck_crl, "application/pkix-crl"
        else:
            body, kind = self._pck_crl_pem, PEM_FILE
        return PcsResponse(200, kind, body, (self._pck_crl_chain,))

    def _rootcacrl(self, query: dict[str, str]) -> PcsResponse:
        return PcsResponse(200, PEM_FILE, self.pki.root_ca_crl.hex().encode())

    def _tcb_info(self, tee: str, query: dict[str, str]) -> PcsResponse:
        fmspc = _hex_param(query, "fmspc", 12)
        signed = self._tcb[tee]
        _check_update(query, signed.evaluation_data_number)
        if fmspc.hex().upper() != self.fmspc:
            raise _Refused(404, f"{NO_DATA} no {tee.upper()} TCB info for fmspc {fmspc.hex().upper()}")
        return PcsResponse(200, JSON, signed.body, (signed.chain_header,))

    def _qe_identity(self, tee: str, query: dict[str, str]) -> PcsResponse:
        signed = self._qe[tee]
        _check_update(query, signed.evaluation_data_number)
        return PcsResponse(200, JSON, signed.body, (signed.chain_header,))


def _hex_param(query: dict[str, str], name: str, digits: int) -> bytes:
    value = query.get(name)
    if value is None:
        raise _Refused(400, f"{INVALID_REQUEST} {name} is missing")
    if len(value) != digits or not HEX.fullmatch(value):
        raise _Refused(400, f"{INVALID_REQUEST} {name} must be {digits} hex digits")
    return bytes.fromhex(value)


def _check_update(query: dict[str, str], number: int) -> None:
    """``update`` and ``tcbEvaluationDataNumber``: at most one, well formed; an evaluation data number the
    PCS does not hold is 404."""
    update = query.get("update")
    wanted = query.get("tcbEvaluationDataNumber")
    if update is not None and wanted is not None:
        raise _Refused(400, f"{INVALID_REQUEST} update and tcbEvaluationDataNumber exclude each other")
    if update is not None and update not in UPDATE_TYPES:
        raise _Refused(400, f"{INVALID_REQUEST} update must be standard or early")
    if wanted is not None:
        if not wanted.isdigit() or len(wanted) > 9:
            raise _Refused(400, f"{INVALID_REQUEST} tcbEvaluationDataNumber must be a number")
        if int(wanted) != number:
            raise _Refused(404, f"{NO_DATA} no collateral with tcbEvaluationDataNumber {int(wanted)}")

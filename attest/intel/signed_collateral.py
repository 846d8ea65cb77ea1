"""Signed collateral of the simulated PCS: TCB Info (id TDX, v3), QE Identity (id TD_QE, v2), and the dcap-qvl
``QuoteCollateralV3`` JSON that bundles them with the CRLs and issuer chains (docs/attestation.md §9).

The JSON objects are built in Intel's key order and serialised once, compactly (``{"id":"TDX","version":3,…}``
as the PCS serves them); the signature (ECDSA P-256 over SHA-256, raw ``r‖s`` hex) covers exactly that text,
which is stored and shipped verbatim, never re-serialised. Hex fields are upper case as Intel's.

TCB levels (§8): the platform's own level first (its SGX components, PCESVN, and TDX components at or below
the platform's TEE_TCB_SVN, with the status and advisories asked for), then two older OutOfDate levels (lower
SGX components; then lower PCESVN). The TDX module identity ``TDX_%02X`` of the platform's major version has
an UpToDate level at the platform's module ISVSVN and an OutOfDate one below; the QE Identity likewise.
Advisory IDs of the simulated older levels are ``TDXSIM-SA-…``, never Intel's.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from attest.intel import identity as P
from attest.intel.ecdsa_keys import sign_raw

TCB_INFO_VERSION = 3
QE_IDENTITY_VERSION = 2
QE_IDENTITY_ATTRIBUTES_MASK = bytes.fromhex("FBFFFFFFFFFFFFFF0000000000000000")
QE_IDENTITY_MISCSELECT_MASK = bytes.fromhex("FFFFFFFF")
TDX_MODULE_ATTRIBUTES_MASK = bytes.fromhex("FFFFFFFFFFFFFFFF")
OLDER_LEVEL_ADVISORIES = ("TDXSIM-SA-00002", "TDXSIM-SA-00003")
OLDEST_LEVEL_ADVISORIES = ("TDXSIM-SA-00001", "TDXSIM-SA-00002", "TDXSIM-SA-00003")
# TCB Info component labels as Intel's TDX TCB Info carries them (index -> (category, type)).
SGX_COMPONENT_LABELS: dict[int, tuple[str, str | None]] = {
    0: ("BIOS", "Early Microcode Update"),
    1: ("OS/VMM", "SGX Late Microcode Update"),
    2: ("OS/VMM", "TXT SINIT"),
    3: ("BIOS", None),
    4: ("BIOS", None),
    5: ("BIOS", None),
    7: ("OS/VMM", "SEAMLDR ACM"),
}
TDX_COMPONENT_LABELS: dict[int, tuple[str, str | None]] = {
    0: ("OS/VMM", "TDX Module"),
    1: ("OS/VMM", "TDX Module"),
    2: ("OS/VMM", "TDX Late Microcode Update"),
}
DAY = 86_400


def rfc3339(unix: int) -> str:
    """``2025-06-19T10:16:03Z``: Intel's collateral time format (UTC, seconds)."""
    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _day(unix: int) -> int:
    return unix - unix % DAY


def _components(svns: Sequence[int], labels: dict[int, tuple[str, str | None]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, svn in enumerate(svns):
        item: dict[str, Any] = {"svn": svn}
        if i in labels:
            category, kind = labels[i]
            item["category"] = category
            if kind is not None:
                item["type"] = kind
        out.append(item)
    return out


def _level(tcb: dict[str, Any], date: int, status: str, advisories: Sequence[str]) -> dict[str, Any]:
    level: dict[str, Any] = {"tcb": tcb, "tcbDate": rfc3339(date), "tcbStatus": status}
    if advisories:
        level["advisoryIDs"] = list(advisories)
    return level


def _platform_tcb(sgx: Sequence[int], pce_svn: int, tdx: Sequence[int]) -> dict[str, Any]:
    return {
        "sgxtcbcomponents": _components(sgx, SGX_COMPONENT_LABELS),
        "pcesvn": pce_svn,
        "tdxtcbcomponents": _components(tdx, TDX_COMPONENT_LABELS),
    }


def _lowered(values: Sequence[int], indexes: Sequence[int]) -> list[int]:
    return [max(v - 1, 0) if i in indexes else v for i, v in enumerate(values)]


@dataclass(frozen=True)
class CollateralSpec:
    """What the signed collateral says; built from ``PkiOptions`` by ``attest.intel.pcs_directory``."""

    issue_date: int
    next_update: int
    tcb_status: str
    advisory_ids: tuple[str, ...]
    qe_tcb_status: str
    tcb_evaluation_data_number: int
    fmspc: bytes = P.FMSPC


def platform_level_tdx_components() -> list[int]:
    """TDX components of the platform's level: Intel lists the module's TCB-component SVN at [0] (below the
    module ISVSVN, which the module identity levels cover) and 0 at [1] (the major version is no SVN)."""
    tdx = list(P.TEE_TCB_SVN)
    tdx[0] = min(tdx[0], 5)
    tdx[1] = 0
    return tdx


def tcb_info_text(spec: CollateralSpec) -> str:
    """The exact ``tcbInfo`` JSON text for the simulated platform."""
    current = _day(spec.issue_date) - 30 * DAY
    older = current - 365 * DAY
    oldest = older - 365 * DAY
    tdx = platform_level_tdx_components()
    old_sgx = _lowered(P.SGX_TCB_COMPONENTS, (0, 1, 4))
    old_tdx = _lowered(tdx, (2,))
    module = {
        "mrsigner": P.MRSIGNERSEAM.hex().upper(),
        "attributes": P.SEAM_ATTRIBUTES.hex().upper(),
        "attributesMask": TDX_MODULE_ATTRIBUTES_MASK.hex().upper(),
    }
    module_identity = {
        "id": P.TDX_MODULE_ID,
        **module,
        "tcbLevels": [
            _level({"isvsvn": P.TDX_MODULE_ISVSVN}, current, "UpToDate", ()),
            _level({"isvsvn": max(P.TDX_MODULE_ISVSVN - 7, 0)}, older, "OutOfDate", OLDER_LEVEL_ADVISORIES),
        ],
    }
    doc: dict[str, Any] = {
        "id": "TDX",
        "version": TCB_INFO_VERSION,
        "issueDate": rfc3339(spec.issue_date),
        "nextUpdate": rfc3339(spec.next_update),
        "fmspc": spec.fmspc.hex().upper(),
        "pceId": P.PCEID.hex().upper(),
        "tcbType": 0,
        "tcbEvaluationDataNumber": spec.tcb_evaluation_data_number,
        "tdxModule": module,
        "tdxModuleIdentities": [module_identity],
        "tcbLevels": [
            _level(
                _platform_tcb(P.SGX_TCB_COMPONENTS, P.PCESVN, tdx),
                current,
                spec.tcb_status,
                spec.advisory_ids,
            ),
            _level(_platform_tcb(old_sgx, P.PCESVN, old_tdx), older, "OutOfDate", OLDER_LEVEL_ADVISORIES),
            _level(_platform_tcb(old_sgx, 5, old_tdx), oldest, "OutOfDate", OLDEST_LEVEL_ADVISORIES),
        ],
    }
    return json.dumps(doc, separators=(",", ":"))


def qe_identity_text(spec: CollateralSpec) -> str:
    """The exact ``enclaveIdentity`` JSON text for the simulated TD quoting enclave."""
    current = _day(spec.issue_date) - 30 * DAY
    older = current - 365 * DAY
    attributes = bytes(a & m for a, m in zip(P.QE_ATTRIBUTES, QE_IDENTITY_ATTRIBUTES_MASK, strict=True))
    doc: dict[str, Any] = {
        "id": "TD_QE",
        "version": QE_IDENTITY_VERSION,
        "issueDate": rfc3339(spec.issue_date),
        "nextUpdate": rfc3339(spec.next_update),
        "tcbEvaluationDataNumber": spec.tcb_evaluation_data_number,
        "miscselect": P.QE_MISCSELECT.hex().upper(),
        "miscselectMask": QE_IDENTITY_MISCSELECT_MASK.hex().upper(),
        "attributes": attributes.hex().upper(),
        "attributesMask": QE_IDENTITY_ATTRIBUTES_MASK.hex().upper(),
        "mrsigner": P.QE_MRSIGNER.hex().upper(),
        "isvprodid": P.QE_ISVPRODID,
        "tcbLevels": [
            _level({"isvsvn": P.QE_ISVSVN}, current, spec.qe_tcb_status, ()),
            _level({"isvsvn": max(P.QE_ISVSVN - 2, 0)}, older, "OutOfDate", OLDER_LEVEL_ADVISORIES),
        ],
    }
    return json.dumps(doc, separators=(",", ":"))


@dataclass(frozen=True)
class SignedJson:
    """A signed collateral object: its exact text and the raw ``r‖s`` signature over it."""

    text: str
    signature: bytes

    def pcs_response(self, member: str) -> str:
        """The Intel PCS response body ``{"tcbInfo":<text>,"signature":"<hex>"}``; text verbatim."""
        return f'{{"{member}":{self.text},"signature":"{self.signature.hex()}"}}'


def sign_json(text: str, key: ec.EllipticCurvePrivateKey) -> SignedJson:
    return SignedJson(text, sign_raw(key, text.encode()))


def quote_collateral_v3_json(
    *,
    pck_crl_issuer_chain: str,
    root_ca_crl: bytes,
    pck_crl: bytes,
    tcb_info_issuer_chain: str,
    tcb_info: SignedJson,
    qe_identity_issuer_chain: str,
    qe_identity: SignedJson,
) -> str:
    """dcap-qvl ``QuoteCollateralV3`` JSON, field names and order of docs/attestation.md §9 (indent 2, as the
    real vectors)."""
    doc = {
        "pck_crl_issuer_chain": pck_crl_issuer_chain,
        "root_ca_crl": root_ca_crl.hex(),
        "pck_crl": pck_crl.hex(),
        "tcb_info_issuer_chain": tcb_info_issuer_chain,
        "tcb_info": tcb_info.text,
        "tcb_info_signature": tcb_info.signature.hex(),
        "qe_identity_issuer_chain": qe_identity_issuer_chain,
        "qe_identity": qe_identity.text,
        "qe_identity_signature": qe_identity.signature.hex(),
    }
    return json.dumps(doc, indent=2) + "\n"

"""Collateral: dcap-qvl ``QuoteCollateralV3`` JSON, TCB Info (id TDX, v3) and QE Identity (id TD_QE)
(docs/attestation.md §9).

The TCB Info and QE Identity signatures cover the exact text of the inner JSON object, so the text is kept
verbatim (``tcb_info_text``/``qe_identity_text``) and parsed separately; nothing is re-serialised. When a
field holds a JSON object instead of its text (Intel PCS responses embedded as objects), ``slice_json_member``
cuts the member's exact source text out of the document.

``parse_collateral`` shape-checks every member up front (JSON, hex, PEM chains that parse, DER CRLs that
parse, TCB Info and QE Identity of the right id/version with every field well-formed) and raises
``CollateralError`` for unusable collateral; what it returns can still fail verification (signatures, chains,
validity windows, revocation), which only ``attest.verifier.dcap.quote_verifier`` decides.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from attest.errors import CollateralError
from attest.formats import x509_input
from attest.jsonutil import loads_json

COLLATERAL_FIELDS = (
    "pck_crl_issuer_chain",
    "root_ca_crl",
    "pck_crl",
    "tcb_info_issuer_chain",
    "tcb_info",
    "tcb_info_signature",
    "qe_identity_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
)
TCB_INFO_ID_TDX = "TDX"
TCB_INFO_MIN_VERSION = 3
QE_IDENTITY_ID_TD_QE = "TD_QE"
QE_IDENTITY_VERSIONS = (2, 3)  # Intel serves 2; dcap-qvl also accepts 3
TCB_STATUSES = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)


def slice_json_member(text: str, key: str) -> str:
    """Exact source text of member ``key`` of the top-level JSON object in ``text`` (never re-serialised)."""
    decoder = json.JSONDecoder()
    ws = " \t\n\r"
    try:
        pos = len(text) - len(text.lstrip(ws))
        if text[pos] != "{":
            raise CollateralError("collateral is not a json object")
        pos += 1
        while True:
            while text[pos] in ws:
                pos += 1
            if text[pos] == "}":
                break
            name, pos = json.decoder.scanstring(text, pos + 1)  # type: ignore[attr-defined]
            while text[pos] in ws:
                pos += 1
            if text[pos] != ":":
                raise CollateralError("malformed collateral json")
            pos += 1
            while text[pos] in ws:
                pos += 1
            _, end = decoder.raw_decode(text, pos)
            if name == key:
                return text[pos:end]
            pos = end
            while text[pos] in ws:
                pos += 1
            if text[pos] == ",":
                pos += 1
    except (IndexError, ValueError) as exc:
        raise CollateralError(f"malformed collateral json: {exc}") from None
    except RecursionError:
        raise CollateralError("malformed collateral json: nested too deeply") from None
    raise CollateralError(f"collateral has no {key}")


@dataclass(frozen=True)
class Collateral:
    """The nine ``QuoteCollateralV3`` items; PEM chains as text, CRLs as DER, signatures as raw r||s."""

    pck_crl_issuer_chain: str
    root_ca_crl: bytes
    pck_crl: bytes
    tcb_info_issuer_chain: str
    tcb_info_text: str
    tcb_info_signature: bytes
    qe_identity_issuer_chain: str
    qe_identity_text: str
    qe_identity_signature: bytes

    @property
    def digest(self) -> bytes:
        """SHA-256 over every item, the cache key of verified collateral."""
        h = hashlib.sha256()
        for item in (
            self.pck_crl_issuer_chain.encode(),
            self.root_ca_crl,
            self.pck_crl,
            self.tcb_info_issuer_chain.encode(),
            self.tcb_info_text.encode(),
            self.tcb_info_signature,
            self.qe_identity_issuer_chain.encode(),
            self.qe_identity_text.encode(),
            self.qe_identity_signature,
        ):
            h.update(len(item).to_bytes(8, "little") + item)
        return h.digest()


def _hex(doc: dict[str, Any], key: str, size: int | None = None) -> bytes:
    value = doc[key]
    if not isinstance(value, str):
        raise CollateralError(f"{key} must be a hex string")
    try:
        out = bytes.fromhex(value)
    except ValueError:
        raise CollateralError(f"{key} is not hex") from None
    if size is not None and len(out) != size:
        raise CollateralError(f"{key} must be {size} bytes, got {len(out)}")
    return out


def _pem_chain(doc: dict[str, Any], key: str) -> str:
    value = doc[key]
    what = f"{key} is not a pem certificate chain"
    if not isinstance(value, str) or x509_input.PEM_CERTIFICATE.decode() not in value:
        raise CollateralError(what)
    x509_input.certificates(value, lambda why: CollateralError(f"{what}: {why}"))
    return value


def _der_crl(doc: dict[str, Any], key: str) -> bytes:
    der = _hex(doc, key)
    x509_input.crl(der, lambda why: CollateralError(f"{key} is {why}"))
    return der


def _utf8(text: str, what: str) -> str:
    """``text`` when it encodes as UTF-8 (the signed bytes are its encoding); a lone surrogate from a JSON
    escape such as ``"\\ud800"`` cannot be signed or checked."""
    try:
        text.encode()
    except UnicodeEncodeError:
        raise CollateralError(f"{what} is not valid unicode text") from None
    return text


def parse_collateral(text: str) -> Collateral:
    """Parse dcap-qvl ``QuoteCollateralV3`` JSON text (field names of docs/attestation.md §9).

    Every member is checked for shape here (``CollateralError``: the collateral is unusable), so a
    ``Collateral`` only fails verification for what verification decides (signature, chain, time, revocation).
    """
    doc = loads_json(text, "collateral", CollateralError)
    if not isinstance(doc, dict):
        raise CollateralError("collateral is not a json object")
    missing = [k for k in COLLATERAL_FIELDS if k not in doc]
    if missing:
        raise CollateralError(f"collateral lacks {', '.join(missing)}")
    signed: dict[str, str] = {}
    for key in ("tcb_info", "qe_identity"):
        value = doc[key]
        signed[key] = _utf8(value if isinstance(value, str) else slice_json_member(text, key), key)
    parse_tcb_info(signed["tcb_info"])
    parse_qe_identity(signed["qe_identity"])
    return Collateral(
        pck_crl_issuer_chain=_pem_chain(doc, "pck_crl_issuer_chain"),
        root_ca_crl=_der_crl(doc, "root_ca_crl"),
        pck_crl=_der_crl(doc, "pck_crl"),
        tcb_info_issuer_chain=_pem_chain(doc, "tcb_info_issuer_chain"),
        tcb_info_text=signed["tcb_info"],
        tcb_info_signature=_hex(doc, "tcb_info_signature", 64),
        qe_identity_issuer_chain=_pem_chain(doc, "qe_identity_issuer_chain"),
        qe_identity_text=signed["qe_identity"],
        qe_identity_signature=_hex(doc, "qe_identity_signature", 64),
    )


def parse_time(value: object, what: str) -> int:
    """RFC 3339 UTC time ("2025-06-19T10:16:03Z") to unix seconds."""
    if not isinstance(value, str):
        raise CollateralError(f"{what} is not a time string")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise CollateralError(f"{what} is not an rfc 3339 time") from None
    if dt.tzinfo is None:
        raise CollateralError(f"{what} has no time zone")
    return int(dt.timestamp())


@dataclass(frozen=True)
class TcbLevel:
    """A ``tcbLevels`` entry of TCB Info: 16 SGX SVNs, PCESVN, 16 TDX SVNs, status and advisories."""

    sgx_components: tuple[int, ...]
    pce_svn: int
    tdx_components: tuple[int, ...]
    tcb_date: str
    status: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class IsvTcbLevel:
    """A ``tcbLevels`` entry of QE Identity or of a TDX module identity: ISVSVN, status, advisories."""

    isv_svn: int
    tcb_date: str
    status: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class TdxModuleIdentity:
    """``tdxModule`` (id "", no levels) or a ``tdxModuleIdentities`` entry ("TDX_01", …)."""

    id: str
    mrsigner: bytes
    attributes: bytes
    attributes_mask: bytes
    tcb_levels: tuple[IsvTcbLevel, ...]


@dataclass(frozen=True)
class TcbInfo:
    id: str
    version: int
    issue_date: int
    next_update: int
    fmspc: bytes
    pce_id: bytes
    tcb_type: int
    tcb_evaluation_data_number: int
    tdx_module: TdxModuleIdentity | None
    tdx_module_identities: tuple[TdxModuleIdentity, ...]
    tcb_levels: tuple[TcbLevel, ...]


@dataclass(frozen=True)
class QeIdentity:
    id: str
    version: int
    issue_date: int
    next_update: int
    tcb_evaluation_data_number: int
    miscselect: bytes
    miscselect_mask: bytes
    attributes: bytes
    attributes_mask: bytes
    mrsigner: bytes
    isv_prod_id: int
    tcb_levels: tuple[IsvTcbLevel, ...]


def _int(doc: dict[str, Any], key: str) -> int:
    value = doc[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise CollateralError(f"{key} must be an integer")
    return value


def _status(doc: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    status = doc["tcbStatus"]
    if status not in TCB_STATUSES:
        raise CollateralError(f"unknown tcb status {status!r}")
    advisories = doc.get("advisoryIDs", [])
    if not isinstance(advisories, list) or not all(isinstance(a, str) for a in advisories):
        raise CollateralError("advisoryIDs must be a list of strings")
    return status, tuple(advisories)


def _isv_levels(levels: Any) -> tuple[IsvTcbLevel, ...]:
    if not isinstance(levels, list):
        raise CollateralError("tcbLevels must be a list")
    out = []
    for level in levels:
        status, adv = _status(level)
        out.append(IsvTcbLevel(_int(level["tcb"], "isvsvn"), str(level["tcbDate"]), status, adv))
    return tuple(out)


def _module(doc: dict[str, Any], with_levels: bool) -> TdxModuleIdentity:
    return TdxModuleIdentity(
        id=str(doc.get("id", "")),
        mrsigner=_hex(doc, "mrsigner", 48),
        attributes=_hex(doc, "attributes", 8),
        attributes_mask=_hex(doc, "attributesMask", 8),
        tcb_levels=_isv_levels(doc["tcbLevels"]) if with_levels else (),
    )


def _components(items: Any, what: str) -> tuple[int, ...]:
    if not isinstance(items, list) or len(items) != 16:
        raise CollateralError(f"{what} must list 16 components")
    return tuple(_int(c, "svn") for c in items)


def _load_object(text: str, what: str) -> dict[str, Any]:
    doc = loads_json(text, what, CollateralError)
    if not isinstance(doc, dict):
        raise CollateralError(f"{what} is not a json object")
    return doc


def parse_tcb_info(text: str) -> TcbInfo:
    """Parse the exact ``tcbInfo`` text; requires id TDX and version >= 3 (docs/attestation.md §7 step 2)."""
    doc = _load_object(text, "tcb info")
    try:
        if doc["id"] != TCB_INFO_ID_TDX or _int(doc, "version") < TCB_INFO_MIN_VERSION:
            raise CollateralError(f"tcb info is {doc['id']} v{doc['version']}, expected TDX v3")
        levels = []
        for level in doc["tcbLevels"]:
            tcb = level["tcb"]
            status, adv = _status(level)
            levels.append(
                TcbLevel(
                    sgx_components=_components(tcb["sgxtcbcomponents"], "sgxtcbcomponents"),
                    pce_svn=_int(tcb, "pcesvn"),
                    tdx_components=_components(tcb["tdxtcbcomponents"], "tdxtcbcomponents"),
                    tcb_date=str(level["tcbDate"]),
                    status=status,
                    advisory_ids=adv,
                )
            )
        return TcbInfo(
            id=doc["id"],
            version=doc["version"],
            issue_date=parse_time(doc["issueDate"], "tcb info issueDate"),
            next_update=parse_time(doc["nextUpdate"], "tcb info nextUpdate"),
            fmspc=_hex(doc, "fmspc", 6),
            pce_id=_hex(doc, "pceId", 2),
            tcb_type=_int(doc, "tcbType"),
            tcb_evaluation_data_number=_int(doc, "tcbEvaluationDataNumber"),
            tdx_module=_module(doc["tdxModule"], False) if "tdxModule" in doc else None,
            tdx_module_identities=tuple(_module(m, True) for m in doc.get("tdxModuleIdentities", [])),
            tcb_levels=tuple(levels),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise CollateralError(f"malformed tcb info: {exc!r}") from None


def parse_qe_identity(text: str) -> QeIdentity:
    """Parse the exact ``enclaveIdentity`` text; requires id TD_QE, version 2 or 3."""
    doc = _load_object(text, "qe identity")
    try:
        if doc["id"] != QE_IDENTITY_ID_TD_QE or doc["version"] not in QE_IDENTITY_VERSIONS:
            raise CollateralError(f"qe identity is {doc['id']} v{doc['version']}, expected TD_QE v2")
        return QeIdentity(
            id=doc["id"],
            version=doc["version"],
            issue_date=parse_time(doc["issueDate"], "qe identity issueDate"),
            next_update=parse_time(doc["nextUpdate"], "qe identity nextUpdate"),
            tcb_evaluation_data_number=_int(doc, "tcbEvaluationDataNumber"),
            miscselect=_hex(doc, "miscselect", 4),
            miscselect_mask=_hex(doc, "miscselectMask", 4),
            attributes=_hex(doc, "attributes", 16),
            attributes_mask=_hex(doc, "attributesMask", 16),
            mrsigner=_hex(doc, "mrsigner", 32),
            isv_prod_id=_int(doc, "isvprodid"),
            tcb_levels=_isv_levels(doc["tcbLevels"]),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise CollateralError(f"malformed qe identity: {exc!r}") from None

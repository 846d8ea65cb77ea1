"""JSON-ready library functions behind ``tdxsim quote inspect`` and ``tdxsim quote verify``.

The CLI wiring (argument parsing, files, exit codes) lives in ``tdxsim/``; these functions take bytes and text
and return plain dicts. A quote is given as bytes holding the binary quote or its hex text (``0x`` prefix and
whitespace allowed, ``attest.formats.quote.quote_bytes``). Contract for exit codes: ``inspect``/``verify``
raise ``QuoteFormatError`` (quote does not decode), ``CollateralError`` (collateral JSON unusable) or
``CertificateChainError`` (a root does not parse) for unusable input -> exit 2; otherwise ``verify``
returns ``verdict`` ``accepted`` (exit 0) or ``rejected`` with ``error`` = "<step>: <reason>" (exit 1). Steps
are those of docs/attestation.md §7, and ``td_attributes``.

Verdicts are dcap-qvl's (docs/attestation.md §14): a quote that passes every step of §7 is still rejected for
its TD attributes as dcap-qvl 0.7.0 rejects it, in its order and words, after every other check
(``td_attributes_refusal``): a TD 1.5 body with a non-zero MR_SERVICETD, DEBUG ("td_attributes: Debug mode is
enabled"), TD profiling (bits 4–6), reserved bits, TD migration (bit 29), SERVTD_EXT (bit 17), a missing
SEPT_VE_DISABLE. A caller whose policy decides on DEBUG allows it (``allow_debug``); the other rules stand.

Both report whether the PCK chain ends at a tdxsim simulated root (``simulated``, from the names' simulation
marker, ``attest.formats.pck_names``) or at Intel's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from attest.errors import AttestError, CertificateChainError, TcbRevoked
from attest.formats import layout as L
from attest.formats import pck_names
from attest.formats.collateral import parse_collateral
from attest.formats.pck_extension import pck_extension_of
from attest.formats.quote import Quote, TdReport10, TdReport15, decode_quote, quote_bytes
from attest.verifier.dcap.quote_verifier import Verifier, load_anchors
from attest.verifier.dcap.roots import INTEL_SGX_ROOT_CA_PEM

DEBUG_REJECTION = "td_attributes: Debug mode is enabled"
"""The rejection of a DEBUG TD without a policy: dcap-qvl's message under this module's step naming."""
DEBUG = 1 << 0
TD_PROFILING = 0b111 << 4  # bits 4–6
SERVTD_EXT = 1 << 17
SEPT_VE_DISABLE = 1 << 28
MIGRATABLE = 1 << 29
ACCEPTED_ATTRIBUTES = sum(1 << b for b in (16, 18, 19, 20, 21, 22, 27, 28, 30, 31, 62, 63))
"""TDATTRIBUTES bits dcap-qvl 0.7.0 lets pass (docs/attestation.md §14); every other bit refuses the TD."""
RESERVED_ATTRIBUTES = ((1 << 64) - 1) & ~(
    DEBUG | TD_PROFILING | SERVTD_EXT | MIGRATABLE | ACCEPTED_ATTRIBUTES
)


def td_attributes_refusal(body: TdReport10, *, allow_debug: bool = False) -> tuple[str, str] | None:
    """``(error_type, error)`` when dcap-qvl 0.7.0 refuses a verified quote for its TD report body, its first
    reason in its order (docs/attestation.md §14); None when it does not. ``allow_debug`` skips DEBUG only."""
    if isinstance(body, TdReport15) and any(body.mr_service_td):
        return "TdAttributes", "td_report: Invalid MR service TD"
    attributes = int.from_bytes(body.td_attributes, "little")
    for bit_mask, error_type, message in (
        (0 if allow_debug else DEBUG, "DebugTd", "Debug mode is enabled"),
        (TD_PROFILING, "TdAttributes", "TD profiling is enabled"),
        (RESERVED_ATTRIBUTES, "TdAttributes", "Reserved bits in TD attributes are set"),
        (MIGRATABLE, "TdAttributes", "TD migration is enabled"),
        (SERVTD_EXT, "TdAttributes", "SERVTD_EXT is enabled"),
    ):
        if attributes & bit_mask:
            return error_type, f"td_attributes: {message}"
    if not attributes & SEPT_VE_DISABLE:
        return "TdAttributes", "td_attributes: SEPT_VE_DISABLE is not enabled"
    return None


def report_fields(body: TdReport10) -> dict[str, Any]:
    """The TD report body as hex strings (names of docs/attestation.md §3, rtmrN for RTMR[N])."""
    names = L.TD_REPORT15_FIELDS if isinstance(body, TdReport15) else L.TD_REPORT10_FIELDS
    out: dict[str, Any] = {name: getattr(body, name).hex() for name, _ in names}
    out["td_debug"] = body.is_debug
    return out


def _header_fields(quote: Quote) -> dict[str, Any]:
    h = quote.header
    return {
        "version": h.version,
        "attestation_key_type": h.attestation_key_type,
        "tee_type": f"{h.tee_type:#x}",
        "qe_svn": h.qe_svn,
        "pce_svn": h.pce_svn,
        "qe_vendor_id": h.qe_vendor_id.hex(),
        "user_data": h.user_data.hex(),
    }


def pck_chain_root(quote: Quote) -> dict[str, Any]:
    """Whose root the quote's PCK chain names, without verifying it: ``intel`` when the chain carries Intel's
    SGX Root CA certificate, ``tdxsim`` when its names carry tdxsim's simulation marker, else ``unknown``;
    with the top certificate's subject and SHA-256."""
    try:
        chain = [x509.load_pem_x509_certificate(pem) for pem in quote.pck_chain.pem_certificates()]
        top = chain[-1]
        ders = [c.public_bytes(Encoding.DER) for c in chain]
        names = [n for c in chain for n in (c.subject, c.issuer)]
        subject = top.subject.rfc4514_string()
    except (AttestError, ValueError, TypeError, IndexError, x509.InvalidVersion):
        return {"root": "unknown", "simulated": False, "subject": None, "sha256": None}
    intel = x509.load_pem_x509_certificate(INTEL_SGX_ROOT_CA_PEM).public_bytes(Encoding.DER)
    simulated = intel not in ders and any(pck_names.is_simulated(n) for n in names)
    root = "intel" if intel in ders else "tdxsim" if simulated else "unknown"
    return {
        "root": root,
        "simulated": simulated,
        "subject": subject,
        "sha256": hashlib.sha256(ders[-1]).hexdigest(),
    }


def inspect(quote_input: bytes) -> dict[str, Any]:
    """Decode a quote (no verification): header, body type, report fields, sizes, PCK platform identity, and
    whether its chain is a tdxsim simulation."""
    quote = decode_quote(quote_bytes(quote_input))
    chain_root = pck_chain_root(quote)
    sd = quote.signature_data
    out: dict[str, Any] = {
        "header": _header_fields(quote),
        "body_type": quote.body_type,
        "report": report_fields(quote.body),
        "signed_region_size": quote.signed_region_size,
        "signature_data_size": len(sd.encode()),
        "trailing_bytes": len(quote.trailing),
        "attestation_key": sd.attestation_key.hex(),
        "qe_report": {
            "mr_signer": sd.certification_data.qe_report.mr_signer.hex(),
            "isv_prod_id": sd.certification_data.qe_report.isv_prod_id,
            "isv_svn": sd.certification_data.qe_report.isv_svn,
            "report_data": sd.certification_data.qe_report.report_data.hex(),
        },
        "qe_auth_data_size": len(sd.certification_data.qe_auth_data),
        "pck_certification_type": quote.pck_chain.cert_type,
        "pck_chain_root": chain_root,
        "simulated": chain_root["simulated"],
    }
    try:
        pem = quote.pck_chain.pem_certificates()[0]
        ext = pck_extension_of(x509.load_pem_x509_certificate(pem))
    except (AttestError, ValueError, IndexError):
        out["pck"] = None
    else:
        out["pck"] = {
            "fmspc": ext.fmspc.hex().upper(),
            "pce_id": ext.pce_id.hex(),
            "pce_svn": ext.pce_svn,
            "cpu_svn": ext.cpu_svn.hex(),
            "sgx_type": ext.sgx_type,
            "ppid": ext.ppid.hex(),
        }
    return out


def verify(
    quote_input: bytes,
    collateral_json_text: str,
    at_unix: int,
    roots: Sequence[bytes],
    *,
    verifier: Verifier | None = None,
    allow_debug: bool = False,
) -> dict[str, Any]:
    """Verify a quote (binary or hex) against ``QuoteCollateralV3`` JSON at ``at_unix``; ``roots`` (PEM/DER)
    are the anchors.

    ``verifier`` (optional) reuses a caching ``Verifier`` (its own anchors then apply and ``roots`` is
    ignored). ``allow_debug`` accepts a DEBUG TD that verifies (for a caller whose policy decides on DEBUG).
    """
    raw = quote_bytes(quote_input)
    quote = decode_quote(raw)
    collateral = parse_collateral(collateral_json_text)
    if verifier is None:
        anchors = load_anchors(list(roots))
        if not anchors:
            raise CertificateChainError("no trust anchor given")
        verifier = Verifier(anchors, cache_size=0)
    out: dict[str, Any] = {
        "verdict": "rejected",
        "tcb_status": None,
        "advisory_ids": [],
        "at_unix": at_unix,
        "header": _header_fields(quote),
        "body_type": quote.body_type,
        "report": report_fields(quote.body),
        "simulated": pck_chain_root(quote)["simulated"],
    }
    try:
        result = verifier.verify(raw, collateral, at_unix)
    except TcbRevoked as err:
        out.update(tcb_status="Revoked", advisory_ids=list(err.advisory_ids), error=f"{err.step}: {err}")
        out["error_type"] = type(err).__name__
        return out
    except AttestError as err:
        out["error"] = f"{err.step}: {err}"
        out["error_type"] = type(err).__name__
        return out
    out.update(
        verdict="accepted",
        tcb_status=result.status,
        advisory_ids=list(result.advisory_ids),
        platform_tcb_status=result.platform_status.status,
        qe_tcb_status=result.qe_status.status,
        tdx_module_tcb_status=result.module_status.status,
        tcb_date=result.platform_status.tcb_date,
        tcb_evaluation_data_number=result.tcb_evaluation_data_number,
        fmspc=result.pck.fmspc.hex().upper(),
        pce_id=result.pck.pce_id.hex(),
        sgx_type=result.pck.sgx_type,
        collateral_valid_from=result.collateral_window[0],
        collateral_valid_until=result.collateral_window[1],
    )
    refusal = td_attributes_refusal(quote.body, allow_debug=allow_debug)
    if refusal is not None:
        out.update(verdict="rejected", error=refusal[1], error_type=refusal[0])
    return out

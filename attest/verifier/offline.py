"""JSON-ready library functions behind ``tdxsim quote inspect`` and ``tdxsim quote verify``.

The CLI wiring (argument parsing, files, exit codes) lives in ``tdxsim/``; these functions take bytes and text
and return plain dicts. Contract for exit codes: ``inspect``/``verify`` raise ``QuoteFormatError`` (quote does
not decode), ``CollateralError`` (collateral JSON unusable) or ``CertificateChainError`` (a root does not
parse) for unusable input -> exit 2; otherwise ``verify`` returns ``verdict`` ``accepted`` (exit 0) or
``rejected`` with ``error`` = "<step>: <reason>" (exit 1). Steps are those of docs/attestation.md §7.

Verification is not appraisal: a DEBUG TD is ``accepted`` here with ``report.td_debug`` true.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cryptography import x509

from attest.errors import AttestError, CertificateChainError, TcbRevoked
from attest.formats import layout as L
from attest.formats.collateral import parse_collateral
from attest.formats.pck_extension import pck_extension_of
from attest.formats.quote import Quote, TdReport10, TdReport15, decode_quote
from attest.verifier.dcap.quote_verifier import Verifier, load_anchors


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


def inspect(quote_bytes: bytes) -> dict[str, Any]:
    """Decode a quote (no verification): header, body type, report fields, sizes, PCK platform identity."""
    quote = decode_quote(quote_bytes)
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
    quote_bytes: bytes,
    collateral_json_text: str,
    at_unix: int,
    roots: Sequence[bytes],
    *,
    verifier: Verifier | None = None,
) -> dict[str, Any]:
    """Verify a quote against ``QuoteCollateralV3`` JSON at ``at_unix``; ``roots`` (PEM/DER) are the anchors.

    ``verifier`` (optional) reuses a caching ``Verifier`` (its own anchors then apply and ``roots`` is
    ignored).
    """
    quote = decode_quote(quote_bytes)
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
    }
    try:
        result = verifier.verify(quote_bytes, collateral, at_unix)
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
    return out

"""DCAP verification of TDX quotes v4/v5 in Intel's order (docs/attestation.md §7), as small named steps.

Each step takes explicit inputs (``now`` too: time is an input, unix seconds) and returns what the next needs;
a failing step raises the named exception of ``attest.errors`` with ``err.step`` set to the step's name.
Verification is not policy: a DEBUG TD verifies here (``VerifiedQuote.is_debug`` exposes it; appraisal
refuses).

Caching (``Verifier``): the collateral checks (steps 2–3) depend only on the collateral, the anchors and
``now``; the PCK chain checks (step 4) only on the PCK chain, the collateral's CRLs and ``now``. Both are
cached with the exact time window over which they hold; a ``now`` outside the window re-runs the checks (and
so raises the same error a cold verification would). Steps 1 and 5–13 run on every call, so every byte of the
quote is checked every time.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from attest.errors import (
    AttestError,
    CertificateChainError,
    CollateralError,
    CollateralExpired,
    CollateralNotYetValid,
    QeIdentityMismatch,
    QeReportBindingError,
    QuoteFormatError,
    TcbRevoked,
    TdxModuleMismatch,
)
from attest.formats import layout as L
from attest.formats.collateral import (
    Collateral,
    QeIdentity,
    TcbInfo,
    TdxModuleIdentity,
    parse_qe_identity,
    parse_tcb_info,
)
from attest.formats.pck_extension import PckExtension, pck_extension_of
from attest.formats.quote import EnclaveReport, Quote, TdReport10, decode_quote
from attest.verifier.dcap import chains, tcb

_K = TypeVar("_K")
_V = TypeVar("_V")
PCK_LEAF_CN_MARKER = "SGX PCK Certificate"
QE_ATTRIBUTE_DEBUG = 0x02  # SGX ATTRIBUTES byte 0 bit 1


@contextmanager
def _step(name: str) -> Iterator[None]:
    """Attribute any attestation failure raised inside to step ``name`` (innermost step wins)."""
    try:
        yield
    except AttestError as err:
        if err.step is None:
            err.step = name
        raise


# --- step 1: header -----------------------------------------------------------------------------------------


def check_header(quote: Quote) -> None:
    """Step 1: version/key type/TEE type (already enforced by the codec), Intel QE vendor ID, inner cert type
    5."""
    if quote.header.qe_vendor_id != L.INTEL_QE_VENDOR_ID:
        raise QuoteFormatError(f"unsupported qe vendor id {quote.header.qe_vendor_id.hex()}")
    if quote.pck_chain.cert_type != L.CERT_TYPE_PCK_CHAIN:
        raise QuoteFormatError(f"unsupported pck certification data type {quote.pck_chain.cert_type}")


# --- step 2: collateral signatures and windows --------------------------------------------------------------


def _check_window(issue: int, next_update: int, now: int, what: str) -> None:
    if now < issue:
        raise CollateralNotYetValid(f"{what} issue date is in the future")
    if now > next_update:
        raise CollateralExpired(f"{what} expired")


def verify_tcb_info(
    collateral: Collateral, anchors: Sequence[x509.Certificate], now: int
) -> tuple[TcbInfo, chains.VerifiedChain]:
    """Step 2a: TCB Info id/version, ``issueDate <= now <= nextUpdate``, signer chain, signature over the
    text."""
    info = parse_tcb_info(collateral.tcb_info_text)
    _check_window(info.issue_date, info.next_update, now, "tcbinfo")
    chain = chains.verify_chain(
        chains.load_certificates(collateral.tcb_info_issuer_chain, "tcb info issuer chain"),
        anchors,
        now,
        "tcb info issuer chain",
    )
    key = chains.ec_key_of(chain.leaf, "tcb signing certificate")
    chains.verify_raw_signature(
        key, collateral.tcb_info_signature, collateral.tcb_info_text.encode(), "tcbinfo"
    )
    return info, chain


def verify_qe_identity(
    collateral: Collateral, anchors: Sequence[x509.Certificate], now: int
) -> tuple[QeIdentity, chains.VerifiedChain]:
    """Step 2b: QE Identity id TD_QE, window, signer chain, signature over the exact text."""
    ident = parse_qe_identity(collateral.qe_identity_text)
    _check_window(ident.issue_date, ident.next_update, now, "qe identity")
    chain = chains.verify_chain(
        chains.load_certificates(collateral.qe_identity_issuer_chain, "qe identity issuer chain"),
        anchors,
        now,
        "qe identity issuer chain",
    )
    key = chains.ec_key_of(chain.leaf, "qe identity signing certificate")
    chains.verify_raw_signature(
        key, collateral.qe_identity_signature, collateral.qe_identity_text.encode(), "qe identity"
    )
    return ident, chain


# --- step 3: CRLs -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedCrls:
    root: chains.VerifiedCrl
    pck: chains.VerifiedCrl
    pck_crl_chain: chains.VerifiedChain

    def check_not_revoked(self, chain: chains.VerifiedChain, what: str) -> None:
        """No certificate of ``chain`` below the anchor is listed by the root CA CRL or the PCK CRL."""
        for cert in chain.certificates[:-1]:
            self.root.check_not_revoked(cert, what)
            self.pck.check_not_revoked(cert, what)


def verify_crls(collateral: Collateral, anchors: Sequence[x509.Certificate], now: int) -> VerifiedCrls:
    """Step 3: root CA CRL signed by a trust anchor and current; PCK CRL signed by its (verified) issuer and
    current; the collateral signing chains not revoked."""
    root_crl = chains.load_crl(collateral.root_ca_crl, "root ca crl")
    issuer = next((a for a in anchors if a.subject == root_crl.issuer), None)
    if issuer is None:
        raise CertificateChainError("root ca crl is not issued by a trust anchor")
    root = chains.verify_crl(root_crl, issuer, now, "root ca crl")
    pck_chain = chains.verify_chain(
        chains.load_certificates(collateral.pck_crl_issuer_chain, "pck crl issuer chain"),
        anchors,
        now,
        "pck crl issuer chain",
    )
    pck = chains.verify_crl(chains.load_crl(collateral.pck_crl, "pck crl"), pck_chain.leaf, now, "pck crl")
    crls = VerifiedCrls(root, pck, pck_chain)
    crls.check_not_revoked(pck_chain, "pck crl issuer")
    return crls


@dataclass(frozen=True)
class VerifiedCollateral:
    """Result of steps 2–3, valid for any ``now`` inside ``window``."""

    tcb_info: TcbInfo
    qe_identity: QeIdentity
    crls: VerifiedCrls
    window: chains.Window


def verify_collateral(
    collateral: Collateral, anchors: Sequence[x509.Certificate], now: int
) -> VerifiedCollateral:
    """Steps 2–3 together; the returned window is the intersection of every checked validity period."""
    with _step("collateral"):
        tcb_info, tcb_chain = verify_tcb_info(collateral, anchors, now)
        qe_identity, qe_chain = verify_qe_identity(collateral, anchors, now)
    with _step("crl"):
        crls = verify_crls(collateral, anchors, now)
        crls.check_not_revoked(tcb_chain, "tcb info signing")
        crls.check_not_revoked(qe_chain, "qe identity signing")
    window = chains.intersect(
        (tcb_info.issue_date, tcb_info.next_update),
        (qe_identity.issue_date, qe_identity.next_update),
        tcb_chain.window,
        qe_chain.window,
        crls.root.window,
        crls.pck.window,
        crls.pck_crl_chain.window,
    )
    return VerifiedCollateral(tcb_info, qe_identity, crls, window)


# --- step 4: PCK chain --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedPck:
    """The PCK leaf key and SGX extension, valid for any ``now`` inside ``window``."""

    chain: chains.VerifiedChain
    public_key: ec.EllipticCurvePublicKey
    extension: PckExtension
    window: chains.Window


def verify_pck_chain(
    quote: Quote, anchors: Sequence[x509.Certificate], crls: VerifiedCrls | None, now: int
) -> VerifiedPck:
    """Step 4: PCK leaf -> Platform/Processor CA -> trust anchor; leaf CN; PCK CRL issuer == leaf issuer; no
    certificate revoked; SGX extension parsed. ``crls=None`` skips revocation (signature-link checks only)."""
    try:
        pems = quote.pck_chain.pem_certificates()
    except QuoteFormatError as exc:
        raise CertificateChainError(str(exc)) from None
    certs = [chains.load_certificates(pem, "pck chain")[0] for pem in pems]
    if not certs:
        raise CertificateChainError("pck chain is empty")
    chain = chains.verify_chain(certs, anchors, now, "pck chain")
    cn = chain.leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if not cn or PCK_LEAF_CN_MARKER not in str(cn[0].value):
        raise CertificateChainError("pck leaf is not an sgx pck certificate")
    window = chain.window
    if crls is not None:
        if crls.pck.crl.issuer != chain.leaf.issuer:
            raise CertificateChainError("pck crl issuer is not the pck certificate issuer")
        crls.check_not_revoked(chain, "pck chain")
    key = chains.ec_key_of(chain.leaf, "pck certificate")
    return VerifiedPck(chain, key, pck_extension_of(chain.leaf), window)


# --- steps 5–13 ---------------------------------------------------------------------------------------------


def check_platform(tcb_info: TcbInfo, pck: VerifiedPck) -> None:
    """Step 5: TCB Info FMSPC and PCEID equal the PCK certificate's."""
    if tcb_info.fmspc != pck.extension.fmspc:
        raise CollateralError(
            f"fmspc mismatch: tcb info {tcb_info.fmspc.hex()}, pck {pck.extension.fmspc.hex()}"
        )
    if tcb_info.pce_id != pck.extension.pce_id:
        raise CollateralError(
            f"pceid mismatch: tcb info {tcb_info.pce_id.hex()}, pck {pck.extension.pce_id.hex()}"
        )


def check_tdx_module(tcb_info: TcbInfo, body: TdReport10) -> tcb.TcbStatus:
    """Step 6: TEE_TCB_SVN[1] > 0 selects ``tdxModuleIdentities`` ``TDX_%02X`` (else ``tdxModule``);
    MRSIGNERSEAM must equal its ``mrsigner``, SEAMATTRIBUTES be zero and equal ``attributes`` under the mask.
    Returns the module's TCB status (UpToDate when the identity has no levels)."""
    major = body.tee_tcb_svn[1]
    ident: TdxModuleIdentity | None
    if major > 0:
        wanted = f"TDX_{major:02X}"
        ident = next((m for m in tcb_info.tdx_module_identities if m.id == wanted), None)
        if ident is None:
            raise TdxModuleMismatch(f"no tdx module identity {wanted}")
    else:
        ident = tcb_info.tdx_module
        if ident is None:
            raise TdxModuleMismatch("tcb info has no tdxModule")
    if body.mr_signer_seam != ident.mrsigner:
        raise TdxModuleMismatch("mrsignerseam mismatch")
    if any(body.seam_attributes):
        raise TdxModuleMismatch("seamattributes must be zero")
    masked = bytes(a & m for a, m in zip(body.seam_attributes, ident.attributes_mask, strict=True))
    expected = bytes(a & m for a, m in zip(ident.attributes, ident.attributes_mask, strict=True))
    if masked != expected:
        raise TdxModuleMismatch("seamattributes mismatch")
    if not ident.tcb_levels:
        return tcb.TcbStatus(tcb.UP_TO_DATE)
    return tcb.match_isv_level(body.tee_tcb_svn[0], ident.tcb_levels, "tdx module")


def verify_qe_report_signature(quote: Quote, pck: VerifiedPck) -> EnclaveReport:
    """Step 7: the QE report is signed by the PCK leaf key."""
    cd = quote.signature_data.certification_data
    chains.verify_raw_signature(pck.public_key, cd.qe_report_signature, cd.qe_report.encode(), "qe report")
    return cd.qe_report


def verify_qe_report_data(quote: Quote) -> None:
    """Step 8: QE REPORTDATA[0:32] == SHA-256(attestation key || QE auth data)."""
    sd = quote.signature_data
    digest = hashlib.sha256(sd.attestation_key + sd.certification_data.qe_auth_data).digest()
    if sd.certification_data.qe_report.report_data[:32] != digest:
        raise QeReportBindingError("qe report hash mismatch")


def check_qe_identity(qe_report: EnclaveReport, ident: QeIdentity) -> tcb.TcbStatus:
    """Step 9: MRSIGNER, ISVPRODID, masked MISCSELECT and ATTRIBUTES, not debug; ISVSVN -> QE TCB status."""
    if qe_report.mr_signer != ident.mrsigner:
        raise QeIdentityMismatch("qe mrsigner mismatch")
    if qe_report.isv_prod_id != ident.isv_prod_id:
        raise QeIdentityMismatch(f"qe isvprodid mismatch: {qe_report.isv_prod_id} != {ident.isv_prod_id}")

    def masked(value: bytes, mask: bytes) -> bytes:
        return bytes(v & m for v, m in zip(value, mask, strict=True))

    if masked(qe_report.misc_select, ident.miscselect_mask) != masked(
        ident.miscselect, ident.miscselect_mask
    ):
        raise QeIdentityMismatch("qe miscselect mismatch")
    if masked(qe_report.attributes, ident.attributes_mask) != masked(ident.attributes, ident.attributes_mask):
        raise QeIdentityMismatch("qe attributes mismatch")
    if qe_report.attributes[0] & QE_ATTRIBUTE_DEBUG:
        raise QeIdentityMismatch("qe is a debug enclave")
    return tcb.match_isv_level(qe_report.isv_svn, ident.tcb_levels, "qe identity")


def verify_quote_signature(raw_quote: bytes, quote: Quote) -> None:
    """Step 10: the attestation key signs ``raw_quote[0:signed_len]`` (header + v5 framing + body)."""
    sd = quote.signature_data
    key = chains.p256_public_key(sd.attestation_key)
    chains.verify_raw_signature(key, sd.signature, raw_quote[: quote.signed_region_size], "quote")


def match_tcb_level(tcb_info: TcbInfo, pck: VerifiedPck, body: TdReport10) -> tcb.TcbStatus:
    """Step 11: platform TCB level from the PCK TCB components + PCESVN and TEE_TCB_SVN (tcb.py)."""
    ext = pck.extension
    return tcb.match_platform_level(tcb_info.tcb_levels, ext.tcb_components, ext.pce_svn, body.tee_tcb_svn)


def merge_statuses(platform: tcb.TcbStatus, qe: tcb.TcbStatus, module: tcb.TcbStatus) -> tcb.TcbStatus:
    """Step 13: the worse status wins, advisories unioned; Revoked is terminal and raises ``TcbRevoked``."""
    merged = tcb.merge_all((platform, qe, module))
    if merged.status == tcb.REVOKED:
        raise TcbRevoked("tcb status is revoked", advisory_ids=merged.advisory_ids)
    return merged


# --- result and drivers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedQuote:
    """Outcome of a successful verification: Intel's status string, advisories, the parsed quote and platform.

    No policy was applied: ``is_debug`` and ``td_attributes`` are for the appraisal layer to judge.
    """

    status: str
    advisory_ids: tuple[str, ...]
    platform_status: tcb.TcbStatus
    qe_status: tcb.TcbStatus
    module_status: tcb.TcbStatus
    quote: Quote
    pck: PckExtension
    tcb_evaluation_data_number: int
    qe_tcb_evaluation_data_number: int
    collateral_window: chains.Window

    @property
    def report(self) -> TdReport10:
        return self.quote.body

    @property
    def td_attributes(self) -> bytes:
        return self.quote.body.td_attributes

    @property
    def is_debug(self) -> bool:
        return self.quote.body.is_debug

    @property
    def fmspc(self) -> bytes:
        return self.pck.fmspc


def load_anchors(roots: Sequence[bytes | x509.Certificate]) -> list[x509.Certificate]:
    """Trust anchors from certificates or PEM/DER bytes."""
    out: list[x509.Certificate] = []
    for root in roots:
        out.extend(
            [root] if isinstance(root, x509.Certificate) else chains.load_certificates(root, "trust anchor")
        )
    return out


class Verifier:
    """DCAP verifier bound to a list of trust anchors (e.g. Intel's root, a simulated root, or both).

    ``cache_size`` bounds each of the two caches (collateral, PCK chain); 0 disables caching (cold path).
    Not thread-safe; use one per thread.
    """

    def __init__(self, trust_anchors: Sequence[bytes | x509.Certificate], *, cache_size: int = 64) -> None:
        self.anchors = load_anchors(trust_anchors)
        if not self.anchors:
            raise CertificateChainError("no trust anchor configured")
        self._cache_size = cache_size
        self._collateral: OrderedDict[bytes, VerifiedCollateral] = OrderedDict()
        self._pck: OrderedDict[tuple[bytes, bytes], VerifiedPck] = OrderedDict()

    def clear_cache(self) -> None:
        self._collateral.clear()
        self._pck.clear()

    def _remember(self, cache: OrderedDict[_K, _V], key: _K, value: _V) -> None:
        if self._cache_size <= 0:
            return
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self._cache_size:
            cache.popitem(last=False)

    def _verified_collateral(self, collateral: Collateral, now: int) -> tuple[bytes, VerifiedCollateral]:
        key = collateral.digest
        hit = self._collateral.get(key)
        if hit is not None and hit.window[0] <= now <= hit.window[1]:
            return key, hit
        fresh = verify_collateral(collateral, self.anchors, now)
        self._remember(self._collateral, key, fresh)
        return key, fresh

    def _verified_pck(self, quote: Quote, coll_key: bytes, vc: VerifiedCollateral, now: int) -> VerifiedPck:
        key = (coll_key, quote.pck_chain.data)
        hit = self._pck.get(key)
        if hit is not None and hit.window[0] <= now <= hit.window[1]:
            return hit
        with _step("pck_chain"):
            fresh = verify_pck_chain(quote, self.anchors, vc.crls, now)
        self._remember(self._pck, key, fresh)
        return fresh

    def verify(self, raw_quote: bytes, collateral: Collateral, now: int) -> VerifiedQuote:
        """Verify a TDX DCAP quote at unix time ``now``. Steps (docs/attestation.md §7):

        1. header: version 4/5, key type 2, TEE 0x81, Intel QE vendor ID, cert types 6 and 5, sizes (codec);
        2. collateral: TCB Info (TDX, v3) and QE Identity (TD_QE) signed by a chain to a trust anchor over
           their exact text, ``issueDate <= now <= nextUpdate``;
        3. CRLs: root CA CRL signed by the anchor, PCK CRL by its issuer, both current; signers not revoked;
        4. PCK chain leaf -> CA -> trust anchor, within validity, not revoked, PCK CRL issuer == leaf issuer;
           SGX extension parsed;
        5. TCB Info FMSPC/PCEID == PCK extension;
        6. TDX module identity: MRSIGNERSEAM, SEAMATTRIBUTES, module ISVSVN -> module status;
        7. QE report signature by the PCK leaf key;
        8. QE REPORTDATA binds SHA-256(attestation key || QE auth data);
        9. QE identity: MRSIGNER, ISVPRODID, masked MISCSELECT/ATTRIBUTES, ISVSVN -> QE status;
        10. quote signature by the attestation key over the signed region;
        11. platform TCB level (SGX components + PCESVN, then TDX components of TEE_TCB_SVN);
        12. (TD relaunch check: not implemented);
        13. merge of platform, QE and module statuses; Revoked raises ``TcbRevoked``.
        """
        with _step("header"):
            quote = decode_quote(raw_quote)
            check_header(quote)
        coll_key, vc = self._verified_collateral(collateral, now)
        pck = self._verified_pck(quote, coll_key, vc, now)
        body = quote.body
        with _step("platform"):
            check_platform(vc.tcb_info, pck)
        with _step("tdx_module"):
            module_status = check_tdx_module(vc.tcb_info, body)
        with _step("qe_report_signature"):
            qe_report = verify_qe_report_signature(quote, pck)
        with _step("qe_report_data"):
            verify_qe_report_data(quote)
        with _step("qe_identity"):
            qe_status = check_qe_identity(qe_report, vc.qe_identity)
        with _step("quote_signature"):
            verify_quote_signature(raw_quote, quote)
        with _step("tcb_level"):
            platform_status = match_tcb_level(vc.tcb_info, pck, body)
        with _step("tcb_status"):
            merged = merge_statuses(platform_status, qe_status, module_status)
        return VerifiedQuote(
            status=merged.status,
            advisory_ids=merged.advisory_ids,
            platform_status=platform_status,
            qe_status=qe_status,
            module_status=module_status,
            quote=quote,
            pck=pck.extension,
            tcb_evaluation_data_number=vc.tcb_info.tcb_evaluation_data_number,
            qe_tcb_evaluation_data_number=vc.qe_identity.tcb_evaluation_data_number,
            collateral_window=chains.intersect(vc.window, pck.window),
        )


def verify(
    raw_quote: bytes, collateral: Collateral, now: int, trust_anchors: Sequence[bytes | x509.Certificate]
) -> VerifiedQuote:
    """Cold one-shot verification (no cache); see ``Verifier.verify`` for the steps."""
    return Verifier(trust_anchors, cache_size=0).verify(raw_quote, collateral, now)


def verify_signature_links(
    raw_quote: bytes, trust_anchors: Sequence[bytes | x509.Certificate], now: int
) -> VerifiedPck:
    """Steps 1, 4 (without revocation), 7, 8 and 10 only: the signature links of a quote without collateral.

    Not a verification verdict (no CRLs, no TCB, no QE identity); for inspecting quotes such as the DEBUG TD
    vector that come without collateral.
    """
    with _step("header"):
        quote = decode_quote(raw_quote)
        check_header(quote)
    with _step("pck_chain"):
        pck = verify_pck_chain(quote, load_anchors(trust_anchors), None, now)
    with _step("qe_report_signature"):
        verify_qe_report_signature(quote, pck)
    with _step("qe_report_data"):
        verify_qe_report_data(quote)
    with _step("quote_signature"):
        verify_quote_signature(raw_quote, quote)
    return pck
